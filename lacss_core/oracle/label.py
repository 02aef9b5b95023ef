"""Label image rendering (SPEC 9)."""

from __future__ import annotations

import numpy as np

from lacss_core import _validation
from lacss_core.oracle import _checks
from lacss_core.oracle.patches import patch_origins


def _ranks(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``(M,) int`` rank ``1 + position`` by float32 score descending, ties -> lower index, among
    valid rows; 0 for invalid rows."""
    order = sorted(np.nonzero(valid)[0], key=lambda m: (-scores[m], m))
    ranks = np.zeros(scores.shape, dtype=np.int64)
    ranks[order] = np.arange(1, len(order) + 1)
    return ranks


def render_label(patches, locations, scores, image_shape, *, threshold=0.5):
    """Paint instance patches into a label image, higher score wins overlaps (SPEC 9).

    Args:
        patches: ``(B, M, c, c)`` float probabilities; locations ``(B, M, 2)`` float pixels,
            ``-1`` padded; scores ``(B, M)`` float; image_shape ``(H, W)`` Python ints;
            threshold: pixels with ``G > threshold`` (float32) belong to the instance.
    Returns:
        ``(B, H, W) int32``: each pixel holds the smallest rank (1 + position in score-descending
        order, ties -> lower index, among valid rows) of the instances covering it, else 0.
        Ranks are not compacted: an instance that covers no pixel leaves its rank absent.
    """
    g = _checks.as_array(patches, "patches", 4).astype(np.float32)
    c = _checks.patch_size(g)
    locs = _checks.float32_locations(locations)
    s = _checks.as_array(scores, "scores", 2).astype(np.float32)
    _checks.same_batch(patches=g, locations=locs, scores=s)
    _checks.same_shape(g, locs, "patches", "locations", 2)
    _checks.same_shape(s, locs, "scores", "locations", 2)
    h, w = _validation.image_shape(image_shape)
    covered = g > np.float32(_validation.non_negative(threshold, "threshold"))
    valid = _checks.valid_rows(locs)
    origins = patch_origins(locs, c)

    label = np.zeros((g.shape[0], h, w), dtype=np.int32)
    for b in range(g.shape[0]):
        ranks = _ranks(s[b], valid[b])
        # Paint in rank order; a pixel keeps the first (smallest) rank that reaches it.
        for m in np.argsort(ranks, kind="stable"):
            if not valid[b, m]:
                continue
            y0, x0 = origins[b, m]
            for a, col in np.argwhere(covered[b, m]):
                y, x = y0 + a, x0 + col
                if 0 <= y < h and 0 <= x < w and label[b, y, x] == 0:
                    label[b, y, x] = ranks[m]
    return label
