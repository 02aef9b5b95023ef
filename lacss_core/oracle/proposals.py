"""Proposal decoding, greedy distance NMS (SPEC 5) and training-time location mixing (SPEC 6)."""

from __future__ import annotations

import numpy as np

from lacss_core import _validation
from lacss_core.oracle import _checks
from lacss_core.oracle.lpn import grid_shape, reference_points, squared_distances


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
    scores = _checks.as_array(scores, "scores", 3)
    offsets = _checks.as_array(offsets, "offsets", 4, last=2)
    _checks.same_batch(scores=scores, offsets=offsets)
    _checks.same_shape(scores, offsets, "scores", "offsets", 3)
    height, width = _validation.image_shape(image_shape)
    stride = _validation.positive_int(stride, "stride")
    h, w = grid_shape((height, width), stride)
    if scores.shape[1] < h or scores.shape[2] < w:
        raise ValueError(
            f"scores grid {scores.shape[1:]} is smaller than ceil(H/s) x ceil(W/s) = {(h, w)} "
            f"for image_shape {(height, width)} and stride {stride}"
        )
    batch = scores.shape[0]
    points = reference_points((h, w), stride).astype(np.float64)
    # float64 sum, rounded once to float32 (exact for power-of-two strides).
    locations = points + stride * offsets[:, :h, :w].astype(np.float64)
    locations[..., 0] = np.clip(locations[..., 0], 0, height - 1)
    locations[..., 1] = np.clip(locations[..., 1], 0, width - 1)
    return (
        locations.reshape(batch, h * w, 2).astype(np.float32),
        scores[:, :h, :w].reshape(batch, h * w).astype(np.float32),
    )


def nms(locations, scores, *, max_output, nms_distance, min_score=0.0, pre_nms_topk=4096):
    """Greedy distance NMS with fixed-size, ``-1``-padded output (SPEC 5).

    Candidates are the ``min(pre_nms_topk, K)`` highest scores (ties -> lower index) walked in
    descending order; one is kept if ``score >= min_score`` and its squared distance to every kept
    location is ``> nms_distance**2`` (all comparisons in float32). Locations are not checked for
    padding: give padded rows a score below ``min_score`` (the ``-1`` sentinel does for
    ``min_score >= 0``) to keep them out.

    Args:
        locations: ``(B, K, 2)`` float pixels; scores: ``(B, K)`` float.
        max_output: Python int ``M``; nms_distance, min_score: Python floats; pre_nms_topk: int.
    Returns:
        ``locations (B, M, 2) float32``, ``scores (B, M) float32``, ``indices (B, M) int32`` (index
        into the K candidates) in kept order; padding rows are ``(-1, -1)``, ``-1``, ``-1``.
    """
    locations = _checks.as_array(locations, "locations", 3, last=2).astype(np.float32)
    scores = _checks.as_array(scores, "scores", 2).astype(np.float32)
    _checks.same_batch(locations=locations, scores=scores)
    _checks.same_shape(locations, scores, "locations", "scores", 2)
    max_output = _validation.positive_int(max_output, "max_output")
    nms_distance = np.float32(_validation.non_negative(nms_distance, "nms_distance"))
    min_score = np.float32(_validation.finite_number(min_score, "min_score"))
    pre_nms_topk = _validation.positive_int(pre_nms_topk, "pre_nms_topk")

    batch, num_candidates = scores.shape
    out_locations = np.full((batch, max_output, 2), -1, np.float32)
    out_scores = np.full((batch, max_output), -1, np.float32)
    out_indices = np.full((batch, max_output), -1, np.int32)
    for b in range(batch):
        # Stable sort on -score: score descending, ties -> lower index.
        order = np.argsort(-scores[b], kind="stable")[: min(pre_nms_topk, num_candidates)]
        kept = _greedy_walk(locations[b], scores[b], order, max_output, nms_distance, min_score)
        n = len(kept)
        out_locations[b, :n] = locations[b, kept]
        out_scores[b, :n] = scores[b, kept]
        out_indices[b, :n] = kept
    return out_locations, out_scores, out_indices


def _greedy_walk(locations, scores, order, max_output, nms_distance, min_score) -> list[int]:
    """Indices kept by the greedy walk over ``order`` (float32 inputs and thresholds)."""
    kept: list[int] = []
    for candidate in order:
        if scores[candidate] < min_score or len(kept) == max_output:
            break  # sorted: every later candidate scores lower too
        d2 = squared_distances(locations[kept], locations[candidate])
        if np.all(d2 > nms_distance * nms_distance):
            kept.append(int(candidate))
    return kept


def mix_locations(gt_locations, proposals, *, mix_distance):
    """Replace GT LOIs by the best nearby proposal (SPEC 6).

    Each valid proposal, in order, is assigned to its nearest valid GT (float32 squared distance,
    ties -> lower GT index) if that distance is ``<= mix_distance**2``; it never falls through to
    its second-nearest GT. Each GT takes the first proposal assigned to it, else keeps its own
    location. Padding rows (a negative coordinate) are copied through unchanged.

    Args:
        gt_locations: ``(B, N, 2)`` float pixels, ``-1`` padded.
        proposals: ``(B, M, 2)`` float pixels, score-ordered NMS output, ``-1`` padded.
        mix_distance: Python float in pixels (``<=`` test on squared distances, float32).
    Returns:
        ``(B, N, 2) float32`` in GT order; padded GT rows stay ``-1``.
    """
    gts = _checks.as_array(gt_locations, "gt_locations", 3, last=2).astype(np.float32)
    proposals = _checks.as_array(proposals, "proposals", 3, last=2).astype(np.float32)
    _checks.same_batch(gt_locations=gts, proposals=proposals)
    mix_distance = np.float32(_validation.non_negative(mix_distance, "mix_distance"))

    mixed = gts.copy()
    valid_gt = _checks.valid_rows(gts)
    valid_proposal = _checks.valid_rows(proposals)
    for b in range(gts.shape[0]):
        if not valid_gt[b].any():
            continue
        taken = np.zeros(gts.shape[1], bool)
        for m in np.flatnonzero(valid_proposal[b]):
            d2 = np.where(valid_gt[b], squared_distances(gts[b], proposals[b, m]), np.inf)
            nearest = int(np.argmin(d2))  # first minimum: lower GT index wins
            if d2[nearest] <= mix_distance * mix_distance and not taken[nearest]:
                mixed[b, nearest] = proposals[b, m]
                taken[nearest] = True
    return mixed
