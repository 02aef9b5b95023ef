"""Proposal decoding, greedy distance NMS (SPEC 5) and training-time location mixing (SPEC 6).

Geometry, in float32 under any dtype policy (``as_float32``): pixel coordinates of a 16-bit
float would be off by a pixel at a few hundred pixels, and NMS compares squared distances."""

from __future__ import annotations

import numpy as np
from keras import ops

from lacss_core import _validation
from lacss_core.ops._common import (
    as_float32,
    check_same_shape,
    gather_rows,
    grid_shape,
    reference_points,
    squared_distances,
    valid_rows,
)


def decode_proposals(scores, offsets, image_shape, stride):
    """Grid scores/offsets -> candidate locations in pixels (SPEC 5).

    Args:
        scores: ``(B, h, w)`` float probabilities; offsets ``(B, h, w, 2)`` grid units. ``h, w``
            may exceed ``ceil(H/s), ceil(W/s)`` (padded input); the extra rows/cols are cropped.
        image_shape: ``(H, W)`` Python ints; stride: Python int ``s``.
    Returns:
        ``locations (B, K, 2) float32`` = ``p_ij + s * R[i, j]`` clipped to ``[0, H-1] x [0, W-1]``
        and ``scores (B, K) float32``, flattened in grid order ``i*w + j`` with
        ``K = ceil(H/s) * ceil(W/s)``.
    """
    scores = as_float32(scores, "scores", 3)
    offsets = as_float32(offsets, "offsets", 4, last=2)
    check_same_shape(scores, offsets, "scores", "offsets", 3)
    height, width = _validation.image_shape(image_shape)
    stride = _validation.positive_int(stride, "stride")
    h, w = grid_shape((height, width), stride)
    if scores.shape[1] < h or scores.shape[2] < w:
        raise ValueError(
            f"scores grid {tuple(scores.shape[1:])} is smaller than ceil(H/s) x ceil(W/s) = "
            f"{(h, w)} for image_shape {(height, width)} and stride {stride}"
        )
    batch = scores.shape[0]
    points = reference_points((h, w), stride)
    locations = points[None] + stride * offsets[:, :h, :w]
    # from a tensor op, not a NumPy array: torch.compile breaks its graph on ndarray constants
    upper = ops.where(ops.arange(2) == 0, float(height - 1), float(width - 1))
    upper = ops.cast(upper, "float32")
    locations = ops.minimum(ops.maximum(locations, 0.0), upper)
    return (
        ops.reshape(locations, (batch, h * w, 2)),
        ops.reshape(scores[:, :h, :w], (batch, h * w)),
    )


def nms(locations, scores, *, max_output, nms_distance, min_score=0.0, pre_nms_topk=4096):
    """Greedy distance NMS with fixed-size, ``-1``-padded output (SPEC 5).

    Candidates are the ``min(pre_nms_topk, K)`` highest scores (ties -> lower index) walked in
    descending order; one is kept if ``score >= min_score`` and its squared distance to every kept
    location is ``> nms_distance**2`` (all comparisons in float32). Locations are not checked for
    padding: give padded rows a score below ``min_score`` (the ``-1`` sentinel does for
    ``min_score >= 0``) to keep them out.

    Implementation: a stable argsort on ``-score`` orders the candidates on both backends; a
    ``while_loop`` then decides ``NMS_WINDOW`` candidates per step (see ``_greedy_keep``), using
    ``(B, W, k)`` squared-distance blocks, never a ``k x k`` matrix.

    Args:
        locations: ``(B, K, 2)`` float pixels; scores: ``(B, K)`` float.
        max_output: Python int ``M``; nms_distance, min_score: Python floats; pre_nms_topk: int.
    Returns:
        ``locations (B, M, 2) float32``, ``scores (B, M) float32``, ``indices (B, M) int32`` (index
        into the K candidates) in kept order; padding rows are ``(-1, -1)``, ``-1``, ``-1``.
    """
    locations = as_float32(locations, "locations", 3, last=2)
    scores = as_float32(scores, "scores", 2)
    check_same_shape(locations, scores, "locations", "scores", 2)
    max_output = _validation.positive_int(max_output, "max_output")
    distance = np.float32(_validation.non_negative(nms_distance, "nms_distance"))
    min_score = float(np.float32(_validation.finite_number(min_score, "min_score")))
    pre_nms_topk = _validation.positive_int(pre_nms_topk, "pre_nms_topk")

    order = _score_order(scores)[:, : min(pre_nms_topk, scores.shape[1])]  # (B, k)
    candidate_locations = gather_rows(locations, order)
    candidate_scores = ops.take_along_axis(scores, order, axis=1)
    active = candidate_scores >= min_score
    kept = _greedy_keep(candidate_locations, active, max_output, float(distance * distance))

    is_kept = kept >= 0
    safe = ops.maximum(kept, 0)  # padding slots gather row 0, then get masked
    return (
        ops.where(is_kept[..., None], gather_rows(candidate_locations, safe), -1.0),
        ops.where(is_kept, ops.take_along_axis(candidate_scores, safe, axis=1), -1.0),
        ops.where(is_kept, ops.take_along_axis(order, safe, axis=1), -1),
    )


def _score_order(scores):
    """``(B, K) int32`` candidate order: score descending, ties -> lower index.

    ``argsort`` is stable on both backends and, like NumPy, treats ``-0.0 == 0.0``. ``top_k`` would
    not do: torch's ``topk`` leaves the tie order unspecified, and JAX's ranks ``0.0`` above
    ``-0.0`` (both caught by ``conformance/test_proposals.py::test_nms_score_ties``).
    """
    return ops.cast(ops.argsort(-scores, axis=-1), "int32")


NMS_WINDOW = 32  # candidates decided per loop step (the fastest of 32-256 on a 2-core CPU)


def _greedy_keep(candidate_locations, active, max_output: int, threshold_sq: float):
    """``(B, M) int32`` positions (into the candidate order) kept by the greedy walk, -1 padded.

    Each loop step takes the window of the first ``NMS_WINDOW`` undecided candidates. Everything
    before the window is decided (kept or suppressed), and the kept ones have already removed
    their neighbours from ``remaining``, so the window's greedy outcome depends only on the window
    itself: it is resolved completely by ``_resolve_window``. The window's kept candidates are
    appended to the output and suppress every candidate within ``nms_distance`` (themselves and
    the window's dropped candidates included). Every window member is decided, so windows and
    kept candidates follow the score order, and the loop may stop once every image is out of
    undecided candidates or has ``max_output`` kept. (Keeping only the window members with no
    earlier member nearby, and leaving the rest undecided, would find the same set but not in
    score order, so stopping at ``max_output`` would be wrong.)
    """
    batch, count = active.shape
    window = min(NMS_WINDOW, count)
    ys, xs = candidate_locations[..., 0], candidate_locations[..., 1]  # (B, k) each
    slots = ops.arange(max_output, dtype="int32")[None, None, :]

    def not_done(remaining, kept, num_kept):
        return ops.any(ops.logical_and(remaining, (num_kept < max_output)[:, None]))

    def step(remaining, kept, num_kept):
        positions, in_window = _first_true(remaining, window)  # (B, W)
        wy = ops.take_along_axis(ys, positions, axis=1)
        wx = ops.take_along_axis(xs, positions, axis=1)
        near = _pairwise_near(wy, wx, wy, wx, threshold_sq)  # (B, W, W)
        keep = _resolve_window(in_window, near)
        # Append the window's kept positions at slots num_kept, num_kept + 1, ...
        slot = num_kept[:, None] + ops.cumsum(ops.cast(keep, "int32"), axis=1) - 1
        placed = ops.logical_and(keep[:, :, None], slot[:, :, None] == slots)  # (B, W, M)
        new = ops.sum(ops.where(placed, positions[:, :, None], 0), axis=1)
        kept = ops.where(ops.any(placed, axis=1), new, kept)
        num_kept = num_kept + ops.sum(ops.cast(keep, "int32"), axis=1)
        suppressed = ops.any(
            ops.logical_and(keep[:, :, None], _pairwise_near(wy, wx, ys, xs, threshold_sq)), axis=1
        )
        return ops.logical_and(remaining, ops.logical_not(suppressed)), kept, num_kept

    init = (active, ops.full((batch, max_output), -1, "int32"), ops.zeros((batch,), "int32"))
    _, kept, _ = ops.while_loop(not_done, step, init)
    return kept


def _first_true(mask, count: int):
    """Positions ``(B, count) int32`` of the first ``count`` True entries of ``mask (B, k)`` in
    order, and which of them exist. ``top_k`` of ``k - position`` (0 where False) lists them.
    """
    length = mask.shape[1]
    key = ops.where(mask, ops.cast(length - ops.arange(length), "float32")[None], 0.0)
    values, positions = ops.top_k(key, count)
    return ops.cast(positions, "int32"), values > 0


def _pairwise_near(ay, ax, by, bx, threshold_sq: float):
    """``(B, P, Q) bool``: float32 ``dy*dy + dx*dx <= threshold_sq`` between ``a (B, P)`` and
    ``b (B, Q)`` coordinates (the same arithmetic as ``squared_distances``)."""
    dy = by[:, None, :] - ay[:, :, None]
    dx = bx[:, None, :] - ax[:, :, None]
    return dy * dy + dx * dx <= threshold_sq


def _resolve_window(ok, near):
    """Greedy NMS inside one window: ``keep[j] = ok[j] and no kept i < j has near[i, j]``.

    Fixed-point iteration from ``keep = ok``: entry ``j`` is final once every ``i < j`` is, so
    the iteration settles within ``W + 1`` steps (in practice a few), and a repeat means it has.
    """
    window = ok.shape[1]
    before = ops.arange(window)[:, None] < ops.arange(window)[None, :]  # [i, j]: i < j
    suppresses = ops.logical_and(near, before[None])

    def update(keep):
        hit = ops.any(ops.logical_and(suppresses, keep[:, :, None]), axis=1)
        return ops.logical_and(ok, ops.logical_not(hit))

    def changing(keep, previous):
        return ops.any(ops.not_equal(keep, previous))

    keep, _ = ops.while_loop(changing, lambda keep, _: (update(keep), keep), (update(ok), ok))
    return keep


def mix_locations(gt_locations, proposals, *, mix_distance):
    """Replace GT LOIs by the best nearby proposal (SPEC 6).

    Vectorised: a ``(B, M, N)`` squared-distance table assigns each valid proposal to its nearest
    valid GT (first minimum, ties -> lower GT index) if within ``mix_distance``; a GT then takes
    the first proposal assigned to it (first-maximum ``argmax`` over proposals), else keeps its
    own location. Padding rows (a negative coordinate) are copied through unchanged.

    Args:
        gt_locations: ``(B, N, 2)`` float pixels, ``-1`` padded.
        proposals: ``(B, M, 2)`` float pixels, score-ordered NMS output, ``-1`` padded.
        mix_distance: Python float in pixels (``<=`` test on squared distances, float32).
    Returns:
        ``(B, N, 2) float32`` in GT order; padded GT rows stay ``-1``.
    """
    gts = as_float32(gt_locations, "gt_locations", 3, last=2)
    proposals = as_float32(proposals, "proposals", 3, last=2)
    check_same_shape(gts, proposals, "gt_locations", "proposals", 1)
    distance = np.float32(_validation.non_negative(mix_distance, "mix_distance"))
    num_gts = gts.shape[1]
    if num_gts == 0 or proposals.shape[1] == 0:
        return gts

    d2 = squared_distances(proposals[:, :, None, :], gts[:, None, :, :])  # (B, M, N)
    d2 = ops.where(valid_rows(gts)[:, None, :], d2, np.inf)
    nearest = ops.argmin(d2, axis=-1)  # (B, M)
    within = ops.min(d2, axis=-1) <= float(distance * distance)  # inf: no valid GT
    assigned = ops.logical_and(valid_rows(proposals), within)
    gt_ids = ops.arange(num_gts, dtype="int32")[None, None, :]
    match = ops.logical_and(assigned[:, :, None], ops.cast(nearest, "int32")[:, :, None] == gt_ids)
    first = ops.cast(ops.argmax(ops.cast(match, "int32"), axis=1), "int32")  # (B, N)
    taken = ops.any(match, axis=1)
    return ops.where(taken[..., None], gather_rows(proposals, first), gts)
