"""Segmentation losses (SPEC 8): fully supervised BCE, weakly supervised loss, cell boundary loss.

Means are over all valid (image, instance) pairs and all ``c*c`` patch pixels (pixels outside the
image included): ``sum / (c*c*max(1, total valid instances))``. Patches are ``(B, N, c, c)``
post-sigmoid probabilities whose instance ``n`` sits at ``patch_origins(locations, c)[:, n]``.
All losses return float32 scalars, differentiable w.r.t. ``patches`` (and ``boundary_pred``).
They compute in float32 whatever the model's dtype policy (the casts below): a mean over
``c*c*N`` pixels, and logs of probabilities near 0 and 1, lose too much in bfloat16.

Patches reach a canvas through one scatter-add over the flat pixel ids of
``patches.paste_indices`` (see ``_paste``): duplicates summed, differentiable, no loop over
instances.
"""

from __future__ import annotations

from keras import ops

from lacss_core import _backend, _validation
from lacss_core.ops._common import clipped_log, valid_rows
from lacss_core.ops.patches import gt_patches, paste_indices


def _crop_size(patches) -> int:
    """``c`` from the static ``(B, N, c, c)`` shape of ``patches``."""
    if len(patches.shape) != 4 or patches.shape[-1] != patches.shape[-2]:
        raise ValueError(f"patches must have shape (B, N, c, c), got {tuple(patches.shape)}")
    return _validation.crop_size(int(patches.shape[-1]))


def _instance_mean(per_pixel, valid):
    """Mean over valid instances and all their ``c*c`` pixels; 0 with no valid instance."""
    c = per_pixel.shape[-1]
    valid = ops.cast(valid, "float32")
    total = ops.sum(per_pixel * valid[..., None, None])
    return total / (float(c * c) * ops.maximum(ops.sum(valid), 1.0))


def _paste(values, ids, num_segments):
    """Sum ``values`` ``(B, N, c, c)`` into their flat canvas ids; returns ``(num_segments,)``.

    ``scatter_update(..., reduction="add")`` is ``.at[].add`` on JAX and ``index_put_(accumulate=
    True)`` on torch: additive over duplicate ids, differentiable, and several times faster on
    torch than ``ops.segment_sum`` (whose torch version first copies the ids per element).
    """
    flat_ids = ops.reshape(ids, (-1, 1))
    return ops.scatter_update(
        ops.zeros((num_segments,)), flat_ids, ops.reshape(values, (-1,)), reduction="add"
    )


def fs_seg_loss(patches, locations, label):
    """Fully supervised BCE against ``gt_patches(label, locations, c)``; scalar float32.

    Args: patches ``(B, N, c, c)``; locations ``(B, N, 2)``, ``-1`` padded; label ``(B, H, W)`` int.
    """
    c = _crop_size(patches)
    g = ops.cast(patches, "float32")
    g_t = gt_patches(label, locations, c)
    bce = -g_t * clipped_log(g) - (1.0 - g_t) * clipped_log(1.0 - g)
    return _instance_mean(bce, valid_rows(locations))


def ws_seg_loss(patches, locations, mask):
    """The paper's weakly supervised loss via one padded canvas; scalar float32 (may be negative).

    Args: patches ``(B, N, c, c)``; locations ``(B, N, 2)``, ``-1`` padded; mask ``(B, H, W)``
    binary foreground (0 outside the image). The overlap term sums ``log(clip(1 - G_k))`` of the
    other valid instances on an ``(H + c) x (W + c)`` canvas offset by ``c/2``, which holds every
    patch of a location inside the image. The mask is read from the same canvas (zero-padded), so
    both terms use one set of pixel ids. A row whose location lies outside ``[0, H-1] x [0, W-1]``
    (float32) counts as padding, as in the oracle: its patch would not fit on the canvas (the data
    pipeline never produces one, SPEC 1).
    """
    c = _crop_size(patches)
    h, w = mask.shape[1:]
    g = ops.cast(patches, "float32")
    locations = ops.cast(locations, "float32")
    inside = (locations[..., 0] <= float(h - 1)) & (locations[..., 1] <= float(w - 1))
    locations = ops.where(inside[..., None], locations, -1.0)  # outside rows are padding
    valid = valid_rows(locations)
    ids, num_segments = paste_indices(locations, c, (h + c, w + c), c // 2)
    log_free = clipped_log(1.0 - g)  # log(1 - G_k), 0 where instance k predicts nothing
    # Invalid rows go to the last (dropped) segment, so the canvas proper sums valid rows only;
    # what invalid rows read back from that segment is masked out in the mean.
    overlap_canvas = _paste(log_free, ids, num_segments)
    others = ops.take(overlap_canvas, ids) - log_free  # sum over valid k != i
    margin = c // 2
    mask_canvas = _backend.current().pad_zeros(
        ops.cast(mask, "float32"), [[0, 0], [margin, margin], [margin, margin]]
    )
    mask_canvas = ops.concatenate([ops.reshape(mask_canvas, (-1,)), ops.zeros((1,))])
    fg = ops.take(mask_canvas, ids)
    loss = -fg * g - (1.0 - fg) * (1.0 - g) - g * others
    return _instance_mean(loss, valid)


def sobel_magnitude(patches):
    """``phi(G) = sqrt(clip((gx^2 + gy^2) / 8, 1e-9, 1))`` per patch, zero padding.

    Args: patches ``(B, N, c, c)``. Returns ``(B, N, c, c) float32``. ``gx`` is the correlation
    with ``[[-1,0,1],[-2,0,2],[-1,0,1]]`` (changes along x), ``gy`` with its transpose. Written as
    the separable product (difference along one axis, 1-2-1 smoothing along the other) of shifted
    slices of the zero-padded patch: exact float32 arithmetic, no convolution kernel.
    """
    if len(patches.shape) != 4:
        raise ValueError(f"patches must have shape (B, N, c, c), got {tuple(patches.shape)}")
    g = _backend.current().pad_zeros(ops.cast(patches, "float32"), [[0, 0], [0, 0], [1, 1], [1, 1]])
    h, w = patches.shape[-2], patches.shape[-1]

    def shifted(dy, dx):  # the padded patch moved by (dy, dx) in -1..1, cropped back to h x w
        return g[:, :, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    diff_x = {dy: shifted(dy, 1) - shifted(dy, -1) for dy in (-1, 0, 1)}
    diff_y = {dx: shifted(1, dx) - shifted(-1, dx) for dx in (-1, 0, 1)}
    gx = diff_x[-1] + 2.0 * diff_x[0] + diff_x[1]
    gy = diff_y[-1] + 2.0 * diff_y[0] + diff_y[1]
    return ops.sqrt(ops.clip((gx * gx + gy * gy) / 8.0, 1e-9, 1.0))


def _huber(x, delta):
    return ops.where(ops.abs(x) <= delta, 0.5 * x * x, delta * (ops.abs(x) - delta / 2))


def boundary_loss(patches, locations, boundary_pred):
    """Cell boundary loss: mean over ``B*H*W`` of ``Huber_0.5(B_P - B_H)``; scalar float32.

    Args: patches ``(B, N, c, c)``; locations ``(B, N, 2)``; boundary_pred ``(B, H, W)`` auxnet
    output ``B_P``. ``B_H = tanh(sum of phi(G_i) pasted at origins)``, pixels outside dropped.
    With no valid instance ``B_H = 0`` and the loss is the mean of ``Huber_0.5(B_P)``.
    """
    c = _crop_size(patches)
    batch, h, w = boundary_pred.shape
    ids, num_segments = paste_indices(locations, c, (h, w), 0)
    edge_sum = _paste(sobel_magnitude(patches), ids, num_segments)[:-1]
    b_h = ops.tanh(ops.reshape(edge_sum, (batch, h, w)))
    return ops.mean(_huber(ops.cast(boundary_pred, "float32") - b_h, 0.5))
