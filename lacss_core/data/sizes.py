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

Rescaling (``target_diameter``, ``lacss train --target-diameter D``): the images are resized by
``D / median diameter`` before training (:class:`RescaledSamples`: the image bilinear after an
anti-aliasing blur when shrinking, as ``predict_instances`` rescales; labels and masks nearest
neighbour; points moved with them), every size above is chosen for the rescaled cells, and
``train_diameter`` is ``D``, so ``predict_instances(model, image, diameter=d)`` resizes an image
of cells ``d`` px across by ``D / d``, the scale the model was trained at. Without a target, a
given crop (``--crop-size``, or an ``--init`` model's) that the largest cells do not fit in at
all (their extent exceeds it) gets the rescale that makes them fit with ``CROP_MARGIN``; a chosen
crop more than ``LARGE_CROP`` x the preset's is reported with the target diameter that would
train at the preset's crop (cost grows with the crop's square).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage, spatial

from lacss_core import _validation
from lacss_core.data.augment import AugmentParams, apply_augmentation, resized_shape

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
#: A chosen crop this many times the preset's (or more) is reported with a target diameter.
LARGE_CROP = 2.0


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

    def rescaled(self, scale: float) -> CellSizes:
        """The cells as they are in the images resized by ``scale`` (the maps of
        ``lacss_core.data.augment``: lengths times ``scale``, ``y' = (y + 0.5) scale - 0.5``)."""
        return CellSizes(
            diameters=self.diameters * scale,
            extents=self.extents * scale,
            centres=[np.maximum((c + 0.5) * scale - 0.5, 0) for c in self.centres],
            image_shapes=[resized_shape(shape, scale) for shape in self.image_shapes],
            source=self.source,
        )


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
        train_diameter: median cell diameter in pixels of the images as trained on (after
            ``scale``), or None when no cell was found.
        lines: the report, one line per choice.
        scale: the factor the training images are resized by (1.0: as they are).
    """

    crop_size: int
    size: int
    max_instances: int
    train_diameter: float | None
    lines: tuple
    scale: float = 1.0

    def report(self) -> str:
        return "\n".join(self.lines)

    def rescale(self, samples):
        """``samples`` as training must see them: resized by ``scale``
        (:class:`RescaledSamples`), or unchanged when it is 1. Apply it to the training and
        the validation samples alike."""
        if self.scale == 1.0:
            return samples
        return RescaledSamples(samples, self.scale, train_diameter=self.train_diameter)


def choose_training_sizes(
    cells: CellSizes,
    *,
    crop_size: int | None = None,
    size: int | None = None,
    max_instances: int | None = None,
    target_diameter: float | None = None,
    default_crop: int = 32,
    crop_origin: str = "given",
) -> TrainingSizes:
    """Choose the training sizes from measured ``cells`` (see the module docstring).

    Args:
        cells: from :func:`measure_samples` (the images as they are).
        crop_size, size, max_instances: values to keep instead of choosing them (reported as
            ``crop_origin`` for the crop, ``"given"`` for the others).
        target_diameter: pixels; resize the images so the median cell diameter becomes this
            (``TrainingSizes.scale``), and choose every size for the resized cells.
        default_crop: the crop when no cell was measured (the preset's).

    Raises:
        ValueError: ``target_diameter`` is not a number > 0, or no cell was measured to rescale.
    """
    lines = [_header(cells)]
    scale, why = _choose_scale(cells, target_diameter, crop_size, crop_origin)
    if scale != 1.0:
        cells = cells.rescaled(scale)
        lines.append(_line("rescale", f"x{scale:.3g}", why))
    largest = _percentile_extent(cells)
    needed = _needed_crop(largest)
    chosen_crop = crop_size is None
    if chosen_crop:
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
    if scale != 1.0:
        diameter = float(target_diameter) if target_diameter is not None else diameter
        why = "the median rescaled, recorded in the model: predict --diameter D resizes by "
        why += f"{diameter:.1f} / D"
        lines.append(_line("train_diameter", f"{diameter:.1f}", why))
    elif diameter is not None:
        why = "the median, recorded in the model: predict --diameter D rescales images to it"
        lines.append(_line("train_diameter", f"{diameter:.1f}", why))
    if chosen_crop and target_diameter is None and needed and needed >= LARGE_CROP * default_crop:
        suggested = diameter * default_crop / crop_size
        lines.append(
            f"  note: these cells are large for the preset (crop {crop_size} px, its own is "
            f"{default_crop}; a step's cost grows with the crop's and --size's squares): "
            f"--target-diameter {suggested:.0f} would train them at a {default_crop} px crop"
        )
    lines.append("  an option given on the command line replaces any of these")
    return TrainingSizes(
        int(crop_size), int(size), int(max_instances), diameter, tuple(lines), float(scale)
    )


def _choose_scale(cells, target_diameter, crop_size, crop_origin) -> tuple[float, str]:
    """The factor the images are resized by, and why (``choose_training_sizes``)."""
    if target_diameter is not None:
        target = _validation.positive_number(target_diameter, "target_diameter")
        if not cells.count:
            raise ValueError(
                f"target_diameter={target_diameter!r}: no cell was measured in the training "
                "data, so there is no diameter to rescale from"
            )
        median = float(np.median(cells.diameters))
        why = f"--target-diameter {target:g} / the median diameter {median:.1f} px"
        return target / median, why
    largest = _percentile_extent(cells)
    if crop_size is None or largest is None or largest <= crop_size:
        return 1.0, ""
    scale = crop_size / (CROP_MARGIN * largest)
    why = (
        f"the largest cells ({largest:.1f} px) do not fit the {crop_size} px crop "
        f"({crop_origin}): shrunk to fit it with margin {CROP_MARGIN} (= --target-diameter "
        f"{np.median(cells.diameters) * scale:.1f}; give one to choose)"
    )
    return scale, why


def rescale_sample(sample, scale: float):
    """``sample`` (``lacss_core.data.Sample``) resized by ``scale`` about its top-left corner.

    The image is bilinear, after a Gaussian blur of sigma ``(1 / scale - 1) / 2`` px when
    shrinking (against aliasing; ``predict_instances`` resizes the same way); label and mask are
    nearest neighbour; points are moved with the image (``lacss_core.data.augment``'s maps).
    The canvas is ``round(H * scale) x round(W * scale)``; a label is relabelled sequentially
    (a cell smaller than a pixel after shrinking can vanish).
    """
    scale = _validation.positive_number(scale, "scale")
    if scale == 1.0:
        return sample
    if scale < 1:
        sigma = (1 / scale - 1) / 2
        blurred = ndimage.gaussian_filter(sample.image, (sigma, sigma, 0), mode="nearest")
        sample = sample.replace(image=blurred)
    shape = resized_shape(sample.shape, scale)
    return apply_augmentation(sample, AugmentParams(scale=scale), shape)


class RescaledSamples(Sequence):
    """The samples of ``samples`` resized by ``scale`` (:func:`rescale_sample`), on access.

    Args:
        samples: a sequence of ``lacss_core.data.Sample`` (a list, or a lazy one such as
            ``SyntheticCells``).
        scale: float > 0.
        train_diameter: the median cell diameter after rescaling, px; ``lacss_core.train.train``
            records it in the model (``train_diameter``) so prediction rescales alike.

    A list or tuple is in memory already: its rescaled samples are kept once made (a rescale
    per random crop would cost more than the step). A ``fingerprint()`` names the scale and the
    original samples, so a training run's record changes with the scale without rescaling all.
    """

    def __init__(self, samples, scale: float, *, train_diameter: float | None = None):
        self.samples = samples
        self.scale = _validation.positive_number(scale, "scale")
        self.train_diameter = train_diameter
        self._kept = {} if isinstance(samples, (list, tuple)) else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample index {index} out of range for {len(self)} samples")
        index %= len(self)
        if self._kept is not None and index in self._kept:
            return self._kept[index]
        sample = rescale_sample(self.samples[index], self.scale)
        if self._kept is not None:
            self._kept[index] = sample
        return sample

    def fingerprint(self) -> dict:
        from lacss_core._run_record import samples_fingerprint

        return {"rescaled": self.scale, "samples": samples_fingerprint(self.samples)}


def _line(name: str, value, why: str) -> str:
    value = f"{value!s:<6}" if len(str(value)) < 6 else f"{value} "
    return f"  {name:<16}{value}{why}"


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
    # the tolerance keeps a crop rescaled to fit exactly (_choose_scale) at its size
    return max(MIN_CROP, 4 * math.ceil(CROP_MARGIN * extent / 4 - 1e-9))


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
    "RescaledSamples",
    "TrainingSizes",
    "choose_training_sizes",
    "measure_labels",
    "measure_points_and_mask",
    "measure_samples",
    "rescale_sample",
]
