"""Tiled prediction of images larger than one tile (used by ``lacss_core.predict``).

Tiles of ``tile_size`` pixels overlap by ``tile_overlap >= crop_size`` pixels. The
overlap strip between two neighbours is split at its middle: each tile's *core* is the part of
the image closer to it, and a cell belongs to the tile whose core holds its location, so a cell
is never cut by a seam (its ``c x c`` patch lies inside the tile that owns it) and never counted
twice. To absorb the small location jitter of a real network near a core edge, each tile also
reports cells up to ``nms_distance`` pixels outside its core, and one greedy NMS over all reported
cells (core cells first on equal score) removes the doubles. Memory is bounded by one tile's
network activations plus the full-size image and label (the per-cell masks kept between tiles are
cropped to each cell's pixels).

Capacity: one tile holds at most ``max_output`` cells (the model's slot count). A tile that
reaches it is *saturated* (cells may be missing) and is split into smaller tiles whose cores
partition its core, recursively, down to ``floor_tile``; a tile still saturated there is kept as it
is, and counted, so the caller can warn. The default tile side (``default_tile_size``) is chosen
so that a tile densely packed with cells of half the crop size just fits the capacity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Tile starts are multiples of this (the model's padding multiple), so that interior tiles see
# the same LPN grid and padding phase as the whole image.
TILE_ALIGN = 32
# The densest packing the default tile size plans for: cells of diameter crop_size / 2, i.e. 4 per
# crop_size**2 pixels (a confluent layer of cells the model's crop comfortably holds).
CELLS_PER_CROP_AREA = 4
# Upper bound of the default tile side: one 1024 x 1024 tile of the paper model with all 1024
# slots filled peaks near 3 GB (docs/performance.md); larger tiles gain little.
MAX_DEFAULT_TILE = 1024


def default_tile_size(crop_size, max_output, overlap) -> int:
    """Default tile side: ``crop_size * sqrt(max_output / CELLS_PER_CROP_AREA)`` rounded down to
    ``TILE_ALIGN``, within ``[2 * overlap, MAX_DEFAULT_TILE]`` (e.g. 1024 for the paper model,
    192 for the demo's model: crop 24, 256 slots)."""
    side = int(crop_size * math.sqrt(max_output / CELLS_PER_CROP_AREA)) // TILE_ALIGN * TILE_ALIGN
    return max(2 * overlap, min(MAX_DEFAULT_TILE, side))


@dataclass(frozen=True)
class AxisTile:
    start: int  # first pixel of the tile
    size: int  # pixels
    core_lo: float  # the core is [core_lo, core_hi) in pixel index coordinates
    core_hi: float


def axis_tiles(length: int, tile: int, overlap: int) -> list[AxisTile]:
    """Tiles along one axis: starts at multiples of TILE_ALIGN, the last one flush with the end.

    Neighbours overlap by at least ``overlap``; cores split each overlap at its middle.
    """
    if length <= tile:
        return [AxisTile(0, length, 0.0, float(length))]
    step = tile - overlap
    step = max(TILE_ALIGN, step - step % TILE_ALIGN) if step >= TILE_ALIGN else step
    starts = list(range(0, length - tile, step)) + [length - tile]
    bounds = [0.0]
    for before, after in zip(starts[:-1], starts[1:], strict=True):
        bounds.append((after + before + tile) / 2)
    bounds.append(float(length))
    return [AxisTile(s, tile, bounds[i], bounds[i + 1]) for i, s in enumerate(starts)]


@dataclass
class TileCells:
    """Cells reported by the tiles so far, in the order reported."""

    scores: list
    locations: list
    in_core: list
    corners: list  # (y0, x0) image pixel of each mask's (0, 0)
    masks: list  # bool masks cropped to each cell's pixels, or whole float32 probability patches
    saturated: list  # whether the tile that reported it stayed saturated

    def add(self, out, offset, rows, cols, margin, saturated=False):
        """Keep the valid cells of one tile's output whose location is within ``margin`` of its
        core; ``offset`` is the tile's top-left pixel, ``rows``/``cols`` its ``AxisTile``s."""
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
            origin = out["origins"][i] + np.asarray(offset)
            if "patches" in out:  # probabilities (run_patches): any threshold applies later
                corner, mask = (int(origin[0]), int(origin[1])), out["patches"][i]
            else:
                corner, mask = crop_mask(out["masks"][i], origin)
            self.scores.append(out["scores"][i])
            self.locations.append(locations[i])
            self.in_core.append(core[i])
            self.corners.append(corner)
            self.masks.append(mask)
            self.saturated.append(bool(saturated))


def crop_mask(mask, origin):
    """``(corner, mask)`` cropped to the mask's True pixels (an empty mask stays ``(0, 0)``)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return (int(origin[0]), int(origin[1])), mask[:0, :0]
    top, left = rows[0], cols[0]
    cropped = mask[top : rows[-1] + 1, left : cols[-1] + 1].copy()
    return (int(origin[0] + top), int(origin[1] + left)), cropped


def greedy_nms(locations, distance) -> np.ndarray:
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


@dataclass(frozen=True)
class Tile:
    """One tile: its extent and core along each axis (image pixels)."""

    rows: AxisTile
    cols: AxisTile

    @property
    def side(self) -> int:
        """The tile's longer side in pixels."""
        return max(self.rows.size, self.cols.size)


def grid_tiles(shape, tile, overlap) -> list[Tile]:
    """The tiles of an ``(H, W)`` image, row by row."""
    return [
        Tile(rows, cols)
        for rows in axis_tiles(shape[0], tile, overlap)
        for cols in axis_tiles(shape[1], tile, overlap)
    ]


def whole_tile(shape) -> Tile:
    """The whole ``(H, W)`` image as one tile (core = image)."""
    return Tile(
        AxisTile(0, shape[0], 0.0, float(shape[0])), AxisTile(0, shape[1], 0.0, float(shape[1]))
    )


def floor_tile(overlap, crop_size) -> int:
    """The smallest tile side a saturated tile is split down to: the overlap plus a core of at
    least one crop (``overlap >= crop_size``, so about 3 crop sizes at the default overlap)."""
    return -(-(overlap + crop_size) // TILE_ALIGN) * TILE_ALIGN


def child_size(side, overlap, crop_size) -> int:
    """Side of the tiles a saturated tile of ``side`` pixels is split into: about half its core
    plus the overlap, rounded up to ``TILE_ALIGN``, and at least ``floor_tile``."""
    half = -(-(side + overlap) // (2 * TILE_ALIGN)) * TILE_ALIGN
    return max(floor_tile(overlap, crop_size), half)


def split_tile(tile: Tile, size, overlap) -> list[Tile]:
    """Tiles of side ``size`` over ``tile``'s extent whose cores partition ``tile``'s core.

    The children tile the parent's window as ``axis_tiles`` would tile an image of that size;
    each child's core is cut to the parent's core (children whose cut core is empty are left
    out). A child core edge is then either a child core edge (``overlap / 2`` inside the child)
    or the parent's core edge (``overlap / 2`` inside the parent, or the image edge), so every
    owned cell's patch still lies inside the tile that owns it.
    """

    def axis(parent: AxisTile) -> list[AxisTile]:
        children = []
        for child in axis_tiles(parent.size, size, overlap):
            lo = max(parent.core_lo, parent.start + child.core_lo)
            hi = min(parent.core_hi, parent.start + child.core_hi)
            if lo < hi:
                children.append(AxisTile(parent.start + child.start, child.size, lo, hi))
        return children

    return [Tile(rows, cols) for rows in axis(tile.rows) for cols in axis(tile.cols)]


@dataclass
class TiledResult:
    """What ``predict_tiled`` found: row ``r - 1`` describes rank ``r`` of ``ranks``."""

    ranks: np.ndarray  # (H, W) int32, 0 = background
    scores: np.ndarray  # (n,) float32, descending
    locations: np.ndarray  # (n, 2) float32
    saturated: np.ndarray  # (n,) bool: reported by a tile that stayed saturated
    saturated_tiles: int  # tiles still saturated at the floor size


def predict_tiled(
    network, image, settings, tiles, overlap, *, progress=None, max_overlap=1.0
) -> TiledResult:
    """Predict ``image`` tile by tile, splitting every saturated tile (``network.run`` reached
    its capacity) into smaller ones down to ``floor_tile``; tiles still saturated there are
    kept as they are and counted.

    Args:
        network: a ``lacss_core._network.Network``.
        image: ``(H, W, C)`` float32, normalised.
        tiles: the ``Tile`` list to start from (``grid_tiles``, or ``split_tile`` of a saturated
            whole image).
        overlap: tile overlap in pixels (``>= network.crop_size``).
        progress: ``None`` (no bar) or a callable ``progress(done, total)`` called after each tile.
        max_overlap: cells more than this fraction hidden by better ones are dropped
            (``postprocess.drop_occluded``; 1 keeps them all).
    """

    def window(tile):
        rows, cols = tile.rows, tile.cols
        return image[rows.start : rows.start + rows.size, cols.start : cols.start + cols.size]

    cells, saturated = collect_tiles(network, window, settings, tiles, overlap, progress=progress)
    kept = select_cells(cells, settings.nms_distance)
    placements = [(cells.corners[i], cells.masks[i]) for i in kept]
    ranks = paint_cells(np.zeros(image.shape[:2], np.int32), placements, max_overlap)
    scores = np.asarray(cells.scores, np.float32)
    locations = np.asarray(cells.locations, np.float32).reshape(-1, 2)
    flags = np.asarray(cells.saturated, bool).reshape(-1)
    return TiledResult(ranks, scores[kept], locations[kept], flags[kept], len(saturated))


def collect_tiles(network, window, settings, tiles, overlap, *, progress=None,
                  probabilities=False):  # fmt: skip
    """Run ``network`` on ``tiles`` (splitting saturated ones, as ``predict_tiled``) and keep
    every tile's cells near its core.

    Args:
        window: ``window(tile) -> (h, w, C) float32``, the normalised pixels under ``tile``.
        probabilities: keep each cell's ``(c, c)`` float32 patch probabilities (uncropped, its
            corner the patch origin) instead of its mask at ``settings.threshold``, so that
            every segmentation threshold can be painted from one pass (``lacss_core.calibrate``).
        Others: as ``predict_tiled``.
    Returns:
        ``(cells, saturated)``: the ``TileCells`` reported (image coordinates), and the ``Tile``s
        still saturated at the floor size.
    """
    margin = min(settings.nms_distance, max(0.0, (overlap - network.crop_size) / 2))
    cells = TileCells([], [], [], [], [], [])
    pending, done, saturated = list(reversed(tiles)), 0, []
    while pending:
        tile = pending.pop()
        rows, cols = tile.rows, tile.cols
        if probabilities:
            (out,) = network.run_patches(window(tile), [settings])
        else:
            out = network.run(window(tile), settings, render=False)
        size = child_size(tile.side, overlap, network.crop_size)
        if out["saturated"] and size < tile.side:
            pending.extend(reversed(split_tile(tile, size, overlap)))  # depth first, in order
        else:
            if out["saturated"]:
                saturated.append(tile)
            cells.add(out, (rows.start, cols.start), rows, cols, margin, out["saturated"])
        done += 1
        if progress is not None:
            progress(done, done + len(pending))
    return cells, saturated


def select_cells(cells: TileCells, distance) -> np.ndarray:
    """Indices into ``cells`` of the cells kept, in priority order (score descending; on equal
    scores a core cell before a margin copy of it), after greedy NMS at ``distance``."""
    scores = np.asarray(cells.scores, np.float32)
    locations = np.asarray(cells.locations, np.float32).reshape(-1, 2)
    order = np.lexsort((~np.asarray(cells.in_core, bool), -scores))
    return order[greedy_nms(locations[order], distance)]


def paint(ranks, corner, mask, rank) -> tuple[int, int]:
    """Give ``rank`` to the still-unpainted pixels of ``mask`` placed at ``corner`` (clipped).
    Returns ``(own, painted)``: the mask's pixels on ``ranks`` and those it was given."""
    y0, x0 = corner
    top, left = max(y0, 0), max(x0, 0)
    bottom = min(y0 + mask.shape[0], ranks.shape[0])
    right = min(x0 + mask.shape[1], ranks.shape[1])
    if bottom <= top or right <= left:
        return 0, 0
    region = ranks[top:bottom, left:right]
    inside = mask[top - y0 : bottom - y0, left - x0 : right - x0]
    free = inside & (region == 0)
    region[free] = rank
    return int(np.count_nonzero(inside)), int(np.count_nonzero(free))


def paint_cells(ranks, placements, max_overlap) -> np.ndarray:
    """Paint ``(corner, mask)`` pairs in priority order (value 1, 2, ... as ``paint``) onto the
    zero ``ranks``, then drop the cells more than ``max_overlap`` hidden by better ones
    (``postprocess.drop_occluded``). Returns the painted ``ranks`` (int32)."""
    from lacss_core.postprocess import drop_occluded

    areas = [paint(ranks, corner, mask, r) for r, (corner, mask) in enumerate(placements, 1)]
    own, painted = np.asarray(areas, np.int64).reshape(-1, 2).T
    return drop_occluded(ranks, own, painted, max_overlap)
