"""Hand-computed cases and properties for the oracle segmentation losses (SPEC 8)."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lacss_core.oracle import (
    boundary_loss,
    fs_seg_loss,
    patch_origins,
    sobel_magnitude,
    ws_seg_loss,
)

PAD = [-1.0, -1.0]
LOG_EPS = math.log(1e-7)
PHI_FLOOR = math.sqrt(1e-9)  # sobel magnitude where the patch is locally constant


def locs(*rows):
    return np.array([rows], np.float32)


def const_patches(*values, c=4):
    return np.array([[np.full((c, c), v) for v in values]])


def huber_half(x):
    return 0.5 * x * x if abs(x) <= 0.5 else 0.5 * abs(x) - 0.125


# ----------------------------------------------------------------------------- fs_seg_loss
def test_fs_single_instance_hand_computed():
    # c = 4, LOI (1, 1): origin (-2, -2), so patch pixels a, b in {2, 3} are image pixels 0..1.
    # Label 1 fills image rows/cols 0..1 -> G_T = 1 on 4 patch pixels, 0 on the other 12.
    # G = 0.8: mean = (4 * -log 0.8 + 12 * -log 0.2) / 16.
    label = np.zeros((1, 4, 4), np.int32)
    label[0, :2, :2] = 1
    got = fs_seg_loss(const_patches(0.8), locs([1, 1]), label)
    assert got == pytest.approx((4 * -math.log(0.8) + 12 * -math.log(0.2)) / 16, rel=1e-12)


def test_fs_normalises_by_all_valid_instances_of_the_batch():
    # Image 0: one valid row and one padded row (its patch is ignored); image 1: two valid rows.
    # All labels are 0, so every valid pixel costs -log(1 - G): 0.5 -> log 2, 0.9 -> log 10.
    # Sum = 16 log 2 + 16 log 10 + 16 log 2 over 16 * 3 pixels.
    label = np.zeros((2, 4, 4), np.int32)
    locations = np.array([[[1, 1], PAD], [[1, 1], [3, 3]]], np.float32)
    patches = np.stack([const_patches(0.5, 0.99)[0], const_patches(0.9, 0.5)[0]])
    expected = (16 * math.log(2) + 16 * math.log(10) + 16 * math.log(2)) / 48
    assert fs_seg_loss(patches, locations, label) == pytest.approx(expected, rel=1e-12)


def test_fs_clips_logs_at_eps():
    # G = 0 everywhere, label 1 on 4 patch pixels: those cost -log(1e-7), the rest -log 1 = 0.
    label = np.zeros((1, 4, 4), np.int32)
    label[0, :2, :2] = 1
    got = fs_seg_loss(const_patches(0.0), locs([1, 1]), label)
    assert got == pytest.approx(4 * -LOG_EPS / 16, rel=1e-12)


def test_fs_without_valid_instances_is_zero():
    label = np.ones((1, 4, 4), np.int32)
    assert fs_seg_loss(const_patches(0.3), locs(PAD), label) == 0.0


# ----------------------------------------------------------------------------- ws_seg_loss
def test_ws_single_instance_has_no_overlap_term():
    # c = 4, LOI (1, 1): origin (-2, -2); patch pixels a, b in {2, 3} are in the 4x4 image
    # (mask 1 -> cost -G), the other 12 lie outside (C = 0 -> cost -(1 - G)). G = 0.25:
    # (4 * -0.25 + 12 * -0.75) / 16 = -10 / 16.
    mask = np.ones((1, 4, 4), np.float32)
    assert ws_seg_loss(const_patches(0.25), locs([1, 1]), mask) == pytest.approx(-10 / 16)


def test_ws_overlap_inside_the_image():
    # LOIs (1, 1) and (3, 3), c = 4: origins (-2, -2) and (0, 0); the patches share image pixels
    # 0..1 x 0..1 (4 pixels). Mask 0, G = 0.5 for both: each instance pays 16 * -(1 - 0.5) = -8
    # plus 4 * -0.5 * log(1 - 0.5) = 2 log 2 for the overlap. Mean = (2 * (-8 + 2 log 2)) / 32.
    mask = np.zeros((1, 4, 4), np.float32)
    got = ws_seg_loss(const_patches(0.5, 0.5), locs([1, 1], [3, 3]), mask)
    assert got == pytest.approx((-16 + 4 * math.log(2)) / 32, rel=1e-12)


def test_ws_overlap_counts_pixels_outside_the_image():
    # LOIs (0, 0) and (1, 1) share the origin (-2, -2): all 16 pixels overlap, 12 of them outside
    # the image. Per instance: -8 + 16 * -0.5 * log 0.5 = -8 + 8 log 2. Mean over 2 instances:
    # (-8 + 8 log 2) / 16. A padded third row adds nothing.
    mask = np.zeros((1, 4, 4), np.float32)
    got = ws_seg_loss(const_patches(0.5, 0.5, 0.99), locs([0, 0], [1, 1], PAD), mask)
    assert got == pytest.approx((-8 + 8 * math.log(2)) / 16, rel=1e-12)


def test_ws_overlap_log_is_clipped():
    # Same shared origin, instance 1 has G = 1 -> log(clip(1 - 1)) = log 1e-7. Mask 0.
    # Instance 0 (G = 0.5): 16 * (-0.5 - 0.5 * log 1e-7); instance 1 (G = 1): 16 * (0 - log 0.5).
    mask = np.zeros((1, 4, 4), np.float32)
    got = ws_seg_loss(const_patches(0.5, 1.0), locs([0, 0], [1, 1]), mask)
    expected = (16 * (-0.5 - 0.5 * LOG_EPS) + 16 * (0 - math.log(0.5))) / 32
    assert got == pytest.approx(expected, rel=1e-12)


def test_ws_without_valid_instances_is_zero():
    assert ws_seg_loss(const_patches(0.5), locs(PAD), np.ones((1, 4, 4))) == 0.0


def brute_force_ws(patches, locations, mask):
    """The paper's formula, pixel by pixel and pair by pair (SPEC 8), in float64."""
    b_size, n_size, c, _ = patches.shape
    _, h, w = mask.shape
    origins = patch_origins(locations, c)
    valid = np.all(locations >= 0, axis=-1)

    def prediction(b, k, y, x):  # G_k at image pixel (y, x), 0 outside its patch
        a, col = y - origins[b, k, 0], x - origins[b, k, 1]
        return patches[b, k, a, col] if 0 <= a < c and 0 <= col < c else 0.0

    total = 0.0
    for b in range(b_size):
        for i in range(n_size):
            if not valid[b, i]:
                continue
            for a in range(c):
                for col in range(c):
                    y, x = origins[b, i, 0] + a, origins[b, i, 1] + col
                    fg = mask[b, y, x] if 0 <= y < h and 0 <= x < w else 0.0
                    g = patches[b, i, a, col]
                    others = sum(
                        math.log(min(max(1.0 - prediction(b, k, y, x), 1e-7), 1.0))
                        for k in range(n_size)
                        if k != i and valid[b, k]
                    )
                    total += -fg * g - (1 - fg) * (1 - g) - g * others
    return total / (c * c * max(1, int(valid.sum())))


@st.composite
def ws_inputs(draw):
    b, n = draw(st.integers(1, 2)), draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    c = draw(st.sampled_from([4, 8]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    locations = np.stack([rng.uniform(0, h - 1, (b, n)), rng.uniform(0, w - 1, (b, n))], -1)
    locations[rng.random((b, n)) < 0.25] = -1
    patches = rng.uniform(0, 1, (b, n, c, c))
    patches[rng.random(patches.shape) < 0.05] = 1.0  # exercise the clipped log
    mask = (rng.random((b, h, w)) < 0.5).astype(np.float64)
    return patches, locations.astype(np.float32), mask


@given(ws_inputs())
def test_ws_canvas_equals_brute_force_pairs(inputs):
    patches, locations, mask = inputs
    expected = brute_force_ws(patches, locations, mask)
    assert ws_seg_loss(patches, locations, mask) == pytest.approx(expected, rel=1e-9, abs=1e-12)


# ----------------------------------------------------------------------------- sobel_magnitude
def test_sobel_of_a_constant_patch():
    # Constant v = 0.4 with zero padding: corner (0, 0): gx = (2 + 1) * v, gy = 3v ->
    # sqrt(18 v^2 / 8) = 1.5 v; top edge (0, 1): gx = 0, gy = (1 + 2 + 1) * v ->
    # sqrt(16 v^2 / 8) = sqrt(2) v; interior: gx = gy = 0 -> clipped to sqrt(1e-9).
    phi = sobel_magnitude(const_patches(0.4, c=8))[0, 0]
    assert phi[0, 0] == pytest.approx(0.6) and phi[7, 7] == pytest.approx(0.6)
    assert phi[0, 3] == pytest.approx(math.sqrt(2) * 0.4)
    assert phi[5, 7] == pytest.approx(math.sqrt(2) * 0.4)
    np.testing.assert_allclose(phi[1:-1, 1:-1], PHI_FLOOR, rtol=1e-12)


def test_sobel_of_a_vertical_step():
    # Columns 0, 1 hold 0 and columns 2, 3 hold 0.25 (a step along x).
    # (1, 1): gx = (1 + 2 + 1) * (0.25 - 0) = 1, gy = 0 -> sqrt(1/8).
    # (1, 3): gx = 4 * (0 (padding) - 0.25) = -1 -> sqrt(1/8).
    # (0, 2): gx = (2 + 1) * 0.25 = 0.75; gy = 1*0 + 2*0.25 + 1*0.25 = 0.75 -> sqrt(2 * 0.5625 / 8).
    # (1, 0): every neighbour is 0 -> sqrt(1e-9).
    patch = np.zeros((1, 1, 4, 4))
    patch[..., 2:] = 0.25
    phi = sobel_magnitude(patch)[0, 0]
    assert phi[1, 1] == pytest.approx(math.sqrt(1 / 8))
    assert phi[1, 3] == pytest.approx(math.sqrt(1 / 8))
    assert phi[0, 2] == pytest.approx(0.375)
    assert phi[1, 0] == pytest.approx(PHI_FLOOR)
    # gy is the transpose: the transposed patch gives the transposed magnitude.
    np.testing.assert_allclose(sobel_magnitude(patch.transpose(0, 1, 3, 2))[0, 0], phi.T)


def test_sobel_is_clipped_at_one():
    # A 0 -> 1 step: gx = 4 at (1, 1) -> 16 / 8 = 2, clipped to 1.
    patch = np.zeros((1, 1, 4, 4))
    patch[..., 2:] = 1.0
    assert sobel_magnitude(patch)[0, 0, 1, 1] == 1.0


@given(st.floats(0, 1), st.sampled_from([4, 8, 12]))
def test_sobel_interior_of_any_constant_patch_is_the_floor(v, c):
    phi = sobel_magnitude(np.full((1, 2, c, c), v))
    np.testing.assert_allclose(phi[..., 1:-1, 1:-1], PHI_FLOOR, rtol=1e-12)


# ----------------------------------------------------------------------------- boundary_loss
def test_boundary_single_instance_hand_computed():
    # 2x2 image, LOI (0, 0), c = 4: origin (-2, -2), patch pixels a, b in {2, 3} land on the image.
    # Constant v = 0.4: (2, 2) interior -> sqrt(1e-9); (2, 3), (3, 2) edges -> sqrt(2) * 0.4;
    # (3, 3) corner -> 0.6. B_P = 0: the loss is the mean of Huber_0.5(tanh(phi)) over 4 pixels;
    # tanh(0.566) = 0.512 and tanh(0.6) = 0.537 take the linear branch 0.5|x| - 0.125.
    b_h = [math.tanh(PHI_FLOOR), math.tanh(math.sqrt(2) * 0.4)]
    b_h += [math.tanh(math.sqrt(2) * 0.4), math.tanh(0.6)]
    expected = sum(huber_half(-v) for v in b_h) / 4
    got = boundary_loss(const_patches(0.4), locs([0, 0]), np.zeros((1, 2, 2)))
    assert got == pytest.approx(expected, rel=1e-12)


def test_boundary_sums_overlapping_instances_before_tanh():
    # Two instances with the same origin: B_H = tanh(2 phi). B_P = 0.5 everywhere.
    # Pixel (0, 0) (patch (2, 2)): tanh(2 sqrt(1e-9)); (1, 1) (patch corner): tanh(1.2) = 0.834.
    got = boundary_loss(const_patches(0.4, 0.4), locs([0, 0], [1, 1]), np.full((1, 2, 2), 0.5))
    b_h = [math.tanh(2 * PHI_FLOOR), math.tanh(2 * math.sqrt(2) * 0.4)]
    b_h += [math.tanh(2 * math.sqrt(2) * 0.4), math.tanh(1.2)]
    assert got == pytest.approx(sum(huber_half(0.5 - v) for v in b_h) / 4, rel=1e-12)


def test_boundary_without_valid_instances_compares_with_zero():
    # B_H = 0: Huber_0.5(0.2) = 0.02 on image 0, Huber_0.5(0.9) = 0.45 - 0.125 on image 1.
    b_p = np.stack([np.full((3, 3), 0.2), np.full((3, 3), 0.9)])
    locations = np.full((2, 1, 2), -1.0)
    got = boundary_loss(np.full((2, 1, 4, 4), 0.5), locations, b_p)
    assert got == pytest.approx((0.02 + 0.325) / 2, rel=1e-12)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("loss", [fs_seg_loss, ws_seg_loss, boundary_loss])
def test_bad_inputs_name_the_argument(loss):
    image = np.zeros((1, 4, 4), np.int32)
    good = const_patches(0.5)
    with pytest.raises(ValueError, match="patches"):
        loss(good[0], locs([1, 1]), image)
    with pytest.raises(ValueError, match="patches"):
        loss(np.full((1, 1, 6, 6), 0.5), locs([1, 1]), image)  # c = 6 is no multiple of 4
    with pytest.raises(ValueError, match="patches"):
        loss(np.full((1, 1, 4, 8), 0.5), locs([1, 1]), image)
    with pytest.raises(ValueError, match="patches"):
        loss(np.full((1, 1, 4, 4), np.nan), locs([1, 1]), image)
    with pytest.raises(ValueError, match="locations"):
        loss(good, locs([1, 1], [2, 2]), image)
    with pytest.raises(ValueError, match="locations"):
        loss(good, np.zeros((1, 1, 3)), image)
    with pytest.raises(ValueError, match="batch"):
        loss(good, locs([1, 1]), np.zeros((2, 4, 4), np.int32))
    with pytest.raises(ValueError):
        loss(good, locs([1, 1]), np.zeros((4, 4), np.int32))


def test_bad_image_arguments_are_named():
    good = const_patches(0.5)
    with pytest.raises(ValueError, match="label"):
        fs_seg_loss(good, locs([1, 1]), np.zeros((1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="mask"):
        ws_seg_loss(good, locs([1, 1]), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="boundary_pred"):
        boundary_loss(good, locs([1, 1]), np.full((1, 4, 4), np.inf))
    # a LOI outside the image counts as padding (SPEC 8): its patch does not fit the canvas
    assert ws_seg_loss(good, locs([1, 4]), np.zeros((1, 4, 4))) == 0.0
    with pytest.raises(ValueError, match="patches"):
        sobel_magnitude(np.zeros((4, 4)))
