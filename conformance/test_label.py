"""Conformance of ``ops.render_label`` (SPEC 9): label images must match the oracle exactly."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from . import harness
from . import strategies_patches as strat

# ``mode`` is function-scoped but constant across the examples of one test.
fixture_ok = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

PAD = [-1.0, -1.0]


def full(value, c=4):
    return np.full((c, c), value, np.float32)


def one_image(patches, locations, scores):
    return (
        np.array([patches], np.float32),
        np.array([locations], np.float32),
        np.array([scores], np.float32),
    )


RIGHT_COLUMN = np.zeros((4, 4), np.float32)
RIGHT_COLUMN[:, 3] = 1
LEFT_HALF = np.zeros((4, 4), np.float32)
LEFT_HALF[:, :2] = 1

CASES = {
    # name: (patches, locations, scores) of one 4 x 4 image, c = 4
    "higher score wins": ([full(0.9), full(0.9)], [[1, 1], [3, 3]], [0.3, 0.9]),
    "tie -> lower index": ([LEFT_HALF, full(1)], [[3, 3], [2, 2]], [0.5, 0.5]),
    "tie, swapped": ([full(1), LEFT_HALF], [[3, 3], [2, 2]], [0.5, 0.5]),
    "G equal to the threshold": ([full(0.5)], [[3, 3]], [0.8]),
    "padding not ranked": ([full(1), full(1), RIGHT_COLUMN], [PAD, [2, 2], [3, 3]], [-1, 0.5, 0.7]),
    "ranks not compacted": ([full(0), full(1)], [[3, 3], [3, 3]], [0.9, 0.1]),
    "origin and border": ([full(1), full(0.7)], [[0, 0], [3, 3]], [0.2, 0.1]),
    "no valid instance": ([full(1)], [PAD], [-1]),
}


@pytest.mark.parametrize("name", CASES)
def test_render_cases(name, mode):
    harness.assert_conforms("render_label", (*one_image(*CASES[name]), (4, 4)), {}, mode)


def test_render_threshold_and_crop(mode):
    # c = 8 patches hanging over every edge of a 6 x 5 image, a custom threshold.
    rng = np.random.default_rng(3)
    patches = rng.choice(np.float32([0.1, 0.25, 0.3, 0.9]), (2, 3, 8, 8))
    locations = np.array([[[0, 0], [5, 4], [2.5, 2]], [[5, 0], PAD, [0, 4]]], np.float32)
    scores = np.array([[0.3, 0.3, 0.6], [0.1, -1, 0.1]], np.float32)
    for threshold in (0.5, 0.25):
        args = (patches, locations, scores, (6, 5))
        harness.assert_conforms("render_label", args, dict(threshold=threshold), mode)


@fixture_ok
@given(inputs=strat.render_inputs())
def test_render_random(inputs, mode):
    harness.assert_conforms("render_label", inputs, {}, mode)
