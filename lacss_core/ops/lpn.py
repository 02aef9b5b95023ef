"""LPN targets (SPEC 3) and the LPN loss (SPEC 4), in keras.ops."""

from __future__ import annotations

from keras import ops


def lpn_targets(locations, image_shape, stride):
    """Score and offset targets on one feature level from padded GT LOIs (SPEC 3).

    Args:
        locations: ``(B, N, 2)`` float, GT LOIs ``(y, x)`` in pixels; rows with a negative
            coordinate are padding.
        image_shape: ``(H, W)`` Python ints, the original image size in pixels.
        stride: Python int ``s`` (2, 4, 8 or 16); the grid is ``h x w = ceil(H/s) x ceil(W/s)``.
    Returns:
        ``score_target (B, h, w) float32`` in {0, 1} and ``offset_target (B, h, w, 2) float32``
        in grid units ``(g - p) / s`` (zero where the image has no valid LOI).
    """
    raise NotImplementedError


def lpn_loss(scores, offsets, score_target, offset_target, *, alpha=0.25, gamma=2.0, delta=1.0):
    """LPN loss ``<L_S> + <L_R>`` over a batch (SPEC 4).

    Args:
        scores: ``(B, h, w)`` float, post-sigmoid probabilities.
        offsets: ``(B, h, w, 2)`` float, predicted offsets in grid units.
        score_target: ``(B, h, w)`` {0, 1}; offset_target: ``(B, h, w, 2)``, from ``lpn_targets``.
    Returns:
        Scalar float64: focal loss mean over all ``B*h*w`` cells plus the Huber(delta) offset loss
        summed over positive cells and divided by ``2 * max(1, #positives)``.
    """
    raise NotImplementedError
