"""Prediction: a label image and a per-cell table from a Lacss model, tiled for large images.

``predict_instances(model, image)`` is the stardist-shaped entry point. The work is split in two:

* On the accelerator (one compiled function per stage with ``jax.jit`` on JAX; eager under
  ``torch.no_grad`` on PyTorch): the network's dense part and NMS, then the per-instance layers on
  a slot count that covers the valid proposals, and either the label painting of SPEC 9
  (``lacss_core.ops.render_label``, whole image) or the thresholded patches (tiles).
* On the host, in NumPy: compaction of label ids, areas and bounding boxes; for tiles, the
  ownership test, the cross-tile de-duplication and the painting into the full label image.

Tiling (``lacss_core.tiling``): images larger than ``tile_size`` are cut into overlapping tiles
whose cells are merged with no seams and no duplicates.
"""

from __future__ import annotations

import math

import numpy as np

from lacss_core._network import Network, Settings, model_channels
from lacss_core.tiling import TILE_ALIGN, predict_tiled

# Images (after ``scale``) larger than this on either side are tiled when tile_size is None.
AUTO_TILE_SIZE = 1024


def predict_instances(
    model,
    image,
    *,
    min_score=None,
    nms_distance=None,
    segmentation_threshold=0.5,
    min_area=0,
    scale=1.0,
    normalize="range",
    tile_size=None,
    tile_overlap=None,
):
    """Segment cells in one image (or a list of images of any sizes).

    Args:
        model: a ``lacss_core.models.Lacss`` (trained, or loaded with ``keras.saving.load_model``).
        image: ``(H, W)`` grey or ``(H, W, C)`` array of any real dtype and any ``H, W >= 1``;
            ``C`` must match the model's input channels. A list/tuple of such arrays, or a 4-D
            ``(B, H, W, C)`` array, is segmented image by image and gives lists.
        min_score: keep proposals with score ``>=`` this (default: the model's ``min_score``).
        nms_distance: proposals closer than this many pixels to a better one are dropped
            (default: the model's ``nms_distance``, i.e. its LPN stride unless set).
        segmentation_threshold: a pixel belongs to a cell where its patch probability is ``>``
            this, in ``[0, 1)``.
        min_area: cells with fewer pixels than this (in the input's pixels, after overlaps are
            resolved) are removed; their pixels become background.
        scale: resize the image by this factor before inference (e.g. 2.0 when cells are half
            the size the model was trained on); results are mapped back to the input's pixels
            (label by nearest neighbour, locations as ``y = (y' + 0.5) / f - 0.5``).
        normalize: ``"range"`` (to [0, 1], as in training), ``"standard"`` (zero mean, unit
            variance) or ``None`` (the image is used as float32 unchanged).
        tile_size: side in pixels (of the scaled image) of the tiles used for images larger than
            it; default ``AUTO_TILE_SIZE``. Images that fit are predicted whole.
        tile_overlap: overlap of neighbouring tiles in pixels, ``>= crop_size``; default
            ``2 * crop_size`` rounded up to a multiple of 32.
    Returns:
        ``(label, details)``. ``label``: ``(H, W)`` int32, 0 = background, cells ``1..n``
        numbered by descending score. ``details``: dict of NumPy arrays, row ``i`` for label
        ``i + 1``: ``scores (n,)`` float32, ``locations (n, 2)`` float32 ``(y, x)`` pixels,
        ``areas (n,)`` int32 pixel counts, ``bboxes (n, 4)`` int32 ``(y0, x0, y1, x1)`` with
        ``y1, x1`` exclusive. For a list input, a list of labels and a list of details.
    Raises:
        ValueError: a bad image (ndim, channel count, empty, non-finite) or a bad option, naming it.
    """
    kwargs = dict(
        min_score=min_score,
        nms_distance=nms_distance,
        segmentation_threshold=segmentation_threshold,
        min_area=min_area,
        scale=scale,
        normalize=normalize,
        tile_size=tile_size,
        tile_overlap=tile_overlap,
    )
    if isinstance(image, (list, tuple)) or (isinstance(image, np.ndarray) and image.ndim == 4):
        results = [predict_instances(model, one, **kwargs) for one in image]
        return [r[0] for r in results], [r[1] for r in results]

    network = Network.of(model)
    settings = _resolve_settings(network, min_score, nms_distance, segmentation_threshold)
    min_area = _check_min_area(min_area)
    pixels = _prepare_image(image, network.channels, normalize)
    scaled, factors = _rescale(pixels, scale)
    tile, overlap = _tiling(scaled.shape[:2], tile_size, tile_overlap, network.crop_size)
    if tile is None:
        ranks, scores, locations = _predict_whole(network, scaled, settings)
    else:
        ranks, scores, locations = predict_tiled(network, scaled, settings, tile, overlap)
    ranks, locations = _unscale(ranks, locations, pixels.shape[:2], factors)
    return _finalize(ranks, scores, locations, min_area)


# ---------------------------------------------------------------------------- argument checks
def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _resolve_settings(network, min_score, nms_distance, threshold) -> Settings:
    model = network.model
    if min_score is None:
        min_score = model.min_score
    if nms_distance is None:
        nms_distance = network.default_nms_distance()
    if not _is_number(min_score) or not 0 <= min_score < math.inf:
        raise ValueError(f"min_score must be a finite number >= 0, got {min_score!r}")
    if not _is_number(nms_distance) or not 0 <= nms_distance < math.inf:
        raise ValueError(f"nms_distance must be a finite number >= 0, got {nms_distance!r}")
    if not _is_number(threshold) or not 0 <= threshold < 1:
        raise ValueError(f"segmentation_threshold must be in [0, 1), got {threshold!r}")
    return Settings(
        min_score=float(min_score),
        nms_distance=float(nms_distance),
        threshold=float(threshold),
        max_output=int(model.max_output),
        pre_nms_topk=int(model.pre_nms_topk),
    )


def _check_min_area(min_area) -> int:
    if not _is_number(min_area) or min_area < 0 or min_area != int(min_area):
        raise ValueError(f"min_area must be an int >= 0, got {min_area!r}")
    return int(min_area)


def _prepare_image(image, channels, normalize) -> np.ndarray:
    """``(H, W, C)`` float32, checked and normalised (SPEC 11, as in training)."""
    from lacss_core.data.normalize import normalize_image

    array = np.asarray(image)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or np.iscomplexobj(array):
        raise ValueError(f"image must be a real numeric array, got dtype {array.dtype}")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ValueError(
            f"image must be (H, W) grey or (H, W, C), got shape {array.shape}; "
            "pass several images as a list"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"image is empty: shape {array.shape}")
    if channels is not None and array.shape[-1] != channels:
        raise ValueError(
            f"image has {array.shape[-1]} channel(s) but the model expects {channels}: "
            f"pass an (H, W, {channels}) array" + (" or an (H, W) array" if channels == 1 else "")
        )
    if normalize is None:
        array = array.astype(np.float32)
        if not np.all(np.isfinite(array)):
            raise ValueError("image contains non-finite values")
        return array
    if normalize not in ("range", "standard"):
        raise ValueError(f"normalize must be 'range', 'standard' or None, got {normalize!r}")
    return normalize_image(array, normalize)


def _tiling(shape, tile_size, tile_overlap, crop_size):
    """``(tile, overlap)`` in pixels, or ``(None, None)`` when the image is predicted whole."""
    if tile_overlap is None:
        tile_overlap = -(-2 * crop_size // TILE_ALIGN) * TILE_ALIGN
    if not isinstance(tile_overlap, (int, np.integer)) or tile_overlap < crop_size:
        raise ValueError(
            f"tile_overlap must be an int >= the model's crop_size ({crop_size}), "
            f"got {tile_overlap!r}"
        )
    if tile_size is None:
        tile_size = max(AUTO_TILE_SIZE, 2 * tile_overlap)
    if not isinstance(tile_size, (int, np.integer)) or tile_size <= tile_overlap:
        raise ValueError(
            f"tile_size must be an int > tile_overlap ({tile_overlap}), got {tile_size!r}"
        )
    if max(shape) <= tile_size:
        return None, None
    return int(tile_size), int(tile_overlap)


# ---------------------------------------------------------------------------- scale
def _rescale(image, scale):
    """Resize ``(H, W, C)`` by ``scale`` (bilinear, pixel-area aligned); returns the factors used.

    Downscaling first blurs with a Gaussian of sigma ``(1/scale - 1) / 2`` against aliasing.
    """
    if not _is_number(scale) or not 0 < scale < math.inf:
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    if scale == 1:
        return image, (1.0, 1.0)
    from scipy import ndimage

    height, width = image.shape[:2]
    out_h, out_w = max(1, round(height * scale)), max(1, round(width * scale))
    factors = (out_h / height, out_w / width)
    if scale < 1:
        sigma = [(1 / f - 1) / 2 for f in factors] + [0]
        image = ndimage.gaussian_filter(image, sigma, mode="nearest")
    resized = ndimage.zoom(image, factors + (1,), order=1, mode="nearest", grid_mode=True)
    if resized.shape[:2] != (out_h, out_w):  # zoom rounds the same way; guard the contract
        raise RuntimeError(f"resize gave {resized.shape[:2]}, expected {(out_h, out_w)}")
    return resized.astype(np.float32), factors


def _unscale(ranks, locations, shape, factors):
    """Map a label image and ``(n, 2)`` locations from the scaled image back to ``shape``."""
    if factors == (1.0, 1.0):
        return ranks, locations
    fy, fx = factors
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * fy).astype(np.int64), ranks.shape[0] - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * fx).astype(np.int64), ranks.shape[1] - 1)
    ranks = ranks[np.ix_(rows, cols)]
    scale = np.array([fy, fx], np.float32)
    locations = ((locations + 0.5) / scale - 0.5).astype(np.float32)
    limits = np.array(shape, np.float32) - 1
    return ranks, np.clip(locations, 0, limits)


# ---------------------------------------------------------------------------- whole image
def _valid_in_score_order(locations, scores):
    """Indices of valid rows (both coordinates >= 0) by descending score, ties -> lower index."""
    valid = np.flatnonzero(np.all(locations >= 0, axis=-1))
    return valid[np.argsort(-scores[valid], kind="stable")]


def _predict_whole(network, image, settings):
    """``(ranks (H, W) int32, scores (n,), locations (n, 2))``, row ``r-1`` <-> rank ``r``."""
    out = network.run(image, settings, render=True)
    order = _valid_in_score_order(out["locations"], out["scores"])
    return out["ranks"].astype(np.int32), out["scores"][order], out["locations"][order]


# ---------------------------------------------------------------------------- tiles
# ---------------------------------------------------------------------------- details
def _finalize(ranks, scores, locations, min_area):
    """Drop cells under ``min_area`` (or with no pixel), renumber 1..n in rank order, measure."""
    from scipy import ndimage

    count = len(scores)
    areas = np.bincount(ranks.ravel(), minlength=count + 1)[1 : count + 1]
    keep = areas >= max(min_area, 1)
    new_ids = np.zeros(count + 1, np.int32)
    new_ids[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    label = new_ids[ranks]
    boxes = ndimage.find_objects(label, max_label=int(keep.sum()))
    bboxes = np.array(
        [(s[0].start, s[1].start, s[0].stop, s[1].stop) for s in boxes], np.int32
    ).reshape(-1, 4)
    details = {
        "scores": np.asarray(scores, np.float32)[keep],
        "locations": np.asarray(locations, np.float32).reshape(-1, 2)[keep],
        "areas": areas[keep].astype(np.int32),
        "bboxes": bboxes,
    }
    return label, details


__all__ = ["model_channels", "predict_instances"]
