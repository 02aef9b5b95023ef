"""Test-time augmentation by the four flips: ``predict_instances(..., augment=True)``.

The dense part of the model (backbone, FPN, LPN, segmentor trunk) runs on the image and its
three flips (rows, columns, both) as one batch of 4:

- the LPN maps of each flip are flipped back (the offsets' flipped component negated) and
  averaged before the proposals are decoded, so a cell's score and location are the mean of
  four views;
- each proposal's patch is computed on each flip's features, at the location as that flip sees
  it, flipped back, shifted onto the unflipped patch's origin and averaged where the four overlap
  (a flipped location rounds to the stride-2 grid differently, so the four patch windows are
  offset by up to 4 px: the outermost rows and columns average fewer than four views).

Averaging four views of each boundary smooths the ragged edges one view draws; the cost is four
forward passes of the dense part and of the per-instance layers. ``docs/results.md`` ("Flip
test-time augmentation") measures both. Written in ``keras.ops`` only, so it runs inside the
compiled prediction stages on JAX and PyTorch alike.
"""

from __future__ import annotations

from keras import ops

from lacss_core.ops._common import valid_rows
from lacss_core.ops.patches import patch_origins

#: (rows flipped, columns flipped) of the batch entries, in order.
FLIPS = ((False, False), (True, False), (False, True), (True, True))


def _flip(x, flip_rows: bool, flip_cols: bool, row_axis: int):
    if flip_rows:
        x = ops.flip(x, axis=row_axis)
    if flip_cols:
        x = ops.flip(x, axis=row_axis + 1)
    return x


def flip_images(images):
    """``(1, H, W, C)`` -> ``(4, H, W, C)``: the image and its flips, in :data:`FLIPS` order."""
    if len(images.shape) != 4 or images.shape[0] != 1:
        raise ValueError(f"images must have shape (1, H, W, C), got {tuple(images.shape)}")
    return ops.concatenate([_flip(images, fy, fx, 1) for fy, fx in FLIPS], axis=0)


def merge_lpn(scores, offsets):
    """The four flips' LPN maps in the unflipped frame, averaged.

    Args:
        scores: ``(4, h, w)`` float; offsets: ``(4, h, w, 2)`` float grid units, of the images
            :func:`flip_images` gives, on a grid that covers them exactly (``H = h * stride``,
            so cell ``i`` of a flipped map is cell ``h - 1 - i`` of the unflipped one).
    Returns:
        ``(1, h, w)`` scores and ``(1, h, w, 2)`` offsets.
    """
    if scores.shape[0] != len(FLIPS) or offsets.shape[0] != len(FLIPS):
        raise ValueError(
            f"expected {len(FLIPS)} flipped maps, got scores {tuple(scores.shape)} and offsets "
            f"{tuple(offsets.shape)}"
        )
    merged_scores, merged_offsets = 0.0, 0.0
    for k, (fy, fx) in enumerate(FLIPS):
        sign = ops.convert_to_tensor([-1.0 if fy else 1.0, -1.0 if fx else 1.0], offsets.dtype)
        merged_scores = merged_scores + _flip(scores[k : k + 1], fy, fx, 1)
        merged_offsets = merged_offsets + _flip(offsets[k : k + 1], fy, fx, 1) * sign
    return merged_scores / len(FLIPS), merged_offsets / len(FLIPS)


def _flip_locations(locations, valid, canvas, flip_rows: bool, flip_cols: bool):
    """Locations as the flipped image sees them (pixel ``i`` -> ``side - 1 - i``); ``-1`` rows
    stay ``-1``."""
    height, width = canvas
    y, x = locations[..., 0], locations[..., 1]
    if flip_rows:
        y = (height - 1) - y
    if flip_cols:
        x = (width - 1) - x
    flipped = ops.stack([y, x], axis=-1)
    return ops.where(valid[..., None], flipped, -ops.ones_like(flipped))


def shift_patches(patches, shift):
    """Move each ``c x c`` patch by ``shift`` pixels: ``out[u, v] = patches[u - dy, v - dx]``.

    Args:
        patches: ``(B, M, c, c)`` float; shift: ``(B, M, 2)`` int ``(dy, dx)``.
    Returns:
        ``(shifted, covered)``: ``(B, M, c, c)`` float, 0 where the source lies outside the
        patch, and ``(B, M, c, c)`` float32, 1 where it lies inside.
    """
    c = int(patches.shape[-1])
    steps = ops.arange(c, dtype="int32")
    shift = ops.cast(shift, "int32")
    rows = steps[None, None, :] - shift[..., 0:1]  # (B, M, c): source row of each output row
    cols = steps[None, None, :] - shift[..., 1:2]
    rows_inside = ops.logical_and(rows >= 0, rows < c)
    cols_inside = ops.logical_and(cols >= 0, cols < c)
    full = tuple(patches.shape)
    row_index = ops.broadcast_to(ops.clip(rows, 0, c - 1)[..., :, None], full)
    col_index = ops.broadcast_to(ops.clip(cols, 0, c - 1)[..., None, :], full)
    moved = ops.take_along_axis(patches, row_index, axis=2)
    moved = ops.take_along_axis(moved, col_index, axis=3)
    covered = ops.logical_and(rows_inside[..., :, None], cols_inside[..., None, :])
    return ops.where(covered, moved, ops.zeros_like(moved)), ops.cast(covered, "float32")


def merge_patches(segment, shared_features, locations, crop_size: int, canvas):
    """Each location's patch averaged over the four flips' features.

    Args:
        segment: ``(features (1, ...), locations (1, M, 2)) -> {"patches", "origins"}``, e.g.
            ``Lacss.segment_locations``.
        shared_features: ``(4, Hc/2, Wc/2, F)``, the segmentor's shared map of each flipped
            ``Hc x Wc`` canvas (:func:`flip_images` order).
        locations: ``(1, M, 2)`` float32 pixels on the unflipped canvas, ``-1`` padded.
        crop_size: the patch side ``c``; canvas: ``(Hc, Wc)`` Python ints.
    Returns:
        dict as ``segment_locations`` gives: ``patches (1, M, c, c)`` float32 mean
        probabilities, ``origins (1, M, 2)`` int32 (the unflipped patch's), ``valid (1, M)``.
    """
    height, width = canvas
    valid = valid_rows(locations)
    origins = patch_origins(locations, crop_size)
    total, count = 0.0, 0.0
    for k, (fy, fx) in enumerate(FLIPS):
        seen = _flip_locations(locations, valid, canvas, fy, fx)
        out = segment(shared_features[k : k + 1], seen)
        patches = _flip(out["patches"], fy, fx, 2)
        flipped_origin = ops.cast(out["origins"], "int32")
        # a flipped patch's pixel (u, v) lies at (Hc - 1 - o - u) etc.: its unflipped origin
        # is Hc - c - o on each flipped axis
        oy = (height - crop_size) - flipped_origin[..., 0] if fy else flipped_origin[..., 0]
        ox = (width - crop_size) - flipped_origin[..., 1] if fx else flipped_origin[..., 1]
        shift = ops.stack([oy, ox], axis=-1) - origins
        moved, covered = shift_patches(patches, shift)
        total, count = total + moved, count + covered
    patches = total / ops.maximum(count, 1.0)
    patches = patches * ops.cast(valid, patches.dtype)[:, :, None, None]
    return {"patches": patches, "origins": origins, "valid": valid}


def canvas_shape(images) -> tuple[int, int]:
    """``(Hc, Wc)``: the ``(B, H, W, C)`` images' sides rounded up to the model's multiple of 32
    (SPEC 1), the canvas :func:`dense_forward` flips."""
    from lacss_core.models.lacss import PAD_MULTIPLE

    return tuple(-(-int(n) // PAD_MULTIPLE) * PAD_MULTIPLE for n in images.shape[1:3])


def dense_forward(model, images):
    """``model.dense_forward`` of the four flips of ``images``, the LPN maps merged.

    Args:
        model: a ``Lacss``; images: ``(1, H, W, C)`` float32, zero padded here to the model's
            multiple of 32 (the canvas) so that every flip's LPN grid covers it exactly.
    Returns:
        dict as ``Lacss.dense_forward`` gives for the canvas: ``lpn_scores (1, h, w)``,
        ``lpn_offsets (1, h, w, 2)``, ``candidates (1, h*w, 2)``, ``candidate_scores (1, h*w)``
        (decoded from the merged maps) and ``shared_features (4, Hc/2, Wc/2, F)`` (one per flip,
        for :func:`merge_patches`).
    """
    from lacss_core import _backend
    from lacss_core.ops.proposals import decode_proposals

    height, width = int(images.shape[1]), int(images.shape[2])
    canvas = canvas_shape(images)
    pad = [[0, 0], [0, canvas[0] - height], [0, canvas[1] - width], [0, 0]]
    padded = _backend.current().pad_zeros(images, pad)
    dense = model.dense_forward(flip_images(padded), training=False)
    scores, offsets = merge_lpn(dense["lpn_scores"], dense["lpn_offsets"])
    candidates, candidate_scores = decode_proposals(scores, offsets, canvas, model.lpn_stride)
    return {
        "lpn_scores": scores,
        "lpn_offsets": offsets,
        "candidates": candidates,
        "candidate_scores": candidate_scores,
        "shared_features": dense["shared_features"],
    }
