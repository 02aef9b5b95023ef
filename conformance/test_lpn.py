"""Conformance of ``ops.lpn_targets`` / ``ops.lpn_loss`` with the oracle (SPEC 3-4)."""

import numpy as np
import pytest
from hypothesis import given

from lacss_core import ops, oracle

from . import harness
from . import strategies_proposals as strat

PAD = [-1.0, -1.0]

TARGET_CASES = {
    # name: (LOIs of one image, image_shape, stride)
    "single": ([[2, 3]], (16, 16), 4),
    "two, nearest wins": ([[2, 3], [13, 13]], (16, 16), 4),
    "distance tie -> lower index": ([[1.5, 0.5], [1.5, 2.5]], (8, 8), 4),
    "radius is strict": ([[7.5, 1.5]], (16, 16), 4),
    "origin and far border": ([[0, 0], [7, 7]], (8, 8), 2),
    "grid rounds up": ([[9, 5], PAD], (10, 6), 4),
    "no valid LOI": ([PAD, [-1, 5], [5, -1]], (8, 8), 4),
    "padding first": ([PAD, [4, 4], PAD, [12, 1]], (16, 13), 8),
}


@pytest.mark.parametrize("name", TARGET_CASES)
def test_targets_cases(name, mode):
    locations, image_shape, stride = TARGET_CASES[name]
    locations = np.array([locations], np.float32)
    harness.assert_conforms("lpn_targets", (locations, image_shape, stride), {}, mode, exact=(0,))


def test_targets_batch(mode):
    locations = np.array([[[2, 3], PAD], [PAD, PAD], [[15, 0], [0, 15]]], np.float32)
    harness.assert_conforms("lpn_targets", (locations, (16, 16), 4), {}, mode, exact=(0,))


@given(locations=strat.padded_locations(batch=2, rows=6, image_shape=(21, 18)))
def test_targets_random(locations, mode):
    for stride in (2, 8):
        harness.assert_conforms("lpn_targets", (locations, (21, 18), stride), {}, mode, exact=(0,))


def hand_loss_inputs():
    """The oracle test's hand-computed case: one positive (S 0.8) and one negative (S 0.3) cell."""
    return (
        np.array([[[0.8, 0.3]]], np.float32),
        np.array([[[[0.5, -3.0], [10.0, 10.0]]]], np.float32),
        np.array([[[1.0, 0.0]]], np.float32),
        np.array([[[[0.25, 0.0], [0.0, 0.0]]]], np.float32),
    )


LOSS_KWARGS = [{}, dict(alpha=1.0, gamma=0.0, delta=2.0), dict(alpha=0.5, gamma=2.5, delta=0.5)]


@pytest.mark.parametrize("kwargs", LOSS_KWARGS)
def test_loss_hand_case(kwargs, mode):
    harness.assert_conforms("lpn_loss", hand_loss_inputs(), kwargs, mode)


def test_loss_without_positives_and_at_clip(mode):
    zeros = np.zeros((1, 1, 2, 2), np.float32)
    no_positive = (np.full((1, 1, 2), 0.5, np.float32), zeros + 7, np.zeros((1, 1, 2), np.float32))
    harness.assert_conforms("lpn_loss", (*no_positive, zeros), {}, mode)
    # S = 0 on a positive cell hits the log clip; S = 1 gives exactly zero loss.
    clipped = (np.array([[[0.0, 1.0]]], np.float32), zeros, np.ones((1, 1, 2), np.float32), zeros)
    harness.assert_conforms("lpn_loss", clipped, {}, mode)


def test_loss_from_targets(mode):
    # Targets as the model makes them, with predictions near and far from them.
    locations = np.array([[[2, 3], [13, 13]], [[6, 6], PAD]], np.float32)
    score_target, offset_target = oracle.lpn_targets(locations, (16, 16), 4)
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.02, 0.98, score_target.shape).astype(np.float32)
    offsets = (offset_target + rng.normal(0, 1.5, offset_target.shape)).astype(np.float32)
    harness.assert_conforms("lpn_loss", (scores, offsets, score_target, offset_target), {}, mode)


@given(inputs=strat.lpn_loss_inputs(batch=2, grid=(3, 4)))
def test_loss_random(inputs, mode):
    harness.assert_conforms("lpn_loss", inputs, {}, mode)


@pytest.mark.parametrize("wrt", [0, 1], ids=["scores", "offsets"])
@pytest.mark.parametrize("kwargs", LOSS_KWARGS)
def test_loss_grad_hand_case(wrt, kwargs, mode):
    harness.assert_grad_conforms("lpn_loss", hand_loss_inputs(), kwargs, mode, wrt=wrt)


def test_loss_grad_near_zero_is_judged_above_the_finite_differences_rounding(mode):
    """Found by hypothesis: offsets of 1e-7 give offset gradients of 4e-9, while the finite
    differences of a loss of 0.6 are only good to about 1e-10 (float64 rounding over a 1e-6
    step), so their 0.8% error is the reference's, not the backend's; ``harness.grad_atol`` floors
    the absolute tolerance at that rounding error."""
    shape = (2, 2, 3)
    inputs = (
        np.full(shape, 0.0625, np.float32),
        np.full((*shape, 2), 1e-7, np.float32),
        np.ones(shape, np.float32),
        np.zeros((*shape, 2), np.float32),
    )
    harness.assert_grad_conforms("lpn_loss", inputs, {}, mode, wrt=1)


@given(inputs=strat.lpn_loss_inputs(batch=2, grid=(2, 3)))
def test_loss_grad_random(inputs, mode):
    for wrt in (0, 1):
        harness.assert_grad_conforms("lpn_loss", inputs, {}, mode, wrt=wrt)


BAD_STATIC_INPUT = [
    # (function, args, kwargs, argument named in the error): checks that need no data values
    ("lpn_targets", (np.zeros((2, 2), np.float32), (8, 8), 4), {}, "locations"),
    ("lpn_targets", (np.zeros((1, 2, 2), np.float32), (0, 8), 4), {}, "image_shape"),
    ("lpn_targets", (np.zeros((1, 2, 2), np.float32), (8, 8), 0), {}, "stride"),
    ("lpn_loss", (np.zeros((1, 2), np.float32), *hand_loss_inputs()[1:]), {}, "scores"),
    (
        "lpn_loss",
        (*hand_loss_inputs()[:3], np.zeros((1, 1, 3, 2), np.float32)),
        {},
        "offset_target",
    ),
    ("lpn_loss", hand_loss_inputs(), dict(delta=0.0), "delta"),
]


@pytest.mark.parametrize("name, args, kwargs, argument", BAD_STATIC_INPUT)
def test_bad_static_input_rejected_like_oracle(name, args, kwargs, argument):
    for implementation in (oracle, ops):
        with pytest.raises(ValueError, match=argument):
            getattr(implementation, name)(*args, **kwargs)
