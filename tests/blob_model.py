"""``BlobModel``: a weightless, cheap stand-in for ``Lacss`` that finds real (synthetic) cells.

It has ``Lacss``'s inference interface (``dense_forward``, ``segment_locations`` and the config
attributes ``predict_instances`` reads), so the whole prediction path runs unchanged (compiled
stages, NMS, slot capacity, tiling, painting), but instead of a trained network:

* proposals are the local maxima (over ``PEAK_WINDOW`` pixels) of the image box-smoothed over
  ``SMOOTH`` pixels, scored by the smoothed value: on ``lacss_core.data.SyntheticSlide`` images
  (cells brighter in the middle) that is one proposal near each cell's centre;
* each proposal's patch is a disc of radius ``RADIUS`` around it.

Everything is local and translation-equivariant, so a cell's result does not depend on the tile
that finds it: a tiling that loses no cell gives the recall of the whole image. Used where the
tiny preset would be too slow (thousands of cells on 2048^2 and 4096^2 images) or, untrained,
could not find cells at all.
"""

import keras
import numpy as np
from keras import ops

SMOOTH = 5
PEAK_WINDOW = 9
RADIUS = 6.0


class BlobModel(keras.Model):
    """Local maxima of the smoothed image as proposals; discs as patches."""

    lpn_stride = 8
    nms_distance = 8.0
    min_score = 0.2
    pre_nms_topk = 4096
    input_channels = 1

    def __init__(self, crop_size=24, max_output=1024):
        super().__init__()
        self.crop_size = crop_size
        self.max_output = max_output
        self.built = True  # weightless

    def dense_forward(self, images, training=False):
        height, width = images.shape[1], images.shape[2]
        # "valid" pooling, then zero padding: "same" average pooling builds its divisor from a
        # pooled array of ones, which XLA spends seconds constant-folding per tile shape
        half = SMOOTH // 2
        smooth = ops.average_pool(images[..., :1], SMOOTH, strides=1, padding="valid")
        smooth = ops.pad(smooth, [[0, 0], [half, half], [half, half], [0, 0]])
        peak = ops.max_pool(smooth, PEAK_WINDOW, strides=1, padding="same")
        scores = ops.where(smooth >= peak, smooth, 0.0)
        yy, xx = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
        grid = np.stack([yy.ravel(), xx.ravel()], -1).astype("float32")[None]
        return {
            "lpn_scores": scores[..., 0],  # a proposal grid of stride 1
            "candidates": ops.convert_to_tensor(grid),
            "candidate_scores": ops.reshape(scores, (1, -1)),
            "shared_features": images,
        }

    def segment_locations(self, shared_features, locations):
        crop = self.crop_size
        valid = ops.all(locations >= 0, axis=-1)
        origins = ops.cast(2 * (ops.floor(locations / 2) - crop // 4), "int32")
        steps = ops.arange(crop, dtype="float32")
        rows = ops.cast(origins[..., 0:1], "float32") + steps - locations[..., 0:1]
        cols = ops.cast(origins[..., 1:2], "float32") + steps - locations[..., 1:2]
        inside = rows[..., :, None] ** 2 + cols[..., None, :] ** 2 <= RADIUS**2
        patches = ops.cast(inside & valid[..., None, None], "float32")
        return {"patches": patches, "origins": origins, "valid": valid}


def recall(locations, truth) -> float:
    """Fraction of the cells of label image ``truth`` hit by at least one of ``locations``."""
    cells = np.unique(truth)
    cells = cells[cells > 0]
    pixels = np.clip(np.round(np.asarray(locations)).astype(int), 0, np.array(truth.shape) - 1)
    hit = np.unique(truth[pixels[:, 0], pixels[:, 1]])
    return np.isin(cells, hit).mean() if cells.size else 1.0
