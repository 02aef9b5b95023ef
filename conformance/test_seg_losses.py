"""Conformance of ``ops.fs_seg_loss / ws_seg_loss / sobel_magnitude / boundary_loss`` (SPEC 8).

Values at float tolerance; gradients (backend autodiff vs float64 finite differences of the
oracle) w.r.t. the patches, and w.r.t. ``boundary_pred`` for the boundary loss. Gradient inputs
keep probabilities in (0.05, 0.95), far from the log clip, and ``|B_P - B_H|`` away from the
Huber kink at 0.5.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings

from lacss_core import oracle

from . import harness
from . import strategies_patches as strat

# ``mode`` is function-scoped but constant across the examples of one test.
fixture_ok = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

PAD = [-1.0, -1.0]


def hand_inputs():
    """Two images, c = 4, 4 x 4: image 0 has two overlapping rows and padding (one row at the
    origin, so its patch hangs outside), image 1 one row on the far border."""
    rng = np.random.default_rng(7)
    patches = strat.probabilities(rng, (2, 3, 4, 4))
    locations = np.array([[[0, 0], [1, 1.5], PAD], [[3, 3], PAD, PAD]], np.float32)
    label = np.array([np.arange(16).reshape(4, 4) % 3, np.ones((4, 4))], np.int32)
    mask = (label > 0).astype(np.float32)
    boundary_pred = strat.probabilities(rng, (2, 4, 4))
    return patches, locations, label, mask, boundary_pred


def no_instance_inputs():
    patches, _, label, mask, boundary_pred = hand_inputs()
    return patches, np.full((2, 3, 2), -1, np.float32), label, mask, boundary_pred


def clipped_inputs():
    """Probabilities exactly 0 and 1: every log is clipped at 1e-7."""
    patches, locations, label, mask, boundary_pred = hand_inputs()
    patches = np.where(patches > 0.5, 1.0, 0.0).astype(np.float32)
    return patches, locations, label, mask, boundary_pred


CASES = {"hand": hand_inputs, "no valid instance": no_instance_inputs, "clipped": clipped_inputs}


def check_values(inputs, mode):
    patches, locations, label, mask, boundary_pred = inputs
    harness.assert_conforms("fs_seg_loss", (patches, locations, label), {}, mode)
    harness.assert_conforms("ws_seg_loss", (patches, locations, mask), {}, mode)
    harness.assert_conforms("sobel_magnitude", (patches,), {}, mode)
    harness.assert_conforms("boundary_loss", (patches, locations, boundary_pred), {}, mode)


@pytest.mark.parametrize("name", CASES)
def test_loss_cases(name, mode):
    check_values(CASES[name](), mode)


def test_ws_rows_outside_the_image_count_as_padding(mode):
    # Both LOIs below a 6 x 6 image: no valid instance, so the loss is 0 (it was 10.24 unmasked).
    patches = np.full((1, 2, 4, 4), 0.5, np.float32)
    outside = np.array([[[12.0, 1.0], [12.0, 1.0]]], np.float32)
    mask = np.ones((1, 6, 6), np.float32)
    harness.assert_conforms("ws_seg_loss", (patches, outside, mask), {}, mode)
    assert oracle.ws_seg_loss(patches, outside, mask) == 0.0
    # One inside, one just outside (x = W - 1 + 0.25): the same as padding the second row.
    rng = np.random.default_rng(0)
    patches = rng.uniform(0.05, 0.95, (1, 2, 4, 4)).astype(np.float32)
    mixed = np.array([[[2.0, 3.0], [1.0, 5.25]]], np.float32)
    padded = np.array([[[2.0, 3.0], PAD]], np.float32)
    harness.assert_conforms("ws_seg_loss", (patches, mixed, mask), {}, mode)
    harness.assert_grad_conforms("ws_seg_loss", (patches, mixed, mask), {}, mode, wrt=0)
    assert oracle.ws_seg_loss(patches, mixed, mask) == oracle.ws_seg_loss(patches, padded, mask)


def test_sobel_of_constant_and_saturated_patches(mode):
    # Constant interior -> the 1e-9 floor; a 0 -> 1 step saturates at the upper clip.
    patches = np.zeros((1, 3, 8, 8), np.float32)
    patches[0, 0] = 0.4
    patches[0, 1, :, 4:] = 1.0
    harness.assert_conforms("sobel_magnitude", (patches,), {}, mode)


@fixture_ok
@given(inputs=strat.loss_inputs())
def test_loss_values_random(inputs, mode):
    check_values(inputs, mode)


def away_from_huber_kink(patches, locations, boundary_pred):
    """``|B_P - B_H|`` is at least 1e-3 from 0.5 on every pixel (finite differences are exact)."""
    b_h = np.zeros(boundary_pred.shape)
    phi = oracle.sobel_magnitude(patches)
    origins = oracle.patch_origins(locations, patches.shape[-1])
    c = patches.shape[-1]
    for b, i in np.argwhere(np.all(locations >= 0, axis=-1)):
        canvas = np.zeros((b_h.shape[1] + 2 * c, b_h.shape[2] + 2 * c))
        y0, x0 = origins[b, i] + c
        canvas[y0 : y0 + c, x0 : x0 + c] = phi[b, i]
        b_h[b] += canvas[c:-c, c:-c]
    return np.min(np.abs(np.abs(boundary_pred - np.tanh(b_h)) - 0.5)) > 1e-3


def check_grads(inputs, mode):
    patches, locations, label, mask, boundary_pred = inputs
    harness.assert_grad_conforms("fs_seg_loss", (patches, locations, label), {}, mode, wrt=0)
    harness.assert_grad_conforms("ws_seg_loss", (patches, locations, mask), {}, mode, wrt=0)
    args = (patches, locations, boundary_pred)
    harness.assert_grad_conforms("boundary_loss", args, {}, mode, wrt=0)
    harness.assert_grad_conforms("boundary_loss", args, {}, mode, wrt=2)


def test_grad_hand(mode):
    inputs = hand_inputs()
    assert away_from_huber_kink(inputs[0], inputs[1], inputs[4])
    check_grads(inputs, mode)


@fixture_ok
@given(inputs=strat.loss_inputs(strat.GRAD_SHAPES))
def test_grad_random(inputs, mode):
    assume(away_from_huber_kink(inputs[0], inputs[1], inputs[4]))
    check_grads(inputs, mode)
