"""Flip test-time augmentation (``lacss_core.augment``, ``predict_instances(augment=True)``)."""

import numpy as np
import pytest
from keras import ops

from lacss_core import augment, pretrained
from lacss_core.data import realistic_cells
from lacss_core.metrics import object_accuracy
from lacss_core.ops.patches import patch_origins
from lacss_core.ops.proposals import decode_proposals
from lacss_core.predict import check_options, predict_instances

CROP = 8


def _flipped(array, flip_rows, flip_cols, row_axis=0):
    if flip_rows:
        array = np.flip(array, row_axis)
    if flip_cols:
        array = np.flip(array, row_axis + 1)
    return array


def test_flip_images_stacks_the_image_and_its_three_flips():
    image = np.arange(12, dtype="float32").reshape(1, 3, 4, 1)
    flips = ops.convert_to_numpy(augment.flip_images(ops.convert_to_tensor(image)))
    expected = [_flipped(image[0], fy, fx) for fy, fx in augment.FLIPS]
    np.testing.assert_array_equal(flips, np.stack(expected))
    with pytest.raises(ValueError, match=r"\(1, H, W, C\)"):
        augment.flip_images(ops.convert_to_tensor(np.zeros((2, 3, 4, 1), "float32")))


def test_shift_patches_moves_by_whole_pixels_and_says_what_it_covers():
    patches = np.arange(16, dtype="float32").reshape(1, 1, 4, 4) + 1
    shift = np.array([[[1, -2]]], "int32")
    moved, covered = (
        ops.convert_to_numpy(x)
        for x in augment.shift_patches(ops.convert_to_tensor(patches), ops.convert_to_tensor(shift))
    )
    expected = np.zeros((4, 4), "float32")
    expected[1:, :2] = patches[0, 0, :3, 2:]  # out[u, v] = in[u - 1, v + 2]
    np.testing.assert_array_equal(moved[0, 0], expected)
    np.testing.assert_array_equal(covered[0, 0], expected > 0)


def _flipped_lpn(scores, offsets, flip_rows, flip_cols):
    """The LPN maps a flip-equivariant detector gives on the flipped image."""
    sign = np.array([-1.0 if flip_rows else 1.0, -1.0 if flip_cols else 1.0], "float32")
    return _flipped(scores, flip_rows, flip_cols), _flipped(offsets, flip_rows, flip_cols) * sign


def test_flipped_lpn_maps_decode_to_the_flipped_locations_and_merge_back():
    rng = np.random.default_rng(0)
    stride, (h, w) = 4, (6, 5)
    scores = rng.random((h, w)).astype("float32")
    offsets = rng.uniform(-0.45, 0.45, (h, w, 2)).astype("float32")
    canvas = (h * stride, w * stride)
    truth = ops.convert_to_numpy(decode_proposals(scores[None], offsets[None], canvas, stride)[0])
    views = [_flipped_lpn(scores, offsets, fy, fx) for fy, fx in augment.FLIPS]
    for (fy, fx), (s, o) in zip(augment.FLIPS, views, strict=True):
        seen = ops.convert_to_numpy(decode_proposals(s[None], o[None], canvas, stride)[0])
        back = _flipped(seen[0].reshape(h, w, 2), fy, fx)  # grid cell -> unflipped cell
        back = np.where([fy, fx], np.subtract(canvas, 1) - back, back)  # pixel -> unflipped
        np.testing.assert_allclose(back.reshape(-1, 2), truth[0], atol=1e-5)
    merged_scores, merged_offsets = augment.merge_lpn(
        ops.convert_to_tensor(np.stack([v[0] for v in views])),
        ops.convert_to_tensor(np.stack([v[1] for v in views])),
    )
    np.testing.assert_allclose(ops.convert_to_numpy(merged_scores)[0], scores, atol=1e-7)
    np.testing.assert_allclose(ops.convert_to_numpy(merged_offsets)[0], offsets, atol=1e-7)


def _field_segment(fields):
    """A stand-in for ``segment_locations`` whose patches read a fixed probability field of
    each flipped canvas (``fields[k]``, chosen by the features' value ``k``): a model whose
    masks are exactly flip-equivariant."""

    def segment(features, locations):
        field = fields[int(ops.convert_to_numpy(features)[0, 0, 0, 0])]
        origins = ops.convert_to_numpy(patch_origins(locations, CROP))
        border = np.pad(field, CROP)  # zero outside the canvas
        patches = np.zeros(origins.shape[:2] + (CROP, CROP), "float32")
        for m, (y, x) in enumerate(origins[0]):
            patches[0, m] = border[y + CROP : y + 2 * CROP, x + CROP : x + 2 * CROP]
        valid = np.all(ops.convert_to_numpy(locations) >= 0, axis=-1)
        patches *= valid[..., None, None]
        return {
            "patches": ops.convert_to_tensor(patches),
            "origins": ops.convert_to_tensor(origins),
        }

    return segment


@pytest.mark.parametrize("canvas", [(32, 32), (31, 28)])
def test_merged_patches_of_an_equivariant_model_are_its_unflipped_patches(canvas):
    rng = np.random.default_rng(1)
    field = rng.random(canvas).astype("float32")
    segment = _field_segment([_flipped(field, fy, fx) for fy, fx in augment.FLIPS])
    locations = np.array([[[0.0, 0.0], [5.3, 17.9], [canvas[0] - 1, 12.5], [-1, -1]]], "float32")
    features = np.arange(4, dtype="float32")[:, None, None, None] * np.ones((4, 1, 1, 1))
    merged = augment.merge_patches(
        segment, ops.convert_to_tensor(features), ops.convert_to_tensor(locations), CROP, canvas
    )
    single = segment(ops.convert_to_tensor(features[:1]), ops.convert_to_tensor(locations))
    np.testing.assert_allclose(
        ops.convert_to_numpy(merged["patches"]), ops.convert_to_numpy(single["patches"]), atol=1e-6
    )
    np.testing.assert_array_equal(
        ops.convert_to_numpy(merged["origins"]), ops.convert_to_numpy(single["origins"])
    )
    np.testing.assert_array_equal(ops.convert_to_numpy(merged["valid"]), [[1, 1, 1, 0]])


def test_augment_must_be_a_bool():
    from lacss_core.models import Lacss

    with pytest.raises(ValueError, match="augment must be True or False, got 'yes'"):
        check_options(Lacss.from_preset("lacss_tiny"), augment="yes")


needs_generalist = pytest.mark.skipif(
    not pretrained.has_weights("generalist"), reason="no generalist shipped"
)


@pytest.fixture(scope="module")
def generalist():
    from lacss_core.models import Lacss

    return Lacss.from_preset("lacss_small", weights="generalist")


@pytest.fixture(scope="module")
def nuclei():
    return realistic_cells((77, 0), modality="nuclei", size=128, diameter=(14.0, 24.0))


@needs_generalist
def test_augmented_prediction_is_flip_equivariant(generalist, nuclei):
    label, details = predict_instances(generalist, nuclei.image, augment=True)
    flipped, _ = predict_instances(generalist, nuclei.image[::-1, ::-1], augment=True)
    accuracy = object_accuracy(label, flipped[::-1, ::-1], 0.5)
    assert len(details["scores"]) > 5
    assert accuracy.f1 > 0.97 and accuracy.mean_matched_iou > 0.97, accuracy


@needs_generalist
def test_augmented_prediction_finds_the_cells_plain_prediction_finds(generalist, nuclei):
    plain, _ = predict_instances(generalist, nuclei.image)
    augmented, details = predict_instances(generalist, nuclei.image, augment=True)
    assert not np.array_equal(plain, augmented)  # the views do change the masks
    assert object_accuracy(augmented, plain, 0.5).f1 > 0.9
    assert object_accuracy(augmented, nuclei.label, 0.5).f1 > 0.8


@needs_generalist
def test_augmented_tiles_find_the_cells_of_the_whole_image(generalist, nuclei):
    image = np.tile(nuclei.image, (2, 2))
    whole, _ = predict_instances(generalist, image, augment=True)
    tiled, details = predict_instances(
        generalist, image, augment=True, tile_size=160, tile_overlap=128, progress=False
    )
    assert details["saturated_tiles"] == 0
    assert object_accuracy(tiled, whole, 0.5).f1 > 0.95
