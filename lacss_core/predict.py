"""Prediction: a label image and a per-cell table from a Lacss model, tiled for large images.

``predict_instances(model, image)`` is the stardist-shaped entry point. The work is split in two:

* On the accelerator (one compiled function per stage with ``jax.jit`` on JAX; eager under
  ``torch.no_grad`` on PyTorch): the network's dense part and NMS, then the per-instance layers on
  a slot count that covers the valid proposals, and either the label painting of SPEC 9
  (``lacss_core.ops.render_label``, whole image) or the thresholded patches (tiles).
* On the host, in NumPy: compaction of label ids, areas and bounding boxes; for tiles, the
  ownership test, the cross-tile de-duplication and the painting into the full label image.

Tiling (``lacss_core.tiling``): images larger than ``tile_size`` are cut into overlapping tiles
whose cells are merged with no seams and no duplicates. A tile (or a whole image) whose proposals
reach the model's capacity is split into smaller tiles; what is still saturated at the smallest
tile size is reported (``details["saturated_tiles"]`` and a ``SaturationWarning``), never dropped
silently.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from lacss_core import _validation
from lacss_core._network import Network, Settings, model_channels
from lacss_core._progress import Progress
from lacss_core.postprocess import (
    DEFAULT_MAX_OVERLAP,
    clean_label,
    drop_occluded,
    median_diameter,
)
from lacss_core.tiling import (
    TILE_ALIGN,
    TiledResult,
    child_size,
    default_tile_size,
    grid_tiles,
    predict_tiled,
    split_tile,
    whole_tile,
)


class SaturationWarning(UserWarning):
    """Some tiles still held the model's full capacity of cells at the smallest tile size, so
    cells may be missing there (``details["saturated_tiles"]`` counts those tiles)."""


def predict_instances(
    model,
    image,
    *,
    min_score=None,
    nms_distance=None,
    segmentation_threshold=None,
    min_area=0,
    scale=1.0,
    diameter=None,
    normalize="model",
    clean_masks=True,
    max_overlap=DEFAULT_MAX_OVERLAP,
    tile_size=None,
    tile_overlap=None,
    max_output=None,
    progress=None,
    channels=None,
    compile=None,
    augment=False,
):
    """Segment cells in one image (or a list of images of any sizes).

    Args:
        model: a ``lacss_core.models.Lacss`` (trained, or loaded with ``keras.saving.load_model``).
        image: ``(H, W)`` grey, ``(H, W, C)`` or channels-first ``(C, H, W)`` array (``C <= 4``,
            by the shape rule of ``lacss_core.data.axes``; an ``(H, W, C)`` whose ``C`` is the
            model's channel count is always channels-last) of any real dtype and any
            ``H, W >= 1``; nested Python lists (``array.tolist()``) are converted. A list/tuple
            of arrays, or a 4-D ``(B, H, W, C)`` array, is segmented image by image and gives
            lists. A stack of planes (z, time) is not one image: segment its planes one by one
            (``lacss_core.data.read_planes``). A ``zarr.Array`` or the path of a zarr array /
            OME-Zarr image (level 0) is read whole, by the axis rule of
            ``lacss_core.zarr_io.open_image``; for images larger than memory use
            ``lacss_core.predict_zarr`` (block by block) or ``distributed_predict`` (Dask).
        min_score: keep proposals with score ``>=`` this, in ``[0, 1]`` (default: the model's
            ``min_score``).
        nms_distance: proposals closer than this many pixels to a better one are dropped
            (default: the model's ``predict_nms_distance`` if calibrated, else its
            ``nms_distance``, i.e. its LPN stride unless set).
        segmentation_threshold: a pixel belongs to a cell where its patch probability is ``>``
            this, in ``[0, 1)`` (default: the model's ``segmentation_threshold``, 0.5 unless
            calibrated).
        min_area: cells with fewer pixels than this (in the input's pixels, after overlaps are
            resolved) are removed; their pixels become background.
        scale: resize the image by this factor before inference (e.g. 2.0 when cells are half
            the size the model was trained on); results are mapped back to the input's pixels
            (label by nearest neighbour, locations as ``y = (y' + 0.5) / f - 0.5``).
        diameter: the typical cell diameter in the image, in pixels, as cellpose's option: the
            image is rescaled by ``model.train_diameter / diameter`` (the diameter the model was
            trained for); or ``"auto"``: estimated from a first pass (the median equivalent
            diameter of the cells found, refined by up to two more passes until the scale
            changes by less than 10%; see ``docs/results.md`` for its accuracy). Give
            ``diameter`` or ``scale``, not both. ``details["scale"]`` says the scale used.
        normalize: ``"model"`` (default: the method the model was trained with, its
            ``image_normalization``, ``"percentile"`` for new models), ``"percentile"`` (1st-99.8th
            percentile to [0, 1], robust to outliers), ``"range"`` (min-max to [0, 1]),
            ``"standard"`` (zero mean, unit variance) or ``None`` (the image is used as float32
            unchanged); see ``lacss_core.data.normalize_image``.
        clean_masks: keep each cell's largest 4-connected piece and fill its holes
            (``lacss_core.postprocess.clean_label``) before ``min_area`` is applied; ``False``
            gives the painted masks as they are.
        max_overlap: a cell more than this fraction of whose mask lies under higher-scoring
            cells is removed (mask NMS: a large cell found twice leaves its second copy as a
            sliver, ``lacss_core.postprocess.drop_occluded``), in ``[0, 1]``; 1 keeps every
            cell. Applied before ``clean_masks``.
        tile_size: side in pixels (of the scaled image) of the tiles used for images larger than
            it; images that fit are predicted whole. Default: from the model's capacity
            (``lacss_core.tiling.default_tile_size``: a tile densely packed with cells of half
            the crop size fits ``max_output``; 192 for the demo's model, 1024 at most). Any tile
            (or whole image) whose proposals reach ``max_output`` is split into smaller tiles,
            down to about 3 crop sizes.
        tile_overlap: overlap of neighbouring tiles in pixels, ``>= crop_size``; default
            ``2 * crop_size`` rounded up to a multiple of 32.
        max_output: the most cells one tile (or an untiled image) can hold, i.e. the slots
            the per-instance layers run on (default: the model's ``max_output``). Larger costs
            memory per tile; the default tile size grows with it.
        progress: progress over the tiles of a tiled image, on stderr: ``None`` a bar on a
            terminal only; ``True`` a bar on a terminal, plain lines elsewhere (a log file);
            ``False`` nothing.
        channels: how the image's channels feed the model's (the same rule as ``lacss predict
            --channels``, see :func:`select_channels`): None (they must match, except that
            identical channels, e.g. grey saved as RGB, feed a 1-channel model), ``"grey"``
            (their mean, for a 1-channel model) or a list of channel indices (e.g. ``[1]`` for
            the green channel, ``[0, 0, 0]`` to repeat a grey image for a 3-channel model).
        compile: how the network runs: ``None`` the backend's default (``jax.jit`` on JAX,
            eager on PyTorch), ``True`` compiled (``torch.compile`` on PyTorch, with static
            shapes: its first call per size bucket takes long, see ``docs/performance.md``;
            worth it for a folder of images), ``False`` eager. Each image (or tile) is zero
            padded to a size bucket (``lacss_core._network.bucket_side``: the next multiple of
            32 up to 512 pixels, then 8 sides per octave, at most 12.5% more pixels per side), so
            a folder of differently sized images compiles once per bucket, not once per image.
            Up to 512 pixels per side the labels are those of the unpadded image; above, the
            extra zero border is context the network sees near the bottom/right edge (see
            ``docs/performance.md``).
        augment: ``True`` averages the model over the image and its three flips (test-time
            augmentation, ``lacss_core.augment``): proposal scores and locations from the mean
            of the four LPN maps, each mask from the mean of its four patches. Costs about 4x
            the prediction time; on the generalist's held-out synthetic sets it raised AP50 by
            0.01-0.04 and AP75 by 0.02-0.06 (``docs/results.md``). Thresholds calibrated
            without it serve as they are.
    Returns:
        ``(label, details)``. ``label``: ``(H, W)`` int32, 0 = background, cells ``1..n``
        numbered by descending score. ``details``: dict of NumPy arrays, row ``i`` for label
        ``i + 1``: ``scores (n,)`` float32, ``locations (n, 2)`` float32 ``(y, x)`` pixels,
        ``areas (n,)`` int32 pixel counts, ``bboxes (n, 4)`` int32 ``(y0, x0, y1, x1)`` with
        ``y1, x1`` exclusive, ``saturated (n,)`` bool (found by a tile that stayed saturated);
        ``scale``, the float the image was rescaled by (and, with ``diameter="auto"``,
        ``diameter``, the estimate in pixels, None if no cell was found); and
        ``saturated_tiles``, an int: tiles that still reached the capacity at the smallest tile
        size (cells may be missing there; a ``SaturationWarning`` says so). For a list input, a
        list of labels and a list of details.
    Raises:
        ValueError: a bad image (ndim, channel count, empty, non-finite) or a bad option, naming it.
    """
    whole = _read_zarr(image)
    image = image if whole is None else whole
    if isinstance(image, (list, tuple)) and _is_nested_number_list(image):
        image = np.asarray(image)  # one image given as nested lists, e.g. array.tolist()
    kwargs = dict(
        min_score=min_score,
        nms_distance=nms_distance,
        segmentation_threshold=segmentation_threshold,
        min_area=min_area,
        scale=scale,
        diameter=diameter,
        normalize=normalize,
        clean_masks=clean_masks,
        max_overlap=max_overlap,
        tile_size=tile_size,
        tile_overlap=tile_overlap,
        max_output=max_output,
        progress=progress,
        channels=channels,
        compile=compile,
        augment=augment,
    )
    if isinstance(image, (list, tuple)) or (isinstance(image, np.ndarray) and image.ndim == 4):
        results = [
            _predict_one(model, one, f"images[{i}]", **kwargs) for i, one in enumerate(image)
        ]
        return [r[0] for r in results], [r[1] for r in results]
    return _predict_one(model, image, "the image", **kwargs)


def _read_zarr(image):
    """A zarr array / OME-Zarr path read whole as ``(H, W, C)`` (``lacss_core.zarr_io``), else
    None. For images larger than memory use ``lacss_core.predict_zarr``."""
    import os

    if not isinstance(image, (str, os.PathLike)) and not type(image).__module__.startswith("zarr"):
        return None
    from lacss_core.zarr_io import read_whole

    whole = read_whole(image)
    if whole is None and isinstance(image, (str, os.PathLike)):
        raise ValueError(
            f"image {str(image)!r} is a path but not a zarr array or OME-Zarr image; read image "
            "files with lacss_core.data.read_image"
        )
    return whole


def _predict_one(model, image, name, *, scale, diameter, **options):
    """``predict_instances`` of one image; ``name`` says which in the saturation warning."""
    scale = _diameter_scale(model, diameter, scale)
    if scale != "auto":
        return _predict_scaled(model, image, name, scale=scale, **options)
    return _predict_auto_scale(model, image, name, **options)


def _predict_scaled(model, image, name, *, min_score, nms_distance, segmentation_threshold,
                    min_area, scale, normalize, clean_masks, max_overlap, tile_size,
                    tile_overlap, max_output, progress, channels, compile, augment):  # fmt: skip
    """``predict_instances`` of one image at a known scale."""
    network = Network.of(model, _compile_options(compile))
    settings = _resolve_settings(
        network, min_score, nms_distance, segmentation_threshold, max_output, augment
    )
    min_area = _check_min_area(min_area)
    if progress not in (None, True, False):
        raise ValueError(f"progress must be None, True or False, got {progress!r}")
    _check_clean_masks(clean_masks)
    _check_max_overlap(max_overlap)
    pixels = _prepare_image(image, network.channels, _normalization(model, normalize), channels)
    scaled, factors = _rescale(pixels, scale)
    tile, overlap = _tiling(scaled.shape[:2], tile_size, tile_overlap, network, settings)
    if tile is None:
        result = _predict_whole(network, scaled, settings, overlap, progress, max_overlap)
    else:
        tiles = grid_tiles(scaled.shape[:2], tile, overlap)
        with _TileBar(progress, len(tiles)) as bar:
            result = predict_tiled(
                network, scaled, settings, tiles, overlap, progress=bar, max_overlap=max_overlap
            )
    if result.saturated_tiles:
        warnings.warn(
            _saturation_message(name, result.saturated_tiles, settings),
            SaturationWarning,
            stacklevel=3,
        )
    ranks, locations = _unscale(result.ranks, result.locations, pixels.shape[:2], factors)
    if clean_masks:
        ranks = clean_label(ranks)
    label, details = _finalize(ranks, result.scores, locations, result.saturated, min_area)
    details["scale"] = float(scale)
    details["saturated_tiles"] = result.saturated_tiles
    return label, details


def _saturation_message(name, count, settings) -> str:
    return (
        f"{name}: {count} tile(s) still hold the model's full capacity of {settings.max_output} "
        "cells after splitting down to the smallest tile size, so cells may be missing there "
        '(details["saturated"] marks the cells found in them). Pass a larger max_output, or '
        "check min_score: a low one keeps background proposals."
    )


class _TileBar:
    """Progress over the tiles of one image on stderr, usable as ``progress(done, total)``.

    ``enabled``: ``None`` a bar on a terminal only, ``True`` a bar on a terminal and plain lines
    elsewhere (``lacss_core._progress``), ``False`` nothing. A single tile gets no report.
    """

    def __init__(self, enabled, total):
        self.bar = None
        if enabled is not False and total >= 2:
            show = "auto" if enabled else "terminal"
            self.bar = Progress(total, "tiles", "tile", show=show, leave=False)

    def __enter__(self):
        return self if self.bar is not None else None

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()

    def __call__(self, done, total):
        self.bar.set_total(total)
        self.bar.update(done)


# ---------------------------------------------------------------------------- argument checks
def _resolve_settings(network, min_score, nms_distance, threshold, max_output=None,
                      augment=False) -> Settings:  # fmt: skip
    model = network.model
    if max_output is None:
        max_output = model.max_output
    max_output = _validation.positive_int(max_output, "max_output")
    if min_score is None:
        min_score = model.min_score
    if nms_distance is None:
        nms_distance = network.default_nms_distance()
    if threshold is None:
        threshold = getattr(model, "segmentation_threshold", 0.5)
    if not _validation.is_number(min_score) or not 0 <= min_score <= 1:
        raise ValueError(f"min_score must be a number in [0, 1] (scores are), got {min_score!r}")
    if not _validation.is_number(nms_distance) or not 0 <= nms_distance < math.inf:
        raise ValueError(f"nms_distance must be a finite number >= 0, got {nms_distance!r}")
    if not _validation.is_number(threshold) or not 0 <= threshold < 1:
        raise ValueError(f"segmentation_threshold must be in [0, 1), got {threshold!r}")
    if not isinstance(augment, (bool, np.bool_)):
        raise ValueError(f"augment must be True or False, got {augment!r}")
    return Settings(
        min_score=float(min_score),
        nms_distance=float(nms_distance),
        threshold=float(threshold),
        max_output=int(max_output),
        pre_nms_topk=int(model.pre_nms_topk),
        augment=bool(augment),
    )


def _compile_options(compile):
    """The backend seam's ``CompileOptions`` for ``predict_instances(compile=...)``."""
    from lacss_core._backend import CompileOptions

    if compile not in (None, True, False):
        raise ValueError(f"compile must be None, True or False, got {compile!r}")
    return CompileOptions(enabled=compile)


def _check_min_area(min_area) -> int:
    if not _validation.is_number(min_area) or min_area < 0 or min_area != int(min_area):
        raise ValueError(f"min_area must be an int >= 0, got {min_area!r}")
    return int(min_area)


def check_options(
    model,
    *,
    min_score=None,
    nms_distance=None,
    segmentation_threshold=None,
    min_area=0,
    scale=1.0,
    diameter=None,
    normalize="model",
    clean_masks=True,
    max_overlap=DEFAULT_MAX_OVERLAP,
    tile_size=None,
    tile_overlap=None,
    max_output=None,
    channels=None,
    compile=None,
    augment=False,
) -> None:
    """Check :func:`predict_instances` options against ``model`` without an image, so a batch
    tool can refuse bad options once, before any work. Raises what ``predict_instances`` would."""
    network = Network.of(model)
    settings = _resolve_settings(
        network, min_score, nms_distance, segmentation_threshold, max_output, augment
    )
    _check_min_area(min_area)
    scale = _diameter_scale(model, diameter, scale)
    if scale != "auto":
        _check_scale(scale)
    _check_normalize(_normalization(model, normalize))
    _check_clean_masks(clean_masks)
    _check_max_overlap(max_overlap)
    _tiling((1, 1), tile_size, tile_overlap, network, settings)
    _check_channels_option(channels, network.channels)
    _compile_options(compile)


def _is_nested_number_list(items) -> bool:
    """True for nested Python lists of numbers (one image), False for a list of arrays."""
    first = items[0] if len(items) else None
    while isinstance(first, (list, tuple)) and len(first):
        first = first[0]
    return _validation.is_number(first) or isinstance(first, bool)


def _check_normalize(normalize) -> None:
    """``normalize`` after ``_normalization``: one of ``METHODS`` or None."""
    from lacss_core.data.normalize import METHODS

    if normalize is not None and normalize not in METHODS:
        raise ValueError(f"normalize must be 'model', one of {METHODS} or None, got {normalize!r}")


def _check_max_overlap(max_overlap) -> None:
    if not _validation.is_number(max_overlap) or not 0 <= max_overlap <= 1:
        raise ValueError(f"max_overlap must be a number in [0, 1], got {max_overlap!r}")


def _check_clean_masks(clean_masks) -> None:
    _validation.check_bool(clean_masks, "clean_masks")


CHANNELS_HELP = (
    "choose with channels=[i, ...] (indices of the image's channels; lacss predict --channels "
    "i,...) or channels='grey' (their mean; --channels grey)"
)


def _check_channels_option(channels, model_channels) -> None:
    if channels is None:
        return
    if isinstance(channels, str):
        if channels != "grey":
            raise ValueError(
                f"channels must be None, 'grey' or a list of indices, got {channels!r}"
            )
        if model_channels not in (None, 1):
            raise ValueError(
                f"channels='grey' gives 1 channel but the model expects {model_channels}"
            )
        return
    indices = list(channels) if isinstance(channels, (list, tuple, np.ndarray)) else None
    if not indices or not all(_validation.is_int(i) and i >= 0 for i in indices):
        raise ValueError(
            f"channels must be None, 'grey' or a list of indices >= 0, got {channels!r}"
        )
    if model_channels is not None and len(indices) != model_channels:
        raise ValueError(
            f"channels={list(indices)} picks {len(indices)} channel(s) but the model expects "
            f"{model_channels}"
        )


def select_channels(image, model_channels, channels=None) -> np.ndarray:
    """Feed an ``(H, W, C)`` image's channels to a model with ``model_channels`` inputs.

    The one channel rule of the API and the CLI: ``channels=None`` needs ``C ==
    model_channels``, except that a 1-channel model takes an image whose channels are all
    identical (grey saved as RGB) as grey; anything else is an error that says how to choose.
    ``"grey"`` averages all channels; a list of indices picks (or repeats) channels in order.
    """
    _check_channels_option(channels, model_channels)
    have = image.shape[-1]
    if channels is None:
        if model_channels is None or have == model_channels:
            return image
        if model_channels == 1 and np.all(image == image[..., :1]):
            return image[..., :1]
        raise ValueError(
            f"image has {have} channel(s) but the model expects {model_channels}: " + CHANNELS_HELP
        )
    if isinstance(channels, str):  # "grey"
        return image.mean(axis=-1, keepdims=True, dtype=np.float64).astype(np.float32)
    indices = [int(i) for i in channels]
    if max(indices) >= have:
        raise ValueError(
            f"channels={indices} picks channel {max(indices)} of a {have}-channel image"
        )
    return image[..., indices]


def _as_channels_last(array: np.ndarray, model_channels) -> np.ndarray:
    """``(H, W, C)`` from a 2-D or 3-D array by the shape rule of ``lacss_core.data.axes``."""
    from lacss_core.data.axes import image_axes

    if array.ndim == 2:
        return array[..., None]
    if array.ndim != 3:
        raise ValueError(
            f"image must be (H, W) grey, (H, W, C) or (C, H, W), got shape {array.shape}; "
            "pass several images as a list"
        )
    if array.shape[-1] == model_channels:
        return array
    axes = image_axes(array.shape)
    if axes == "CYX":
        return np.moveaxis(array, 0, -1)
    if axes == "QYX":
        raise ValueError(
            f"image of shape {array.shape} is not one image with at most 4 channels: a stack of "
            f"{array.shape[0]} planes? Segment its planes one by one (a list of (H, W) arrays)"
        )
    return array


def _prepare_image(image, model_channels, normalize, channels=None) -> np.ndarray:
    """``(H, W, C)`` float32, checked and normalised (SPEC 11, as in training)."""
    from lacss_core.data.normalize import normalize_image

    array = np.asarray(image)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or np.iscomplexobj(array):
        raise ValueError(f"image must be a real numeric array, got dtype {array.dtype}")
    array = _as_channels_last(array, model_channels)
    if array.shape[0] == 0 or array.shape[1] == 0 or array.shape[2] == 0:
        raise ValueError(f"image is empty: shape {array.shape}")
    array = select_channels(array, model_channels, channels)
    _check_normalize(normalize)
    if normalize is None:
        array = array.astype(np.float32)
        if not np.all(np.isfinite(array)):
            raise ValueError("image contains non-finite values")
        return array
    return normalize_image(array, normalize)


def _normalization(model, normalize):
    """The normalisation method ``normalize`` stands for (``"model"``: the model's own)."""
    from lacss_core.data.normalize import DEFAULT_METHOD

    if isinstance(normalize, str) and normalize == "model":
        return getattr(model, "image_normalization", DEFAULT_METHOD)
    return normalize


def _tiling(shape, tile_size, tile_overlap, network, settings):
    """``(tile, overlap)`` in pixels; ``tile`` is None when the image is predicted whole."""
    crop_size = network.crop_size
    if tile_overlap is None:
        tile_overlap = -(-2 * crop_size // TILE_ALIGN) * TILE_ALIGN
    if not isinstance(tile_overlap, (int, np.integer)) or tile_overlap < crop_size:
        raise ValueError(
            f"tile_overlap must be an int >= the model's crop_size ({crop_size}), "
            f"got {tile_overlap!r}"
        )
    if tile_size is None:
        tile_size = default_tile_size(crop_size, settings.max_output, tile_overlap)
    if not isinstance(tile_size, (int, np.integer)) or tile_size <= tile_overlap:
        raise ValueError(
            f"tile_size must be an int > tile_overlap ({tile_overlap}), got {tile_size!r}"
        )
    if max(shape) <= tile_size:
        return None, int(tile_overlap)
    return int(tile_size), int(tile_overlap)


# ---------------------------------------------------------------------------- scale
# diameter="auto": passes at most, and the relative change of scale that ends them.
AUTO_PASSES = 3
AUTO_TOLERANCE = 0.1


def parse_diameter(text: str, *, empty_means_none: bool = False) -> float | str | None:
    """A ``diameter`` typed by a person (the CLI's ``--diameter``, napari's field): ``"auto"``
    (any case), a number of pixels > 0 as a float, or, with ``empty_means_none``, None for an
    empty text (use ``scale`` instead). Raises ValueError naming the text otherwise."""
    text = text.strip()
    if not text and empty_means_none:
        return None
    if text.lower() == "auto":
        return "auto"
    try:
        diameter = float(text)
    except ValueError:
        diameter = math.nan
    if not 0 < diameter < math.inf:
        choices = "empty, 'auto' or" if empty_means_none else "'auto' or"
        raise ValueError(f"diameter must be {choices} a number of pixels > 0, got {text!r}")
    return diameter


def _diameter_scale(model, diameter, scale):
    """The scale ``diameter`` asks for (a float, or ``"auto"``), or ``scale`` without one."""
    if diameter is None:
        return scale
    if not (_validation.is_number(scale) and scale == 1):
        raise ValueError(f"pass diameter or scale, not both (got scale={scale!r})")
    train_diameter = getattr(model, "train_diameter", None)
    if train_diameter is None:
        raise ValueError(
            "diameter needs the cell diameter the model was trained for, and this model does "
            "not record one (model.train_diameter is None): pass scale= instead, or set "
            "model.train_diameter (e.g. lacss_core.postprocess.median_diameter(train_labels))"
        )
    if isinstance(diameter, str) and diameter == "auto":
        return "auto"
    if not _validation.is_number(diameter) or not 0 < diameter < math.inf:
        raise ValueError(f"diameter must be a number of pixels > 0 or 'auto', got {diameter!r}")
    return float(train_diameter) / float(diameter)


def _predict_auto_scale(model, image, name, **options):
    """``diameter="auto"``: predict at scale 1, rescale so the median cell diameter found matches
    ``model.train_diameter``, and repeat (``AUTO_PASSES`` at most) until the scale settles;
    ``details["diameter"]`` is the last estimate in input pixels (None if no cell was found)."""
    scale, train_diameter = 1.0, float(model.train_diameter)
    for attempt in range(1, AUTO_PASSES + 1):
        label, details = _predict_scaled(model, image, name, scale=scale, **options)
        measured = median_diameter(label)
        details["diameter"] = measured
        if measured is None or attempt == AUTO_PASSES:
            break
        wanted = train_diameter / measured
        if abs(wanted / scale - 1) < AUTO_TOLERANCE:
            break
        scale = wanted
    return label, details


def _rescale(image, scale):
    """Resize ``(H, W, C)`` by ``scale`` (bilinear, pixel-area aligned); returns the factors used.

    Downscaling first blurs with a Gaussian of sigma ``(1/scale - 1) / 2`` against aliasing.
    """
    _check_scale(scale)
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


def _check_scale(scale) -> None:
    if not _validation.is_number(scale) or not 0 < scale < math.inf:
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")


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


def _predict_whole(network, image, settings, overlap, progress, max_overlap) -> TiledResult:
    """The image as one tile, painted on the accelerator; if it saturates the model's capacity,
    it is split and predicted as tiles instead."""
    out = network.run(image, settings, render=True)
    if out["saturated"]:
        whole = whole_tile(image.shape[:2])
        size = child_size(whole.side, overlap, network.crop_size)
        if size < whole.side:
            tiles = split_tile(whole, size, overlap)
            with _TileBar(progress, len(tiles)) as bar:
                return predict_tiled(
                    network, image, settings, tiles, overlap, progress=bar,
                    max_overlap=max_overlap,
                )  # fmt: skip
    order = _valid_in_score_order(out["locations"], out["scores"])
    visible = out["visible_areas"][: len(order)]
    ranks = drop_occluded(out["ranks"].astype(np.int32), out["own_areas"][order], visible,
                          max_overlap)  # fmt: skip
    flags = np.full(len(order), out["saturated"], bool)
    return TiledResult(
        ranks, out["scores"][order], out["locations"][order], flags, int(out["saturated"])
    )


# ---------------------------------------------------------------------------- details
def _finalize(ranks, scores, locations, saturated, min_area):
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
        "saturated": np.asarray(saturated, bool).reshape(-1)[keep],
    }
    return label, details


__all__ = [
    "SaturationWarning",
    "check_options",
    "model_channels",
    "predict_instances",
    "select_channels",
]
