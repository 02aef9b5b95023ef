"""Hand-computed cases and properties for the oracle patch geometry (SPEC 7, GT patches SPEC 8)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lacss_core.oracle import gather_patches, gt_patches, location_tensor, patch_origins

PAD = [-1.0, -1.0]


def locs(*rows):
    return np.array([rows], np.float32)


# ----------------------------------------------------------------------------- patch_origins
def test_origins_hand_computed():
    # c = 8 -> k = 4, q = 2. (y, x) = (5.5, 3.2): cy = floor(2.75) = 2, cx = floor(1.6) = 1,
    # origin = (2*(2-2), 2*(1-2)) = (0, -2). (9, 14): cy = 4, cx = 7 -> (4, 10).
    got = patch_origins(locs([5.5, 3.2], [9, 14]), 8)
    np.testing.assert_array_equal(got, [[[0, -2], [4, 10]]])
    assert got.dtype == np.int32


def test_origin_of_loi_at_zero_hangs_out_by_half_a_crop():
    # (0, 0): cy = cx = 0 -> origin (-2q, -2q) = (-c/2, -c/2); c = 12 -> k = 6, q = 3 -> (-6, -6).
    np.testing.assert_array_equal(patch_origins(locs([0, 0]), 12), [[[-6, -6]]])


def test_origin_floors_odd_and_fractional_coordinates():
    # c = 4 -> q = 1. y = 1.999: floor(0.9995) = 0 -> -2; y = 2: cy = 1 -> 0; y = 3: cy = 1 -> 0.
    got = patch_origins(locs([1.999, 2], [3, 3]), 4)
    np.testing.assert_array_equal(got, [[[-2, 0], [0, 0]]])


def test_invalid_rows_give_zero_origins():
    # A row is invalid if either coordinate is negative.
    got = patch_origins(locs(PAD, [-1, 5], [5, -0.5], [6, 6]), 8)
    np.testing.assert_array_equal(got, [[[0, 0], [0, 0], [0, 0], [2, 2]]])


# ----------------------------------------------------------------------------- location_tensor
def test_location_tensor_hand_computed():
    # c = 8, (y, x) = (5.5, 3.2): origin (0, -2). Cell u has row value (0 + 2u + 0.5 - 5.5)/8:
    # u = 0..3 -> -5/8, -3/8, -1/8, 1/8. Column v: (-2 + 2v + 0.5 - 3.2)/8 = (2v - 4.7)/8.
    loc = np.float32(3.2).astype(np.float64)  # the oracle works from the float32 location
    got = location_tensor(locs([5.5, 3.2]), 8)
    assert got.shape == (1, 1, 4, 4, 2)
    for u in range(4):
        np.testing.assert_allclose(got[0, 0, u, :, 0], (2 * u - 5) / 8, rtol=0, atol=1e-15)
    for v in range(4):
        np.testing.assert_allclose(got[0, 0, :, v, 1], (2 * v - 1.5 - loc) / 8, atol=1e-15)


def test_location_tensor_range_and_invalid_rows():
    # The LOI lies in the 2x2 output pixels of cell (q, q), y in [2cy, 2cy + 2): values lie in
    # [(-2q + 0.5 - 2)/c, (2(k-1-q) + 0.5)/c] = [-0.5 - 1.5/c, 0.5 - 1.5/c] (c = 96: -0.516, 0.484).
    # (7.75, 6): cy = 3, origin -2; u = 0 gives (-2 + 0.5 - 7.75)/16 = -0.578 > -0.594.
    got = location_tensor(locs([0, 0], [7.75, 6.0], PAD), 16)
    assert got[0, :2].min() >= -0.5 - 1.5 / 16 and got[0, :2].max() <= 0.5 - 1.5 / 16
    np.testing.assert_allclose(got[0, 1, 0, 0, 0], -9.25 / 16)
    # (0, 0), c = 16, q = 4: cell (q, q) = (4, 4) decodes pixel 2*(0-4+4) + 0.5 = 0.5 -> 0.5/16.
    np.testing.assert_allclose(got[0, 0, 4, 4], [0.5 / 16, 0.5 / 16])
    np.testing.assert_array_equal(got[0, 2], 0.0)


# ----------------------------------------------------------------------------- gather_patches
def feature_map(h, w, f=1):
    return np.arange(1, h * w * f + 1, dtype=np.float32).reshape(1, h, w, f)


def test_gather_inside_the_map():
    # 6x6 map holding 1..36 row-major (value = 6*r + col + 1); c = 8 -> k = 4, q = 2.
    # (y, x) = (6, 6): cy = cx = 3 -> rows/cols [1, 5): top-left value 6*1 + 1 + 1 = 8.
    got = gather_patches(feature_map(6, 6), locs([6, 6]), 8)
    np.testing.assert_array_equal(got[0, 0, :, :, 0], feature_map(6, 6)[0, 1:5, 1:5, 0])
    assert got[0, 0, 0, 0, 0] == 8 and got.dtype == np.float32


def test_gather_at_zero_reads_zeros_above_and_left():
    # (0, 0): cells [-2, 2) x [-2, 2); the first two rows and columns lie outside and read 0.
    got = gather_patches(feature_map(6, 6), locs([0, 0]), 8)[0, 0, :, :, 0]
    expected = np.zeros((4, 4), np.float32)
    expected[2:, 2:] = [[1, 2], [7, 8]]
    np.testing.assert_array_equal(got, expected)


def test_gather_on_far_border_and_invalid_row():
    # (11, 11) on a 6x6 map (12x12 padded image): cy = 5 -> cells [3, 7); cell 6 reads 0.
    got = gather_patches(feature_map(6, 6, 2), locs([11, 11], PAD), 8)
    expected = np.zeros((4, 4, 2), np.float32)
    expected[:3, :3] = feature_map(6, 6, 2)[0, 3:, 3:]
    np.testing.assert_array_equal(got[0, 0], expected)
    np.testing.assert_array_equal(got[0, 1], 0.0)


def test_gather_window_wholly_past_the_map_is_zero():
    # (40, 0) on a 6x6 map: cy = 20 -> rows [18, 22), all outside.
    np.testing.assert_array_equal(gather_patches(feature_map(6, 6), locs([40, 0]), 8), 0.0)


# ----------------------------------------------------------------------------- gt_patches
def test_gt_patch_selects_label_n_plus_one():
    # 8x8 label: label 1 fills rows 0-2, cols 0-2; label 2 the pixel (5, 5).
    # Row 0 at (1, 1), c = 4: q = 1, origin (2*(0-1), 2*(0-1)) = (-2, -2); patch pixel (a, b)
    # is image pixel (a-2, b-2), so label-1 pixels (0..2, 0..2) land at a, b in {2, 3}.
    # Row 1 at (5, 5): origin (2*(2-1), 2*(2-1)) = (2, 2); pixel (5, 5) lands at (3, 3).
    label = np.zeros((1, 8, 8), np.int32)
    label[0, :3, :3] = 1
    label[0, 5, 5] = 2
    got = gt_patches(label, locs([1, 1], [5, 5]), 4)
    first = np.zeros((4, 4), np.float32)
    first[2:, 2:] = 1
    second = np.zeros((4, 4), np.float32)
    second[3, 3] = 1
    np.testing.assert_array_equal(got[0, 0], first)
    np.testing.assert_array_equal(got[0, 1], second)


def test_gt_patch_ignores_other_labels_outside_pixels_and_invalid_rows():
    # Everything is label 2; row 0 looks for label 1 -> all zeros. Row 2 is padding.
    label = np.full((1, 4, 4), 2, np.int32)
    got = gt_patches(label, locs([0, 0], [3, 3], PAD), 8)
    np.testing.assert_array_equal(got[0, 0], 0.0)
    # Row 1 at (3, 3), c = 8: q = 2, cy = 1 -> origin (-2, -2); image pixels 0..3 at a = 2..5.
    expected = np.zeros((8, 8), np.float32)
    expected[2:6, 2:6] = 1
    np.testing.assert_array_equal(got[0, 1], expected)
    np.testing.assert_array_equal(got[0, 2], 0.0)


# ----------------------------------------------------------------------------- properties
@st.composite
def scenes(draw, channels=1):
    """A batch of 1-2 small images with 1-4 location rows (some padded) and a crop size."""
    b = draw(st.integers(1, 2))
    h, w = draw(st.integers(1, 14)), draw(st.integers(1, 14))
    n = draw(st.integers(1, 4))
    c = draw(st.sampled_from([4, 8, 12]))
    quarter = st.integers(0, 4 * 14).map(lambda v: v / 4)
    rows = np.array(draw(st.lists(st.tuples(quarter, quarter), min_size=b * n, max_size=b * n)))
    rows = np.minimum(rows, [h - 1, w - 1]).reshape(b, n, 2)
    padded = np.array(draw(st.lists(st.booleans(), min_size=b * n, max_size=b * n)))
    rows[padded.reshape(b, n)] = -1
    return rows.astype(np.float32), (b, h, w), c


@given(scenes(), st.data())
def test_gt_patches_agree_with_direct_indexing(scene, data):
    locations, (b, h, w), c = scene
    n = locations.shape[1]
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    label = rng.integers(0, n + 2, size=(b, h, w)).astype(np.int32)
    got = gt_patches(label, locations, c)
    for bi, ni, a, col in np.ndindex(got.shape):
        y, x = locations[bi, ni]
        expected = 0.0
        if y >= 0 and x >= 0:
            top, left = 2 * (int(y // 2) - c // 4), 2 * (int(x // 2) - c // 4)
            r, s = top + a, left + col
            if 0 <= r < h and 0 <= s < w:
                expected = float(label[bi, r, s] == ni + 1)
        assert got[bi, ni, a, col] == expected, (bi, ni, a, col)


@given(scenes(), st.integers(1, 3), st.integers(0, 2**16))
def test_gather_patches_agree_with_direct_indexing(scene, f, seed):
    locations, (b, h, w), c = scene
    hf, wf = (h + 1) // 2, (w + 1) // 2
    features = np.random.default_rng(seed).normal(size=(b, hf, wf, f)).astype(np.float32)
    got = gather_patches(features, locations, c)
    k = c // 2
    assert got.shape == (b, locations.shape[1], k, k, f)
    for bi, ni, u, v in np.ndindex(got.shape[:4]):
        y, x = locations[bi, ni]
        expected = np.zeros(f, np.float32)
        if y >= 0 and x >= 0:
            r, s = int(y // 2) - k // 2 + u, int(x // 2) - k // 2 + v
            if 0 <= r < hf and 0 <= s < wf:
                expected = features[bi, r, s]
        np.testing.assert_array_equal(got[bi, ni, u, v], expected)


@given(scenes())
def test_location_tensor_points_from_the_loi_to_each_cell(scene):
    # Decoding the tensor back to pixels must give the centre 2*cell + 0.5 of every cell.
    locations, _, c = scene
    got = location_tensor(locations, c)
    origins = patch_origins(locations, c)
    k = c // 2
    for bi, ni in np.ndindex(locations.shape[:2]):
        if np.all(locations[bi, ni] >= 0):
            centres = got[bi, ni] * c + locations[bi, ni].astype(np.float64)
            u = np.arange(k)
            np.testing.assert_allclose(centres[:, 0, 0], origins[bi, ni, 0] + 2 * u + 0.5)
            np.testing.assert_allclose(centres[0, :, 1], origins[bi, ni, 1] + 2 * u + 0.5)
        else:
            np.testing.assert_array_equal(got[bi, ni], 0.0)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("c", [0, 6, -4, 8.0, True])
def test_crop_size_must_be_a_positive_multiple_of_four(c):
    with pytest.raises(ValueError, match="crop_size"):
        patch_origins(locs([1, 1]), c)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="locations"):
        patch_origins(np.zeros((1, 2)), 8)
    with pytest.raises(ValueError, match="locations"):
        location_tensor(np.zeros((1, 2, 3)), 8)
    with pytest.raises(ValueError, match="locations"):
        patch_origins(locs([np.nan, 1]), 8)
    with pytest.raises(ValueError, match="features"):
        gather_patches(np.zeros((1, 4, 4)), locs([1, 1]), 8)
    with pytest.raises(ValueError, match="features"):
        gather_patches(np.full((1, 4, 4, 1), np.inf), locs([1, 1]), 8)
    with pytest.raises(ValueError, match="batch"):
        gather_patches(np.zeros((2, 4, 4, 1)), locs([1, 1]), 8)
    with pytest.raises(ValueError, match="label"):
        gt_patches(np.zeros((1, 4, 4), np.float32), locs([1, 1]), 8)
    with pytest.raises(ValueError, match="label"):
        gt_patches(np.zeros((4, 4), np.int32), locs([1, 1]), 8)
    with pytest.raises(ValueError, match="batch"):
        gt_patches(np.zeros((3, 4, 4), np.int32), locs([1, 1]), 8)
