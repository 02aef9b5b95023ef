"""Hand-computed cases and properties for the oracle LPN targets (SPEC 3) and loss (SPEC 4)."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lacss_core.oracle import lpn_loss, lpn_targets

PAD = [-1.0, -1.0]


def targets(locs, image_shape, stride):
    return lpn_targets(np.array([locs], np.float32).reshape(1, -1, 2), image_shape, stride)


# ----------------------------------------------------------------------------- lpn_targets
def test_single_loi_positive_cells_and_offsets():
    # 16x16 image, stride 4 -> 4x4 grid, reference points at 1.5, 5.5, 9.5, 13.5.
    # Radius 1.5*4 = 6, so a cell is positive iff d^2 < 36. LOI g = (2, 3):
    #   (0,0): 0.5^2 + 1.5^2 = 2.5     (0,1): 0.5^2 + 2.5^2 = 6.5
    #   (1,0): 3.5^2 + 1.5^2 = 14.5    (1,1): 3.5^2 + 2.5^2 = 18.5
    #   (0,2): 0.5^2 + 6.5^2 = 42.5    (2,0): 7.5^2 + 1.5^2 = 58.5   -> negative
    score, offset = targets([[2, 3]], (16, 16), 4)
    expected = np.zeros((4, 4), np.float32)
    expected[:2, :2] = 1
    np.testing.assert_array_equal(score[0], expected)
    # Offsets are (g - p) / 4 on every cell: (0,0) -> (0.5, 1.5)/4, (3,3) -> (-11.5, -10.5)/4.
    np.testing.assert_array_equal(offset[0, 0, 0], [0.125, 0.375])
    np.testing.assert_array_equal(offset[0, 3, 3], [-2.875, -2.625])
    assert score.dtype == np.float32 and offset.dtype == np.float32


def test_nearest_loi_gives_the_offset():
    # Second LOI (13, 13) is nearest to cell (3,3) at p = (13.5, 13.5): d^2 = 0.5 -> positive,
    # offset (-0.5, -0.5)/4. Cell (0,0) still takes the first LOI.
    score, offset = targets([[2, 3], [13, 13]], (16, 16), 4)
    assert score[0, 3, 3] == 1
    np.testing.assert_array_equal(offset[0, 3, 3], [-0.125, -0.125])
    np.testing.assert_array_equal(offset[0, 0, 0], [0.125, 0.375])


def test_distance_tie_goes_to_lower_index():
    # Cell (0,0), p = (1.5, 1.5), stride 4: LOIs (1.5, 0.5) and (1.5, 2.5) both at d^2 = 1.
    # The lower index wins: offset (0, -1)/4 in the given order, (0, +1)/4 when swapped.
    _, offset = targets([[1.5, 0.5], [1.5, 2.5]], (8, 8), 4)
    np.testing.assert_array_equal(offset[0, 0, 0], [0.0, -0.25])
    _, offset = targets([[1.5, 2.5], [1.5, 0.5]], (8, 8), 4)
    np.testing.assert_array_equal(offset[0, 0, 0], [0.0, 0.25])


def test_positive_radius_is_strict():
    # LOI (7.5, 1.5) against p = (1.5, 1.5): d^2 = 36 = (1.5*4)^2, not < 36 -> negative.
    # Cell (1,0), p = (5.5, 1.5): d^2 = 4 -> positive.
    score, _ = targets([[7.5, 1.5]], (16, 16), 4)
    assert score[0, 0, 0] == 0
    assert score[0, 1, 0] == 1


def test_loi_at_origin_and_on_far_border():
    # 8x8 image, stride 2: 4x4 grid, points 0.5, 2.5, 4.5, 6.5; positive iff d^2 < 3^2 = 9.
    # LOI (0, 0): (0,0) d^2 = 0.5, (0,1) = (1,0) = 0.25 + 6.25 = 6.5, (1,1) = 12.5 -> negative.
    # LOI (7, 7): (3,3) d^2 = 0.5 with offset (0.5, 0.5)/2.
    score, offset = targets([[0, 0], [7, 7]], (8, 8), 2)
    expected = np.zeros((4, 4), np.float32)
    expected[0, 0] = expected[0, 1] = expected[1, 0] = 1
    expected[3, 3] = expected[2, 3] = expected[3, 2] = 1
    np.testing.assert_array_equal(score[0], expected)
    np.testing.assert_array_equal(offset[0, 0, 0], [-0.25, -0.25])
    np.testing.assert_array_equal(offset[0, 3, 3], [0.25, 0.25])


def test_grid_rounds_up_for_sizes_not_divisible_by_stride():
    # H, W = 10, 6 with stride 4 -> ceil(10/4) x ceil(6/4) = 3 x 2.
    score, offset = targets([[9, 5]], (10, 6), 4)
    assert score.shape == (1, 3, 2) and offset.shape == (1, 3, 2, 2)
    # Cell (2,1), p = (9.5, 5.5) lies outside the image; offset (-0.5, -0.5)/4.
    np.testing.assert_array_equal(offset[0, 2, 1], [-0.125, -0.125])


def test_no_valid_loi_gives_zeros():
    # Rows with any negative coordinate are padding, including (-1, 5) and (5, -1).
    score, offset = targets([PAD, [-1, 5], [5, -1]], (8, 8), 4)
    assert not score.any() and not offset.any()


def test_batch_images_are_independent():
    locs = np.array([[[2, 3], PAD], [PAD, PAD]], np.float32)
    score, offset = lpn_targets(locs, (16, 16), 4)
    single, _ = targets([[2, 3]], (16, 16), 4)
    np.testing.assert_array_equal(score[0], single[0])
    assert not score[1].any() and not offset[1].any()


@st.composite
def padded_locations(draw):
    """Valid LOIs in a 24x20 image plus padding rows, as (valid rows, padded permutation)."""
    n = draw(st.integers(0, 5))
    coords = st.tuples(st.integers(0, 23 * 4), st.integers(0, 19 * 4))
    valid = [[y / 4, x / 4] for y, x in draw(st.lists(coords, min_size=n, max_size=n))]
    pads = draw(st.lists(st.sampled_from([PAD, [-1, 3], [4, -2]]), max_size=4))
    slots = draw(st.permutations(range(n + len(pads))))
    rows = [None] * (n + len(pads))
    # Valid rows keep their relative order (it decides ties); padding goes anywhere.
    for slot, row in zip(sorted(slots[:n]), valid, strict=True):
        rows[slot] = row
    for slot, row in zip(slots[n:], pads, strict=True):
        rows[slot] = row
    return valid, rows


@given(padded_locations(), st.sampled_from([2, 4, 8]))
def test_targets_ignore_padding_rows(case, stride):
    valid, padded = case
    compact = lpn_targets(np.array([valid or [PAD]], np.float32), (24, 20), stride)
    shuffled = lpn_targets(np.array([padded or [PAD]], np.float32), (24, 20), stride)
    for a, b in zip(compact, shuffled, strict=True):
        np.testing.assert_array_equal(a, b)


@given(padded_locations(), st.sampled_from([2, 4, 8]))
def test_offsets_point_at_the_nearest_loi(case, stride):
    valid, _ = case
    if not valid:
        return
    score, offset = lpn_targets(np.array([valid], np.float32), (24, 20), stride)
    gts = np.array(valid)
    for i, j in np.ndindex(score.shape[1:]):
        p = np.array([i * stride + (stride - 1) / 2, j * stride + (stride - 1) / 2])
        target = p + stride * offset[0, i, j]
        d2 = ((gts - p) ** 2).sum(axis=1)
        assert any(np.array_equal(target, g) for g in gts[d2 == d2.min()])
        assert score[0, i, j] == (d2.min() < (1.5 * stride) ** 2)


# ----------------------------------------------------------------------------- lpn_loss
def test_loss_hand_computed():
    # One positive cell (S = 0.8) and one negative (S = 0.3):
    #   focal: p_t = 0.8 -> 0.25 * 0.2^2 * -log 0.8 ; p_t = 1 - 0.3 = 0.7 -> 0.25 * 0.3^2 * -log 0.7
    #   <L_S> = mean over the 2 cells.
    #   offsets on the positive cell: residuals (0.5-0.25, -3-0) = (0.25, -3):
    #   Huber_1: 0.5*0.25^2 = 0.03125 and 1*(3 - 0.5) = 2.5; <L_R> = 2.53125 / (2*1).
    #   The negative cell's huge offsets are masked out.
    scores = np.array([[[0.8, 0.3]]])
    offsets = np.array([[[[0.5, -3.0], [10.0, 10.0]]]])
    score_target = np.array([[[1.0, 0.0]]])
    offset_target = np.array([[[[0.25, 0.0], [0.0, 0.0]]]])
    focal = (0.25 * 0.04 * -math.log(0.8) + 0.25 * 0.09 * -math.log(0.7)) / 2
    expected = focal + 2.53125 / 2
    loss = lpn_loss(scores, offsets, score_target, offset_target)
    assert loss.dtype == np.float64
    assert loss == pytest.approx(expected, rel=1e-12)


def test_loss_without_positives_has_no_offset_term():
    # S_T = 0 everywhere: <L_R> = 0 / (2 * max(1, 0)) = 0; <L_S> = 0.25 * 0.5^2 * -log 0.5.
    scores = np.full((1, 1, 1), 0.5)
    loss = lpn_loss(scores, np.full((1, 1, 1, 2), 7.0), np.zeros((1, 1, 1)), np.zeros((1, 1, 1, 2)))
    assert loss == pytest.approx(0.25 * 0.25 * math.log(2), rel=1e-12)


def test_loss_clips_only_inside_the_log():
    # Positive cell with S = 0: p_t = 0, log clipped at 1e-7: 0.25 * 1^2 * -log(1e-7).
    # Positive cell with S = 1: p_t = 1 -> (1 - 1)^2 = 0, no loss.
    zeros = np.zeros((1, 1, 2, 2))
    loss = lpn_loss(np.array([[[0.0, 1.0]]]), zeros, np.ones((1, 1, 2)), zeros)
    assert loss == pytest.approx(0.25 * -math.log(1e-7) / 2, rel=1e-12)


def test_loss_offset_average_is_over_positives_of_the_whole_batch():
    # Two images, three positive cells in all, each with residual (1, 0) -> Huber 0.5 + 0 = 0.5.
    # <L_R> = 3 * 0.5 / (2 * 3) = 0.25. Scores equal the targets, so <L_S> = 0.
    score_target = np.array([[[1.0, 1.0]], [[1.0, 0.0]]])
    offsets = np.zeros((2, 1, 2, 2))
    offsets[..., 0] = 1.0
    loss = lpn_loss(score_target, offsets, score_target, np.zeros((2, 1, 2, 2)))
    assert loss == pytest.approx(0.25, rel=1e-12)


def test_loss_hyperparameters():
    # alpha = 1, gamma = 0 is plain cross-entropy: -log 0.8; delta = 2 keeps a residual of 1.5
    # in the quadratic branch: 0.5 * 1.5^2 = 1.125, divided by 2 * 1 positive.
    offsets = np.array([[[[1.5, 0.0]]]])
    loss = lpn_loss(
        np.array([[[0.8]]]),
        offsets,
        np.ones((1, 1, 1)),
        np.zeros((1, 1, 1, 2)),
        alpha=1.0,
        gamma=0.0,
        delta=2.0,
    )
    assert loss == pytest.approx(-math.log(0.8) + 1.125 / 2, rel=1e-12)


def brute_force_loss(scores, offsets, score_target, offset_target, alpha, gamma, delta):
    """Per-cell loop with scalar math, the formula of SPEC 4 read literally."""
    focal_sum, huber_sum, positives = 0.0, 0.0, 0
    for idx in np.ndindex(scores.shape):
        s, positive = float(scores[idx]), score_target[idx] == 1
        p_t = s if positive else 1 - s
        focal_sum += -alpha * (1 - p_t) ** gamma * math.log(min(max(p_t, 1e-7), 1))
        if positive:
            positives += 1
            for r, t in zip(offsets[idx], offset_target[idx], strict=True):
                x = abs(float(r) - float(t))
                huber_sum += 0.5 * x * x if x <= delta else delta * (x - delta / 2)
    return focal_sum / scores.size + huber_sum / (2 * max(1, positives))


@st.composite
def loss_inputs(draw):
    b, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    unit = st.floats(0, 1)
    off = st.floats(-4, 4)
    scores = np.array(draw(st.lists(unit, min_size=b * h * w, max_size=b * h * w)))
    target = np.array(draw(st.lists(st.booleans(), min_size=b * h * w, max_size=b * h * w)))
    offsets = np.array(draw(st.lists(off, min_size=4 * b * h * w, max_size=4 * b * h * w)))
    return (
        scores.reshape(b, h, w),
        offsets[: 2 * b * h * w].reshape(b, h, w, 2),
        target.astype(np.float64).reshape(b, h, w),
        offsets[2 * b * h * w :].reshape(b, h, w, 2),
    )


@given(
    loss_inputs(),
    st.floats(0, 1),
    st.sampled_from([0.0, 1.0, 2.0, 2.5]),
    st.sampled_from([0.5, 1.0, 3.0]),
)
def test_loss_matches_brute_force_and_is_non_negative(inputs, alpha, gamma, delta):
    loss = lpn_loss(*inputs, alpha=alpha, gamma=gamma, delta=delta)
    assert loss >= 0
    assert loss == pytest.approx(
        brute_force_loss(*inputs, alpha, gamma, delta), rel=1e-9, abs=1e-12
    )


# ----------------------------------------------------------------------------- bad input
LOCS = np.zeros((1, 2, 2))


@pytest.mark.parametrize(
    "args, name",
    [
        ((np.zeros((2, 2)), (8, 8), 4), "locations"),
        ((np.zeros((1, 2, 3)), (8, 8), 4), "locations"),
        ((np.full((1, 2, 2), np.nan), (8, 8), 4), "locations"),
        ((LOCS, (0, 8), 4), "image_shape"),
        ((LOCS, (8,), 4), "image_shape"),
        ((LOCS, (8, 8), 0), "stride"),
        ((LOCS, (8, 8), 2.0), "stride"),
    ],
)
def test_targets_reject_bad_input(args, name):
    with pytest.raises(ValueError, match=name):
        lpn_targets(*args)


GOOD = (np.full((1, 2, 2), 0.5), np.zeros((1, 2, 2, 2)), np.ones((1, 2, 2)), np.zeros((1, 2, 2, 2)))


@pytest.mark.parametrize(
    "position, value, name",
    [
        (0, np.full((1, 2), 0.5), "scores"),
        (0, np.full((1, 2, 2), 1.5), "scores"),
        (0, np.full((1, 2, 2), np.inf), "scores"),
        (1, np.zeros((1, 2, 2, 3)), "offsets"),
        (1, np.zeros((1, 2, 3, 2)), "offsets"),
        (1, np.full((1, 2, 2, 2), np.nan), "offsets"),
        (2, np.full((1, 2, 2), 0.5), "score_target"),
        (2, np.ones((1, 3, 2)), "score_target"),
        (3, np.zeros((2, 2, 2, 2)), "offset_target"),
    ],
)
def test_loss_rejects_bad_arrays(position, value, name):
    args = list(GOOD)
    args[position] = value
    with pytest.raises(ValueError, match=name):
        lpn_loss(*args)


@pytest.mark.parametrize(
    "kwargs, name",
    [(dict(alpha=-1.0), "alpha"), (dict(gamma=-1.0), "gamma"), (dict(delta=0.0), "delta")],
)
def test_loss_rejects_bad_hyperparameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        lpn_loss(*GOOD, **kwargs)
