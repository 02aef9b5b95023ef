"""Proposal decoding, greedy distance NMS (SPEC 5) and training-time location mixing (SPEC 6)."""

from __future__ import annotations

import numpy as np


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
    raise NotImplementedError


def nms(locations, scores, *, max_output, nms_distance, min_score=0.0, pre_nms_topk=4096):
    """Greedy distance NMS with fixed-size, ``-1``-padded output (SPEC 5).

    Candidates are the ``min(pre_nms_topk, K)`` highest scores (ties -> lower index) walked in
    descending order; one is kept if ``score >= min_score`` and its squared distance to every kept
    location is ``> nms_distance**2`` (all comparisons in float32).

    Args:
        locations: ``(B, K, 2)`` float pixels; scores: ``(B, K)`` float.
        max_output: Python int ``M``; nms_distance, min_score: Python floats; pre_nms_topk: int.
    Returns:
        ``locations (B, M, 2) float32``, ``scores (B, M) float32``, ``indices (B, M) int32`` (index
        into the K candidates) in kept order; padding rows are ``(-1, -1)``, ``-1``, ``-1``.
    """
    raise NotImplementedError


def mix_locations(gt_locations, proposals, *, mix_distance):
    """Replace GT LOIs by the best nearby proposal (SPEC 6).

    Args:
        gt_locations: ``(B, N, 2)`` float pixels, ``-1`` padded.
        proposals: ``(B, M, 2)`` float pixels, score-ordered NMS output, ``-1`` padded.
        mix_distance: Python float in pixels (``<=`` test on squared distances, float32).
    Returns:
        ``(B, N, 2) float32`` in GT order; padded GT rows stay ``-1``.
    """
    raise NotImplementedError
