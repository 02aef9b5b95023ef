"""Conformance of ``ops.decode_proposals`` / ``ops.nms`` / ``ops.mix_locations`` (SPEC 5-6)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lacss_core import ops, oracle

from . import harness
from . import strategies_proposals as strat

PAD = [-1.0, -1.0]
NMS_EXACT = (0, 1)  # NMS locations and scores are gathered, so they must match exactly


# ----------------------------------------------------------------------------- decode_proposals
def test_decode_padded_grid_and_clipping(mode):
    # 8x8 image, stride 4: a 2x2 grid cropped out of a 3x3 input; offsets push cells outside.
    scores = (np.arange(9, dtype=np.float32) / 10).reshape(1, 3, 3)
    offsets = np.full((1, 3, 3, 2), 9.0, np.float32)
    offsets[0, :2, :2] = [[[-1, -1], [0.25, -0.5]], [[0, 0], [2, 2]]]
    harness.assert_conforms("decode_proposals", (scores, offsets, (8, 8), 4), {}, mode, exact=(1,))


@pytest.mark.parametrize("image_shape, stride", [((10, 6), 4), ((17, 13), 2), ((5, 30), 8)])
def test_decode_image_sizes(image_shape, stride, mode):
    rng = np.random.default_rng(stride)
    h, w = -(-image_shape[0] // stride), -(-image_shape[1] // stride)
    scores = rng.uniform(0, 1, (2, h + 1, w)).astype(np.float32)  # one padded row
    offsets = rng.normal(0, 1, (2, h + 1, w, 2)).astype(np.float32)
    args = (scores, offsets, image_shape, stride)
    harness.assert_conforms("decode_proposals", args, {}, mode, exact=(1,))


@given(predictions=strat.grid_predictions(batch=2, grid=(6, 5)))
def test_decode_random(predictions, mode):
    # (21, 18) with stride 4 is a 6x5 grid; (17, 13) crops it to 5x4.
    for image_shape in ((21, 18), (17, 13)):
        args = (*predictions, image_shape, 4)
        harness.assert_conforms("decode_proposals", args, {}, mode, exact=(1,))


# ----------------------------------------------------------------------------- nms
LOCS = np.array([[[0, 0], [0, 3], [0, 10], [5, 0], [0, 1]]], np.float32)
SCORES = np.array([[0.9, 0.8, 0.7, 0.6, 0.95]], np.float32)

NMS_CASES = {
    "hand computed": dict(max_output=4, nms_distance=4.0),
    "min_score": dict(max_output=4, nms_distance=4.0, min_score=0.65),
    "output full": dict(max_output=2, nms_distance=4.0),
    "pre_nms_topk": dict(max_output=4, nms_distance=4.0, pre_nms_topk=2),
    "nothing suppressed": dict(max_output=6, nms_distance=0.5),
    "all below min_score": dict(max_output=3, nms_distance=4.0, min_score=0.99),
}


@pytest.mark.parametrize("name", NMS_CASES)
def test_nms_cases(name, mode):
    harness.assert_conforms("nms", (LOCS, SCORES), NMS_CASES[name], mode, exact=NMS_EXACT)


def test_nms_threshold_edges(mode):
    # d^2 = 16 = 4^2 is suppressed (not >); the score equal to min_score is kept.
    locations = np.array([[[0, 0], [0, 4], [3, 9]]], np.float32)
    scores = np.array([[0.75, 0.625, 0.5]], np.float32)
    kwargs = dict(max_output=3, nms_distance=4.0, min_score=0.5)
    harness.assert_conforms("nms", (locations, scores), kwargs, mode, exact=NMS_EXACT)


@pytest.mark.parametrize("topk", [1, 2, 3, 4096])
def test_nms_score_ties(topk, mode):
    # Tied scores (including 0.0 against -0.0) keep index order, also across the top-k cut.
    locations = np.array([[[0, 0], [0, 10], [0, 20], [0, 30], [0, 40], [0, 50]]], np.float32)
    scores = np.array([[0.5, 0.9, 0.5, -0.0, 0.5, 0.0]], np.float32)
    kwargs = dict(max_output=6, nms_distance=1.0, min_score=-1.0, pre_nms_topk=topk)
    harness.assert_conforms("nms", (locations, scores), kwargs, mode, exact=NMS_EXACT)


def test_nms_suppression_chain(mode):
    # In score order: 0 keeps; 1 (3 px from 0) is dropped; 2 (3 px from 1, 6 px from 0) is kept
    # because 1 was dropped; 3 is far away. Greedy output order: 0, 2, 3.
    locations = np.array([[[0, 0], [0, 3], [0, 6], [20, 20]]], np.float32)
    scores = np.array([[0.875, 0.75, 0.625, 0.5]], np.float32)
    for max_output in (2, 4):
        kwargs = dict(max_output=max_output, nms_distance=4.0)
        harness.assert_conforms("nms", (locations, scores), kwargs, mode, exact=NMS_EXACT)


def test_nms_same_location_and_padding(mode):
    # Image 0: every candidate at one point -> only the best survives, even at distance 0.
    # Image 1: -1 padded rows with score -1 never pass min_score 0.
    locations = np.array([[[3, 3]] * 4, [[3, 3], PAD, [9, 9], PAD]], np.float32)
    scores = np.array([[0.25, 0.75, 0.5, 0.75], [0.5, -1, 0.25, -1]], np.float32)
    for distance in (0.0, 2.0):
        kwargs = dict(max_output=3, nms_distance=distance)
        harness.assert_conforms("nms", (locations, scores), kwargs, mode, exact=NMS_EXACT)


def test_nms_many_candidates(mode):
    # A realistic decode output: 32x32 grid, stride 4, min_score as at inference.
    rng = np.random.default_rng(0)
    locations = rng.uniform(0, 128, (2, 1024, 2)).astype(np.float32)
    scores = rng.uniform(0, 1, (2, 1024)).astype(np.float32)
    # pre_nms_topk 300 is not a multiple of NMS_WINDOW (32 candidates per loop step), so the
    # last window is padded.
    kwargs = dict(max_output=256, nms_distance=4.0, min_score=0.2, pre_nms_topk=300)
    harness.assert_conforms("nms", (locations, scores), kwargs, mode, exact=NMS_EXACT)


@given(candidates=strat.nms_candidates(batch=2, count=24), kwargs=strat.nms_settings)
def test_nms_random(candidates, kwargs, mode):
    harness.assert_conforms("nms", candidates, kwargs, mode, exact=NMS_EXACT)


@given(candidates=strat.nms_candidates(batch=2, count=100, extent=16.0))
def test_nms_random_crowded(candidates, mode):
    # More candidates than ops.proposals.NMS_WINDOW, crowded so that suppression chains cross
    # window boundaries.
    kwargs = dict(max_output=40, nms_distance=2.0)
    harness.assert_conforms("nms", candidates, kwargs, mode, exact=NMS_EXACT)


# ----------------------------------------------------------------------------- mix_locations
MIX_CASES = {
    # name: (GT LOIs, proposals, mix_distance)
    "hand computed": (
        [[10, 10], [30, 30], PAD],
        [[12, 10], [11, 10], [29, 31], [50, 50], PAD],
        4.0,
    ),
    "no fall-through": ([[0, 0], [0, 5]], [[0, 1], [0, 2]], 4.0),
    "GT tie -> lower index, <= boundary": ([[0, 0], [0, 4]], [[0, 2], PAD], 2.0),
    "out of reach": ([[0, 0], [0, 4]], [[0, 2], PAD], 1.5),
    "no valid GT": ([PAD, [-1, 5]], [[0, 0], [1, 1]], 10.0),
    "no valid proposal": ([[3, 3], [0, 0]], [PAD, PAD], 10.0),
}


@pytest.mark.parametrize("name", MIX_CASES)
def test_mix_cases(name, mode):
    gts, proposals, mix_distance = MIX_CASES[name]
    args = (np.array([gts], np.float32), np.array([proposals], np.float32))
    harness.assert_conforms(
        "mix_locations", args, dict(mix_distance=mix_distance), mode, exact=(0,)
    )


@given(
    gts=strat.padded_locations(batch=2, rows=6, image_shape=(16, 16)),
    proposals=strat.padded_locations(batch=2, rows=8, image_shape=(16, 16)),
    mix_distance=st.sampled_from([0.0, 1.5, 4.0]),
)
def test_mix_random(gts, proposals, mix_distance, mode):
    kwargs = dict(mix_distance=mix_distance)
    harness.assert_conforms("mix_locations", (gts, proposals), kwargs, mode, exact=(0,))


BAD_STATIC_INPUT = [
    # (function, args, kwargs, argument named in the error): checks that need no data values
    ("decode_proposals", (np.zeros((1, 1, 2)), np.zeros((1, 1, 2, 2)), (8, 8), 4), {}, "scores"),
    ("decode_proposals", (np.zeros((1, 2, 2)), np.zeros((1, 2, 2, 3)), (8, 8), 4), {}, "offsets"),
    ("nms", (LOCS, SCORES[:, :3]), dict(max_output=2, nms_distance=1.0), "scores"),
    ("nms", (LOCS, SCORES), dict(max_output=0, nms_distance=1.0), "max_output"),
    ("nms", (LOCS, SCORES), dict(max_output=2, nms_distance=-1.0), "nms_distance"),
    ("mix_locations", (LOCS, LOCS[..., :1]), dict(mix_distance=1.0), "proposals"),
    ("mix_locations", (LOCS, np.concatenate([LOCS, LOCS])), dict(mix_distance=1.0), "proposals"),
]


@pytest.mark.parametrize("name, args, kwargs, argument", BAD_STATIC_INPUT)
def test_bad_static_input_rejected_like_oracle(name, args, kwargs, argument):
    for implementation in (oracle, ops):
        with pytest.raises(ValueError, match=argument):
            getattr(implementation, name)(*args, **kwargs)
