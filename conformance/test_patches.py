"""Conformance of ``ops.patch_origins / location_tensor / gather_patches / gt_patches`` (SPEC 7-8).

Origins and GT patches are discrete and must match exactly; gathered features too (``exact``);
the location tensor is computed and compared at float tolerance.
"""

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

LOCATION_CASES = {
    # name: (rows of one image, crop size)
    "origin (0, 0)": ([[0, 0]], 8),
    "fractional and odd": ([[5.5, 3.25], [1.75, 2.0], [3, 3]], 8),
    "far border of 12 x 12": ([[11, 11], [11, 0], [0, 11]], 8),
    "padding and half-padded rows": ([PAD, [-1, 5], [5, -1], [6, 6]], 4),
    "wider crop": ([[7.75, 6.0], [2, 9]], 16),
    "window past the map": ([[40, 0], [0, 40]], 8),
}


def features_for(locations, hf=6, wf=6, nf=2):
    """A deterministic map whose values name their cell: exact, distinct, nonzero."""
    values = np.arange(1, hf * wf * nf + 1, dtype=np.float32) / 8
    return np.broadcast_to(values.reshape(1, hf, wf, nf), (locations.shape[0], hf, wf, nf)).copy()


@pytest.mark.parametrize("name", LOCATION_CASES)
def test_geometry_cases(name, mode):
    rows, c = LOCATION_CASES[name]
    locations = np.array([rows], np.float32)
    harness.assert_conforms("patch_origins", (locations, c), {}, mode)
    harness.assert_conforms("location_tensor", (locations, c), {}, mode)
    harness.assert_conforms(
        "gather_patches", (features_for(locations), locations, c), {}, mode, exact=(0,)
    )


def test_gt_patch_cases(mode):
    # Label 1 in the top-left corner, label 2 on one pixel, label 3 belongs to no row (row 2 is
    # padding), label 4 has no pixel; rows at (0, 0), the border and inside.
    label = np.zeros((2, 8, 8), np.int32)
    label[0, :3, :3] = 1
    label[0, 5, 5] = 2
    label[0, 7, 0:4] = 3
    label[1] = 4
    locations = np.array(
        [[[1, 1], [5, 5], PAD, [7, 7]], [[0, 0], [7, 7], [3.5, 3.5], PAD]], np.float32
    )
    for c in (4, 8, 12):
        harness.assert_conforms("gt_patches", (label, locations, c), {}, mode)


@fixture_ok
@given(scene=strat.scenes())
def test_geometry_random(scene, mode):
    _, locations, (*_, c) = scene
    harness.assert_conforms("patch_origins", (locations, c), {}, mode)
    harness.assert_conforms("location_tensor", (locations, c), {}, mode)


@fixture_ok
@given(inputs=strat.feature_inputs())
def test_gather_random(inputs, mode):
    features, locations, c = inputs
    harness.assert_conforms("gather_patches", (features, locations, c), {}, mode, exact=(0,))


@fixture_ok
@given(inputs=strat.label_inputs())
def test_gt_patches_random(inputs, mode):
    label, locations, c = inputs
    harness.assert_conforms("gt_patches", (label, locations, c), {}, mode)


@pytest.mark.parametrize("c", [0, 6, -4, 8.0])
def test_bad_crop_size_is_rejected_by_both(c):
    locations = np.array([[[1, 1]]], np.float32)
    for name in ("patch_origins", "location_tensor"):
        with pytest.raises(ValueError, match="crop_size"):
            harness.run_oracle(name, (locations, c))
        with pytest.raises(ValueError, match="crop_size"):
            harness.run_op(name, (locations, c))
