"""Calibrated prediction thresholds: the ``min_score``, ``segmentation_threshold`` and
``nms_distance`` that segment validation images best, stored in the model (stardist's
``optimize_thresholds`` idea)::

    result = calibrate(model, validation_samples)   # F1 at IoU 0.5 over a small grid
    apply_calibration(model, result)                # predict_instances now uses them by default
    keras.saving.save_model(model, "calibrated.keras")   # ... and so does the loaded model

Cost: the network runs once per validation image and NMS distance; the dense part (backbone,
FPN, LPN, segmentor trunk) once per image. Everything else comes from stored outputs:

* segmentation thresholds: each one paints the stored patch probabilities on the host, as
  ``predict_instances`` does (SPEC 9), and cleans the masks (``clean_label``);
* ``min_score``: NMS walks the candidates in score order, so the proposals kept at a higher
  ``min_score`` are the first ones kept at the lowest; painting, cleaning (``clean_label``) and
  ``min_area`` treat a cell by the cells ranked before it only, so the label image at a higher
  ``min_score`` is the one at the lowest without the cells scored below it. Each ``min_score``
  costs one matching against the ground truth, no painting.

An image that ``predict_instances`` would tile (larger than the default tile size) or whose
proposals reach the model's capacity is predicted tile by tile as ``predict_instances`` does it
(``tiling.collect_tiles``), once per NMS distance, keeping each cell's patch probabilities, so
every threshold is painted on the host from that one pass; the tests compare every score in the
table with ``predict_instances``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import warnings

import numpy as np

from lacss_core import _validation
from lacss_core.postprocess import DEFAULT_MAX_OVERLAP

#: Scores that :func:`calibrate` maximises, all images pooled: ``"f1"``, F1 at IoU 0.5 (optimal
#: one-to-one matching, ``metrics.object_accuracy``); ``"f1_mean"``, the mean of F1 at IoU 0.5,
#: 0.55, ..., 0.95 (``metrics.IOU_THRESHOLDS``: the F1 twin of COCO mAP, so the mask threshold
#: is chosen for tight masks too, not only for crossing IoU 0.5); ``"ap50"``, COCO AP50
#: (``metrics.coco_mask_ap``) for the mask threshold and NMS distance, with ``min_score`` chosen
#: by F1 at IoU 0.5 (AP cannot choose a score cut: a detection ranked below all others never
#: lowers COCO's interpolated precision, so AP50 alone always takes the lowest ``min_score``
#: and pays for it in false cells); ``"map"``, the same with COCO mAP (AP averaged over IoU
#: 0.5, 0.55, ..., 0.95), so the mask threshold is chosen for tight masks: AP50 cannot see a
#: mask that crosses IoU 0.5 drawn a pixel too wide.
METRICS = ("f1", "f1_mean", "ap50", "map")
#: The metrics that score a setting by COCO AP, their ``min_score`` chosen by F1 at IoU 0.5.
AP_METRICS = ("ap50", "map")
#: Default grids. min_score is nearly free (no painting), so its grid is fine.
DEFAULT_MIN_SCORES = tuple(round(0.05 * i, 2) for i in range(1, 19))  # 0.05 .. 0.9
DEFAULT_SEGMENTATION_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
#: Default NMS distances, in units of the model's LPN stride (each costs a pass of NMS and the
#: per-instance layers).
DEFAULT_NMS_FACTORS = (0.5, 1.0, 1.5, 2.0)
#: The values a calibration chooses (``predict_instances``' names).
CALIBRATED = ("min_score", "segmentation_threshold", "nms_distance")
#: The model config entry each is stored in: prediction-only entries (``Lacss``'s
#: ``PREDICTION_SETTINGS``), so a calibrated model trains (and resumes) as before.
CONFIG_ENTRIES = {
    "min_score": "min_score",
    "segmentation_threshold": "segmentation_threshold",
    "nms_distance": "predict_nms_distance",
}
_TIE = 1e-12  # scores closer than this are equal (ties go to the model's current values)


def calibrate(
    model,
    samples,
    *,
    min_scores=DEFAULT_MIN_SCORES,
    segmentation_thresholds=DEFAULT_SEGMENTATION_THRESHOLDS,
    nms_distances=None,
    metric: str = "f1",
    store: bool = False,
    scale=1.0,
    diameter=None,
    normalize="model",
    channels=None,
    clean_masks: bool = True,
    max_overlap: float = DEFAULT_MAX_OVERLAP,
    min_area: int = 0,
    max_output=None,
    augment: bool = False,
    verbose: int = 0,
) -> dict:
    """Choose the prediction thresholds that maximise ``metric`` on labelled validation images.

    Every combination of the three grids is scored as ``predict_instances`` would segment the
    images with it (same normalisation, scale, mask cleaning and ``min_area``). The model's
    current values (``model.min_score``, ``model.segmentation_threshold`` and its NMS distance)
    are always added to the grids, so the table holds the score at the current defaults. Of the
    best-scoring settings, the one closest to the current values wins (in grid steps), then the
    one closest to the middle of the grids. With ``metric="ap50"`` or ``"map"`` each mask threshold
    and NMS distance first takes the ``min_score`` of best F1 at IoU 0.5 (ties as above), and of
    those settings the one of best AP50 (or mAP) wins (see ``METRICS`` for why).

    Args:
        model: a ``lacss_core.models.Lacss``.
        samples: labelled validation images, held out from training: a folder of
            ``IMAGE.tif`` + ``IMAGE_masks.tif`` (a path, read with
            ``lacss_core.data.load_labelled_folder``), or a sequence of
            ``lacss_core.data.Sample`` with a label (``SyntheticCells``, ``RealisticCells``,
            ``load_labelled_folder(...)``) or of ``(image, label)`` pairs (image as for
            ``predict_instances``, label ``(H, W)`` int, 0 = background), as
            ``lacss_core.train.evaluate_ap`` takes.
        min_scores: proposal score thresholds to try, each in ``[0, 1]``.
        segmentation_thresholds: patch probability thresholds to try, each in ``[0, 1)``.
        nms_distances: NMS distances in pixels to try, each ``>= 0``; default
            ``DEFAULT_NMS_FACTORS`` times the LPN stride (4, 8, 12, 16 px for stride 8).
        metric: ``"f1"`` (F1 at IoU 0.5), ``"f1_mean"`` (mean F1 at IoU 0.5:0.05:0.95),
            ``"ap50"`` or ``"map"`` (COCO AP50 or mAP; see ``METRICS``).
        store: also write the chosen values into the model (:func:`apply_calibration`).
        scale, diameter, normalize, channels, clean_masks, max_overlap, min_area, max_output,
        augment: as for ``predict_instances`` (``diameter`` a number, not ``"auto"``); use the
            values you will predict with (thresholds chosen with ``augment=True`` suit
            prediction with it).
        verbose: 1 prints a line per image to stderr.
    Returns:
        dict: the chosen ``min_score``, ``segmentation_threshold``, ``nms_distance`` (floats);
        ``metric``; ``score`` (the metric at the chosen values) and ``f1`` (F1 at IoU 0.5
        there); ``default``, a dict of the model's values before calibration and their
        ``score`` and ``f1``; ``table``, one dict per setting
        (``min_score``, ``segmentation_threshold``, ``nms_distance``, ``score``, ``n_pred``,
        and ``f1``, ``tp``, ``fp``, ``fn``, ``precision``, ``recall`` at IoU 0.5), sorted by the
        three values; ``grid`` (the three sorted grids tried); ``images`` and
        ``cells`` (ground-truth instances) counted; ``augment`` (bool).
    Raises:
        ValueError: no samples, a sample without a label or whose label does not fit its image,
            no ground-truth cell at all, a bad grid (empty, not numbers, out of range), an
            unknown metric or a bad prediction option, naming it.
    """
    from lacss_core._network import Network

    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    network = Network.of(model)
    defaults = current_values(model)
    grids = _grids(model, min_scores, segmentation_thresholds, nms_distances, defaults)
    options = _prediction_options(
        model, network, grids, scale, diameter, normalize, channels, clean_masks, max_overlap,
        min_area, max_output, augment,
    )  # fmt: skip
    tally = _Tally(grids, metric)
    for index, (name, image, label) in enumerate(_labelled(samples)):
        name = name or f"validation image {index}"
        for distance, threshold, pred, scores in _segmentations(network, image, name, options):
            tally.add(distance, threshold, pred, label, scores)
        tally.images += 1
        tally.cells += int(np.count_nonzero(np.bincount(label.ravel())[1:]))
        if verbose:
            print(f"calibrate: {name} done", file=sys.stderr, flush=True)
    if tally.images == 0:
        raise ValueError("samples is empty: calibration needs labelled validation images")
    if tally.cells == 0:
        raise ValueError(
            f"the {tally.images} validation image(s) hold no ground-truth cell: calibration "
            "needs labelled cells"
        )
    result = _choose(tally.table(), grids, defaults, metric)
    result.update(images=tally.images, cells=tally.cells, augment=options.low.augment)
    if store:
        apply_calibration(model, result)
    return result


def current_values(model) -> dict[str, float]:
    """The model's prediction defaults that :func:`calibrate` tunes, as floats."""
    from lacss_core._network import Network

    return {
        "min_score": float(model.min_score),
        "segmentation_threshold": float(getattr(model, "segmentation_threshold", 0.5)),
        "nms_distance": Network.of(model).default_nms_distance(),
    }


def apply_calibration(model, chosen: dict) -> None:
    """Write calibrated values into ``model``'s config, so ``predict_instances`` (and a model
    saved and loaded again) uses them by default: ``model.min_score``,
    ``model.segmentation_threshold`` and ``model.predict_nms_distance`` (``CONFIG_ENTRIES``;
    the NMS distance of training, ``model.nms_distance``, is left alone).

    Args:
        model: a ``lacss_core.models.Lacss``.
        chosen: what :func:`calibrate` returned, or any dict with ``min_score``,
            ``segmentation_threshold`` and ``nms_distance`` (missing keys leave those values
            as they are). A full result is also recorded, without its table, as
            ``model.calibration`` (metric, scores before and after, grids, image count).
    Raises:
        ValueError: ``chosen`` is not a dict, names no calibrated value, or holds a value out
            of range; nothing is changed then.
    """
    if not isinstance(chosen, dict) or not set(CALIBRATED) & set(chosen):
        raise ValueError(f"chosen must be a dict with some of {CALIBRATED}, got {chosen!r}")
    values = {key: chosen[key] for key in CALIBRATED if key in chosen}
    checks = {
        "min_score": lambda v: 0 <= v <= 1,
        "segmentation_threshold": lambda v: 0 <= v < 1,
        "nms_distance": lambda v: 0 <= v < math.inf,
    }
    for key, value in values.items():
        if not _validation.is_number(value) or not checks[key](value):
            raise ValueError(f"chosen {key} is out of range or not a number: {value!r}")
    before = current_values(model)
    for key, value in values.items():
        setattr(model, CONFIG_ENTRIES[key], float(value))
    if "score" in chosen and "metric" in chosen:
        model.calibration = _record(chosen, before)


def _record(result: dict, before: dict) -> dict:
    """The JSON-able summary of a calibration kept in the model's config."""
    kept = ("metric", "score", "images", "cells", "augment")
    record = {key: result[key] for key in kept if key in result}
    record["default"] = result.get("default", {**before, "score": None})
    if "grid" in result:
        record["grid"] = result["grid"]
    return _plain(record)


def _plain(value):
    """Python floats/ints/lists/dicts only (the config is JSON)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value)
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    return value


# ---------------------------------------------------------------------------- inputs
def _grid(values, name, check, requirement) -> list[float]:
    if _validation.is_number(values):
        values = [values]
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{name} must be a list of numbers, got {values!r}")
    values = list(values)
    if not values:
        raise ValueError(f"{name} is empty: give at least one value")
    for value in values:
        if not _validation.is_number(value) or not check(value):
            raise ValueError(f"{name}: every value must be {requirement}, got {value!r}")
    return [float(v) for v in values]


def _grids(model, min_scores, thresholds, distances, defaults) -> dict[str, list[float]]:
    """The three sorted grids, each with the model's current value added."""
    if distances is None:
        distances = [f * model.lpn_stride for f in DEFAULT_NMS_FACTORS]
    grids = {
        "min_score": _grid(min_scores, "min_scores", lambda v: 0 <= v <= 1, "in [0, 1]"),
        "segmentation_threshold": _grid(
            thresholds, "segmentation_thresholds", lambda v: 0 <= v < 1, "in [0, 1)"
        ),
        "nms_distance": _grid(
            distances, "nms_distances", lambda v: 0 <= v < math.inf, "a finite number >= 0"
        ),
    }
    return {key: sorted(set(grid) | {defaults[key]}) for key, grid in grids.items()}


@dataclasses.dataclass(frozen=True)
class _Options:
    """Prediction options resolved once for all images."""

    low: object  # lacss_core._network.Settings at the lowest min_score (nms distance varies)
    distances: tuple
    thresholds: tuple
    scale: float
    normalize: object
    channels: object
    clean_masks: bool
    max_overlap: float
    min_area: int


def _prediction_options(model, network, grids, scale, diameter, normalize, channels,
                        clean_masks, max_overlap, min_area, max_output,
                        augment) -> _Options:  # fmt: skip
    from lacss_core import predict as P

    if isinstance(diameter, str) and diameter == "auto":
        raise ValueError(
            "calibrate needs a fixed scale: give diameter as a number of pixels (or scale), "
            "not 'auto'"
        )
    P.check_options(
        model,
        min_score=grids["min_score"][0],
        nms_distance=grids["nms_distance"][0],
        segmentation_threshold=grids["segmentation_threshold"][0],
        min_area=min_area,
        scale=scale,
        diameter=diameter,
        normalize=normalize,
        clean_masks=clean_masks,
        max_overlap=max_overlap,
        max_output=max_output,
        channels=channels,
        augment=augment,
    )
    low = P._resolve_settings(
        network, grids["min_score"][0], grids["nms_distance"][0], 0.0, max_output, augment
    )
    return _Options(
        low=low,
        distances=tuple(grids["nms_distance"]),
        thresholds=tuple(grids["segmentation_threshold"]),
        scale=float(P._diameter_scale(model, diameter, scale)),
        normalize=P._normalization(model, normalize),
        channels=channels,
        clean_masks=bool(clean_masks),
        max_overlap=float(max_overlap),
        min_area=int(min_area),
    )


def _labelled(samples):
    """``(name, image, label)`` of each validation sample, checked."""
    if isinstance(samples, (str, os.PathLike)):
        from lacss_core.data import load_labelled_folder

        samples = load_labelled_folder(samples)
    if isinstance(samples, np.ndarray) or not hasattr(samples, "__iter__"):
        raise ValueError(
            "samples must be a folder, or a sequence of labelled Samples or (image, label) "
            f"pairs, got {type(samples).__name__}"
        )
    for i, item in enumerate(samples):
        if hasattr(item, "image"):
            if getattr(item, "label", None) is None:
                raise ValueError(
                    f"samples[{i}] ({item.name or 'unnamed'}) has no label image: calibration "
                    "needs fully labelled images (not points + masks)"
                )
            name, image, label = item.name, item.image, item.label
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            (image, label), name = item, ""
            if label is None:
                raise ValueError(f"samples[{i}] has no label image (None)")
        else:
            raise ValueError(
                f"samples[{i}] must be a Sample or an (image, label) pair, got "
                f"{type(item).__name__}"
            )
        yield name, image, _check_label(label, image, i)


def _check_label(label, image, index) -> np.ndarray:
    label = np.asarray(label)
    if label.ndim == 3 and label.shape[-1] == 1:
        label = label[..., 0]
    integral = label.dtype.kind in "iub" or (
        label.dtype.kind == "f" and np.all(np.isfinite(label)) and np.all(label == np.round(label))
    )
    if label.ndim != 2 or not integral or (label.size and label.min() < 0):
        raise ValueError(
            f"samples[{index}]: the label must be an (H, W) image of integers >= 0, got "
            f"{label.dtype} of shape {label.shape}"
        )
    shape = np.shape(image)
    if tuple(label.shape) not in (tuple(shape[:2]), tuple(shape[-2:])):
        raise ValueError(
            f"samples[{index}]: label of shape {label.shape} does not fit image of shape {shape}"
        )
    return label.astype(np.int64)


# ---------------------------------------------------------------------------- segmentations
def _segmentations(network, image, name, options: _Options):
    """Yield ``(nms_distance, threshold, label, scores)`` for every pair of the grids: the label
    image ``predict_instances`` gives at the lowest ``min_score`` (cells ``1..n`` by descending
    score, ``scores (n,)`` float32 theirs). One network pass per NMS distance (per tile where
    ``predict_instances`` tiles); every threshold is painted from its patch probabilities."""
    from lacss_core import predict as P

    pixels = P._prepare_image(image, network.channels, options.normalize, options.channels)
    scaled, factors = P._rescale(pixels, options.scale)
    shape = scaled.shape[:2]
    tile, overlap = P._tiling(shape, None, None, network, options.low)
    settings = [dataclasses.replace(options.low, nms_distance=d) for d in options.distances]
    outputs = [None] * len(settings) if tile is not None else network.run_patches(scaled, settings)
    for setting, out in zip(settings, outputs, strict=True):
        tiles = _tiles_to_collect(shape, tile, overlap, out, network)
        if tiles is None:
            painted = (_paint(out, t, shape, options) for t in options.thresholds)
            saturated_tiles = int(out["saturated"])
        else:
            painted, saturated_tiles = _paint_tiles(network, scaled, setting, tiles, overlap,
                                                    options)  # fmt: skip
        if saturated_tiles:
            warnings.warn(P._saturation_message(name, saturated_tiles, setting),
                          P.SaturationWarning, stacklevel=3)  # fmt: skip
        for threshold, (ranks, scores, locations) in zip(options.thresholds, painted, strict=True):
            ranks, locations = P._unscale(ranks, locations, pixels.shape[:2], factors)
            if options.clean_masks:
                ranks = P.clean_label(ranks)
            flags = np.zeros(len(scores), bool)
            label, details = P._finalize(ranks, scores, locations, flags, options.min_area)
            yield setting.nms_distance, threshold, label, details["scores"]


def _tiles_to_collect(shape, tile, overlap, out, network):
    """The tiles ``predict_instances`` predicts the image as (its tile grid, or the split of a
    whole image that reached the model's capacity), or None where it paints the whole image."""
    from lacss_core.tiling import child_size, grid_tiles, split_tile, whole_tile

    if tile is not None:
        return grid_tiles(shape, tile, overlap)
    if not out["saturated"]:
        return None
    whole = whole_tile(shape)
    size = child_size(whole.side, overlap, network.crop_size)
    return split_tile(whole, size, overlap) if size < whole.side else None


def _paint_tiles(network, image, setting, tiles, overlap, options):
    """``predict_tiled`` at every threshold of ``options`` from one pass over ``tiles``: a lazy
    ``(ranks, scores, locations)`` per threshold, and the tiles still saturated (a count)."""
    from lacss_core.tiling import collect_tiles, paint_cells, select_cells

    def window(tile):
        rows, cols = tile.rows, tile.cols
        return image[rows.start : rows.start + rows.size, cols.start : cols.start + cols.size]

    cells, saturated = collect_tiles(network, window, setting, tiles, overlap, probabilities=True)
    kept = select_cells(cells, setting.nms_distance)
    scores = np.asarray(cells.scores, np.float32)[kept]
    locations = np.asarray(cells.locations, np.float32).reshape(-1, 2)[kept]

    def painted(threshold):
        placements = [(cells.corners[i], cells.masks[i] > np.float32(threshold)) for i in kept]
        ranks = paint_cells(np.zeros(image.shape[:2], np.int32), placements, options.max_overlap)
        return ranks, scores, locations

    return (painted(t) for t in options.thresholds), len(saturated)


def _paint(out, threshold, shape, options):
    """SPEC 9 on the host: each pixel takes the smallest rank whose patch is ``> threshold``
    there (``ops.render_label``, as ``predict_instances`` paints whole images); then the cells
    hidden by more than ``options.max_overlap`` go, as there."""
    from lacss_core.tiling import paint_cells

    valid = np.flatnonzero(np.all(out["locations"] >= 0, axis=-1))
    valid = valid[np.argsort(-out["scores"][valid], kind="stable")]
    masks = out["patches"][valid] > np.float32(threshold)
    origins = [(int(y), int(x)) for y, x in out["origins"][valid]]
    placements = list(zip(origins, masks, strict=True))
    ranks = paint_cells(np.zeros(shape, np.int32), placements, options.max_overlap)
    return ranks, out["scores"][valid], out["locations"][valid]


# ---------------------------------------------------------------------------- scores
def _f1_ious(metric: str) -> tuple[float, ...]:
    """The IoU thresholds a metric counts one-to-one matches at (AP50: its ``min_score`` F1)."""
    from lacss_core import metrics  # lazy: scipy

    return {"f1_mean": tuple(metrics.IOU_THRESHOLDS.tolist())}.get(metric, (0.5,))


class _Tally:
    """Per-setting counts at the F1 IoU thresholds, and for AP50 the matched detections, pooled
    over images."""

    def __init__(self, grids, metric):
        self.grids, self.metric = grids, metric
        self.min_scores = np.asarray(grids["min_score"], np.float32)  # SPEC 1: float32 decisions
        self.ious = _f1_ious(metric)
        # (distance, threshold) -> (M, T, 3) int: tp, fp, fn per min_score and IoU threshold
        self.counts = {}
        self.detections = {}  # (distance, threshold) -> [(scores, matched)] per image
        self.images = self.cells = 0

    def add(self, distance, threshold, pred, gt, scores):
        from lacss_core import metrics

        overlaps = metrics._Overlaps.of(pred, gt)  # one contingency table for every min_score
        # _finalize numbers cells 1..n by descending score, so prediction index i is score i.
        kept = np.searchsorted(-scores, -self.min_scores, side="right")  # cells >= each score
        key = (distance, threshold)
        counts = self.counts.setdefault(key, np.zeros((len(kept), len(self.ious), 3), np.int64))
        ious = overlaps.iou()
        for row, n in enumerate(kept):
            for column, iou in enumerate(self.ious):
                keep = (ious >= iou) & (overlaps.pair_pred < n)
                tp, _ = metrics._max_matching(
                    overlaps.pair_pred[keep], overlaps.pair_gt[keep], ious[keep]
                )
                counts[row, column] += (tp, n - tp, overlaps.n_gt - tp)
        if self.metric in AP_METRICS:  # greedy matching in score order: the first n match alone
            matched = metrics._coco_greedy_matches(overlaps, np.arange(overlaps.n_pred))
            self.detections.setdefault(key, []).append((scores, matched, overlaps.n_gt))

    def table(self) -> list[dict]:
        rows = []
        for distance, threshold in sorted(self.counts):
            for row, min_score in enumerate(self.grids["min_score"]):
                setting = {
                    "min_score": min_score,
                    "segmentation_threshold": threshold,
                    "nms_distance": distance,
                }
                rows.append({**setting, **self._score(distance, threshold, row)})
        return sorted(rows, key=lambda r: tuple(r[k] for k in CALIBRATED))

    def _score(self, distance, threshold, row) -> dict:
        from lacss_core import metrics

        counts = self.counts[(distance, threshold)][row]
        f1s = [metrics._safe_ratio(2 * tp, 2 * tp + fp + fn) for tp, fp, fn in counts]
        tp, fp, fn = (int(v) for v in counts[0])  # at IoU 0.5
        at_half = {
            "f1": f1s[0],
            "n_pred": tp + fp,
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "precision": metrics._safe_ratio(tp, tp + fp),
            "recall": metrics._safe_ratio(tp, tp + fn),
        }
        score = self._ap(distance, threshold, row) if self.metric in AP_METRICS else np.mean(f1s)
        return {"score": float(score), **at_half}

    def _ap(self, distance, threshold, row) -> float:
        """COCO AP50 (``ap50``) or mAP (``map``) of the detections scored >= this row's cut."""
        from lacss_core import metrics

        cut = self.min_scores[row]
        n_ious = metrics.IOU_THRESHOLDS.size
        scores, matched, n_gt = [np.zeros(0, np.float32)], [np.zeros((n_ious, 0), bool)], 0
        for image_scores, image_matched, image_gt in self.detections[(distance, threshold)]:
            n = int(np.sum(image_scores >= cut))
            scores.append(image_scores[:n])
            matched.append(image_matched[:, :n])
            n_gt += image_gt
        precision = metrics._coco_interpolated_precision(
            np.concatenate(scores), np.concatenate(matched, axis=1), n_gt
        )
        return float(precision[0].mean() if self.metric == "ap50" else precision.mean())


def _choose(table, grids, defaults, metric) -> dict:
    """The best row; ties go to the setting fewest grid steps from the current values, then
    nearest the middle of the grids. For AP50 and mAP the candidates are, per mask threshold and NMS
    distance, the row of best F1 (``METRICS``)."""
    position = {key: {v: i for i, v in enumerate(grid)} for key, grid in grids.items()}

    def steps(row, target):
        return sum(abs(position[k][row[k]] - target[k]) for k in CALIBRATED)

    home = {k: position[k][defaults[k]] for k in CALIBRATED}
    middle = {k: (len(grids[k]) - 1) / 2 for k in CALIBRATED}

    def best_of(rows, key):
        top = max(r[key] for r in rows)
        tied = [r for r in rows if r[key] >= top - _TIE]
        return min(tied, key=lambda r: (steps(r, home), steps(r, middle)))

    candidates = table
    if metric in AP_METRICS:
        pairs = {}
        for row in table:
            pairs.setdefault((row["segmentation_threshold"], row["nms_distance"]), []).append(row)
        candidates = [best_of(rows, "f1") for rows in pairs.values()]
    best = best_of(candidates, "score")
    default = next(r for r in table if all(r[k] == defaults[k] for k in CALIBRATED))
    return {
        **{k: best[k] for k in CALIBRATED},
        "metric": metric,
        "score": best["score"],
        "f1": best["f1"],
        "default": {**defaults, "score": default["score"], "f1": default["f1"]},
        "table": table,
        "grid": {k: list(v) for k, v in grids.items()},
    }


def describe(result: dict) -> str:
    """One line: the chosen values and the score before and after (for AP50 and mAP also F1, which
    picks ``min_score``: AP50 can fall while F1 rises)."""
    values = ", ".join(f"{k} {result[k]:g}" for k in CALIBRATED)
    metric = {
        "f1": "F1",
        "f1_mean": "mean F1 at IoU 0.5-0.95",
        "ap50": "AP50 (min_score by F1)",
        "map": "mAP (min_score by F1)",
    }[result["metric"]]
    line = (
        f"calibrated on {result['images']} validation image(s): {values}; {metric} "
        f"{result['default']['score']:.3f} at the previous values -> {result['score']:.3f}"
    )
    if result["metric"] in AP_METRICS:
        line += f" (F1 at IoU 0.5 {result['default']['f1']:.3f} -> {result['f1']:.3f})"
    return line


def format_table(result: dict, top: int | None = 10) -> str:
    """A text table of a calibration: the ``top`` best settings (all with None), the model's
    values before, and the chosen ones."""
    metric = result["metric"]
    rows = sorted(result["table"], key=lambda r: -r["score"])
    rows = rows if top is None else rows[:top]
    with_f1 = metric != "f1"  # F1 at IoU 0.5 beside the score
    header = f"{'min_score':>10}{'seg_thr':>9}{'nms_px':>8}{metric:>8}"
    lines = [header + (f"{'f1':>8}" if with_f1 else "") + f"{'n_pred':>8}"]
    for row in rows:
        f1 = f"{row['f1']:>8.3f}" if with_f1 else ""
        lines.append(
            f"{row['min_score']:>10.3g}{row['segmentation_threshold']:>9.3g}"
            f"{row['nms_distance']:>8.3g}{row['score']:>8.3f}{f1}{row['n_pred']:>8d}"
        )
    before, chosen = result["default"], {k: result[k] for k in CALIBRATED}

    def describe(values):
        return ", ".join(f"{k} {values[k]:g}" for k in CALIBRATED)

    lines.append(f"before: {describe(before)}: {metric} {before['score']:.3f}")
    lines.append(f"chosen: {describe(chosen)}: {metric} {result['score']:.3f}")
    return "\n".join(lines)


__all__ = [
    "CALIBRATED",
    "CONFIG_ENTRIES",
    "DEFAULT_MIN_SCORES",
    "DEFAULT_NMS_FACTORS",
    "DEFAULT_SEGMENTATION_THRESHOLDS",
    "METRICS",
    "apply_calibration",
    "calibrate",
    "current_values",
    "describe",
    "format_table",
]
