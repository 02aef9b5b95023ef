"""predict_instances: whole-image and tiled prediction, scale, options and bad input.

Most tests use ``MarkerModel``, a deterministic, weightless stand-in for ``Lacss`` with the same
inference interface: every pixel of channel 0 is a proposal scored by its value, and each kept
proposal's patch is a disc of radius ``RADIUS`` around it. Its results are known exactly, and it
is translation-equivariant, so tiled and whole-image predictions must be identical. The real
``lacss_tiny`` preset (random weights) checks that the pipeline runs and that tiling leaves no
duplicates.
"""

import keras
import numpy as np
import pytest
from keras import ops

from lacss_core import tiling
from lacss_core.predict import parse_diameter, predict_instances

CROP = 16
RADIUS = 5.0


class MarkerModel(keras.Model):
    """Proposals = bright pixels (score = value); patches = discs around them (SPEC 7 origins)."""

    crop_size = CROP
    lpn_stride = 4
    nms_distance = 3.0
    min_score = 0.5
    max_output = 64
    pre_nms_topk = 4096
    input_channels = 1

    def __init__(self):
        super().__init__()
        self.built = True  # weightless

    def dense_forward(self, images, training=False):
        height, width = images.shape[1], images.shape[2]
        yy, xx = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
        grid = np.stack([yy.ravel(), xx.ravel()], -1).astype("float32")[None]
        return {
            "lpn_scores": images[..., 0],  # a proposal grid of stride 1
            "candidates": ops.convert_to_tensor(grid),
            "candidate_scores": ops.reshape(images[..., 0], (1, -1)),
            "shared_features": images,
        }

    def segment_locations(self, shared_features, locations):
        valid = ops.all(locations >= 0, axis=-1)
        origins = ops.cast(2 * (ops.floor(locations / 2) - CROP // 4), "int32")
        steps = ops.arange(CROP, dtype="float32")
        rows = ops.cast(origins[..., 0:1], "float32") + steps - locations[..., 0:1]
        cols = ops.cast(origins[..., 1:2], "float32") + steps - locations[..., 1:2]
        inside = rows[..., :, None] ** 2 + cols[..., None, :] ** 2 <= RADIUS**2
        patches = ops.cast(inside & valid[..., None, None], "float32")
        return {"patches": patches, "origins": origins, "valid": valid}


def marker_image(shape, markers):
    """Image with background 0.1 and marker pixels ``(y, x, score)``."""
    image = np.full(shape, 0.1, np.float32)
    for y, x, score in markers:
        image[y, x] = score
    return image


def expected_label(shape, markers, min_score=0.5):
    """SPEC 9 for discs, by brute force: higher score wins, ranks compacted in score order."""
    kept = sorted([m for m in markers if m[2] >= min_score], key=lambda m: -m[2])
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    label = np.zeros(shape, np.int32)
    for rank, (y, x, _) in enumerate(kept, start=1):
        label[((yy - y) ** 2 + (xx - x) ** 2 <= RADIUS**2) & (label == 0)] = rank
    return label


def random_markers(rng, shape, count, spacing):
    markers = []
    while len(markers) < count:
        y, x = rng.integers(1, shape[0] - 1), rng.integers(1, shape[1] - 1)
        if all((y - a) ** 2 + (x - b) ** 2 > spacing**2 for a, b, _ in markers):
            markers.append((int(y), int(x), float(rng.uniform(0.55, 0.95))))
    return markers


def segment(model, image, **kwargs):
    """predict_instances without normalisation: marker values are the scores."""
    return predict_instances(model, image, **{"normalize": None, **kwargs})


@pytest.fixture(scope="module")
def model():
    return MarkerModel()


@pytest.fixture(scope="module")
def tiny():
    from lacss_core.models import Lacss

    keras.utils.set_random_seed(0)
    tiny = Lacss.from_preset("lacss_tiny", min_score=0.0)
    tiny.build((None, None, None, 1))
    return tiny


def test_whole_image_label_and_details(model):
    markers = [(20, 20, 0.9), (24, 26, 0.7), (50, 10, 0.6), (40, 45, 0.8), (10, 50, 0.3)]
    label, details = segment(model, marker_image((64, 64), markers))
    assert label.dtype == np.int32 and label.shape == (64, 64)
    np.testing.assert_array_equal(label, expected_label((64, 64), markers))
    np.testing.assert_allclose(details["scores"], [0.9, 0.8, 0.7, 0.6], rtol=1e-6)
    np.testing.assert_array_equal(details["locations"], [[20, 20], [40, 45], [24, 26], [50, 10]])
    np.testing.assert_array_equal(details["areas"], np.bincount(label.ravel())[1:])
    for i, (y0, x0, y1, x1) in enumerate(details["bboxes"]):
        rows, cols = np.nonzero(label == i + 1)
        assert (y0, x0, y1, x1) == (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)


def test_grey_2d_and_channel_last_inputs_agree(model):
    image = marker_image((48, 40), [(20, 20, 0.9)])
    label_2d, _ = predict_instances(model, image)
    label_3d, _ = predict_instances(model, image[..., None].astype(np.float64) * 1000)
    assert label_2d.max() == 1
    np.testing.assert_array_equal(label_2d, label_3d)


def test_options_override_the_model_config(model):
    markers = [(20, 20, 0.9), (22, 22, 0.8), (40, 40, 0.6)]
    image = marker_image((64, 64), markers)
    assert len(segment(model, image)[1]["scores"]) == 2  # (22, 22) is within 3 px
    # (22, 22)'s mask lies mostly under (20, 20)'s: kept only with max_overlap 1
    assert len(segment(model, image, nms_distance=2.0, max_overlap=1.0)[1]["scores"]) == 3
    assert len(segment(model, image, nms_distance=2.0)[1]["scores"]) == 2
    assert len(segment(model, image, min_score=0.7)[1]["scores"]) == 1
    full = segment(model, image, segmentation_threshold=0.0, min_area=0)[1]["areas"]
    assert (segment(model, image, min_area=int(full.max()))[1]["areas"] >= full.max()).all()


@pytest.mark.parametrize("shift", [2, 5])
def test_max_overlap_drops_a_second_copy_of_a_cell(model, shift):
    """Two proposals ``shift`` px apart on one cell: the lower's mask is hidden by the higher's
    except for a sliver, which ``max_overlap`` removes; the whole and tiled paths agree."""
    markers = [(30, 30, 0.9), (30, 30 + shift, 0.8), (50, 12, 0.7)]
    image = marker_image((64, 64), markers)
    options = dict(nms_distance=1.0, tile_size=256, clean_masks=False)  # areas as painted
    kept = segment(model, image, max_overlap=1.0, **options)
    own = int(kept[1]["areas"][0])  # the first cell is never hidden
    sliver = int(kept[1]["areas"][1])
    assert len(kept[1]["scores"]) == 3 and 0 < sliver < own
    hidden = 1 - sliver / own  # (the markers' masks all have the same area)
    for limit, count in [(hidden - 0.01, 2), (hidden + 0.01, 3)]:
        label, details = segment(model, image, max_overlap=limit, **options)
        assert len(details["scores"]) == count
        tiled = segment(
            model, image, max_overlap=limit, **{**options, "tile_size": 32, "tile_overlap": 16}
        )
        np.testing.assert_array_equal(tiled[0], label)
    np.testing.assert_allclose(
        segment(model, image, max_overlap=0.0, **options)[1]["scores"], [0.9, 0.7], rtol=1e-6
    )


def test_min_area_drops_mostly_covered_cells(model):
    markers = [(20, 20, 0.9), (20, 27, 0.8), (40, 40, 0.7)]  # the second is half covered
    image = marker_image((64, 64), markers)
    _, details = segment(model, image, nms_distance=1.0)
    small = int(details["areas"][1])
    label, details = segment(model, image, nms_distance=1.0, min_area=small + 1)
    assert len(details["scores"]) == 2 and set(np.unique(label)) == {0, 1, 2}
    np.testing.assert_allclose(details["scores"], [0.9, 0.7], rtol=1e-6)
    assert (label == 0).sum() == (expected_label((64, 64), markers) == 0).sum() + small


def test_lists_and_batches_of_images(model):
    images = [marker_image((40, 48), [(20, 20, 0.9)]), marker_image((33, 70), [(9, 9, 0.8)])]
    labels, details = segment(model, images)
    assert [label.shape for label in labels] == [(40, 48), (33, 70)]
    assert [len(d["scores"]) for d in details] == [1, 1]
    labels, _ = segment(model, np.stack([images[0]] * 2)[..., None])
    assert len(labels) == 2


def test_scale_maps_results_back(model):
    markers = [(20, 20, 0.9), (40, 44, 0.8)]
    image = marker_image((64, 64), markers)  # bilinear upscaling halves the marker peaks
    label, details = segment(model, image, scale=2.0, min_score=0.3)
    assert label.shape == (64, 64)
    np.testing.assert_allclose(details["locations"], [[20, 20], [40, 44]], atol=0.75)
    # Each cell is a disc of radius 5 around its location (ys, xs) in the scaled image; the label
    # image comes back by nearest sampling, input pixel i reading scaled pixel 2i + 1 (the centre
    # of its 2 x 2 block), so its area is the number of those centres inside the disc, about
    # pi * 2.5**2 = 19.6 (16 here: the disc is centred on a pixel corner of the input).
    rows, cols = np.mgrid[:64, :64]
    for (y, x), area in zip(details["locations"], details["areas"], strict=True):
        ys, xs = 2 * y + 0.5, 2 * x + 0.5  # the inverse of predict's (s + 0.5) / 2 - 0.5
        inside = (2 * rows + 1 - ys) ** 2 + (2 * cols + 1 - xs) ** 2 <= RADIUS**2
        assert area == inside.sum() == 16


def test_the_model_threshold_is_the_default():
    faint = FaintMarkerModel()  # patches of 0.7 inside the discs
    image = marker_image((48, 48), [(20, 20, 0.9)])
    assert segment(faint, image)[0].max() == 1  # the model's threshold 0.5
    faint.segmentation_threshold = 0.8
    assert segment(faint, image)[0].max() == 0
    assert segment(faint, image, segmentation_threshold=0.6)[0].max() == 1


class FaintMarkerModel(MarkerModel):
    segmentation_threshold = 0.5

    def segment_locations(self, shared_features, locations):
        instances = super().segment_locations(shared_features, locations)
        return {**instances, "patches": 0.7 * instances["patches"]}


def test_clean_masks_keeps_one_piece_per_cell(model):
    from lacss_core.postprocess import clean_label, count_defects

    rng = np.random.default_rng(4)
    image = marker_image((64, 64), random_markers(rng, (64, 64), 40, spacing=4.0))
    raw, raw_details = segment(model, image, clean_masks=False, nms_distance=1.0)
    assert count_defects(raw)["fragmented"] > 0  # the overlap rule cuts discs apart
    label, details = segment(model, image, nms_distance=1.0)
    assert count_defects(label)["fragmented"] == 0
    expected = clean_label(raw)
    kept = np.unique(expected[expected > 0])  # cells that kept a pixel, in rank order
    np.testing.assert_array_equal(label, np.searchsorted(kept, expected) + (expected > 0))
    np.testing.assert_array_equal(details["scores"], raw_details["scores"][kept - 1])
    with pytest.raises(ValueError, match="clean_masks"):
        segment(model, image, clean_masks="yes")


def test_diameter_is_scale_from_the_training_diameter():
    model = MarkerModel()
    markers = [(20, 20, 0.9), (40, 44, 0.8)]
    image = marker_image((64, 64), markers)
    with pytest.raises(ValueError, match="train_diameter"):
        segment(model, image, diameter=10)
    model.train_diameter = 20.0
    by_scale, scaled = segment(model, image, scale=2.0, min_score=0.3)
    by_diameter, details = segment(model, image, diameter=10, min_score=0.3)
    np.testing.assert_array_equal(by_diameter, by_scale)
    assert details["scale"] == scaled["scale"] == 2.0
    for bad, message in [(0, "diameter must be"), ("big", "diameter must be")]:
        with pytest.raises(ValueError, match=message):
            segment(model, image, diameter=bad)
    with pytest.raises(ValueError, match="not both"):
        segment(model, image, diameter=10, scale=2.0)


def test_parse_diameter_reads_what_people_type():
    assert parse_diameter(" 30 ") == 30.0 and parse_diameter("AUTO") == "auto"
    assert parse_diameter("", empty_means_none=True) is None
    for text in ["", "0", "-1", "nan", "inf", "30 px"]:
        with pytest.raises(ValueError, match=f"a number of pixels > 0, got {text!r}"):
            parse_diameter(text)


class ConeModel(MarkerModel):
    """Scale-equivariant stand-in: proposals are pixels scored by their value (as MarkerModel),
    and a patch is the image itself around the proposal, so a cone of radius R segments (at the
    threshold 0.5) as a disc of radius R / 2 at any scale."""

    crop_size = 64
    nms_distance = 8.0
    min_score = 0.6
    train_diameter = 24.0

    def segment_locations(self, shared_features, locations):
        crop = self.crop_size
        batch, height, width = (int(n) for n in shared_features.shape[:3])
        valid = ops.all(locations >= 0, axis=-1)
        origins = ops.cast(2 * (ops.floor(locations / 2) - crop // 4), "int32")
        rows = origins[..., 0:1] + ops.arange(crop, dtype="int32")  # (B, M, c)
        cols = origins[..., 1:2] + ops.arange(crop, dtype="int32")
        row_in = (rows >= 0) & (rows < height)
        col_in = (cols >= 0) & (cols < width)
        inside = row_in[..., :, None] & col_in[..., None, :] & valid[..., None, None]
        rows, cols = ops.clip(rows, 0, height - 1), ops.clip(cols, 0, width - 1)
        flat = rows[..., :, None] * width + cols[..., None, :]  # (B, M, c, c) pixel ids
        pixels = ops.reshape(shared_features[..., 0], (batch, 1, -1))
        values = ops.take_along_axis(pixels, ops.reshape(flat, (batch, 1, -1)), axis=-1)
        patches = ops.reshape(values, flat.shape) * ops.cast(inside, "float32")
        return {"patches": patches, "origins": origins, "valid": valid}


def cone_image(shape, centres, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = np.zeros(shape, np.float32)
    for y, x in centres:
        image = np.maximum(image, 1 - np.sqrt((yy - y) ** 2 + (xx - x) ** 2) / radius)
    return image


def test_auto_diameter_rescales_to_the_training_diameter():
    model = ConeModel()
    image = cone_image((96, 96), [(24, 24), (24, 70), (70, 40)], radius=12.0)  # cells ~12 px
    label, details = segment(model, image)
    assert label.max() == 3 and details["scale"] == 1.0
    label, details = segment(model, image, diameter="auto")
    assert label.max() == 3
    assert details["diameter"] == pytest.approx(12.0, rel=0.1)
    assert details["scale"] == pytest.approx(2.0, rel=0.1)  # train_diameter 24 / 12
    model.train_diameter = 12.0  # already the size the model expects: one pass, scale 1
    assert segment(model, image, diameter="auto")[1]["scale"] == 1.0
    assert segment(model, np.zeros((32, 32)), diameter="auto")[1]["diameter"] is None


@pytest.mark.parametrize(("shape", "overlap"), [((128, 128), 16), ((100, 90), 16), ((90, 100), 32)])
def test_tiled_equals_whole(model, shape, overlap):
    # spacing 2.5 < nms_distance 3: NMS suppresses some markers, also across core edges;
    # overlap 32 lets tiles report cells up to 3 px outside their core (removed as doubles)
    rng = np.random.default_rng(1)
    markers = random_markers(rng, shape, 60, spacing=2.5)
    image = marker_image(shape, markers)
    whole = segment(model, image, tile_size=256)
    assert 20 < len(whole[1]["scores"]) < len(markers)
    tiled = segment(model, image, tile_size=48, tile_overlap=overlap)
    np.testing.assert_array_equal(tiled[0], whole[0])
    for key in whole[1]:
        np.testing.assert_array_equal(tiled[1][key], whole[1][key])


def test_axis_tiles_cover_the_axis_with_cores_away_from_tile_edges():
    for length, tile, overlap in [(100, 48, 16), (1000, 256, 96), (257, 128, 64), (50, 64, 32)]:
        tiles = tiling.axis_tiles(length, tile, overlap)
        assert tiles[0].core_lo == 0 and tiles[-1].core_hi == length
        for before, after in zip(tiles[:-1], tiles[1:], strict=True):
            assert before.core_hi == after.core_lo
            assert before.start + before.size - after.start >= overlap
        for t in tiles:
            assert t.start >= 0 and t.start + t.size <= length
            lo_margin = t.core_lo - t.start if t.start > 0 else overlap / 2
            hi_margin = t.start + t.size - t.core_hi if t.core_hi < length else overlap / 2
            assert min(lo_margin, hi_margin) >= overlap / 2


def test_greedy_nms_matches_brute_force():
    rng = np.random.default_rng(0)
    locations = rng.uniform(0, 30, (200, 2)).astype(np.float32)
    kept = []
    for i, p in enumerate(locations):
        if all(np.sum((p - locations[j]) ** 2) > 9.0 for j in kept):
            kept.append(i)
    np.testing.assert_array_equal(tiling.greedy_nms(locations, 3.0), kept)


def test_tiny_model_whole_and_tiled(tiny):
    image = np.random.default_rng(0).uniform(0, 255, (128, 128)).astype(np.uint8)
    for tile_size in (None, 96):
        label, details = predict_instances(tiny, image, tile_size=tile_size, min_score=0.3)
        count = len(details["scores"])
        assert label.shape == (128, 128) and label.dtype == np.int32
        assert set(np.unique(label)) - {0} == set(range(1, count + 1))
        assert np.all(np.diff(details["scores"]) <= 0)
        np.testing.assert_array_equal(details["areas"], np.bincount(label.ravel())[1:])
        # no duplicates: kept locations are further apart than nms_distance (the LPN stride)
        locations = details["locations"]
        distances = np.sum((locations[:, None] - locations[None]) ** 2, -1)
        np.fill_diagonal(distances, np.inf)
        assert distances.min(initial=np.inf) > tiny.lpn_stride**2


@pytest.mark.parametrize(
    ("image", "kwargs", "message"),
    [
        (np.zeros(5), {}, "image must be"),
        (np.zeros((2, 3, 4, 5, 6)), {}, "image must be"),
        (np.zeros((0, 8)), {}, "image is empty"),
        (np.arange(8 * 8 * 3.0).reshape(8, 8, 3), {}, "3 channel.*channels='grey'"),
        (np.full((8, 8), np.nan), {}, "non-finite"),
        (np.full((8, 8), np.nan), {"normalize": None}, "non-finite"),
        (np.array([["a"]]), {}, "real numeric"),
        (np.zeros((8, 8)), {"normalize": "z"}, "normalize"),
        (np.zeros((8, 8)), {"segmentation_threshold": 1.5}, "segmentation_threshold"),
        (np.zeros((8, 8)), {"min_area": -1}, "min_area"),
        (np.zeros((8, 8)), {"max_overlap": 1.5}, "max_overlap"),
        (np.zeros((8, 8)), {"max_overlap": float("nan")}, "max_overlap"),
        (np.zeros((8, 8)), {"max_overlap": "half"}, "max_overlap"),
        (np.zeros((8, 8)), {"min_score": -0.1}, "min_score"),
        (np.zeros((8, 8)), {"nms_distance": float("inf")}, "nms_distance"),
        (np.zeros((8, 8)), {"scale": 0}, "scale"),
        (np.zeros((8, 8)), {"tile_overlap": 8}, "tile_overlap"),
        (np.zeros((8, 8)), {"tile_size": 16, "tile_overlap": 16}, "tile_size"),
    ],
)
def test_bad_input_names_the_problem(model, image, kwargs, message):
    with pytest.raises(ValueError, match=message):
        predict_instances(model, image, **kwargs)


def test_wrong_channels_for_the_real_model(tiny):
    with pytest.raises(ValueError, match="model expects 1"):
        predict_instances(tiny, np.arange(32 * 32 * 2, dtype=np.float32).reshape(32, 32, 2))


def test_nested_lists_and_channels_first(model):
    shape = (40, 48)
    markers = [(10, 12, 0.9), (25, 30, 0.7)]
    image = marker_image(shape, markers)
    label, _ = segment(model, image)
    np.testing.assert_array_equal(label, expected_label(shape, markers))
    np.testing.assert_array_equal(segment(model, image.tolist())[0], label)  # one image, not rows
    np.testing.assert_array_equal(segment(model, np.stack([image] * 3))[0], label)  # (3, H, W)
    colour = np.stack([np.full(shape, 0.1, np.float32), image, image * 0.5], axis=-1)
    with pytest.raises(ValueError, match="3 channel.*channels=\\[i, ...\\].*'grey'"):
        segment(model, colour)
    np.testing.assert_array_equal(segment(model, colour, channels=[1])[0], label)
    grey, _ = segment(model, np.moveaxis(colour, -1, 0), channels="grey")
    assert grey.shape == shape
    with pytest.raises(ValueError, match="a stack of 6 planes"):
        segment(model, np.zeros((6, 40, 48), np.float32))
    with pytest.raises(ValueError, match="picks channel 5"):
        segment(model, colour, channels=[5])
    with pytest.raises(ValueError, match="model expects 1"):
        segment(model, colour, channels=[0, 1])
