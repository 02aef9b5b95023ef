"""Per-instance crop geometry on the stride-2 segmentor features (SPEC 7) and GT patches (SPEC 8).

Rows whose location is invalid (a negative coordinate) produce zeros everywhere here: origin
``(0, 0)``, a zero location tensor, zero feature and GT patches. Callers mask them by validity.
"""

from __future__ import annotations

from keras import ops


def patch_origins(locations, crop_size):
    """Top-left image pixel ``(Y0, X0)`` of each instance's ``c x c`` output patch (SPEC 7).

    Args:
        locations: ``(B, M, 2)`` float pixels, ``-1`` padded; crop_size: Python int ``c``
            (positive multiple of 4).
    Returns:
        ``(B, M, 2) int32``: ``(2*(floor(y/2) - q), 2*(floor(x/2) - q))`` with ``q = (c//2)//2``;
        may be negative; ``(0, 0)`` for invalid rows.
    """
    raise NotImplementedError


def location_tensor(locations, crop_size):
    """Location encoding of every feature cell of each instance's ``k x k`` patch (SPEC 7).

    Returns:
        ``(B, M, k, k, 2) float32`` with ``k = c // 2``; cell ``(u, v)`` holds
        ``((2*(cy-q+u) + 0.5 - y) / c, (2*(cx-q+v) + 0.5 - x) / c)``; zeros for invalid rows.
    """
    raise NotImplementedError


def gather_patches(features, locations, crop_size):
    """Crop each instance's ``k x k`` window from the stride-2 feature map (SPEC 7).

    Args:
        features: ``(B, Hf, Wf, F)`` float, the segmentor's shared map on the padded input.
        locations: ``(B, M, 2)`` float pixels; crop_size: Python int ``c``.
    Returns:
        ``(B, M, k, k, F) float32``: rows ``[cy-q, cy-q+k)``, cols ``[cx-q, cx-q+k)``; cells outside
        the map read 0; zeros for invalid rows.
    """
    raise NotImplementedError


def gt_patches(label, locations, crop_size):
    """Ground-truth ``c x c`` patches from a label image (SPEC 8).

    Args:
        label: ``(B, H, W)`` int label image, 0 background; LOI row ``n`` belongs to label ``n + 1``.
        locations: ``(B, N, 2)`` float pixels (GT or mixed), ``-1`` padded; crop_size: ``c``.
    Returns:
        ``(B, N, c, c) float32``: ``label[Y0+a, X0+b] == n + 1`` (0 outside the image); zeros for
        invalid rows.
    """
    raise NotImplementedError
