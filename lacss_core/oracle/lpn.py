"""LPN targets (SPEC 3) and the LPN loss (SPEC 4), in plain NumPy."""

from __future__ import annotations

import numpy as np

from lacss_core import _validation
from lacss_core.oracle import _checks

EPS = 1e-7  # logs are taken of values clipped to [EPS, 1] (SPEC 1)


def grid_shape(image_shape, stride: int) -> tuple[int, int]:
    """``(h, w) = (ceil(H/s), ceil(W/s))``: the grid of one feature level (SPEC 1)."""
    height, width = image_shape
    return -(-height // stride), -(-width // stride)


def reference_points(grid: tuple[int, int], stride: int) -> np.ndarray:
    """``(h, w, 2) float32`` cell reference points ``(i*s + (s-1)/2, j*s + (s-1)/2)`` in pixels.

    The values are half-integers, exact in float32.
    """
    h, w = grid
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    centre = (stride - 1) / 2
    return np.stack([rows * stride + centre, cols * stride + centre], axis=-1).astype(np.float32)


def squared_distances(points: np.ndarray, point: np.ndarray) -> np.ndarray:
    """``(n,) float32`` squared distances from each row of ``points (n, 2)`` to ``point (2,)``.

    Float32 throughout, as every discrete decision is (SPEC 1).
    """
    d = points.astype(np.float32) - point.astype(np.float32)
    return d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1]


def lpn_targets(locations, image_shape, stride):
    """Score and offset targets on one feature level from padded GT LOIs (SPEC 3).

    Each cell takes its nearest valid LOI ``n*`` (squared float32 distance to the cell's
    reference point, ties -> lower ``n``); it is positive iff that distance is ``< (1.5*s)**2``.
    The offset target is ``(g_n* - p) / s`` for every cell, positive or not.

    Args:
        locations: ``(B, N, 2)`` float, GT LOIs ``(y, x)`` in pixels; rows with a negative
            coordinate are padding.
        image_shape: ``(H, W)`` Python ints, the original image size in pixels.
        stride: Python int ``s`` (2, 4, 8 or 16); the grid is ``h x w = ceil(H/s) x ceil(W/s)``.
    Returns:
        ``score_target (B, h, w) float32`` in {0, 1} and ``offset_target (B, h, w, 2) float32``
        in grid units ``(g - p) / s`` (zero where the image has no valid LOI).
    """
    locations = _checks.as_array(locations, "locations", 3, last=2).astype(np.float32)
    size = _validation.image_shape(image_shape)
    stride = _validation.positive_int(stride, "stride")
    grid = grid_shape(size, stride)
    points = reference_points(grid, stride)
    radius = np.float32(1.5 * stride)
    batch = locations.shape[0]
    score_target = np.zeros((batch, *grid), np.float32)
    offset_target = np.zeros((batch, *grid, 2), np.float32)
    valid = _checks.valid_rows(locations)
    for b in range(batch):
        gts = locations[b][valid[b]]
        if len(gts) == 0:
            continue
        for i, j in np.ndindex(grid):
            d2 = squared_distances(gts, points[i, j])
            nearest = int(np.argmin(d2))  # argmin returns the first minimum: lower n wins
            score_target[b, i, j] = d2[nearest] < radius * radius
            offset = (gts[nearest].astype(np.float64) - points[i, j]) / stride
            offset_target[b, i, j] = offset
    return score_target, offset_target


def huber(x: np.ndarray, delta: float) -> np.ndarray:
    """``0.5*x**2`` if ``|x| <= delta`` else ``delta*(|x| - delta/2)``, elementwise (SPEC 1)."""
    ax = np.abs(x)
    return np.where(ax <= delta, 0.5 * x * x, delta * (ax - 0.5 * delta))


def lpn_loss(scores, offsets, score_target, offset_target, *, alpha=0.25, gamma=2.0, delta=1.0):
    """LPN loss ``<L_S> + <L_R>`` over a batch (SPEC 4).

    ``L_S = -alpha * (1 - p_t)**gamma * log(clip(p_t, eps, 1))`` with ``p_t = S`` on positive cells
    and ``1 - S`` elsewhere (the same ``alpha`` for both classes).

    Args:
        scores: ``(B, h, w)`` float, post-sigmoid probabilities in ``[0, 1]``.
        offsets: ``(B, h, w, 2)`` float, predicted offsets in grid units.
        score_target: ``(B, h, w)`` {0, 1}; offset_target: ``(B, h, w, 2)``, from ``lpn_targets``.
        alpha, gamma: focal-loss weight and exponent (``>= 0``); delta: Huber threshold (``> 0``).
    Returns:
        Scalar float64: focal loss mean over all ``B*h*w`` cells plus the Huber(delta) offset loss
        summed over positive cells and divided by ``2 * max(1, #positives)``.
    """
    scores, offsets, score_target, offset_target = _checked_loss_inputs(
        scores, offsets, score_target, offset_target
    )
    alpha = _validation.non_negative(alpha, "alpha")
    gamma = _validation.non_negative(gamma, "gamma")
    delta = _validation.positive_number(delta, "delta")

    positive = score_target == 1
    p_t = np.where(positive, scores, 1.0 - scores)
    focal = -alpha * (1.0 - p_t) ** gamma * np.log(np.clip(p_t, EPS, 1.0))
    score_loss = focal.mean()

    offset_huber = huber(offsets - offset_target, delta)  # (B, h, w, 2)
    offset_loss = offset_huber[positive].sum() / (2 * max(1, int(positive.sum())))
    return np.float64(score_loss + offset_loss)


def _checked_loss_inputs(scores, offsets, score_target, offset_target):
    """Validate the ``lpn_loss`` arrays and return them as float64."""
    scores = _checks.as_array(scores, "scores", 3)
    offsets = _checks.as_array(offsets, "offsets", 4, last=2)
    score_target = _checks.as_array(score_target, "score_target", 3)
    offset_target = _checks.as_array(offset_target, "offset_target", 4, last=2)
    _checks.same_batch(
        scores=scores, offsets=offsets, score_target=score_target, offset_target=offset_target
    )
    _checks.same_shape(scores, offsets, "scores", "offsets", 3)
    _checks.same_shape(scores, score_target, "scores", "score_target", 3)
    _checks.same_shape(offsets, offset_target, "offsets", "offset_target", 4)
    _checks.within(scores, "scores", 0.0, 1.0)
    if not np.all((score_target == 0) | (score_target == 1)):
        raise ValueError("score_target values must be 0 or 1")
    return (a.astype(np.float64) for a in (scores, offsets, score_target, offset_target))
