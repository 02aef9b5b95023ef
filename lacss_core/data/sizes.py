"""Cell sizes measured in training data, and the training sizes ``lacss train`` derives from them.

What is measured, per cell (pixels):

- from label images: the equivalent diameter ``2 sqrt(area / pi)`` (cellpose's size measure)
  and the extent, the longer side of the cell's bounding box (what must fit in a crop);
- from points + foreground masks: each connected component of the mask is shared among the
  points inside it (touching cells merge into one component), so a point's diameter is the
  equivalent diameter of its share of the area; its extent is the component's bounding box when
  it holds one point, else the larger of that diameter and the distance to the nearest other
  point (touching cells sit about one diameter apart), at most the component's box. Points on
  background and components without points are ignored.

What is chosen (:func:`choose_training_sizes`), each unless given:

- ``crop_size`` (the segmentor's patch, SPEC 2): ``CROP_MARGIN`` x the ``CROP_PERCENTILE``-th
  percentile extent, rounded up to a multiple of 4, at least ``MIN_CROP``: the patch is centred
  on the cell's location, so it must hold the largest cells with some room;
- ``size`` (the training crops): ``SIZE_IN_CROPS`` segmentation crops per side (a few cells'
  diameters, enough cells per step), rounded up to a power of two, at least ``MIN_SIZE``; at
  most the largest image side (rounded down to a multiple of 32), so small images are not
  padded far beyond themselves;
- ``max_instances``: ``DEFAULT_MAX_INSTANCES``, raised when a crop of ``size`` can hold more
  cells (the most centres in any ``size`` window, x ``DENSITY_MARGIN`` for the scale
  augmentation); rows beyond the cells present cost nothing (instance buckets, issue 17);
- ``train_diameter``: the median diameter, recorded in the model so that
  ``predict_instances(diameter=...)`` rescales images to the size the model was trained at.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import ndimage, spatial

CROP_MARGIN = 1.5
CROP_PERCENTILE = 98
MIN_CROP = 16
SIZE_IN_CROPS = 4
MIN_SIZE = 64
DEFAULT_SIZE = 256  # when no cell is found
DEFAULT_MAX_INSTANCES = 256
DENSITY_MARGIN = 1.25  # scale augmentation down to 0.9 packs 1 / 0.81 ~ 1.23 x the cells
#: Samples measured (the first ones): enough for percentiles, bounded for large folders.
MEASURE_SAMPLES = 256


@dataclasses.dataclass(frozen=True)
class CellSizes:
    """Cells measured in training images.

    Attributes:
        diameters: ``(N,) float64`` equivalent diameter of each cell, pixels.
        extents: ``(N,) float64`` the longer side of each cell's box, pixels.
        centres: one ``(Ni, 2) float64`` array of cell centres ``(y, x)`` per image.
        image_shapes: ``(H, W)`` of each image measured.
        source: ``"labels"``, ``"points + masks"`` or both, joined by ``" and "``.
    """

    diameters: np.ndarray
    extents: np.ndarray
    centres: list
    image_shapes: list
    source: str

    @property
    def count(self) -> int:
        return int(self.diameters.size)


def measure_labels(label) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(diameters, extents, centres)`` of the cells of one ``(H, W)`` int label image."""
    label = np.asarray(label, np.int64)
    areas = np.bincount(label.ravel())
    ids = np.flatnonzero(areas[1:]) + 1
    boxes = ndimage.find_objects(label)
    extents = np.array([_box_side(boxes[i - 1]) for i in ids], np.float64)
    yy, xx = np.indices(label.shape)
    weights = areas[ids].astype(np.float64)
    cy = np.bincount(label.ravel(), yy.ravel(), areas.size)[ids] / weights
    cx = np.bincount(label.ravel(), xx.ravel(), areas.size)[ids] / weights
    return _diameters(areas[ids]), extents, np.stack([cy, cx], -1).reshape(-1, 2)


def measure_points_and_mask(points, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(diameters, extents, centres)`` of the cells marked by ``points`` ``(N, 2)`` (``-1``
    rows ignored) on a binary ``(H, W)`` foreground ``mask`` (see the module docstring)."""
    components, _ = ndimage.label(np.asarray(mask) > 0)
    points = np.asarray(points, np.float64).reshape(-1, 2)
    points = points[np.all(points >= 0, axis=-1)]
    yx = np.clip(np.round(points).astype(np.int64), 0, np.asarray(components.shape) - 1)
    ids = components[yx[:, 0], yx[:, 1]]
    points, ids = points[ids > 0], ids[ids > 0]
    if ids.size == 0:
        return np.zeros(0), np.zeros(0), np.zeros((0, 2))
    areas = np.bincount(components.ravel())
    shared = np.bincount(ids, minlength=areas.size)[ids]  # points in each point's component
    diameters = _diameters(areas[ids] / shared)
    boxes = ndimage.find_objects(components)
    box_sides = np.array([_box_side(boxes[i - 1]) for i in ids], np.float64)
    spacing = _nearest_other(points)
    extents = np.where(
        shared == 1, box_sides, np.minimum(box_sides, np.maximum(diameters, spacing))
    )
    return diameters, extents, points


def measure_samples(samples, limit: int = MEASURE_SAMPLES) -> CellSizes:
    """Measure the cells of the first ``limit`` samples (``lacss_core.data.Sample``): from the
    label when there is one, else from the points and mask."""
    parts, sources, shapes = [], set(), []
    for i in range(min(len(samples), limit)):
        sample = samples[i]
        if sample.label is not None:
            parts.append(measure_labels(sample.label))
            sources.add("labels")
        else:
            parts.append(measure_points_and_mask(sample.locations, sample.mask))
            sources.add("points + masks")
        shapes.append(tuple(int(s) for s in sample.shape))
    if not parts:
        raise ValueError("samples is empty: no cells to measure")
    return CellSizes(
        diameters=np.concatenate([p[0] for p in parts]),
        extents=np.concatenate([p[1] for p in parts]),
        centres=[p[2] for p in parts],
        image_shapes=shapes,
        source=" and ".join(sorted(sources)),
    )


@dataclasses.dataclass(frozen=True)
class TrainingSizes:
    """What :func:`choose_training_sizes` chose; ``report()`` says why, in one block.

    Attributes:
        crop_size: the segmentor's crop, pixels (a multiple of 4).
        size: the side of the training crops, pixels.
        max_instances: the most cells one training crop may hold.
        train_diameter: median cell diameter in pixels, or None when no cell was found.
        lines: the report, one line per choice.
    """

    crop_size: int
    size: int
    max_instances: int
    train_diameter: float | None
    lines: tuple

    def report(self) -> str:
        return "\n".join(self.lines)


def choose_training_sizes(
    cells: CellSizes,
    *,
    crop_size: int | None = None,
    size: int | None = None,
    max_instances: int | None = None,
    default_crop: int = 32,
    crop_origin: str = "given",
) -> TrainingSizes:
    """Choose the training sizes from measured ``cells`` (see the module docstring).

    Args:
        cells: from :func:`measure_samples`.
        crop_size, size, max_instances: values to keep instead of choosing them (reported as
            ``crop_origin`` for the crop, ``"given"`` for the others).
        default_crop: the crop when no cell was measured (the preset's).
    """
    lines = [_header(cells)]
    largest = _percentile_extent(cells)
    needed = _needed_crop(largest)
    if crop_size is None:
        crop_size = needed or default_crop
        why = (
            f"holds the largest cells: {CROP_MARGIN} x {largest:.1f} px, a multiple of 4"
            if needed
            else "no cell measured: the default"
        )
    else:
        why = crop_origin
        if needed and crop_size < needed:
            why += f"; the largest cells ({largest:.1f} px) need {needed} or more"
    lines.append(_line("--crop-size", crop_size, why))
    side = max(max(shape) for shape in cells.image_shapes)
    if size is None:
        size, why = _choose_size(crop_size if needed else None, side)
    else:
        why = "given"
    lines.append(_line("--size", size, why))
    most = _most_cells_in_window(cells.centres, size)
    if max_instances is None:
        needed_rows = math.ceil(most * DENSITY_MARGIN)
        max_instances = max(DEFAULT_MAX_INSTANCES, needed_rows)
        why = f"a {size} px crop holds at most {most} cells (x {DENSITY_MARGIN} for rescaling)"
    else:
        why = f"given; a {size} px crop holds at most {most} cells"
    lines.append(_line("--max-instances", max_instances, why))
    diameter = float(np.median(cells.diameters)) if cells.count else None
    if diameter is not None:
        why = "the median, recorded in the model: predict --diameter D rescales images to it"
        lines.append(_line("train_diameter", f"{diameter:.1f}", why))
    lines.append("  an option given on the command line replaces any of these")
    return TrainingSizes(int(crop_size), int(size), int(max_instances), diameter, tuple(lines))


def _line(name: str, value, why: str) -> str:
    return f"  {name:<16}{value!s:<6}{why}"


def _header(cells: CellSizes) -> str:
    images = len(cells.image_shapes)
    head = f"sizes from the data: {cells.count} cells in {images} image(s), from {cells.source}"
    if not cells.count:
        return head
    return (
        f"{head}; diameter median {np.median(cells.diameters):.1f} px, "
        f"{CROP_PERCENTILE}th percentile extent {_percentile_extent(cells):.1f} px"
    )


def _percentile_extent(cells: CellSizes) -> float | None:
    return float(np.percentile(cells.extents, CROP_PERCENTILE)) if cells.count else None


def _needed_crop(extent: float | None) -> int | None:
    if extent is None:
        return None
    return max(MIN_CROP, 4 * math.ceil(CROP_MARGIN * extent / 4))


def _choose_size(crop_size: int | None, side: int) -> tuple[int, str]:
    """Training crop side for segmentation crops of ``crop_size`` in images up to ``side``."""
    if crop_size is None:
        size, why = DEFAULT_SIZE, "no cell measured: the default"
    else:
        size = max(MIN_SIZE, 2 ** math.ceil(math.log2(SIZE_IN_CROPS * crop_size)))
        why = f"{SIZE_IN_CROPS} crop sizes per side, a power of two"
    cap = max(32, 32 * (side // 32))
    if size > cap:
        size, why = cap, f"{why}, cut to the largest image ({side} px)"
    return size, why


def _most_cells_in_window(centres, size: int) -> int:
    """The most cell centres inside any ``size x size`` window of any image (0 if none)."""
    most = 0
    for points in centres:
        if len(points) == 0:
            continue
        yx = np.floor(np.asarray(points)).astype(np.int64)
        counts = np.zeros(tuple(yx.max(0) + 1), np.int64)
        np.add.at(counts, (yx[:, 0], yx[:, 1]), 1)
        table = np.pad(counts.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        h, w = counts.shape
        y0, x0 = np.arange(h), np.arange(w)
        y1, x1 = np.minimum(y0 + size, h), np.minimum(x0 + size, w)
        window = table[np.ix_(y1, x1)] - table[np.ix_(y0, x1)]
        window -= table[np.ix_(y1, x0)] - table[np.ix_(y0, x0)]
        most = max(most, int(window.max()))
    return most


def _diameters(areas) -> np.ndarray:
    return 2.0 * np.sqrt(np.asarray(areas, np.float64) / math.pi)


def _box_side(box) -> float:
    return float(max(s.stop - s.start for s in box))


def _nearest_other(points: np.ndarray) -> np.ndarray:
    """``(N,)`` distance from each point to the nearest other one (inf when alone)."""
    if len(points) < 2:
        return np.full(len(points), np.inf)
    distances, _ = spatial.cKDTree(points).query(points, k=2)
    return distances[:, 1]


__all__ = [
    "CellSizes",
    "TrainingSizes",
    "choose_training_sizes",
    "measure_labels",
    "measure_points_and_mask",
    "measure_samples",
]
