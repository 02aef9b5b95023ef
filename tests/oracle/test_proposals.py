"""Hand-computed cases and properties for the oracle decode/NMS (SPEC 5) and mixing (SPEC 6)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lacss_core.oracle import decode_proposals, mix_locations, nms

PAD = [-1.0, -1.0]


# ----------------------------------------------------------------------------- decode_proposals
def test_decode_crops_padded_grid_and_clips_to_image():
    # 8x8 image, stride 4 -> 2x2 grid (points 1.5, 5.5); the input grid is 3x3 (padded input).
    #   (0,0): (1.5, 1.5) + 4*(-1, -1)    = (-2.5, -2.5) -> clipped to (0, 0)
    #   (0,1): (1.5, 5.5) + 4*(0.25, -0.5) = (2.5, 3.5)
    #   (1,0): (5.5, 1.5) + 0              = (5.5, 1.5)
    #   (1,1): (5.5, 5.5) + 4*(2, 2)      = (13.5, 13.5) -> clipped to (7, 7)
    scores = np.arange(9, dtype=np.float32).reshape(1, 3, 3) / 10
    offsets = np.full((1, 3, 3, 2), 9.0, np.float32)  # the cropped row/column must not be read
    offsets[0, :2, :2] = [[[-1, -1], [0.25, -0.5]], [[0, 0], [2, 2]]]
    locations, flat_scores = decode_proposals(scores, offsets, (8, 8), 4)
    np.testing.assert_array_equal(locations[0], [[0, 0], [2.5, 3.5], [5.5, 1.5], [7, 7]])
    # Flat index i*w + j over the 2x2 crop: scores (0,0), (0,1), (1,0), (1,1) = 0, .1, .3, .4.
    np.testing.assert_array_equal(flat_scores[0], np.float32([0.0, 0.1, 0.3, 0.4]))
    assert locations.dtype == np.float32 and flat_scores.dtype == np.float32


def test_decode_clips_reference_points_outside_the_image():
    # 10x6 image, stride 4 -> 3x2 grid; cell (2,1) has p = (9.5, 5.5), outside [0,9] x [0,5],
    # so with zero offset it decodes to (9, 5). Cell (0,0) decodes to p = (1.5, 1.5).
    locations, _ = decode_proposals(np.zeros((1, 3, 2)), np.zeros((1, 3, 2, 2)), (10, 6), 4)
    assert locations.shape == (1, 6, 2)
    np.testing.assert_array_equal(locations[0, 5], [9, 5])
    np.testing.assert_array_equal(locations[0, 0], [1.5, 1.5])


def test_decode_batch():
    offsets = np.zeros((2, 1, 1, 2))
    offsets[1, 0, 0] = [0.25, -0.25]  # (1.5, 1.5) + 4*(0.25, -0.25) = (2.5, 0.5)
    locations, _ = decode_proposals(np.zeros((2, 1, 1)), offsets, (4, 4), 4)
    np.testing.assert_array_equal(locations[:, 0], [[1.5, 1.5], [2.5, 0.5]])


# ----------------------------------------------------------------------------- nms
# Five candidates; sorted by score: 4 (0.95), 0 (0.9), 1 (0.8), 2 (0.7), 3 (0.6).
LOCS = np.array([[[0, 0], [0, 3], [0, 10], [5, 0], [0, 1]]], np.float32)
SCORES = np.array([[0.9, 0.8, 0.7, 0.6, 0.95]], np.float32)


def kept_indices(**kwargs):
    _, _, indices = nms(LOCS, SCORES, **{"max_output": 4, "nms_distance": 4.0, **kwargs})
    return indices[0].tolist()


def test_nms_hand_computed():
    # nms_distance 4 -> suppress if d^2 <= 16. Walk: 4 (0,1) kept; 0 (0,0): d^2 1 -> dropped;
    # 1 (0,3): d^2 4 -> dropped; 2 (0,10): d^2 81 -> kept; 3 (5,0): d^2 26 and 125 -> kept.
    locations, scores, indices = nms(LOCS, SCORES, max_output=4, nms_distance=4.0)
    np.testing.assert_array_equal(locations[0], [[0, 1], [0, 10], [5, 0], PAD])
    np.testing.assert_array_equal(scores[0], np.float32([0.95, 0.7, 0.6, -1]))
    np.testing.assert_array_equal(indices[0], [4, 2, 3, -1])
    assert locations.dtype == np.float32 and scores.dtype == np.float32
    assert indices.dtype == np.int32


def test_nms_limits():
    # min_score 0.65 drops 3 (0.6); max_output 2 stops after two kept; pre_nms_topk 2 leaves
    # only candidates 4 and 0, and 0 is suppressed by 4.
    assert kept_indices(min_score=0.65) == [4, 2, -1, -1]
    assert kept_indices(max_output=2) == [4, 2]
    assert kept_indices(pre_nms_topk=2) == [4, -1, -1, -1]
    # nms_distance 0.5 (d^2 0.25) suppresses nothing here.
    assert kept_indices(nms_distance=0.5, max_output=6) == [4, 0, 1, 2, 3, -1]


def test_nms_threshold_edges():
    # d^2 = 16 exactly is not > 4^2: suppressed. A score equal to min_score (0.5) is kept.
    locations = np.array([[[0, 0], [0, 4], [3, 9]]], np.float32)
    scores = np.array([[0.75, 0.625, 0.5]], np.float32)
    _, _, indices = nms(locations, scores, max_output=3, nms_distance=4.0, min_score=0.5)
    np.testing.assert_array_equal(indices[0], [0, 2, -1])


def test_nms_suppression_chain():
    # In score order: 0 (0,0) kept; 1 (0,3): d^2 9 <= 16 -> dropped; 2 (0,6): d^2 9 to the
    # dropped 1 does not count, d^2 36 to 0 -> kept; 3 (20,20) kept.
    locations = np.array([[[0, 0], [0, 3], [0, 6], [20, 20]]], np.float32)
    scores = np.array([[0.875, 0.75, 0.625, 0.5]], np.float32)
    _, _, indices = nms(locations, scores, max_output=4, nms_distance=4.0)
    np.testing.assert_array_equal(indices[0], [0, 2, 3, -1])


def test_nms_score_ties_go_to_lower_index():
    # Equal scores keep index order; with pre_nms_topk = 2 the cut keeps the lower tied index.
    locations = np.array([[[0, 0], [0, 10], [0, 20], [0, 30]]], np.float32)
    scores = np.array([[0.5, 0.9, 0.5, 0.5]], np.float32)
    _, _, indices = nms(locations, scores, max_output=4, nms_distance=1.0)
    np.testing.assert_array_equal(indices[0], [1, 0, 2, 3])
    _, _, indices = nms(locations, scores, max_output=4, nms_distance=1.0, pre_nms_topk=2)
    np.testing.assert_array_equal(indices[0], [1, 0, -1, -1])


def test_nms_everything_suppressed_or_below_min_score():
    # All at one point: only the best survives (also with nms_distance 0: d^2 0 is not > 0).
    same = np.zeros((1, 3, 2), np.float32)
    scores = np.array([[0.25, 0.75, 0.5]], np.float32)
    for distance in (0.0, 2.0):
        _, _, indices = nms(same, scores, max_output=3, nms_distance=distance)
        np.testing.assert_array_equal(indices[0], [1, -1, -1])
    locations, scores_out, indices = nms(
        LOCS, SCORES, max_output=2, nms_distance=4.0, min_score=0.99
    )
    np.testing.assert_array_equal(indices, [[-1, -1]])
    np.testing.assert_array_equal(scores_out, [[-1, -1]])
    np.testing.assert_array_equal(locations, [[PAD, PAD]])


def test_nms_padded_rows_score_below_min_score():
    # A -1 padded row with score -1 is never kept for min_score >= 0.
    locations = np.array([[[3, 3], PAD]], np.float32)
    scores = np.array([[0.5, -1.0]], np.float32)
    _, _, indices = nms(locations, scores, max_output=2, nms_distance=1.0)
    np.testing.assert_array_equal(indices[0], [0, -1])


def test_nms_batch_images_are_independent():
    locations = np.concatenate([LOCS, LOCS[:, ::-1]])
    scores = np.concatenate([SCORES, SCORES[:, ::-1]])
    _, _, indices = nms(locations, scores, max_output=4, nms_distance=4.0)
    # The reversed image holds candidate k at 4 - k.
    np.testing.assert_array_equal(indices, [[4, 2, 3, -1], [0, 2, 1, -1]])


@st.composite
def nms_inputs(draw):
    """Candidates on a quarter-pixel lattice (exact squared distances) with tied scores likely."""
    k = draw(st.integers(1, 24))
    coord = st.integers(0, 80).map(lambda v: v / 4)
    locations = draw(st.lists(st.tuples(coord, coord), min_size=k, max_size=k))
    scores = draw(st.lists(st.integers(0, 8).map(lambda v: v / 8), min_size=k, max_size=k))
    kwargs = dict(
        max_output=draw(st.integers(1, 12)),
        nms_distance=draw(st.sampled_from([0.0, 1.0, 2.5, 5.0])),
        min_score=draw(st.sampled_from([0.0, 0.3, 0.5])),
        pre_nms_topk=draw(st.integers(1, 30)),
    )
    return np.array([locations], np.float32), np.array([scores], np.float32), kwargs


@given(nms_inputs())
def test_nms_properties(case):
    locations, scores, kwargs = case
    out_locations, out_scores, indices = nms(locations, scores, **kwargs)
    kept = [int(i) for i in indices[0] if i >= 0]
    n = len(kept)
    # Padding comes after the kept rows, with the sentinels.
    assert all(i >= 0 for i in indices[0, :n]) and all(i == -1 for i in indices[0, n:])
    np.testing.assert_array_equal(out_locations[0, n:], -1)
    np.testing.assert_array_equal(out_scores[0, n:], -1)
    # Kept rows are gathered from the input, ordered by score (ties -> lower index).
    np.testing.assert_array_equal(out_locations[0, :n], locations[0, kept])
    np.testing.assert_array_equal(out_scores[0, :n], scores[0, kept])
    keys = [(-scores[0, i], i) for i in kept]
    assert keys == sorted(keys)
    assert all(scores[0, i] >= kwargs["min_score"] for i in kept)
    # Kept points are pairwise farther apart than nms_distance.
    t2 = kwargs["nms_distance"] ** 2
    for a in range(n):
        for b in range(a):
            assert ((locations[0, kept[a]] - locations[0, kept[b]]) ** 2).sum() > t2
    # Unless the output is full, every dropped candidate in the top-k above min_score lies
    # within nms_distance of a kept candidate ranked before it.
    if n < kwargs["max_output"]:
        ranked = sorted(range(scores.shape[1]), key=lambda i: (-scores[0, i], i))
        for rank, i in enumerate(ranked[: kwargs["pre_nms_topk"]]):
            if i in kept or scores[0, i] < kwargs["min_score"]:
                continue
            earlier = [j for j in kept if ranked.index(j) < rank]
            assert any(((locations[0, i] - locations[0, j]) ** 2).sum() <= t2 for j in earlier)


# ----------------------------------------------------------------------------- mix_locations
def mixed(gts, proposals, mix_distance):
    return mix_locations(
        np.array([gts], np.float32), np.array([proposals], np.float32), mix_distance=mix_distance
    )[0]


def test_mix_hand_computed():
    # mix_distance 4 -> assign if d^2 <= 16.
    #   proposal 0 (12,10): GT0 d^2 4 -> GT0 takes it.
    #   proposal 1 (11,10): GT0 d^2 1, but GT0 is taken: nothing (no fall-through).
    #   proposal 2 (29,31): GT1 d^2 2 -> GT1 takes it.
    #   proposal 3 (50,50): GT1 d^2 800 > 16 -> unassigned. Padding is ignored / kept.
    out = mixed(
        [[10, 10], [30, 30], PAD],
        [[12, 10], [11, 10], [29, 31], [50, 50], PAD],
        4.0,
    )
    np.testing.assert_array_equal(out, [[12, 10], [29, 31], PAD])
    assert out.dtype == np.float32


def test_mix_never_falls_through_to_second_nearest():
    # Proposal (0,2) is nearest to GT0 (d^2 4 vs 9), which proposal (0,1) already took;
    # GT1 keeps its own location.
    out = mixed([[0, 0], [0, 5]], [[0, 1], [0, 2]], 4.0)
    np.testing.assert_array_equal(out, [[0, 1], [0, 5]])


def test_mix_ties_and_boundary():
    # (0,2) is equally far from GT0 and GT1 (d^2 4): the lower GT index takes it.
    # mix_distance 2: d^2 = 4 <= 4 still assigns (the paper's "below" read as <=).
    np.testing.assert_array_equal(mixed([[0, 0], [0, 4]], [[0, 2]], 2.0), [[0, 2], [0, 4]])
    # mix_distance 1.5: 4 > 2.25 -> nothing changes.
    np.testing.assert_array_equal(mixed([[0, 0], [0, 4]], [[0, 2]], 1.5), [[0, 0], [0, 4]])


def test_mix_without_valid_rows_copies_input():
    # No valid GT; padded rows such as (-1, 5) are copied unchanged.
    np.testing.assert_array_equal(mixed([PAD, [-1, 5]], [[0, 0]], 10.0), [PAD, [-1, 5]])
    # No valid proposal: every GT keeps its own location.
    np.testing.assert_array_equal(mixed([[3, 3], [0, 0]], [PAD, PAD], 10.0), [[3, 3], [0, 0]])


@st.composite
def mix_inputs(draw):
    coord = st.integers(0, 64).map(lambda v: v / 2)
    row = st.one_of(st.tuples(coord, coord), st.just((-1.0, -1.0)))
    n, m = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    gts = draw(st.lists(row, min_size=n, max_size=n))
    proposals = draw(st.lists(row, min_size=m, max_size=m))
    return gts, proposals, draw(st.sampled_from([0.0, 2.0, 5.0, 12.0]))


@given(mix_inputs())
def test_mix_outputs_gt_or_nearby_proposal(case):
    gts, proposals, mix_distance = case
    out = mixed(gts, proposals, mix_distance)
    gts, proposals = np.array(gts), np.array(proposals)
    used = []
    for gt, row in zip(gts, out, strict=True):
        if np.array_equal(row, gt):
            continue
        assert (gt >= 0).all(), "padded GT rows must stay unchanged"
        matches = [m for m, p in enumerate(proposals) if np.array_equal(p, row)]
        assert matches and ((row - gt) ** 2).sum() <= mix_distance**2
        used.append(matches[0])
    assert len(used) == len(set(used)), "a proposal can be taken by one GT only"


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "args, name",
    [
        ((np.zeros((1, 2)), np.zeros((1, 2, 2, 2)), (8, 8), 4), "scores"),
        ((np.zeros((1, 2, 2)), np.zeros((1, 2, 2, 3)), (8, 8), 4), "offsets"),
        ((np.zeros((1, 2, 2)), np.zeros((2, 2, 2, 2)), (8, 8), 4), "offsets"),
        ((np.zeros((1, 2, 2)), np.full((1, 2, 2, 2), np.nan), (8, 8), 4), "offsets"),
        ((np.zeros((1, 1, 2)), np.zeros((1, 1, 2, 2)), (8, 8), 4), "scores"),
        ((np.zeros((1, 2, 2)), np.zeros((1, 2, 2, 2)), (8, -8), 4), "image_shape"),
        ((np.zeros((1, 2, 2)), np.zeros((1, 2, 2, 2)), (8, 8), 0), "stride"),
    ],
)
def test_decode_rejects_bad_input(args, name):
    with pytest.raises(ValueError, match=name):
        decode_proposals(*args)


NMS_KW = dict(max_output=2, nms_distance=1.0)


@pytest.mark.parametrize(
    "locations, scores, kwargs, name",
    [
        (np.zeros((3, 2)), np.zeros((1, 3)), NMS_KW, "locations"),
        (np.zeros((1, 3, 2)), np.zeros((1, 3, 1)), NMS_KW, "scores"),
        (np.zeros((1, 3, 2)), np.zeros((2, 3)), NMS_KW, "scores"),
        (np.zeros((1, 3, 2)), np.zeros((1, 4)), NMS_KW, "scores"),
        (np.zeros((1, 3, 2)), np.full((1, 3), np.nan), NMS_KW, "scores"),
        (np.zeros((1, 3, 2)), np.zeros((1, 3)), dict(NMS_KW, max_output=0), "max_output"),
        (np.zeros((1, 3, 2)), np.zeros((1, 3)), dict(NMS_KW, nms_distance=-1.0), "nms_distance"),
        (np.zeros((1, 3, 2)), np.zeros((1, 3)), dict(NMS_KW, min_score=np.nan), "min_score"),
        (np.zeros((1, 3, 2)), np.zeros((1, 3)), dict(NMS_KW, pre_nms_topk=0), "pre_nms_topk"),
    ],
)
def test_nms_rejects_bad_input(locations, scores, kwargs, name):
    with pytest.raises(ValueError, match=name):
        nms(locations, scores, **kwargs)


@pytest.mark.parametrize(
    "gts, proposals, mix_distance, name",
    [
        (np.zeros((2, 2)), np.zeros((1, 2, 2)), 1.0, "gt_locations"),
        (np.zeros((1, 2, 2)), np.zeros((1, 2, 3)), 1.0, "proposals"),
        (np.zeros((1, 2, 2)), np.zeros((2, 2, 2)), 1.0, "proposals"),
        (np.full((1, 2, 2), np.inf), np.zeros((1, 2, 2)), 1.0, "gt_locations"),
        (np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), -1.0, "mix_distance"),
    ],
)
def test_mix_rejects_bad_input(gts, proposals, mix_distance, name):
    with pytest.raises(ValueError, match=name):
        mix_locations(gts, proposals, mix_distance=mix_distance)
