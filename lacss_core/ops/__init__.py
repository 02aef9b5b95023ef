"""The keras.ops twins of ``lacss_core.oracle``: same names, same signatures, static shapes.

Only ``keras.ops`` here (no jax/torch imports). Every function works eagerly and under
``jax.jit`` on JAX and eagerly on torch; losses are differentiable w.r.t. the predictions.
"""

from lacss_core.ops.label import render_label
from lacss_core.ops.lpn import lpn_loss, lpn_targets
from lacss_core.ops.patches import gather_patches, gt_patches, location_tensor, patch_origins
from lacss_core.ops.proposals import decode_proposals, mix_locations, nms
from lacss_core.ops.seg_losses import boundary_loss, fs_seg_loss, sobel_magnitude, ws_seg_loss

__all__ = [
    "boundary_loss",
    "decode_proposals",
    "fs_seg_loss",
    "gather_patches",
    "gt_patches",
    "location_tensor",
    "lpn_loss",
    "lpn_targets",
    "mix_locations",
    "nms",
    "patch_origins",
    "render_label",
    "sobel_magnitude",
    "ws_seg_loss",
]
