"""Hand-computed cases and properties for the oracle label rendering (SPEC 9)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lacss_core.oracle import patch_origins, render_label

PAD = [-1.0, -1.0]


def locs(*rows):
    return np.array([rows], np.float32)


def render(patches, locations, scores, shape=(4, 4), **kw):
    return render_label(np.array([patches]), locations, np.array([scores], np.float32), shape, **kw)


def test_higher_score_wins_the_overlap():
    # 4x4 image, c = 4. Row 0 at (1, 1): origin (-2, -2), its patch pixels (2..3, 2..3) are image
    # pixels (0..1, 0..1). Row 1 at (3, 3): origin (0, 0), patch = image; it predicts rows 1..3.
    # Scores 0.3, 0.9 -> ranks 2, 1. Image row 0, cols 0..1 -> 2 (only row 0 covers them);
    # rows 1..3 -> 1 (row 1 wins the overlap at (1, 0..1)); row 0, cols 2..3 -> 0.
    first = np.full((4, 4), 0.9)
    second = np.zeros((4, 4))
    second[1:] = 0.9
    got = render([first, second], locs([1, 1], [3, 3]), [0.3, 0.9])
    expected = np.array([[2, 2, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]])
    np.testing.assert_array_equal(got[0], expected)
    assert got.dtype == np.int32


def test_equal_scores_go_to_the_lower_index():
    # Same score and origin (0, 0); row 0 covers the left half, row 1 everything. Row 0 ranks
    # first: left half 1, right half 2. Swapping the rows swaps the ranks: all 1.
    left = np.zeros((4, 4))
    left[:, :2] = 1
    got = render([left, np.ones((4, 4))], locs([3, 3], [2, 2]), [0.5, 0.5])
    np.testing.assert_array_equal(got[0], [[1, 1, 2, 2]] * 4)
    got = render([np.ones((4, 4)), left], locs([2, 2], [3, 3]), [0.5, 0.5])
    np.testing.assert_array_equal(got, 1)


def test_threshold_is_strict_and_configurable():
    # G = 0.5 is not > 0.5; nextafter(0.5) in float32 is. Threshold 0.25 takes both.
    g = np.full((4, 4), 0.5)
    g[0, 0] = np.nextafter(np.float32(0.5), np.float32(1))
    got = render([g], locs([3, 3]), [0.8])
    expected = np.zeros((4, 4), np.int32)
    expected[0, 0] = 1
    np.testing.assert_array_equal(got[0], expected)
    np.testing.assert_array_equal(render([g], locs([3, 3]), [0.8], threshold=0.25), 1)


def test_padded_rows_are_not_ranked_or_painted():
    # Row 0 is padding (score -1) with a full patch; rows 1, 2 score 0.5, 0.7 -> ranks 2, 1.
    # Row 2 at (3, 3) covers only patch column 3 (= image column 3); row 1 covers all.
    right = np.zeros((4, 4))
    right[:, 3] = 1
    got = render(
        [np.ones((4, 4)), np.ones((4, 4)), right], locs(PAD, [2, 2], [3, 3]), [-1, 0.5, 0.7]
    )
    expected = np.full((4, 4), 2)
    expected[:, 3] = 1
    np.testing.assert_array_equal(got[0], expected)


def test_ranks_are_not_compacted():
    # The best-scoring row predicts nothing: its rank 1 is absent and the other row paints 2.
    got = render([np.zeros((4, 4)), np.ones((4, 4))], locs([3, 3], [3, 3]), [0.9, 0.1])
    np.testing.assert_array_equal(got, 2)


def test_patches_hanging_outside_are_cropped():
    # 6x5 image, c = 8, LOI (5, 4) on the far border: q = 2, cy = 2, cx = 2 -> origin (0, 0);
    # the 8x8 patch covers image rows 0..7 and cols 0..7, of which 6 x 5 remain.
    # LOI (0, 0): origin (-4, -4); its patch pixels (4..7, 4..7) cover image (0..3, 0..3).
    ones = np.ones((8, 8))
    got = render([ones], locs([5, 4]), [0.5], shape=(6, 5))
    np.testing.assert_array_equal(got, np.ones((1, 6, 5)))
    got = render([ones], locs([0, 0]), [0.5], shape=(6, 5))
    expected = np.zeros((6, 5), np.int32)
    expected[:4, :4] = 1
    np.testing.assert_array_equal(got[0], expected)


def test_no_valid_instance_gives_background():
    np.testing.assert_array_equal(render([np.ones((4, 4))], locs(PAD), [-1.0]), 0)


def test_each_image_ranks_its_own_instances():
    # Image 0: scores 0.2, 0.4 -> ranks 2, 1; image 1: row 1 padded -> row 0 rank 1.
    patches = np.ones((2, 2, 4, 4))
    locations = np.array([[[3, 3], [3, 3]], [[3, 3], PAD]], np.float32)
    got = render_label(patches, locations, np.array([[0.2, 0.4], [0.2, -1]]), (4, 4))
    np.testing.assert_array_equal(got[0], 1)
    np.testing.assert_array_equal(got[1], 1)
    half = patches.copy()
    half[0, 1, :2] = 0  # image 0, rank-1 row leaves rows 0..1 to the rank-2 row
    got = render_label(half, locations, np.array([[0.2, 0.4], [0.2, -1]]), (4, 4))
    np.testing.assert_array_equal(got[0], [[2] * 4, [2] * 4, [1] * 4, [1] * 4])


@st.composite
def label_inputs(draw):
    b, m = draw(st.integers(1, 2)), draw(st.integers(1, 5))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    c = draw(st.sampled_from([4, 8]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    locations = np.stack([rng.uniform(0, h - 1, (b, m)), rng.uniform(0, w - 1, (b, m))], -1)
    scores = rng.choice([0.25, 0.5, 0.75], size=(b, m))  # few values: many ties
    padded = rng.random((b, m)) < 0.25
    locations[padded], scores[padded] = -1, -1
    patches = rng.choice([0.0, 0.5, 0.9], size=(b, m, c, c))
    return patches, locations.astype(np.float32), scores, (h, w)


@given(label_inputs())
def test_each_pixel_goes_to_the_best_covering_instance(inputs):
    patches, locations, scores, (h, w) = inputs
    got = render_label(patches, locations, scores, (h, w))
    c = patches.shape[-1]
    origins = patch_origins(locations, c)
    valid = np.all(locations >= 0, axis=-1)
    for b, y, x in np.ndindex(got.shape):
        covering = [
            m
            for m in np.nonzero(valid[b])[0]
            if 0 <= y - origins[b, m, 0] < c
            and 0 <= x - origins[b, m, 1] < c
            and patches[b, m, y - origins[b, m, 0], x - origins[b, m, 1]] > 0.5
        ]
        if not covering:
            assert got[b, y, x] == 0
            continue
        best = max(covering, key=lambda m: (scores[b, m], -m))
        # rank = 1 + the number of valid rows ahead of `best` in the ranking.
        ahead = [
            m
            for m in np.nonzero(valid[b])[0]
            if scores[b, m] > scores[b, best] or (scores[b, m] == scores[b, best] and m < best)
        ]
        assert got[b, y, x] == 1 + len(ahead), (b, y, x)


def test_bad_inputs_name_the_argument():
    good = np.ones((1, 1, 4, 4))
    score = np.array([[0.5]])
    with pytest.raises(ValueError, match="patches"):
        render_label(np.ones((1, 1, 6, 6)), locs([1, 1]), score, (4, 4))
    with pytest.raises(ValueError, match="patches"):
        render_label(np.ones((1, 4, 4)), locs([1, 1]), score, (4, 4))
    with pytest.raises(ValueError, match="scores"):
        render_label(good, locs([1, 1]), np.array([[0.5, 0.2]]), (4, 4))
    with pytest.raises(ValueError, match="scores"):
        render_label(good, locs([1, 1]), np.array([[np.nan]]), (4, 4))
    with pytest.raises(ValueError, match="batch"):
        render_label(good, locs([1, 1]), np.array([[0.5], [0.5]]), (4, 4))
    with pytest.raises(ValueError, match="locations"):
        render_label(good, np.zeros((1, 1, 3)), score, (4, 4))
    with pytest.raises(ValueError, match="image_shape"):
        render_label(good, locs([1, 1]), score, (4, 0))
    with pytest.raises(ValueError, match="image_shape"):
        render_label(good, locs([1, 1]), score, (4,))
    with pytest.raises(ValueError, match="threshold"):
        render_label(good, locs([1, 1]), score, (4, 4), threshold=float("nan"))
