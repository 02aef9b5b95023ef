"""Prediction: a label image and a per-cell table from a Lacss model, tiled for large images.

``predict_instances(model, image)`` is the stardist-shaped entry point. The work is split in two:

* On the accelerator (one compiled function per stage with ``jax.jit`` on JAX; eager under
  ``torch.no_grad`` on PyTorch): the network's dense part and NMS, then the per-instance layers on
  a slot count that covers the valid proposals, and either the label painting of SPEC 9
  (``lacss_core.ops.render_label``, whole image) or the thresholded patches (tiles).
* On the host, in NumPy: compaction of label ids, areas and bounding boxes; for tiles, the
  ownership test, the cross-tile de-duplication and the painting into the full label image.

Tiling. Tiles of ``tile_size`` pixels overlap by ``tile_overlap >= crop_size`` pixels. The
overlap strip between two neighbours is split at its middle: each tile's *core* is the part of
the image closer to it, and a cell belongs to the tile whose core holds its location, so a cell
is never cut by a seam (its ``c x c`` patch lies inside the tile that owns it) and never counted
twice. To absorb the small location jitter of a real network near a core edge, each tile also
reports cells up to ``nms_distance`` pixels outside its core, and one greedy NMS over all reported
cells (core cells first on equal score) removes the doubles. Memory is bounded by one tile's
network activations plus the full-size image and label (the per-cell masks kept between tiles are
cropped to each cell's pixels).
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from dataclasses import dataclass

import numpy as np

# Images (after ``scale``) larger than this on either side are tiled when tile_size is None.
AUTO_TILE_SIZE = 1024
# Tile starts are multiples of this (the model's padding multiple), so that interior tiles see
# the same LPN grid and padding phase as the whole image.
TILE_ALIGN = 32
# The per-instance layers run on at least this many slots (few distinct compiled shapes).
MIN_SLOTS = 16


@dataclass(frozen=True)
class _Settings:
    """Post-processing settings resolved against the model's config (Python scalars)."""

    min_score: float
    nms_distance: float
    threshold: float
    max_output: int
    pre_nms_topk: int


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

    network = _Network.of(model)
    settings = _resolve_settings(network, min_score, nms_distance, segmentation_threshold)
    min_area = _check_min_area(min_area)
    pixels = _prepare_image(image, network.channels, normalize)
    scaled, factors = _rescale(pixels, scale)
    tile, overlap = _tiling(scaled.shape[:2], tile_size, tile_overlap, network.crop_size)
    if tile is None:
        ranks, scores, locations = _predict_whole(network, scaled, settings)
    else:
        ranks, scores, locations = _predict_tiled(network, scaled, settings, tile, overlap)
    ranks, locations = _unscale(ranks, locations, pixels.shape[:2], factors)
    return _finalize(ranks, scores, locations, min_area)


# ---------------------------------------------------------------------------- argument checks
def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _resolve_settings(network, min_score, nms_distance, threshold) -> _Settings:
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
    return _Settings(
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


# ---------------------------------------------------------------------------- the network
class _Network:
    """The model as two compiled stages: propose (dense part + NMS) and segment (per instance).

    Uses ``model.dense_forward`` (LPN maps, NMS candidates and the segmentor's shared features) and
    ``model.segment_locations``; NMS is called here so ``min_score`` and ``nms_distance`` can be
    overridden per call. On JAX each stage is ``jax.jit``-ed as a pure function of the model's
    variable values (``keras.StatelessScope``); compiled functions are cached per settings and
    re-traced by JAX per input shape.
    """

    def __init__(self, model):
        import keras

        self._model = weakref.ref(model)  # weak: this adapter is cached per model in _NETWORKS
        self.crop_size = int(model.crop_size)
        self.channels = model_channels(model)
        self._jax = keras.backend.backend() == "jax"
        self._compiled = {}

    @classmethod
    def of(cls, model) -> _Network:
        """The cached adapter of ``model`` (compiled functions live as long as the model)."""
        network = _NETWORKS.get(model)
        if network is None:
            network = _NETWORKS[model] = cls(model)
        return network

    @property
    def model(self):
        return self._model()

    def default_nms_distance(self) -> float:
        distance = self.model.nms_distance
        return float(self.model.lpn_stride if distance is None else distance)

    def ensure_built(self, channels: int) -> None:
        if not self.model.built:
            self.model.build((None, None, None, channels))
            self.channels = channels

    def run(self, image, settings: _Settings, *, render: bool) -> dict:
        """Run on one ``(H, W, C)`` float32 image.

        Returns NumPy arrays: ``locations (S, 2)`` float32, ``scores (S,)`` float32 (NMS order,
        ``-1`` padded; ``S`` slots cover every valid proposal) and, with ``render``, ``ranks
        (H, W)`` int32 (SPEC 9 over the valid rows), else ``masks (S, c, c)`` bool (patch ``>``
        threshold) and ``origins (S, 2)`` int32 image pixels of each mask's ``(0, 0)``.
        """
        import keras

        self.ensure_built(image.shape[-1])
        images = keras.ops.convert_to_tensor(image[None])
        locations, scores, shared = self._stage("propose", settings)(images)
        valid_count = int(keras.ops.convert_to_numpy(keras.ops.sum(locations[0, :, 0] >= 0)))
        slots = min(settings.max_output, max(MIN_SLOTS, 1 << max(0, valid_count - 1).bit_length()))
        stage = self._stage("render" if render else "masks", settings, image.shape[:2])
        outputs = stage(shared, locations[:, :slots], scores[:, :slots])
        return {key: keras.ops.convert_to_numpy(value)[0] for key, value in outputs.items()}

    def _stage(self, name, settings, image_shape=None):
        if name == "propose":  # the threshold plays no part: do not compile again for it
            settings = dataclasses.replace(settings, threshold=0.0)
        key = (name, settings, image_shape)
        if key not in self._compiled:
            function = getattr(self, f"_{name}")
            self._compiled[key] = self._compile(
                lambda *args: function(*args, settings=settings, image_shape=image_shape)
            )
        return self._compiled[key]

    def _compile(self, function):
        if self._jax:
            import jax
            import keras

            def pure(values, *args):
                mapping = list(zip(self.model.variables, values, strict=True))
                with keras.StatelessScope(state_mapping=mapping):
                    return function(*args)

            jitted = jax.jit(pure)
            return lambda *args: jitted([v.value for v in self.model.variables], *args)
        import torch

        def no_grad(*args):
            with torch.no_grad():
                return function(*args)

        return no_grad

    def _propose(self, images, *, settings, image_shape):
        from lacss_core import ops as lops

        dense = self.model.dense_forward(images, training=False)
        locations, scores, _ = lops.nms(
            dense["candidates"],
            dense["candidate_scores"],
            max_output=settings.max_output,
            nms_distance=settings.nms_distance,
            min_score=settings.min_score,
            pre_nms_topk=settings.pre_nms_topk,
        )
        return locations, scores, dense["shared_features"]

    def _instances(self, shared, locations):
        from keras import ops

        instances = self.model.segment_locations(shared, locations)
        valid = instances["valid"]
        return instances, ops.where(valid[..., None], locations, -ops.ones_like(locations))

    def _render(self, shared, locations, scores, *, settings, image_shape):
        from lacss_core import ops as lops

        instances, locations = self._instances(shared, locations)
        ranks = lops.render_label(
            instances["patches"], locations, scores, image_shape, threshold=settings.threshold
        )
        return {"locations": locations, "scores": scores, "ranks": ranks}

    def _masks(self, shared, locations, scores, *, settings, image_shape):
        from keras import ops

        instances, locations = self._instances(shared, locations)
        return {
            "locations": locations,
            "scores": scores,
            "masks": instances["patches"] > ops.cast(settings.threshold, "float32"),
            "origins": instances["origins"],
        }


# model -> its _Network; weak, so the compiled functions go when the model does.
_NETWORKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def model_channels(model):
    """The model's image channel count, or None while it is unbuilt (any count then works)."""
    channels = getattr(model, "input_channels", None)
    if channels is not None:
        return int(channels)
    try:
        return int(model.backbone.stem_convs[0].kernel.shape[2])
    except (AttributeError, IndexError, ValueError):
        return None


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
@dataclass(frozen=True)
class _AxisTile:
    start: int  # first pixel of the tile
    size: int  # pixels
    core_lo: float  # the core is [core_lo, core_hi) in pixel index coordinates
    core_hi: float


def _axis_tiles(length: int, tile: int, overlap: int) -> list[_AxisTile]:
    """Tiles along one axis: starts at multiples of TILE_ALIGN, the last one flush with the end.

    Neighbours overlap by at least ``overlap``; cores split each overlap at its middle.
    """
    if length <= tile:
        return [_AxisTile(0, length, 0.0, float(length))]
    step = tile - overlap
    step = max(TILE_ALIGN, step - step % TILE_ALIGN) if step >= TILE_ALIGN else step
    starts = list(range(0, length - tile, step)) + [length - tile]
    bounds = [0.0]
    for before, after in zip(starts[:-1], starts[1:], strict=True):
        bounds.append((after + before + tile) / 2)
    bounds.append(float(length))
    return [_AxisTile(s, tile, bounds[i], bounds[i + 1]) for i, s in enumerate(starts)]


@dataclass
class _TileCells:
    """Cells reported by the tiles so far, in the order reported."""

    scores: list
    locations: list
    in_core: list
    corners: list  # (y0, x0) image pixel of each mask's (0, 0)
    masks: list  # bool masks cropped to each cell's pixels

    def add(self, out, offset, rows, cols, margin):
        """Keep the valid cells of one tile's output whose location is within ``margin`` of its
        core; ``offset`` is the tile's top-left pixel, ``rows``/``cols`` its ``_AxisTile``s."""
        locations = out["locations"] + np.asarray(offset, np.float32)
        valid = np.all(out["locations"] >= 0, axis=-1)
        y, x = locations[:, 0], locations[:, 1]

        def inside(lo_y, hi_y, lo_x, hi_x):
            return (y >= lo_y) & (y < hi_y) & (x >= lo_x) & (x < hi_x)

        core = inside(rows.core_lo, rows.core_hi, cols.core_lo, cols.core_hi)
        near = inside(
            rows.core_lo - margin, rows.core_hi + margin, cols.core_lo - margin,
            cols.core_hi + margin,
        )  # fmt: skip
        for i in np.flatnonzero(valid & near):
            corner, mask = _crop_mask(out["masks"][i], out["origins"][i] + np.asarray(offset))
            self.scores.append(out["scores"][i])
            self.locations.append(locations[i])
            self.in_core.append(core[i])
            self.corners.append(corner)
            self.masks.append(mask)


def _crop_mask(mask, origin):
    """``(corner, mask)`` cropped to the mask's True pixels (an empty mask stays ``(0, 0)``)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return (int(origin[0]), int(origin[1])), mask[:0, :0]
    top, left = rows[0], cols[0]
    cropped = mask[top : rows[-1] + 1, left : cols[-1] + 1].copy()
    return (int(origin[0] + top), int(origin[1] + left)), cropped


def _greedy_nms(locations, distance) -> np.ndarray:
    """Indices kept by greedy NMS over rows already in priority order (SPEC 5 criterion:
    keep a row if its squared distance to every kept row is ``> distance**2``, in float32)."""
    from scipy.spatial import cKDTree

    count = len(locations)
    if count == 0:
        return np.zeros(0, np.int64)
    locations = np.asarray(locations, np.float32)
    pairs = cKDTree(locations).query_pairs(r=distance * (1 + 1e-6) + 1e-6, output_type="ndarray")
    delta = locations[pairs[:, 0]] - locations[pairs[:, 1]]
    limit = np.float32(distance) * np.float32(distance)
    pairs = pairs[np.sum(delta * delta, axis=1, dtype=np.float32) <= limit]
    neighbours = [[] for _ in range(count)]
    for a, b in pairs:
        neighbours[min(a, b)].append(max(a, b))  # only later rows can be suppressed
    suppressed = np.zeros(count, bool)
    for i in range(count):
        if not suppressed[i]:
            suppressed[neighbours[i]] = True
    return np.flatnonzero(~suppressed)


def _predict_tiled(network, image, settings, tile, overlap):
    """Tiled twin of ``_predict_whole`` (same return values)."""
    height, width = image.shape[:2]
    margin = min(settings.nms_distance, max(0.0, (overlap - network.crop_size) / 2))
    cells = _TileCells([], [], [], [], [])
    for rows in _axis_tiles(height, tile, overlap):
        for cols in _axis_tiles(width, tile, overlap):
            window = image[rows.start : rows.start + rows.size, cols.start : cols.start + cols.size]
            out = network.run(window, settings, render=False)
            cells.add(out, (rows.start, cols.start), rows, cols, margin)
    scores = np.asarray(cells.scores, np.float32)
    locations = np.asarray(cells.locations, np.float32).reshape(-1, 2)
    # Priority: score descending; on equal scores a core cell before a margin copy of it.
    order = np.lexsort((~np.asarray(cells.in_core, bool), -scores))
    kept = order[_greedy_nms(locations[order], settings.nms_distance)]
    ranks = np.zeros((height, width), np.int32)
    for rank, i in enumerate(kept, start=1):
        _paint(ranks, cells.corners[i], cells.masks[i], rank)
    return ranks, scores[kept], locations[kept]


def _paint(ranks, corner, mask, rank) -> None:
    """Give ``rank`` to the still-unpainted pixels of ``mask`` placed at ``corner`` (clipped)."""
    y0, x0 = corner
    top, left = max(y0, 0), max(x0, 0)
    bottom = min(y0 + mask.shape[0], ranks.shape[0])
    right = min(x0 + mask.shape[1], ranks.shape[1])
    if bottom <= top or right <= left:
        return
    region = ranks[top:bottom, left:right]
    inside = mask[top - y0 : bottom - y0, left - x0 : right - x0]
    region[inside & (region == 0)] = rank


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
