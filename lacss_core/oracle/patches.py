"""Per-instance crop geometry on the stride-2 segmentor features (SPEC 7) and GT patches (SPEC 8).

Rows whose location is invalid (a negative coordinate) produce zeros everywhere here: origin
``(0, 0)``, a zero location tensor, zero feature and GT patches. Callers mask them by validity.

Locations are cast to float32 first: ``floor(y / 2)`` is a discrete decision (SPEC 1), and the
model only ever sees float32 locations.
"""

from __future__ import annotations

import numpy as np

from lacss_core import _validation
from lacss_core.oracle import _checks


def patch_origins(locations, crop_size):
    """Top-left image pixel ``(Y0, X0)`` of each instance's ``c x c`` output patch (SPEC 7).

    Args:
        locations: ``(B, M, 2)`` float pixels, ``-1`` padded; crop_size: Python int ``c``
            (positive multiple of 4).
    Returns:
        ``(B, M, 2) int32``: ``(2*(floor(y/2) - q), 2*(floor(x/2) - q))`` with ``q = (c//2)//2``;
        may be negative; ``(0, 0)`` for invalid rows.
    """
    locs = _checks.float32_locations(locations)
    c = _validation.crop_size(crop_size)
    q = (c // 2) // 2
    valid = _checks.valid_rows(locs)
    origins = np.zeros(locs.shape, dtype=np.int32)
    for b, m in np.argwhere(valid):
        feature_cell = np.floor(locs[b, m] / np.float32(2)).astype(np.int64)  # (cy, cx)
        origins[b, m] = 2 * (feature_cell - q)
    return origins


def location_tensor(locations, crop_size):
    """Location encoding of every feature cell of each instance's ``k x k`` patch (SPEC 7).

    Returns:
        ``(B, M, k, k, 2) float64`` with ``k = c // 2``; cell ``(u, v)`` holds
        ``((2*(cy-q+u) + 0.5 - y) / c, (2*(cx-q+v) + 0.5 - x) / c)``: the offset, in units of
        ``c`` pixels, from the LOI to the centre of the 2 x 2 output pixels the cell decodes to;
        zeros for invalid rows.
    """
    locs = _checks.float32_locations(locations).astype(np.float64)
    origins = patch_origins(locations, crop_size)
    c = crop_size
    k = c // 2
    valid = _checks.valid_rows(locs)
    out = np.zeros(locs.shape[:2] + (k, k, 2))
    for b, m in np.argwhere(valid):
        y, x = locs[b, m]
        y0, x0 = origins[b, m]  # = 2*(cy - q), 2*(cx - q)
        row_offsets = (y0 + 2 * np.arange(k) + 0.5 - y) / c
        col_offsets = (x0 + 2 * np.arange(k) + 0.5 - x) / c
        out[b, m, :, :, 0] = row_offsets[:, None]
        out[b, m, :, :, 1] = col_offsets[None, :]
    return out


def gather_patches(features, locations, crop_size):
    """Crop each instance's ``k x k`` window from the stride-2 feature map (SPEC 7).

    Args:
        features: ``(B, Hf, Wf, F)`` float, the segmentor's shared map on the padded input.
        locations: ``(B, M, 2)`` float pixels; crop_size: Python int ``c``.
    Returns:
        ``(B, M, k, k, F) float32`` (gathered, so exactly the float32 feature values): rows
        ``[cy-q, cy-q+k)``, cols ``[cx-q, cx-q+k)``; cells outside the map read 0; zeros for
        invalid rows.
    """
    feats = _checks.as_array(features, "features", 4).astype(np.float32)
    locs = _checks.float32_locations(locations)
    _checks.same_batch(features=feats, locations=locs)
    origins = patch_origins(locs, crop_size)
    k = crop_size // 2
    _, hf, wf, nf = feats.shape
    # Zero padding by k on every side holds any window that starts at a cell >= -q > -k.
    padded = np.pad(feats, ((0, 0), (k, k), (k, k), (0, 0)))
    out = np.zeros(locs.shape[:2] + (k, k, nf), dtype=np.float32)
    for b, m in np.argwhere(_checks.valid_rows(locs)):
        top, left = origins[b, m] // 2  # = cy - q, cx - q (feature cells)
        if top >= hf or left >= wf:
            continue  # the window lies wholly past the map: all zeros
        out[b, m] = padded[b, top + k : top + 2 * k, left + k : left + 2 * k]
    return out


def gt_patches(label, locations, crop_size):
    """Ground-truth ``c x c`` patches from a label image (SPEC 8).

    Args:
        label: ``(B, H, W)`` int label image, 0 background; LOI row ``n`` is label ``n + 1``.
        locations: ``(B, N, 2)`` float pixels (GT or mixed), ``-1`` padded; crop_size: ``c``.
    Returns:
        ``(B, N, c, c) float32``: ``label[Y0+a, X0+b] == n + 1`` (0 outside the image); zeros for
        invalid rows.
    """
    lab = _checks.integer_array(_checks.as_array(label, "label", 3), "label")
    locs = _checks.float32_locations(locations)
    _checks.same_batch(label=lab, locations=locs)
    origins = patch_origins(locs, crop_size)
    c = crop_size
    _, h, w = lab.shape
    # Padding by c with background holds any window that starts at a pixel >= -c/2 > -c.
    padded = np.pad(lab, ((0, 0), (c, c), (c, c)))
    out = np.zeros(locs.shape[:2] + (c, c), dtype=np.float32)
    for b, n in np.argwhere(_checks.valid_rows(locs)):
        y0, x0 = origins[b, n]
        if y0 >= h or x0 >= w:
            continue  # the window lies wholly past the image: all background
        window = padded[b, y0 + c : y0 + 2 * c, x0 + c : x0 + 2 * c]
        out[b, n] = window == n + 1
    return out
