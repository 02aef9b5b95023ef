"""Augmentation (SPEC 11): points, images, labels and masks move together, exactly."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lacss_core.data import (
    AugmentParams,
    Sample,
    apply_augmentation,
    augment,
    draw_params,
    fit_to_size,
    label_to_locations,
)
from lacss_core.data.augment import resized_shape


def discs(shape, centres, radius):
    """Label image with disc ``k + 1`` of ``radius`` pixels around ``centres[k]``."""
    rows, cols = np.indices(shape)
    label = np.zeros(shape, np.int32)
    for k, (cy, cx) in enumerate(centres):
        label[(rows - cy) ** 2 + (cols - cx) ** 2 <= radius**2] = k + 1
    return label


DISCS = discs((48, 48), [(8, 9), (10, 30), (25, 18), (36, 38), (40, 8), (24, 41)], 5)


def one_pixel_sample(shape, point):
    image = np.zeros(shape, np.float32)
    image[point] = 1
    return Sample(image, locations=[point], mask=image)


@pytest.mark.parametrize(
    "flip_y, flip_x, expected", [(True, False, (7, 3)), (False, True, (2, 4)), (True, True, (7, 4))]
)
def test_flip_moves_a_point_and_its_pixel_exactly(flip_y, flip_x, expected):
    sample = one_pixel_sample((10, 8), (2, 3))
    out = apply_augmentation(sample, AugmentParams(flip_y, flip_x), (10, 8))
    np.testing.assert_array_equal(out.locations, [expected])  # y' = H - 1 - y, x' = W - 1 - x
    assert out.image[expected] == 1 and out.image.sum() == 1
    assert out.mask[expected] == 1 and out.mask.sum() == 1


@pytest.mark.parametrize("scale", [17 / 16, 15 / 16])  # exact in binary
def test_resize_maps_a_point_exactly(scale):
    size = resized_shape((32, 32), scale)
    sample = Sample(np.zeros((32, 32)), locations=[[3.0, 5.0]], mask=np.ones((32, 32)))
    out = apply_augmentation(sample, AugmentParams(scale=scale), size)
    np.testing.assert_array_equal(out.locations, [[3.5 * scale - 0.5, 5.5 * scale - 0.5]])


@pytest.mark.parametrize("scale", [17 / 16, 15 / 16])
def test_resized_image_content_follows_the_point_map(scale):
    centre = np.array([12.3, 17.6])
    rows, cols = np.indices((40, 40))
    blob = np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * 2.5**2))
    sample = Sample(blob, locations=[centre], mask=np.ones((40, 40)))
    out = apply_augmentation(sample, AugmentParams(scale=scale), resized_shape((40, 40), scale))
    image = out.image[..., 0]
    rows, cols = np.indices(image.shape)
    moved = np.array([(rows * image).sum(), (cols * image).sum()]) / image.sum()
    np.testing.assert_allclose(moved, out.locations[0], atol=0.05)


def test_resized_label_is_nearest_neighbour_at_the_same_map():
    scale = 17 / 16  # source coordinates hit a .5 tie only at 7.5 and 23.5, away from the box
    label = np.zeros((32, 32), np.int32)
    label[10:20, 3:13] = 4
    out = apply_augmentation(
        Sample(np.zeros((32, 32)), label=label), AugmentParams(scale=scale), (34, 34)
    )
    source = np.clip(np.rint((np.arange(34) + 0.5) / scale - 0.5).astype(int), 0, 31)
    expected = (label[np.ix_(source, source)] > 0).astype(np.int32)  # relabelled: 4 -> 1
    np.testing.assert_array_equal(out.label, expected)


def test_crop_and_pad_shift_points_and_drop_those_outside():
    image = np.arange(120, dtype=np.float32).reshape(12, 10)
    points = [[5, 4], [1, 4], [11, 4], [5, 9]]
    sample = Sample(image, locations=points, mask=np.ones((12, 10)))
    out = apply_augmentation(sample, AugmentParams(origin=(3, 2)), (8, 12))
    np.testing.assert_array_equal(out.image[:, :8, 0], image[3:11, 2:10])
    np.testing.assert_array_equal(out.image[:, 8:], 0)  # zero padding on the right
    np.testing.assert_array_equal(out.mask[:, 8:], 0)
    np.testing.assert_array_equal(out.locations, [[2, 2], [-1, -1], [-1, -1], [2, 7]])


def test_point_past_the_resized_content_is_dropped_even_inside_the_padded_canvas():
    # 10 rows shrink to round(9.375) = 9; y = 9 maps to 8.40625 > 8, the last content row
    sample = Sample(np.zeros((10, 10)), locations=[[9.0, 2.0], [8.0, 2.0]], mask=np.ones((10, 10)))
    out = apply_augmentation(sample, AugmentParams(scale=15 / 16), (12, 12))
    np.testing.assert_array_equal(out.locations, [[-1, -1], [7.46875, 1.84375]])


@pytest.mark.parametrize("seed", range(8))
def test_weak_loi_stays_on_its_cell(seed):
    # the image is the label itself, so the pixel under each moved LOI must still read its cell id
    sample = Sample(DISCS.astype(np.float32), locations=label_to_locations(DISCS), mask=DISCS)
    out = augment(sample, np.random.default_rng(seed), (40, 36))
    valid = np.flatnonzero(out.locations[:, 0] >= 0)
    assert valid.size > 0
    for n in valid:
        y, x = np.rint(out.locations[n]).astype(int)
        assert out.image[y, x, 0] == n + 1
        assert out.mask[y, x] == 1


@pytest.mark.parametrize("seed", range(8))
def test_full_loi_row_n_lies_on_augmented_label_n_plus_1(seed):
    out = augment(Sample(np.zeros((48, 48, 2)), label=DISCS), np.random.default_rng(seed), 40)
    assert out.label.shape == (40, 40) and out.image.shape == (40, 40, 2)
    np.testing.assert_array_equal(np.unique(out.label), np.arange(len(out.locations) + 1))
    for n, (y, x) in enumerate(np.rint(out.locations).astype(int)):
        assert out.label[y, x] == n + 1


def test_augment_is_reproducible_from_the_seed():
    sample = Sample(np.random.default_rng(0).random((30, 28, 2)), label=DISCS[:30, :28])
    a = augment(sample, np.random.default_rng(5), (24, 24))
    b = augment(sample, np.random.default_rng(5), (24, 24))
    for field in ("image", "label", "locations"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    others = [augment(sample, np.random.default_rng(s), (24, 24)).image for s in range(6, 10)]
    assert any(not np.array_equal(a.image, o) for o in others)


def test_draw_params_stays_in_range():
    rng = np.random.default_rng(0)
    draws = [draw_params(rng, (50, 40), (32, 48)) for _ in range(50)]
    assert all(0.9 <= p.scale <= 1.1 for p in draws)
    for p in draws:
        resized = resized_shape((50, 40), p.scale)
        assert 0 <= p.origin[0] <= resized[0] - 32 and p.origin[1] == 0  # 40 * f < 48: no crop
    assert {p.flip_y for p in draws} == {False, True} == {p.flip_x for p in draws}
    fixed = draw_params(rng, (50, 40), (32, 48), flip=False, scale_range=(1, 1))
    assert (fixed.flip_y, fixed.flip_x, fixed.scale) == (False, False, 1.0)


def test_fit_to_size_crops_top_left_and_pads_bottom_right():
    out = fit_to_size(Sample(np.ones((20, 10)), label=DISCS[:20, :10]), (16, 16))
    np.testing.assert_array_equal(out.image[:16, :10], 1)
    np.testing.assert_array_equal(out.image[:, 10:], 0)
    np.testing.assert_array_equal(out.label[:, :10] > 0, DISCS[:16, :10] > 0)


def test_bad_settings():
    sample = Sample(np.zeros((8, 8)), label=DISCS[:8, :8])
    with pytest.raises(ValueError, match="size must be a positive int or"):
        augment(sample, np.random.default_rng(0), (8, 0))
    with pytest.raises(ValueError, match="scale_range must be"):
        augment(sample, np.random.default_rng(0), 8, scale_range=(1.1, 0.9))


@given(
    shape=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    size=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    flips=st.tuples(st.booleans(), st.booleans()),
    data=st.data(),
)
def test_a_pixel_and_its_loi_move_together(shape, size, flips, data):
    # without resizing every map is exact: the lit pixel ends where its LOI ends, or both vanish
    point = tuple(data.draw(st.integers(0, s - 1), label="point") for s in shape)
    origin = tuple(data.draw(st.integers(0, s), label="origin") for s in shape)
    out = apply_augmentation(
        one_pixel_sample(shape, point), AugmentParams(*flips, 1.0, origin), size
    )
    lit = np.argwhere(out.image[..., 0] == 1)
    if out.locations[0, 0] < 0:
        assert lit.size == 0
    else:
        np.testing.assert_array_equal(lit, out.locations.astype(int))
        np.testing.assert_array_equal(np.argwhere(out.mask == 1), lit)
