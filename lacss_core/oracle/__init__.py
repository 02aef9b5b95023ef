"""The NumPy oracle: an independent, obvious reference for the LACSS math.

Pure NumPy (and SciPy), float64 internally for continuous outputs, float32 for every discrete
decision (SPEC 1). No Keras import. ``lacss_core.ops`` mirrors every function here name for name
and argument for argument.
"""

from lacss_core.oracle.label import render_label
from lacss_core.oracle.lpn import lpn_loss, lpn_targets
from lacss_core.oracle.patches import gather_patches, gt_patches, location_tensor, patch_origins
from lacss_core.oracle.proposals import decode_proposals, mix_locations, nms
from lacss_core.oracle.seg_losses import boundary_loss, fs_seg_loss, sobel_magnitude, ws_seg_loss

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
