"""LPN targets (SPEC 3) and the LPN loss (SPEC 4), in keras.ops; float32 under any dtype
policy (targets are geometry; the loss sums over the grid)."""

from __future__ import annotations

import numpy as np
from keras import ops

from lacss_core import _validation
from lacss_core.ops._common import (
    as_float32,
    check_same_shape,
    clipped_log,
    gather_rows,
    grid_shape,
    reference_points,
    squared_distances,
    valid_rows,
)


def lpn_targets(locations, image_shape, stride):
    """Score and offset targets on one feature level from padded GT LOIs (SPEC 3).

    Vectorised over cells and LOIs: a ``(B, h*w, N)`` squared-distance table, padded LOIs set to
    ``inf``, then a first-minimum ``argmin`` (ties -> lower ``n``) and a gather.

    Args:
        locations: ``(B, N, 2)`` float, GT LOIs ``(y, x)`` in pixels; rows with a negative
            coordinate are padding.
        image_shape: ``(H, W)`` Python ints, the original image size in pixels.
        stride: Python int ``s`` (2, 4, 8 or 16); the grid is ``h x w = ceil(H/s) x ceil(W/s)``.
    Returns:
        ``score_target (B, h, w) float32`` in {0, 1} and ``offset_target (B, h, w, 2) float32``
        in grid units ``(g - p) / s`` (zero where the image has no valid LOI).
    """
    locations = as_float32(locations, "locations", 3, last=2)
    size = _validation.image_shape(image_shape)
    stride = _validation.positive_int(stride, "stride")
    h, w = grid_shape(size, stride)
    batch, num_locations = locations.shape[0], locations.shape[1]
    if num_locations == 0:
        return ops.zeros((batch, h, w), "float32"), ops.zeros((batch, h, w, 2), "float32")
    points = ops.reshape(reference_points((h, w), stride), (h * w, 2))

    valid = valid_rows(locations)  # (B, N)
    d2 = squared_distances(locations[:, None, :, :], points[None, :, None, :])  # (B, hw, N)
    d2 = ops.where(valid[:, None, :], d2, np.inf)
    nearest = ops.argmin(d2, axis=-1)  # first minimum -> lower n
    radius = float(np.float32(1.5 * stride) ** 2)  # exact float32 value
    score = ops.cast(ops.min(d2, axis=-1) < radius, "float32")  # inf when no valid LOI
    offset = (gather_rows(locations, nearest) - points[None]) / stride
    offset = ops.where(ops.any(valid, axis=-1)[:, None, None], offset, 0.0)
    return ops.reshape(score, (batch, h, w)), ops.reshape(offset, (batch, h, w, 2))


def lpn_loss(scores, offsets, score_target, offset_target, *, alpha=0.25, gamma=2.0, delta=1.0):
    """LPN loss ``<L_S> + <L_R>`` over a batch (SPEC 4); differentiable w.r.t. scores, offsets.

    Args:
        scores: ``(B, h, w)`` float, post-sigmoid probabilities.
        offsets: ``(B, h, w, 2)`` float, predicted offsets in grid units.
        score_target: ``(B, h, w)`` {0, 1}; offset_target: ``(B, h, w, 2)``, from ``lpn_targets``.
        alpha, gamma: focal-loss weight and exponent (``>= 0``); delta: Huber threshold (``> 0``).
    Returns:
        Scalar float32: focal loss mean over all ``B*h*w`` cells plus the Huber(delta) offset loss
        summed over positive cells and divided by ``2 * max(1, #positives)``.
    """
    scores = as_float32(scores, "scores", 3)
    offsets = as_float32(offsets, "offsets", 4, last=2)
    score_target = as_float32(score_target, "score_target", 3)
    offset_target = as_float32(offset_target, "offset_target", 4, last=2)
    check_same_shape(scores, offsets, "scores", "offsets", 3)
    check_same_shape(scores, score_target, "scores", "score_target", 3)
    check_same_shape(offsets, offset_target, "offsets", "offset_target", 4)
    alpha = _validation.non_negative(alpha, "alpha")
    gamma = _validation.non_negative(gamma, "gamma")
    delta = _validation.positive_number(delta, "delta")

    positive = score_target > 0.5
    p_t = ops.where(positive, scores, 1.0 - scores)
    focal = -alpha * ops.power(1.0 - p_t, gamma) * clipped_log(p_t)
    score_loss = ops.mean(focal)

    residual = offsets - offset_target
    magnitude = ops.abs(residual)
    huber = ops.where(
        magnitude <= delta, 0.5 * residual * residual, delta * (magnitude - 0.5 * delta)
    )
    weight = ops.cast(positive, "float32")
    offset_loss = ops.sum(huber * weight[..., None]) / (2.0 * ops.maximum(ops.sum(weight), 1.0))
    return score_loss + offset_loss
