"""Label image rendering (SPEC 9).

Ranks come from pairwise comparisons (``B*M*M`` booleans: 1M for M = 1024, cheap, exact and free
of any sort's tie rule). Painting is one ``ops.segment_max`` over flat pixel ids of
``priority = (M + 1 - rank)`` on covered pixels: the largest priority is the smallest rank, so
overlaps need no loop over instances (``jax.ops.segment_max``; torch ``scatter_reduce(amax)``).
Scores, patches and the threshold are compared in float32 under any dtype policy (the casts
below), so a label does not depend on whether the patches arrived in a 16-bit dtype.
"""

from __future__ import annotations

from keras import ops

from lacss_core import _backend, _validation
from lacss_core.ops._common import valid_rows
from lacss_core.ops.patches import paste_indices


def _ranks(scores, valid):
    """``(B, M) int32`` ``1 + #(valid rows ahead)``; ahead = higher float32 score, or the same
    score and a lower index. Meaningless on invalid rows."""
    m = scores.shape[1]
    s_i, s_j = scores[:, :, None], scores[:, None, :]
    index = ops.arange(m, dtype="int32")
    lower_index = index[None, :] < index[:, None]  # [i, j]: j < i
    ahead = ((s_j > s_i) | ((s_j == s_i) & lower_index[None])) & valid[:, None, :]
    return 1 + ops.sum(ops.cast(ahead, "int32"), axis=-1)


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
    batch, m, c, _ = patches.shape
    _validation.crop_size(int(c))
    h, w = (int(s) for s in image_shape)
    valid = valid_rows(locations)
    ranks = _ranks(ops.cast(scores, "float32"), valid)
    covered = ops.cast(patches, "float32") > ops.cast(threshold, "float32")
    # Invalid rows land in the dropped segment through paste_indices.
    priority = ops.cast(m + 1 - ranks, "float32")[:, :, None, None]
    painted = ops.where(covered, priority, 0.0)
    ids, num_segments = paste_indices(locations, int(c), (h, w), 0)
    best = _backend.current().segment_max(
        ops.reshape(painted, (-1,)), ops.reshape(ids, (-1,)), num_segments
    )[:-1]
    # Untouched pixels hold the reduction's identity (-inf), uncovered ones 0: both -> 0.
    label = ops.where(best > 0, (m + 1) - best, 0.0)
    return ops.reshape(ops.cast(label, "int32"), (batch, h, w))
