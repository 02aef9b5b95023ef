"""Per-instance crop geometry on the stride-2 segmentor features (SPEC 7) and GT patches (SPEC 8).

Rows whose location is invalid (a negative coordinate) produce zeros everywhere here: origin
``(0, 0)``, a zero location tensor, zero feature and GT patches. Callers mask them by validity.

Every crop is one flat gather: the source is flattened over (batch, rows, cols) and each output
pixel's flat index is computed, with clipped coordinates, so there is no loop over instances and
no out-of-range index on either backend (torch raises on those, JAX clamps). ``paste_indices``
is the inverse map, used to paste patches onto a canvas (a scatter-add in ``seg_losses``, a
segment max in ``label``). ``paste_indices`` is a shared helper of the ops modules, not part of
the oracle mirror.
"""

from __future__ import annotations

import keras
from keras import ops

from lacss_core import _backend, _validation
from lacss_core.ops._common import valid_rows


def _valid_and_cells(locations, crop_size):
    """``(B, M) bool`` validity and ``(B, M, 2) int32`` top-left feature cell ``floor(loc/2) - q``
    (garbage on invalid rows)."""
    locations = ops.cast(locations, "float32")
    q = (crop_size // 2) // 2
    valid = valid_rows(locations)
    top_left = ops.cast(ops.floor(locations / 2.0), "int32") - q
    return valid, top_left


def patch_origins(locations, crop_size):
    """Top-left image pixel ``(Y0, X0)`` of each instance's ``c x c`` output patch (SPEC 7).

    Args:
        locations: ``(B, M, 2)`` float pixels, ``-1`` padded; crop_size: Python int ``c``
            (positive multiple of 4).
    Returns:
        ``(B, M, 2) int32``: ``(2*(floor(y/2) - q), 2*(floor(x/2) - q))`` with ``q = (c//2)//2``;
        may be negative; ``(0, 0)`` for invalid rows.
    """
    c = _validation.crop_size(crop_size)
    valid, top_left = _valid_and_cells(locations, c)
    return ops.where(valid[..., None], 2 * top_left, 0)


def location_tensor(locations, crop_size):
    """Location encoding of every feature cell of each instance's ``k x k`` patch (SPEC 7).

    Returns:
        ``(B, M, k, k, 2) float32`` with ``k = c // 2``; cell ``(u, v)`` holds
        ``((2*(cy-q+u) + 0.5 - y) / c, (2*(cx-q+v) + 0.5 - x) / c)``; zeros for invalid rows.
    """
    c = _validation.crop_size(crop_size)
    k = c // 2
    locations = ops.cast(locations, "float32")
    valid, top_left = _valid_and_cells(locations, c)
    # Pixel centre of every cell along each axis: 2*(top_left + u) + 0.5, shape (B, M, 2, k).
    steps = 2.0 * ops.arange(k, dtype="float32") + 0.5
    centres = ops.cast(2 * top_left, "float32")[..., None] + steps
    offsets = (centres - locations[..., None]) / float(c)
    offsets = ops.where(valid[..., None, None], offsets, 0.0)
    shape = tuple(offsets.shape[:2]) + (k, k)
    rows = ops.broadcast_to(offsets[:, :, 0, :, None], shape)
    cols = ops.broadcast_to(offsets[:, :, 1, None, :], shape)
    return ops.stack([rows, cols], axis=-1)


def _window_indices(top_left, valid, size, grid_shape, pad):
    """Flat indices into a ``(B, Hg + 2 pad, Wg + 2 pad)`` zero-bordered grid of ``size x size``
    windows starting at ``top_left`` (unpadded coordinates).

    Coordinates are clipped into the padded grid: with ``pad >= 1`` every clipped coordinate lies
    in the zero border, so a window cell outside the grid reads 0. Invalid rows read cell 0 of
    image 0, which is border too. Returns ``(B, M, size, size) int32``.
    """
    batch = top_left.shape[0]
    hp, wp = grid_shape[0] + 2 * pad, grid_shape[1] + 2 * pad
    steps = ops.arange(size, dtype="int32")
    rows = ops.clip(top_left[..., 0, None] + pad + steps, 0, hp - 1)  # (B, M, size)
    cols = ops.clip(top_left[..., 1, None] + pad + steps, 0, wp - 1)
    image = ops.arange(batch, dtype="int32")[:, None, None, None] * (hp * wp)
    flat = image + rows[..., :, None] * wp + cols[..., None, :]
    return ops.where(valid[..., None, None], flat, 0)


def gather_patches(features, locations, crop_size):
    """Crop each instance's ``k x k`` window from the stride-2 feature map (SPEC 7).

    Args:
        features: ``(B, Hf, Wf, F)`` float, the segmentor's shared map on the padded input.
        locations: ``(B, M, 2)`` float pixels; crop_size: Python int ``c``.
    Returns:
        ``(B, M, k, k, F)`` in the dtype of float ``features`` (float32 for others): rows
        ``[cy-q, cy-q+k)``, cols ``[cx-q, cx-q+k)``; cells outside the map read 0; zeros for
        invalid rows. Differentiable w.r.t. ``features``.
    """
    c = _validation.crop_size(crop_size)
    k, q = c // 2, c // 4
    batch, hf, wf, nf = features.shape
    valid, top_left = _valid_and_cells(locations, c)
    # A border of q cells holds every window of a location inside the map (rows -q .. Hf+q-1).
    features = ops.convert_to_tensor(features)
    # A gather copies values: it keeps the network's compute dtype (bfloat16 under a mixed
    # policy), which the segmentor head reads next.
    if not keras.backend.is_float_dtype(features.dtype):
        features = ops.cast(features, "float32")
    padded = _backend.current().pad_zeros(features, [[0, 0], [q, q], [q, q], [0, 0]])
    flat_features = ops.reshape(padded, (batch * (hf + 2 * q) * (wf + 2 * q), nf))
    index = _window_indices(top_left, valid, k, (hf, wf), q)
    patches = ops.take(flat_features, ops.reshape(index, (-1,)), axis=0)
    return ops.reshape(patches, tuple(index.shape) + (nf,))


def gt_patches(label, locations, crop_size):
    """Ground-truth ``c x c`` patches from a label image (SPEC 8).

    Args:
        label: ``(B, H, W)`` int label image, 0 background; LOI row ``n`` is label ``n + 1``.
        locations: ``(B, N, 2)`` float pixels (GT or mixed), ``-1`` padded; crop_size: ``c``.
    Returns:
        ``(B, N, c, c) float32``: ``label[Y0+a, X0+b] == n + 1`` (0 outside the image); zeros for
        invalid rows.
    """
    c = _validation.crop_size(crop_size)
    batch, h, w = label.shape
    n = locations.shape[1]
    valid, top_left = _valid_and_cells(locations, c)
    # A one-pixel background border: clipped coordinates of pixels outside the image land on it.
    padded = _backend.current().pad_zeros(ops.cast(label, "int32"), [[0, 0], [1, 1], [1, 1]])
    index = _window_indices(2 * top_left, valid, c, (h, w), 1)
    values = ops.take(ops.reshape(padded, (-1,)), index)
    wanted = ops.arange(1, n + 1, dtype="int32")[None, :, None, None]  # row n <-> label n + 1
    return ops.cast((values == wanted) & valid[..., None, None], "float32")


def paste_indices(locations, crop_size, canvas_shape, margin):
    """Where each patch pixel lands on a ``(B, Hc, Wc)`` canvas, as flat segment ids.

    Patch pixel ``(a, b)`` of a valid row lands on canvas pixel ``(Y0 + margin + a,
    X0 + margin + b)``. Pixels off the canvas and all pixels of invalid rows go to the extra
    segment ``B*Hc*Wc``, which callers drop.
    Returns: ``(B, N, c, c) int32`` ids and the static segment count ``B*Hc*Wc + 1``.
    """
    c = _validation.crop_size(crop_size)
    hc, wc = canvas_shape
    valid, top_left = _valid_and_cells(locations, c)
    batch = top_left.shape[0]
    steps = ops.arange(c, dtype="int32")
    rows = 2 * top_left[..., 0, None] + margin + steps  # (B, N, c)
    cols = 2 * top_left[..., 1, None] + margin + steps
    row_on = (rows >= 0) & (rows < hc)
    col_on = (cols >= 0) & (cols < wc)
    on_canvas = row_on[..., :, None] & col_on[..., None, :] & valid[..., None, None]
    image = ops.arange(batch, dtype="int32")[:, None, None, None] * (hc * wc)
    flat = image + rows[..., :, None] * wc + cols[..., None, :]
    dropped = batch * hc * wc
    return ops.where(on_canvas, flat, dropped), dropped + 1
