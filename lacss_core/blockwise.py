"""Blockwise prediction of images larger than memory: zarr in, zarr out, in one process or on Dask.

The image is cut into square *blocks* of ``block_size`` pixels (a multiple of the output chunk, so
no two blocks ever write the same chunk). Every block is worked on alone, reading only its
neighbourhood, so peak memory follows the block size, not the image size. Four passes, each a
task per block (:func:`run` runs them in order; ``lacss_core.dask_predict`` maps them on a
cluster), each leaving a file in the job folder that marks the block done, so an interrupted job
resumes where it stopped and a retried task (a killed worker) writes the same bytes again:

0. ``stats``: the pixel statistics the normalisation needs, over the whole image (exact
   percentiles from a histogram for 8- and 16-bit images; a regular subsample of at most
   ``SAMPLE_LIMIT`` values for larger float images) -> ``stats.json``.
1. ``cells``: the model on the tiles of the *in-process tiler's* grid (``lacss_core.tiling``, the
   grid of the whole image) whose cores lie within ``halo`` (at least 2 crop sizes) of the
   block's core, the same greedy NMS over their cells, and the cells kept whose location lies in
   the block's core: the cells the block **owns** (``cells-I-J.npz``). The tiles, their windows and
   the ownership rule are the in-process tiler's, so a block finds the cells
   ``predict_instances`` finds, with the same scores and masks.
2. ``table``: the block's painting region (its core plus ``crop_size + 4`` px, enough to hold
   every pixel of every cell that touches the core) is painted from the cells owned by the block
   and its 8 neighbours, in one global priority order (score descending, then block, then the
   block's own order): a pixel goes to the best cell that covers it, as in ``predict_instances``;
   a cell within ``nms_distance`` of a better cell owned by another block is dropped (no
   duplicates at block seams). Then ``clean_label`` and ``min_area``: the owned cells that stay,
   with their areas and boxes (``table-I-J.npz``).
3. ``label``: the same painting again, cells numbered ``offset[block] + k`` (``k``: 1-based among
   the block's kept cells, in its order; offsets: the kept counts of the blocks before it in row
   order), and **only the block's core** is written into the label zarr. A cell that crosses a
   block edge is painted by every block it reaches into, each from the same owned cells in the
   same order, so its pixels agree on both sides, and no chunk is written by two blocks.

Labels are therefore unique over the image, numbered block by block (by score within a block),
and the per-cell table (``*_cells.csv``, the columns of ``lacss predict``) lists them in label
order. Scale and diameter are not supported blockwise (the image is used at scale 1).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lacss_core import tiling
from lacss_core.postprocess import DEFAULT_MAX_OVERLAP

#: Most values the percentile statistics of a float image are taken from (a regular subsample
#: of larger images; 8- and 16-bit images always get exact percentiles from their histogram).
SAMPLE_LIMIT = 1 << 24
#: Default block side and output chunk side, pixels.
DEFAULT_BLOCK = 2048
DEFAULT_CHUNK = 512
JOB_NAME = "job.json"
COMPLETE_NAME = "complete.json"


# ---------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class Plan:
    """Where the blocks are, and which tiles of the whole image's grid each one runs.

    ``tile``/``overlap``: the in-process tiler's tile side and overlap (``tile`` None: the image
    fits one tile); ``halo``: how far beyond its core a block looks for cells (``>= overlap`` and
    ``>= 2 * crop_size``); ``reach``: how far a cell's pixels can lie from its location.
    """

    shape: tuple
    block: int
    chunk: int
    tile: int | None
    overlap: int
    crop_size: int
    nms_distance: float

    @property
    def grid(self) -> tuple[int, int]:
        return (-(-self.shape[0] // self.block), -(-self.shape[1] // self.block))

    @property
    def halo(self) -> int:
        return max(self.overlap, 2 * self.crop_size)

    @property
    def reach(self) -> int:
        return self.crop_size // 2 + 2

    @property
    def paint_margin(self) -> int:
        return 2 * self.reach

    def blocks(self) -> list[tuple[int, int]]:
        rows, cols = self.grid
        return [(i, j) for i in range(rows) for j in range(cols)]

    def core(self, block) -> tuple[int, int, int, int]:
        """``(y0, y1, x0, x1)`` of the block's core."""
        i, j = block
        b = self.block
        return (i * b, min((i + 1) * b, self.shape[0]), j * b, min((j + 1) * b, self.shape[1]))

    def owner(self, locations) -> np.ndarray:
        """``(n, 2)`` int block index of each ``(y, x)`` location (clipped to the grid)."""
        index = np.floor(np.asarray(locations, np.float64).reshape(-1, 2) / self.block)
        return np.clip(index, 0, np.array(self.grid) - 1).astype(np.int64)

    def tiles(self, block) -> list[tiling.Tile]:
        """The tiles of the whole image's grid whose cores come within ``halo`` of the core."""
        y0, y1, x0, x1 = self.core(block)
        return [
            tiling.Tile(rows, cols)
            for rows in self._axis(0, y0, y1)
            for cols in self._axis(1, x0, x1)
        ]

    def _axis(self, axis, lo, hi) -> list[tiling.AxisTile]:
        length = self.shape[axis]
        if self.tile is None:
            return [tiling.AxisTile(0, length, 0.0, float(length))]
        tiles = tiling.axis_tiles(length, self.tile, self.overlap)
        return [t for t in tiles if t.core_hi > lo - self.halo and t.core_lo < hi + self.halo]

    def region(self, block, margin) -> tuple[int, int, int, int]:
        """The core grown by ``margin`` pixels, clipped to the image."""
        y0, y1, x0, x1 = self.core(block)
        h, w = self.shape
        return (max(0, y0 - margin), min(h, y1 + margin), max(0, x0 - margin), min(w, x1 + margin))

    def neighbours(self, block) -> list[tuple[int, int]]:
        """The block and its (up to 8) neighbours, in row order."""
        rows, cols = self.grid
        i, j = block
        return [
            (a, b)
            for a in range(max(0, i - 1), min(rows, i + 2))
            for b in range(max(0, j - 1), min(cols, j + 2))
        ]

    def linear(self, block) -> int:
        return block[0] * self.grid[1] + block[1]


def min_block_size(crop_size, nms_distance) -> int:
    """The smallest block side: 2 crop sizes plus ``nms_distance`` (so a block's 8 neighbours
    hold every cell whose pixels reach its painting region, and their doubles)."""
    need = max(2 * crop_size, 3 * (crop_size // 2 + 2)) + math.ceil(nms_distance)
    return int(need)


# ---------------------------------------------------------------------------- the job
@dataclass(frozen=True)
class Job:
    """Everything a block task needs (picklable: paths and numbers, no model or array).

    ``model``: a model file or pretrained name, or ``"object:ID"`` for a model registered in this
    process (``register_model``). ``channels``: the image channels fed to the model (indices, or
    ``"grey"``); ``normalize``: ``None`` or ``(method, shift, spread)`` (``spread`` 0: zeros).
    """

    source: str
    plane: int | None
    model: str
    label: str
    table: str
    work: str
    settings: dict
    channels: object
    clean_masks: bool
    min_area: int
    plan: Plan
    normalize: object = None
    check_identical: bool = False
    max_overlap: float = DEFAULT_MAX_OVERLAP

    def image(self):
        from lacss_core import zarr_io

        return zarr_io.open_image(self.source, plane=self.plane)

    def path(self, kind, block=None) -> Path:
        name = kind if block is None else f"{kind}-{block[0]}-{block[1]}.npz"
        return Path(self.work) / name


# Models of this process: "object:ID" -> model (registered), path -> model (loaded once per
# worker process; a Dask worker keeps its model between tasks).
_MODELS: dict = {}


def register_model(model) -> str:
    """Register an in-memory model for in-process jobs; returns its ``Job.model`` key."""
    key = f"object:{id(model)}"
    _MODELS[key] = model
    return key


def model_for(spec: str):
    """The model a job names, loaded at most once per process."""
    model = _MODELS.get(spec)
    if model is None:
        if spec.startswith("object:"):
            raise ValueError(f"model {spec} is not registered in this process")
        model = _MODELS[spec] = load_model_spec(spec)
    return model


def load_model_spec(spec: str):
    """A ``.keras`` file or a shipped pretrained model (presets are refused: their random
    weights would differ between processes)."""
    from lacss_core import pretrained
    from lacss_core._model_file import load_lacss_model

    if spec in pretrained.available():
        return pretrained.load_pretrained(spec)
    if not Path(spec).exists() and not spec.endswith(".keras"):
        raise ValueError(
            f"model {spec!r} is neither a .keras file nor a pretrained model "
            f"({', '.join(pretrained.available())}); a preset has random weights, so save it "
            "first (model.save('model.keras')) to give every worker the same weights"
        )
    return load_lacss_model(spec)


def loaded_models() -> int:
    """How many models this process has loaded from files (one per Dask worker)."""
    return sum(1 for key in _MODELS if not key.startswith("object:"))


# ---------------------------------------------------------------------------- pass 0: statistics
def block_stats(job: Job, block) -> dict:
    """Partial pixel statistics of the block's core (after channel selection)."""
    y0, y1, x0, x1 = job.plan.core(block)
    raw = job.image().read(y0, y1, x0, x1)
    identical = bool(np.all(raw == raw[..., :1])) if job.check_identical else True
    values = _select(raw, job.channels)
    stats = {"identical": identical, "finite": bool(np.all(np.isfinite(values)))}
    if not stats["finite"]:
        return stats
    if _histogram_dtype(values.dtype):
        base = int(np.iinfo(values.dtype).min) if values.dtype != np.bool_ else 0
        size = 2 if values.dtype == np.bool_ else 1 << (8 * values.dtype.itemsize)
        stats["histogram"] = np.bincount(values.ravel().astype(np.int64) - base, minlength=size)
        stats["base"] = base
    flat = values.astype(np.float64).ravel()
    stats.update(count=flat.size, min=float(flat.min()), max=float(flat.max()))
    stats.update(mean=float(flat.mean()), m2=float(np.sum((flat - flat.mean()) ** 2)))
    if "histogram" not in stats:
        stride = _sample_stride(job.plan.shape, values.shape[-1])
        rows = np.arange(-y0 % stride, y1 - y0, stride)
        cols = np.arange(-x0 % stride, x1 - x0, stride)
        stats["sample"] = values[np.ix_(rows, cols)].astype(np.float64).ravel()
    return stats


def _histogram_dtype(dtype) -> bool:
    return dtype == np.bool_ or (np.issubdtype(dtype, np.integer) and dtype.itemsize <= 2)


def _sample_stride(shape, channels) -> int:
    values = shape[0] * shape[1] * channels
    return max(1, math.ceil(math.sqrt(values / SAMPLE_LIMIT)))


def _select(raw, channels) -> np.ndarray:
    """The model's channels of an ``(h, w, C)`` region (as ``predict.select_channels``)."""
    if isinstance(channels, str):  # "grey"
        return raw.mean(axis=-1, keepdims=True, dtype=np.float64).astype(np.float32)
    return raw[..., list(channels)]


def merge_stats(a: dict, b: dict) -> dict:
    """Two blocks' (finite) partial statistics as one: the statistics of their union."""
    merged = {"identical": a["identical"] and b["identical"], "finite": True}
    count = a["count"] + b["count"]
    mean = (a["mean"] * a["count"] + b["mean"] * b["count"]) / count
    m2 = sum(p["m2"] + p["count"] * (p["mean"] - mean) ** 2 for p in (a, b))
    merged.update(count=count, mean=mean, m2=m2, min=min(a["min"], b["min"]))
    merged["max"] = max(a["max"], b["max"])
    if "histogram" in a:
        merged.update(histogram=a["histogram"] + b["histogram"], base=a["base"])
    else:  # the subsample: at most SAMPLE_LIMIT values over the whole image
        merged["sample"] = np.concatenate([a["sample"], b["sample"]])
    return merged


def reduce_stats(stats: dict, method):
    """``(method, shift, spread)`` of the whole image from its merged statistics, as
    ``lacss_core.data.normalize_image`` computes them on the whole image."""
    from lacss_core.data.normalize import PERCENTILES

    spread = 0.0
    if method == "percentile":
        if "histogram" in stats:
            shift, high = _histogram_percentiles(stats["histogram"], stats["base"], PERCENTILES)
        else:
            shift, high = np.percentile(stats["sample"], PERCENTILES)
        spread = high - shift
    if method == "range" or (method == "percentile" and spread <= 0):
        shift, spread = stats["min"], stats["max"] - stats["min"]
    elif method == "standard":
        shift, spread = stats["mean"], math.sqrt(stats["m2"] / stats["count"])
    return (method, float(shift), float(spread))


def _histogram_percentiles(counts, base, percentiles):
    """``np.percentile`` (linear) of the values a histogram counts, exactly."""
    total = int(counts.sum())
    ends = np.cumsum(counts)
    results = []
    for q in percentiles:
        index = (total - 1) * (float(q) / 100)
        below = math.floor(index)
        fraction = index - below
        a, b = (base + int(np.searchsorted(ends, k, side="right")) for k in (below, below + 1))
        b = a if below + 1 >= total else b
        value = b - (b - a) * (1 - fraction) if fraction >= 0.5 else a + (b - a) * fraction
        results.append(float(value))
    return results


def prepare(job: Job, raw) -> np.ndarray:
    """A raw ``(h, w, C)`` region as the model's normalised float32 input."""
    values = _select(raw, job.channels)
    if job.normalize is None:
        values = values.astype(np.float32)
        if not np.all(np.isfinite(values)):
            raise ValueError("image contains non-finite values")
        return values
    _, shift, spread = job.normalize
    if spread == 0:  # a constant image: zeros, as normalize_image
        return np.zeros(values.shape, np.float32)
    return ((np.asarray(values, np.float64) - shift) / spread).astype(np.float32)


# ---------------------------------------------------------------------------- pass 1: cells
def block_cells(job: Job, block) -> int:
    """Find the cells the block owns and save them; returns their count (skips a done block)."""
    target = job.path("cells", block)
    if target.exists():
        return int(np.load(target)["scores"].size)
    from lacss_core._network import Network, Settings

    plan, settings = job.plan, Settings(**job.settings)
    network = Network.of(model_for(job.model))
    tiles = plan.tiles(block)
    y0 = min(t.rows.start for t in tiles)
    y1 = max(t.rows.start + t.rows.size for t in tiles)
    x0 = min(t.cols.start for t in tiles)
    x1 = max(t.cols.start + t.cols.size for t in tiles)
    pixels = prepare(job, job.image().read(y0, y1, x0, x1))

    def window(tile):
        r, c = tile.rows, tile.cols
        return pixels[r.start - y0 : r.start - y0 + r.size, c.start - x0 : c.start - x0 + c.size]

    cells, saturated = tiling.collect_tiles(network, window, settings, tiles, plan.overlap)
    kept = tiling.select_cells(cells, settings.nms_distance)
    locations = np.asarray(cells.locations, np.float32).reshape(-1, 2)
    mine = np.all(plan.owner(locations[kept]) == np.array(block), axis=1)
    owned = kept[mine]
    # a saturated tile is counted by the block that holds its core's centre (once in all)
    centres = [
        ((t.rows.core_lo + t.rows.core_hi) / 2, (t.cols.core_lo + t.cols.core_hi) / 2)
        for t in saturated
    ]
    saturated_tiles = int(np.sum(np.all(plan.owner(centres) == np.array(block), axis=1)))
    save_cells(target, cells, owned, saturated_tiles)
    return int(owned.size)


def save_cells(path, cells, rows, saturated_tiles) -> None:
    """Write the ``rows`` of ``cells`` (masks packed as bits) atomically."""
    masks = [cells.masks[i] for i in rows]
    flat = np.concatenate([m.ravel() for m in masks]) if masks else np.zeros(0, bool)
    arrays = dict(
        scores=np.asarray([cells.scores[i] for i in rows], np.float32),
        locations=np.asarray([cells.locations[i] for i in rows], np.float32).reshape(-1, 2),
        saturated=np.asarray([cells.saturated[i] for i in rows], bool),
        corners=np.asarray([cells.corners[i] for i in rows], np.int64).reshape(-1, 2),
        shapes=np.asarray([m.shape for m in masks], np.int64).reshape(-1, 2),
        bits=np.packbits(flat),
        saturated_tiles=np.int64(saturated_tiles),
    )
    _save_npz(path, arrays)


def _save_npz(path, arrays) -> None:
    from lacss_core._atomic import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


@dataclass
class Owned:
    """The cells of one or more blocks, with each one's block and place in its block."""

    scores: np.ndarray
    locations: np.ndarray
    corners: np.ndarray
    masks: list
    block: np.ndarray  # linear block index
    local: np.ndarray  # 0-based place among its block's cells
    saturated: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


def load_cells(job: Job, blocks) -> Owned:
    """The owned cells of ``blocks``, concatenated."""
    parts = []
    for block in blocks:
        data = np.load(job.path("cells", block))
        shapes = data["shapes"]
        sizes = shapes[:, 0] * shapes[:, 1]
        flat = np.unpackbits(data["bits"], count=int(sizes.sum())).astype(bool)
        starts = np.concatenate([[0], np.cumsum(sizes)])
        masks = [flat[starts[k] : starts[k + 1]].reshape(shapes[k]) for k in range(len(shapes))]
        n = len(masks)
        parts.append(
            Owned(data["scores"], data["locations"], data["corners"], masks,
                  np.full(n, job.plan.linear(block)), np.arange(n), data["saturated"])
        )  # fmt: skip
    return Owned(
        np.concatenate([p.scores for p in parts]),
        np.concatenate([p.locations for p in parts]).reshape(-1, 2),
        np.concatenate([p.corners for p in parts]).reshape(-1, 2),
        [m for p in parts for m in p.masks],
        np.concatenate([p.block for p in parts]).astype(np.int64),
        np.concatenate([p.local for p in parts]).astype(np.int64),
        np.concatenate([p.saturated for p in parts]).astype(bool),
    )


# ---------------------------------------------------------------------------- passes 2, 3: paint
def paint_region(job: Job, block):
    """Paint the block's region from its and its neighbours' cells (see the module doc).

    Returns ``(region, cells, order, origin)``: ``region`` ``(h, w)`` int32, value ``v > 0``
    for cell ``order[v - 1]`` of ``cells`` (``Owned``, the neighbourhood's cells); ``origin``
    the region's top-left pixel.
    """
    from lacss_core.postprocess import clean_label

    plan = job.plan
    y0, y1, x0, x1 = plan.region(block, plan.paint_margin)
    cells = load_cells(job, plan.neighbours(block))
    order = np.lexsort((cells.local, cells.block, -cells.scores))
    order = order[~_seam_doubles(cells, order, job.settings["nms_distance"])]
    placements = [
        ((int(cells.corners[i, 0]) - y0, int(cells.corners[i, 1]) - x0), cells.masks[i])
        for i in order
    ]
    # the region holds every pixel of every cell touching the core, so each cell's occlusion
    # (postprocess.drop_occluded) is decided alike by every block that paints it
    region = tiling.paint_cells(np.zeros((y1 - y0, x1 - x0), np.int32), placements,
                                job.max_overlap)  # fmt: skip
    if job.clean_masks:
        region = clean_label(region)
    return region, cells, order, (y0, x0)


def _seam_doubles(cells: Owned, order, distance) -> np.ndarray:
    """For the cells in priority ``order``: True where a better cell owned by another block lies
    within ``distance`` (the NMS criterion; a rule of pairs, so every block decides alike)."""
    from scipy.spatial import cKDTree

    doubles = np.zeros(len(order), bool)
    if len(order) < 2:
        return doubles
    locations = cells.locations[order].astype(np.float32)
    pairs = cKDTree(locations).query_pairs(r=distance * (1 + 1e-6) + 1e-6, output_type="ndarray")
    delta = locations[pairs[:, 0]] - locations[pairs[:, 1]]
    limit = np.float32(distance) * np.float32(distance)
    close = np.sum(delta * delta, axis=1, dtype=np.float32) <= limit
    pairs = pairs[close & (cells.block[order][pairs[:, 0]] != cells.block[order][pairs[:, 1]])]
    doubles[pairs.max(axis=1)] = True
    return doubles


def block_table(job: Job, block) -> int:
    """Which of the block's cells stay (not a seam double, at least ``min_area`` pixels after
    cleaning), with their areas and boxes; returns how many stay (skips a done block)."""
    target = job.path("table", block)
    if target.exists():
        return int(np.load(target)["keep"].sum())
    from scipy import ndimage

    region, cells, order, (oy, ox) = paint_region(job, block)
    own = cells.block[order] == job.plan.linear(block)
    count = int(np.sum(cells.block == job.plan.linear(block)))
    areas = np.bincount(region.ravel(), minlength=len(order) + 1)[1:]
    boxes = ndimage.find_objects(region, max_label=len(order))
    keep = np.zeros(count, bool)
    area = np.zeros(count, np.int64)
    bbox = np.zeros((count, 4), np.int64)
    for v in np.flatnonzero(own):
        local = cells.local[order[v]]
        area[local] = areas[v]
        if boxes[v] is not None and areas[v] >= max(job.min_area, 1):
            keep[local] = True
            rows, cols = boxes[v]
            bbox[local] = (rows.start + oy, cols.start + ox, rows.stop + oy, cols.stop + ox)
    _save_npz(target, dict(keep=keep, areas=area, bboxes=bbox))
    return int(keep.sum())


def block_label(job: Job, block) -> bool:
    """Write the block's core of the label image (skips a done block); needs ``offsets.npy``."""
    done = job.path(f"label-{block[0]}-{block[1]}.done")
    if done.exists():
        return False
    from lacss_core import zarr_io

    plan = job.plan
    offsets = np.load(job.path("offsets.npy"))
    region, cells, order, (oy, ox) = paint_region(job, block)
    ids = {}
    for neighbour in plan.neighbours(block):
        keep = np.load(job.path("table", neighbour))["keep"]
        numbers = np.cumsum(keep) + offsets[plan.linear(neighbour)]
        ids[plan.linear(neighbour)] = np.where(keep, numbers, 0)
    lookup = np.zeros(len(order) + 1, np.int64)
    for v, i in enumerate(order, start=1):
        lookup[v] = ids[int(cells.block[i])][int(cells.local[i])]
    y0, y1, x0, x1 = plan.core(block)
    core = lookup[region[y0 - oy : y1 - oy, x0 - ox : x1 - ox]].astype(np.int32)
    zarr_io.open_label(job.label)[y0:y1, x0:x1] = core
    done.write_text("")  # empty: its existence is the mark
    return True


# ---------------------------------------------------------------------------- the entry point
def predict_zarr(model, image, output, *, plane=None, block_size=DEFAULT_BLOCK, chunk=None,
                 overwrite=False, progress=None, **options) -> dict:  # fmt: skip
    """Segment a zarr array / OME-Zarr image block by block in this process, into a label zarr.

    Memory follows ``block_size``, not the image's size. For many processes or machines use
    :func:`lacss_core.distributed_predict` (the same passes, the same result, on Dask).

    Args:
        model: a ``lacss_core.models.Lacss``.
        image: a path to a zarr array or OME-Zarr image (level 0 is read), or a ``zarr.Array``
            (see ``lacss_core.zarr_io.open_image`` for the axis rule).
        output: path of the label zarr to write (e.g. ``out/big_label.zarr``): ``(H, W)`` int32,
            ``chunk x chunk`` chunks, compressed, 0 = background; the per-cell table goes
            beside it (``out/big_cells.csv``, the columns of ``lacss predict``), and the job's
            progress into ``out/.big_label.zarr.blocks/`` (kept for a rerun to resume).
        plane: the plane of a stack (ZYX, TYX, ...), 0-based; required for stacks.
        block_size: block side in pixels, a multiple of ``chunk`` and at least
            ``min_block_size`` (2 crop sizes plus ``nms_distance``).
        chunk: output chunk side (default: ``min(block_size, 512)``).
        overwrite: start again even if ``output`` holds another job's (or any) result;
            otherwise a rerun of the same job resumes it, skipping finished blocks.
        progress: a bar over the blocks of each pass (tqdm): None on a terminal only, True,
            False.
        options: the options of ``predict_instances`` (``min_score``, ``nms_distance``,
            ``segmentation_threshold``, ``min_area``, ``normalize``, ``clean_masks``,
            ``max_overlap``, ``tile_size``, ``tile_overlap``, ``max_output``, ``channels``);
            ``scale`` must be 1 and ``diameter`` None (blockwise prediction runs at the image's
            scale).
    Returns:
        A summary dict: ``cells`` (labels ``1..cells``), ``saturated_tiles``,
        ``saturated_cells``, ``label`` and ``table`` (paths), ``blocks``, ``computed`` and
        ``skipped`` (blocks whose cells were found by this call / an earlier one).
    Raises:
        ValueError: a bad image (not zarr, a stack without ``plane``, channels that do not fit
            the model), a bad option, or an ``output`` that holds something else.
    """
    key = register_model(model)
    try:
        job, method, identity = prepare_job(
            model, key, image, output, plane=plane, block_size=block_size, chunk=chunk,
            **options,
        )  # fmt: skip
        start(job, identity, overwrite=overwrite)
        return run(job, method, lambda function, items: sequential(function, items, progress))
    finally:
        _MODELS.pop(key, None)


def prepare_job(model, spec, image, output, *, plane=None, block_size=DEFAULT_BLOCK, chunk=None,
                scale=1.0, diameter=None, **options):  # fmt: skip
    """``(job, normalisation method, identity)``: ``options`` checked against ``model`` (as
    ``predict_instances`` does) and the image, with nothing read but its metadata."""
    from lacss_core import predict, zarr_io
    from lacss_core._network import Network

    if diameter is not None or not (np.ndim(scale) == 0 and scale == 1):
        raise ValueError(
            "blockwise prediction runs at the image's own scale: scale must be 1 and diameter "
            "None (resample the zarr, or pick an OME-Zarr level whose pixels fit the model)"
        )
    predict.check_options(model, **options)
    source = zarr_io.open_image(image, plane=plane)
    network = Network.of(model)
    settings = predict._resolve_settings(
        network, options.get("min_score"), options.get("nms_distance"),
        options.get("segmentation_threshold"), options.get("max_output"),
        options.get("augment", False),
    )  # fmt: skip
    tile, overlap = predict._tiling(
        source.shape, options.get("tile_size"), options.get("tile_overlap"), network, settings
    )
    plan = _plan(source.shape, block_size, chunk, tile, overlap, network.crop_size, settings)
    channels, check_identical = _channels(source.channels, network.channels, options)
    method = predict._normalization(model, options.get("normalize", "model"))
    label = str(output)
    job = Job(
        source=str(image) if isinstance(image, (str, Path)) else _array_path(image),
        plane=plane, model=spec, label=label, table=table_path(label), work=work_folder(label),
        settings=dataclasses.asdict(settings), channels=channels,
        clean_masks=bool(options.get("clean_masks", True)),
        max_overlap=float(options.get("max_overlap", DEFAULT_MAX_OVERLAP)),
        min_area=int(options.get("min_area", 0)), plan=plan, check_identical=check_identical,
    )  # fmt: skip
    identity = {
        "image": job.source, "plane": plane, "shape": list(source.shape),
        "dtype": str(source.dtype), "model": _model_identity(model, spec),
        "settings": job.settings, "channels": channels, "normalize": method,
        "clean_masks": job.clean_masks, "max_overlap": job.max_overlap, "min_area": job.min_area,
        "plan": json.loads(json.dumps(dataclasses.asdict(plan))),
    }  # fmt: skip
    return job, method, identity


def _plan(shape, block_size, chunk, tile, overlap, crop_size, settings) -> Plan:
    least = min_block_size(crop_size, settings.nms_distance)
    if not isinstance(block_size, (int, np.integer)) or block_size < least:
        raise ValueError(
            f"block_size must be an int >= {least} px (2 crop sizes of {crop_size} px plus "
            f"nms_distance), got {block_size!r}"
        )
    chunk = min(int(block_size), DEFAULT_CHUNK) if chunk is None else chunk
    if not isinstance(chunk, (int, np.integer)) or chunk < 1 or block_size % chunk:
        raise ValueError(
            f"chunk must be a positive int that divides block_size ({block_size}), got {chunk!r}"
        )
    return Plan(tuple(int(n) for n in shape), int(block_size), int(chunk), tile, int(overlap),
                int(crop_size), float(settings.nms_distance))  # fmt: skip


def _channels(have, wanted, options):
    """``(channels, check_identical)``: the image channels that feed the model (the one
    channel rule of ``predict.select_channels``; identical channels are checked in pass 0)."""
    from lacss_core import predict

    channels = options.get("channels")
    predict._check_channels_option(channels, wanted)
    if channels is None:
        if wanted is None or have == wanted:
            return list(range(have)), False
        if wanted == 1:
            return [0], True
        raise ValueError(
            f"image has {have} channel(s) but the model expects {wanted}: " + predict.CHANNELS_HELP
        )
    if isinstance(channels, str):
        return "grey", False
    indices = [int(i) for i in channels]
    if max(indices) >= have:
        raise ValueError(
            f"channels={indices} picks channel {max(indices)} of a {have}-channel image"
        )
    return indices, False


def _array_path(array) -> str:
    """The path of a ``zarr.Array`` on a local store (block tasks reopen it from there)."""
    store = getattr(array, "store", None)
    root = getattr(store, "root", None)
    if root is None:
        raise ValueError(
            "a zarr.Array on a store that is not a local folder cannot be read block by block "
            "by other processes: pass the path of the zarr array instead"
        )
    path = Path(str(root))
    name = getattr(array, "path", "") or ""
    return str(path / name) if name else str(path)


def _model_identity(model, spec) -> dict:
    """What the results depend on about the model: its file's SHA-256 or, for a model in
    memory, its weights' and config's."""
    from lacss_core.cli.predict import model_identity

    if not spec.startswith("object:"):
        return model_identity(spec)
    import keras

    h = hashlib.sha256(json.dumps(model.get_config(), sort_keys=True, default=str).encode())
    for variable in model.weights:
        h.update(np.ascontiguousarray(keras.ops.convert_to_numpy(variable)).tobytes())
    return {"weights_sha256": h.hexdigest()}


# ---------------------------------------------------------------------------- the driver
def sequential(function, items, progress=None):
    """The in-process executor: ``[function(item) for item in items]``, reporting progress on
    stderr (``lacss_core._progress``): ``None`` a bar on a terminal only, ``True`` also plain
    lines elsewhere, ``False`` nothing."""
    from lacss_core._progress import Progress

    if progress is False or len(items) < 2:
        return [function(item) for item in items]
    name = getattr(getattr(function, "func", function), "__name__", "blocks")
    show = "auto" if progress else "terminal"
    results = []
    with Progress(len(items), f"blocks ({name})", "block", show=show, leave=False) as bar:
        for item in items:
            results.append(function(item))
            bar.update(len(results))
    return results


def run(job: Job, method, executor) -> dict:
    """Run the passes of ``job`` with ``executor(function, [block, ...]) -> [result, ...]``
    (functions of ``(job, block)`` bound with ``functools.partial``); returns the summary."""
    from functools import partial

    complete = job.path(COMPLETE_NAME)
    if complete.exists():
        return json.loads(complete.read_text())
    blocks = job.plan.blocks()
    if method is not None or job.check_identical:
        job = _with_stats(job, method, executor, blocks)
    todo = [b for b in blocks if not job.path("cells", b).exists()]
    executor(partial(block_cells, job), todo)
    computed = len(todo)
    executor(partial(block_table, job), [b for b in blocks if not job.path("table", b).exists()])
    counts = [int(np.load(job.path("table", b))["keep"].sum()) for b in blocks]
    _save_npy(job.path("offsets.npy"), np.concatenate([[0], np.cumsum(counts)[:-1]]))
    executor(partial(block_label, job), blocks)
    summary = _write_table(job, blocks, counts)
    summary.update(blocks=len(blocks), computed=computed, skipped=len(blocks) - computed)
    _finish(job, summary)
    return summary


# Blocks whose statistics the driver holds at once (then merges): its memory stays bounded
# (a 16-bit histogram is 512 kB) whatever the number of blocks.
STATS_BATCH = 16


def _with_stats(job: Job, method, executor, blocks) -> Job:
    """``job`` with its normalisation from the image's statistics (cached in ``stats.json``)."""
    from functools import partial, reduce

    cached = job.path("stats.json")
    if cached.exists():
        normalize = json.loads(cached.read_text())["normalize"]
    else:
        merged = None
        for first in range(0, len(blocks), STATS_BATCH):
            parts = executor(partial(block_stats, job), blocks[first : first + STATS_BATCH])
            if not all(p["finite"] for p in parts):
                raise ValueError("image contains non-finite values")
            merged = reduce(merge_stats, parts if merged is None else [merged, *parts])
        if job.check_identical and not merged["identical"]:
            from lacss_core.predict import CHANNELS_HELP

            raise ValueError(
                f"image has {job.image().channels} channel(s) but the model expects 1: "
                + CHANNELS_HELP
            )
        normalize = None if method is None else reduce_stats(merged, method)
        _write_json(cached, {"normalize": normalize})
    return dataclasses.replace(job, normalize=None if normalize is None else tuple(normalize))


def _write_table(job: Job, blocks, counts) -> dict:
    """Stream the per-cell CSV, block by block in label order; returns the totals."""
    import csv

    from lacss_core._atomic import atomic_open
    from lacss_core.export import CSV_COLUMNS

    label, saturated_tiles, flagged = 0, 0, 0
    with atomic_open(job.table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for block in blocks:
            cells = np.load(job.path("cells", block))
            table = np.load(job.path("table", block))
            saturated_tiles += int(cells["saturated_tiles"])
            for k in np.flatnonzero(table["keep"]):
                label += 1
                y, x = cells["locations"][k]
                flag = int(cells["saturated"][k])
                flagged += flag
                writer.writerow(
                    [label, f"{cells['scores'][k]:.6g}", f"{y:.2f}", f"{x:.2f}",
                     int(table["areas"][k])] + [int(v) for v in table["bboxes"][k]] + [flag]
                )  # fmt: skip
    assert label == sum(counts)
    return {"cells": label, "saturated_tiles": saturated_tiles, "saturated_cells": flagged,
            "label": job.label, "table": job.table}  # fmt: skip


def _finish(job: Job, summary) -> None:
    """Mark the job complete and delete the per-block cell files (the label holds them now)."""
    _write_json(job.path(COMPLETE_NAME), summary)
    for path in Path(job.work).glob("*.npz"):
        path.unlink(missing_ok=True)


def _save_npy(path, array) -> None:
    from lacss_core._atomic import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array, np.int64))


def _write_json(path, data) -> None:
    from lacss_core._atomic import atomic_open

    with atomic_open(path, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)


def digest(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def start(job: Job, identity: dict, *, overwrite: bool) -> None:
    """Create (or resume) the job folder and the label zarr. A folder made with other settings
    is refused unless ``overwrite`` (which starts again from nothing)."""
    from lacss_core import zarr_io

    work, label = Path(job.work), Path(job.label)
    manifest = work / JOB_NAME
    if overwrite:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(label, ignore_errors=True)
        Path(job.table).unlink(missing_ok=True)
    if manifest.exists():
        previous = json.loads(manifest.read_text())
        if previous.get("id") != digest(identity):
            from lacss_core._run_record import differences

            changes = "; ".join(differences(previous.get("identity", {}), identity)[:4])
            raise ValueError(
                f"{label} belongs to an earlier job with other settings ({changes or 'unknown'}); "
                "pass overwrite=True (lacss predict --overwrite) to start again, or choose "
                "another output"
            )
        return
    if label.exists():
        raise ValueError(
            f"{label} exists and was not made by a blockwise job; pass overwrite=True "
            "(lacss predict --overwrite) to replace it"
        )
    work.mkdir(parents=True, exist_ok=True)
    zarr_io.create_label(label, job.plan.shape, job.plan.chunk)
    _write_json(manifest, {"id": digest(identity), "identity": identity})


def work_folder(label) -> str:
    """The job folder beside a label zarr: ``.NAME.blocks``."""
    label = Path(label)
    return str(label.with_name(f".{label.name}.blocks"))


def table_path(label) -> str:
    """The per-cell table beside a label zarr: ``X_label.zarr`` -> ``X_cells.csv``, else
    ``X.zarr`` -> ``X_cells.csv``."""
    label = Path(label)
    stem = label.name[: -len(".zarr")] if label.name.endswith(".zarr") else label.name
    stem = stem[: -len("_label")] if stem.endswith("_label") else stem
    return str(label.with_name(f"{stem}_cells.csv"))


__all__ = ["DEFAULT_BLOCK", "DEFAULT_CHUNK", "Job", "Plan", "min_block_size", "predict_zarr", "run"]
