"""Host post-processing of predicted label images: one piece per cell, no holes; cell sizes.

``predict_instances`` paints each cell's thresholded patch into the label image, the higher score
winning where patches overlap (SPEC 9). A patch can be ragged (a stray blob, a hole) and the
overlap rule can cut a lower-scoring cell in two, so a painted cell may come out as several
4-connected pieces or with holes; the truth never has either. :func:`clean_label` repairs that.

It runs on the host (SciPy, one small window per cell) rather than in the compiled graph: most
pieces are made by the overlap rule, i.e. only exist once every cell is painted, and connected
pieces need a data-dependent number of steps that no static-shape op expresses cheaply. It costs
a small fraction of the network's time (``benchmarks/predict.py``).
"""

from __future__ import annotations

import math

import numpy as np

#: ``predict_instances``' default ``max_overlap``: a cell more than half hidden is dropped.
DEFAULT_MAX_OVERLAP = 0.5


def drop_occluded(ranks: np.ndarray, own_areas, visible_areas, max_overlap: float) -> np.ndarray:
    """Remove the cells whose masks are mostly hidden by higher-priority cells (mask NMS).

    Where a cell is found twice (a large cell's proposal NMS keeps two locations more than
    ``nms_distance`` apart), the second copy's mask lies on the first: painting (SPEC 9) leaves it
    the leftover sliver, a fragment of the cell. Here a cell goes when more than ``max_overlap``
    of its mask is painted over: ``own - visible > max_overlap * own``. Its visible pixels become
    background (lower cells do not take them over); a cell's fate depends only on the cells
    ranked before it, so cutting at a score threshold commutes with it, as with ``clean_label``.

    Args:
        ranks: ``(H, W)`` int label image as painted, 0 = background, cell ``r`` = value ``r``.
        own_areas: ``(n,)`` int, pixels of cell ``r``'s thresholded mask on the painted canvas
            (row ``r - 1``); visible_areas: ``(n,)`` int, the pixels it was painted on.
        max_overlap: in ``[0, 1]``; 1 keeps every cell.
    Returns:
        ``(H, W)`` int32, a new array with the occluded cells' pixels set to 0.
    """
    own = np.asarray(own_areas, np.float64).reshape(-1)
    visible = np.asarray(visible_areas, np.float64).reshape(-1)
    if own.shape != visible.shape:
        raise ValueError(f"own_areas {own.shape} and visible_areas {visible.shape} differ")
    keep = np.ones(own.size + 1, bool)
    keep[1:] = own - visible <= max_overlap * own
    ids = np.arange(own.size + 1, dtype=np.int32) * keep
    return ids[ranks]


def clean_label(ranks: np.ndarray) -> np.ndarray:
    """Keep each cell's largest 4-connected piece and fill its holes.

    Cells are treated in ascending value, which is priority order (``predict_instances``' ranks:
    1 = the highest score). For cell ``r``: every piece but the largest (ties: the first in row
    order) becomes background; then each hole (a 4-connected region of other pixels that the cell
    encloses) is given to ``r`` where it is background or held by a lower-priority cell
    (value ``> r``); pixels of higher-priority cells stay theirs.

    The result is the same whether or not the lower-priority cells are present (so keeping only
    the cells above a score threshold commutes with cleaning, which ``lacss_core.calibrate``
    relies on): a cell's outcome depends only on the cells ranked before it.

    Args:
        ranks: ``(H, W)`` int label image, 0 = background, cell ``r`` = value ``r``.
    Returns:
        ``(H, W)`` int32, a new array; a cell that lost every pixel is simply absent.
    """
    from scipy import ndimage

    label = np.array(ranks, dtype=np.int32, copy=True)
    if label.ndim != 2:
        raise ValueError(f"ranks must be a 2-D label image, got shape {label.shape}")
    for value, box in enumerate(ndimage.find_objects(label), start=1):
        if box is None:
            continue
        window = label[box]  # a view: edits land in label
        mask = window == value
        pieces, count = ndimage.label(mask)
        if count > 1:
            largest = 1 + int(np.argmax(np.bincount(pieces.ravel())[1:]))
            window[mask & (pieces != largest)] = 0
            mask = pieces == largest
        holes = _holes(mask)
        if holes is not None:
            window[holes & ((window == 0) | (window > value))] = value
    return label


def _holes(mask: np.ndarray) -> np.ndarray | None:
    """The pixels of ``mask``'s window that ``mask`` encloses (4-connected regions of non-mask
    pixels that do not reach the window's edge), or None if there are none."""
    from scipy import ndimage

    outside, count = ndimage.label(~mask)
    if count == 0:
        return None
    edge = np.concatenate([outside[0], outside[-1], outside[:, 0], outside[:, -1]])
    open_regions = np.unique(edge[edge > 0])
    if open_regions.size == count:
        return None
    return (outside > 0) & ~np.isin(outside, open_regions)


def count_defects(label: np.ndarray) -> dict[str, int]:
    """How many cells of a label image have more than one 4-connected piece, and how many have
    holes (``scipy.ndimage.binary_fill_holes`` adds pixels); ``{"cells", "fragmented",
    "with_holes"}``. A cell ringing another cell counts as having a hole."""
    from scipy import ndimage

    label = np.asarray(label)
    counts = {"cells": 0, "fragmented": 0, "with_holes": 0}
    for value, box in enumerate(ndimage.find_objects(label), start=1):
        if box is None:
            continue
        mask = label[box] == value
        counts["cells"] += 1
        counts["fragmented"] += int(ndimage.label(mask)[1] > 1)
        counts["with_holes"] += int(ndimage.binary_fill_holes(mask).sum() > mask.sum())
    return counts


def equivalent_diameters(areas) -> np.ndarray:
    """``2 sqrt(area / pi)``: the diameter in pixels of a disc of each area (cellpose's size
    measure). ``areas``: ``(n,)`` pixel counts; returns ``(n,)`` float64."""
    return 2.0 * np.sqrt(np.asarray(areas, np.float64) / math.pi)


def median_diameter(labels) -> float | None:
    """The median equivalent diameter (pixels) of the cells of one label image or a list of them
    (all cells pooled), or None when there is no cell."""
    if isinstance(labels, np.ndarray) and labels.ndim == 2:
        labels = [labels]
    areas = []
    for label in labels:
        counts = np.bincount(np.asarray(label, np.int64).ravel())[1:]
        areas.append(counts[counts > 0])
    areas = np.concatenate(areas) if areas else np.zeros(0)
    return float(np.median(equivalent_diameters(areas))) if areas.size else None


__all__ = ["clean_label", "count_defects", "equivalent_diameters", "median_diameter"]
