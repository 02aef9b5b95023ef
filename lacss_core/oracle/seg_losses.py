"""Segmentation losses (SPEC 8): fully supervised BCE, weakly supervised loss, cell boundary loss.

Means are over all valid (image, instance) pairs and all ``c*c`` patch pixels (pixels outside the
image included): ``sum / (c*c*max(1, total valid instances))``. Patches are ``(B, N, c, c)``
post-sigmoid probabilities whose instance ``n`` sits at ``patch_origins(locations, c)[:, n]``.
Everything continuous is computed in float64.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from lacss_core.oracle import _checks
from lacss_core.oracle.patches import gt_patches, patch_origins

EPS = 1e-7  # logs are taken of values clipped to [EPS, 1] (SPEC 1)
SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def _log(x: np.ndarray) -> np.ndarray:
    return np.log(np.clip(x, EPS, 1.0))


def _instances(patches, locations, image, image_name):
    """Check the common arguments; return float64 patches, float32 locations, validity, ``c``."""
    g = _checks.as_array(patches, "patches", 4).astype(np.float64)
    c = _checks.patch_size(g)
    locs = _checks.float32_locations(locations)
    img = _checks.as_array(image, image_name, 3)
    _checks.same_batch(patches=g, locations=locs, **{image_name: img})
    _checks.same_shape(g, locs, "patches", "locations", 2)
    return g, locs, _checks.valid_rows(locs), c, img


def _instance_mean(per_pixel: np.ndarray, valid: np.ndarray) -> float:
    """Mean over valid instances and all their ``c*c`` pixels; 0 with no valid instance."""
    c = per_pixel.shape[-1]
    return float(per_pixel[valid].sum() / (c * c * max(1, int(valid.sum()))))


def fs_seg_loss(patches, locations, label):
    """Fully supervised BCE against ``gt_patches(label, locations, c)``; scalar float64.

    Args: patches ``(B, N, c, c)``; locations ``(B, N, 2)``, ``-1`` padded; label ``(B, H, W)`` int.
    """
    g, locs, valid, c, lab = _instances(patches, locations, label, "label")
    g_t = gt_patches(lab, locs, c).astype(np.float64)
    bce = -g_t * _log(g) - (1.0 - g_t) * _log(1.0 - g)
    return _instance_mean(bce, valid)


def ws_seg_loss(patches, locations, mask):
    """The paper's weakly supervised loss via one padded canvas; scalar float64 (may be negative).

    Args: patches ``(B, N, c, c)``; locations ``(B, N, 2)``, ``-1`` padded; mask ``(B, H, W)``
    binary foreground (0 outside the image). The overlap term sums ``log(clip(1 - G_k))`` of the
    other valid instances on an ``(H + c) x (W + c)`` canvas offset by ``c/2``, which holds every
    patch of a location inside the image. A row whose location lies outside
    ``[0, H-1] x [0, W-1]`` (float32) counts as padding (SPEC 8): its patch does not fit the canvas.
    """
    g, locs, valid, c, msk = _instances(patches, locations, mask, "mask")
    valid = valid & _checks.inside_rows(locs, msk.shape[1:])
    origins = patch_origins(locs, c) + c // 2  # top-left pixel on the canvas, >= 0
    margin = ((0, 0), (c // 2, c // 2), (c // 2, c // 2))
    mask_canvas = np.pad(msk.astype(np.float64), margin)
    log_free = _log(1.0 - g)  # log(1 - G_k), 0 where instance k predicts nothing

    overlap_canvas = np.zeros_like(mask_canvas)
    for b, k in np.argwhere(valid):
        y0, x0 = origins[b, k]
        overlap_canvas[b, y0 : y0 + c, x0 : x0 + c] += log_free[b, k]

    loss = np.zeros_like(g)
    for b, i in np.argwhere(valid):
        y0, x0 = origins[b, i]
        window = np.s_[b, y0 : y0 + c, x0 : x0 + c]
        fg = mask_canvas[window]
        others = overlap_canvas[window] - log_free[b, i]  # sum over valid k != i
        gi = g[b, i]
        loss[b, i] = -fg * gi - (1.0 - fg) * (1.0 - gi) - gi * others
    return _instance_mean(loss, valid)


def sobel_magnitude(patches):
    """``phi(G) = sqrt(clip((gx^2 + gy^2) / 8, 1e-9, 1))`` per patch, zero padding.

    Args: patches ``(B, N, c, c)``. Returns ``(B, N, c, c) float64``. ``gx`` is the correlation
    with ``[[-1,0,1],[-2,0,2],[-1,0,1]]`` (changes along x), ``gy`` with its transpose. A constant
    patch gives ``sqrt(1e-9)`` (about 3.2e-5) away from its border.
    """
    g = _checks.as_array(patches, "patches", 4).astype(np.float64)
    # A (1, 1, 3, 3) kernel correlates every patch separately over its last two axes.
    gx = ndimage.correlate(g, SOBEL_X[None, None], mode="constant", cval=0.0)
    gy = ndimage.correlate(g, SOBEL_X.T[None, None], mode="constant", cval=0.0)
    return np.sqrt(np.clip((gx**2 + gy**2) / 8.0, 1e-9, 1.0))


def _paste_inside(canvas: np.ndarray, patch: np.ndarray, y0: int, x0: int) -> None:
    """Add ``patch`` onto ``canvas`` with its top-left at ``(y0, x0)``; pixels outside dropped."""
    h, w = canvas.shape
    c = patch.shape[0]
    top, left = max(y0, 0), max(x0, 0)
    bottom, right = min(y0 + c, h), min(x0 + c, w)
    if top < bottom and left < right:
        canvas[top:bottom, left:right] += patch[top - y0 : bottom - y0, left - x0 : right - x0]


def _huber(x: np.ndarray, delta: float) -> np.ndarray:
    return np.where(np.abs(x) <= delta, 0.5 * x**2, delta * (np.abs(x) - delta / 2))


def boundary_loss(patches, locations, boundary_pred):
    """Cell boundary loss: mean over ``B*H*W`` of ``Huber_0.5(B_P - B_H)``; scalar float64.

    Args: patches ``(B, N, c, c)``; locations ``(B, N, 2)``; boundary_pred ``(B, H, W)`` auxnet
    output ``B_P``. ``B_H = tanh(sum of phi(G_i) pasted at origins)``, pixels outside dropped.
    With no valid instance ``B_H = 0`` and the loss is the mean of ``Huber_0.5(B_P)``.
    """
    g, locs, valid, c, b_p = _instances(patches, locations, boundary_pred, "boundary_pred")
    phi = sobel_magnitude(g)
    origins = patch_origins(locs, c)
    edge_sum = np.zeros(b_p.shape)
    for b, i in np.argwhere(valid):
        _paste_inside(edge_sum[b], phi[b, i], *origins[b, i])
    b_h = np.tanh(edge_sum)
    return float(_huber(b_p.astype(np.float64) - b_h, 0.5).mean())
