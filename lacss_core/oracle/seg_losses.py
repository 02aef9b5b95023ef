"""Segmentation losses (SPEC 8): fully supervised BCE, weakly supervised loss, cell boundary loss.

Means are over all valid (image, instance) pairs and all ``c*c`` patch pixels (pixels outside the
image included): ``sum / (c*c*max(1, total valid instances))``. Patches are ``(B, N, c, c)``
post-sigmoid probabilities whose instance ``n`` sits at ``patch_origins(locations, c)[:, n]``.
"""

from __future__ import annotations

import numpy as np


def fs_seg_loss(patches, locations, label):
    """Fully supervised BCE against ``gt_patches(label, locations, c)``; scalar float64.

    Args: patches ``(B, N, c, c)``; locations ``(B, N, 2)``, ``-1`` padded; label ``(B, H, W)`` int.
    """
    raise NotImplementedError


def ws_seg_loss(patches, locations, mask):
    """The paper's weakly supervised loss via one padded canvas; scalar float64 (may be negative).

    Args: patches ``(B, N, c, c)``; locations ``(B, N, 2)``; mask ``(B, H, W)`` binary foreground
    (0 outside the image). The overlap term sums ``log(clip(1 - G_k))`` of the other valid
    instances on an ``(H + c) x (W + c)`` canvas offset by ``c/2``.
    """
    raise NotImplementedError


def sobel_magnitude(patches):
    """``phi(G) = sqrt(clip((gx^2 + gy^2) / 8, 1e-9, 1))`` per patch, zero padding.

    Args: patches ``(B, N, c, c)``. Returns ``(B, N, c, c) float32``. ``gx`` is the correlation
    with ``[[-1,0,1],[-2,0,2],[-1,0,1]]`` (changes along x), ``gy`` with its transpose.
    """
    raise NotImplementedError


def boundary_loss(patches, locations, boundary_pred):
    """Cell boundary loss: mean over ``B*H*W`` of ``Huber_0.5(B_P - B_H)``; scalar float64.

    Args: patches ``(B, N, c, c)``; locations ``(B, N, 2)``; boundary_pred ``(B, H, W)`` auxnet
    output ``B_P``. ``B_H = tanh(sum of phi(G_i) pasted at origins)``, pixels outside dropped.
    """
    raise NotImplementedError
