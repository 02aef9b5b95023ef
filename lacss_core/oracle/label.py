"""Label image rendering (SPEC 9)."""

from __future__ import annotations

import numpy as np


def render_label(patches, locations, scores, image_shape, *, threshold=0.5):
    """Paint instance patches into a label image, higher score wins overlaps (SPEC 9).

    Args:
        patches: ``(B, M, c, c)`` float probabilities; locations ``(B, M, 2)`` float pixels,
            ``-1`` padded; scores ``(B, M)`` float; image_shape ``(H, W)`` Python ints;
            threshold: pixels with ``G > threshold`` (float32) belong to the instance.
    Returns:
        ``(B, H, W) int32``: each pixel holds the smallest rank (1 + position in score-descending
        order, ties -> lower index, among valid rows) of the instances covering it, else 0.
    """
    raise NotImplementedError
