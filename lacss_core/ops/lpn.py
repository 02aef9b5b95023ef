"""LPN targets (SPEC 3) and the LPN loss (SPEC 4), in keras.ops."""

from __future__ import annotations

import numpy as np
from keras import ops

from lacss_core.oracle import _checks  # Python-scalar argument checks only

EPS = 1e-7  # logs are taken of values clipped to [EPS, 1] (SPEC 1)


def grid_shape(image_shape, stride: int) -> tuple[int, int]:
    """``(h, w) = (ceil(H/s), ceil(W/s))``: the grid of one feature level (SPEC 1)."""
    height, width = image_shape
    return -(-height // stride), -(-width // stride)


def reference_points(grid: tuple[int, int], stride: int):
    """``(h, w, 2) float32`` cell reference points ``(i*s + (s-1)/2, j*s + (s-1)/2)`` in pixels."""
    h, w = grid
    centre = (stride - 1) / 2
    rows = ops.arange(h, dtype="float32") * stride + centre
    cols = ops.arange(w, dtype="float32") * stride + centre
    return ops.stack(ops.meshgrid(rows, cols, indexing="ij"), axis=-1)


def as_float32(x, name: str, ndim: int, *, last: int | None = None):
    """``x`` as a float32 tensor after checking its static rank and last axis (ValueError)."""
    x = ops.cast(ops.convert_to_tensor(x), "float32")
    if len(x.shape) != ndim:
        raise ValueError(f"{name} must have rank {ndim}, got shape {tuple(x.shape)}")
    if last is not None and x.shape[-1] != last:
        raise ValueError(f"{name} must have last axis {last}, got shape {tuple(x.shape)}")
    return x


def check_same_shape(a, b, name_a: str, name_b: str, axes: int) -> None:
    """Static check that the first ``axes`` axes of two tensors agree."""
    if tuple(a.shape[:axes]) != tuple(b.shape[:axes]):
        raise ValueError(
            f"{name_a} shape {tuple(a.shape)} does not match {name_b} shape {tuple(b.shape)}"
        )


def valid_rows(locations):
    """``(B, N) bool``: a location row is valid iff both coordinates are >= 0 (SPEC 1)."""
    return ops.all(locations >= 0, axis=-1)


def squared_distances(a, b):
    """Float32 ``dy*dy + dx*dx`` between broadcastable ``(..., 2)`` location tensors."""
    d = a - b
    return d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1]


def gather_rows(x, index):
    """``x[b, index[b, m]]``: ``x (B, N, ...)``, in-range ``index (B, M)`` -> ``(B, M, ...)``."""
    index = ops.reshape(index, (*index.shape, *([1] * (len(x.shape) - 2))))
    index = ops.broadcast_to(index, (*index.shape[:2], *x.shape[2:]))
    return ops.take_along_axis(x, index, axis=1)


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
    size = _checks.image_shape(image_shape)
    stride = _checks.positive_int(stride, "stride")
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
    alpha = _checks.non_negative(alpha, "alpha")
    gamma = _checks.non_negative(gamma, "gamma")
    delta = _checks.positive_number(delta, "delta")

    positive = score_target > 0.5
    p_t = ops.where(positive, scores, 1.0 - scores)
    focal = -alpha * ops.power(1.0 - p_t, gamma) * ops.log(ops.clip(p_t, EPS, 1.0))
    score_loss = ops.mean(focal)

    residual = offsets - offset_target
    magnitude = ops.abs(residual)
    huber = ops.where(
        magnitude <= delta, 0.5 * residual * residual, delta * (magnitude - 0.5 * delta)
    )
    weight = ops.cast(positive, "float32")
    offset_loss = ops.sum(huber * weight[..., None]) / (2.0 * ops.maximum(ops.sum(weight), 1.0))
    return score_loss + offset_loss
