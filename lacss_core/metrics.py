"""Instance-segmentation metrics on label images (SPEC 10): COCO mask AP and object accuracy.

Pure NumPy/SciPy (no Keras import). Every function takes either one pair of label images (NumPy
arrays ``(H, W)``, 0 = background, any non-negative integer values as instance ids, not
necessarily consecutive) or two equally long lists/tuples of them; results over a list are
aggregated over all its images, as pycocotools and stardist's ``matching_dataset`` do.

Instances of one label image are disjoint, so the overlap of every (prediction, ground truth) pair
comes from one sparse contingency table of label pairs; no per-pair mask loop. IoU is
``intersection / union`` of pixel counts, divided and compared in float64 as pycocotools does (the
float32 rule of SPEC 1 is for the model's decisions; here agreement with pycocotools wins).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import connected_components

# The exact arrays pycocotools builds (``Params.setDetParams``): matching is ``IoU >= t`` against
# these float64 values, so the same ``np.linspace`` calls reproduce its decisions bit for bit.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)


@dataclasses.dataclass(frozen=True)
class CocoMaskAP:
    """Result of :func:`coco_mask_ap`. All APs are NaN when there is no ground truth at all.

    Attributes:
        ap50, ap75: AP at IoU >= 0.5 and IoU >= 0.75.
        map: mean AP over ``iou_thresholds`` (the COCO "AP").
        ap_per_threshold: ``(10,) float64``, AP at each of ``iou_thresholds``.
        iou_thresholds: ``(10,) float64``, 0.50:0.05:0.95.
        n_gt, n_pred: ground-truth and predicted instances counted over all images.
    """

    ap50: float
    ap75: float
    map: float
    ap_per_threshold: np.ndarray
    iou_thresholds: np.ndarray
    n_gt: int
    n_pred: int

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (floats, ints, lists), ready for ``json.dump``."""
        return {
            "ap50": self.ap50,
            "ap75": self.ap75,
            "map": self.map,
            "ap_per_threshold": self.ap_per_threshold.tolist(),
            "iou_thresholds": self.iou_thresholds.tolist(),
            "n_gt": self.n_gt,
            "n_pred": self.n_pred,
        }


@dataclasses.dataclass(frozen=True)
class ObjectAccuracy:
    """Result of :func:`object_accuracy`; counts are summed over all images.

    Attributes:
        threshold: the IoU a match needs (``IoU >= threshold``).
        tp, fp, fn: matched pairs, unmatched predictions, unmatched ground-truth instances.
        accuracy: ``tp / (tp + fp + fn)``; precision ``tp / (tp + fp)``; recall ``tp / (tp + fn)``;
            f1 ``2 tp / (2 tp + fp + fn)``; each 0.0 when its denominator is 0 (stardist).
        mean_matched_iou: mean IoU of the matched pairs, 0.0 when there are none.
    """

    threshold: float
    tp: int
    fp: int
    fn: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    mean_matched_iou: float

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values, ready for ``json.dump``."""
        return dataclasses.asdict(self)


def coco_mask_ap(pred_labels, gt_labels, scores=None) -> CocoMaskAP:
    """COCO mask AP of predicted label images against ground-truth label images (SPEC 10).

    Reproduces pycocotools' ``COCOeval(iouType="segm")`` for one category with no cap on detections
    per image and no crowd or ignored instances: per image, detections are taken in descending
    score (ties -> ascending label) and each matches the still-unmatched ground truth with the
    highest IoU ``>= t`` (ties -> the larger label, pycocotools' last-best rule); then all images'
    detections are ranked by score (ties -> earlier image), precision is made monotone (each value
    replaced by the maximum at equal or higher recall) and read at the 101 recall points 0:0.01:1
    (0 beyond the highest recall reached); AP at ``t`` is the mean of those 101 values.

    Args:
        pred_labels: ``(H, W)`` integer label image, or a list of them.
        gt_labels: same shape(s) as ``pred_labels``.
        scores: per predicted instance confidence, for one image: a mapping ``{label: score}`` or a
            1-D array-like where ``scores[label - 1]`` is the score of ``label`` (the order of
            ``details["scores"]`` when label ``k`` is the ``k``-th instance); a list of those (or
            of ``None``) for a list of images. ``None``: every instance scores 1.0, so detections
            are ranked by ascending label (for LACSS label images, rank order = score order).

    Returns:
        :class:`CocoMaskAP` with ``ap50``, ``ap75``, ``map`` and the per-threshold APs; all NaN
        when no image holds any ground-truth instance.

    Raises:
        ValueError: mismatched shapes or list lengths, labels that are not non-negative integers,
            or a predicted label without a finite score.
    """
    pairs = _image_pairs(pred_labels, gt_labels)
    is_list = isinstance(pred_labels, list | tuple)
    per_image_scores = _per_image(scores, "scores", len(pairs), is_list)
    # Seeded with empty arrays so that an empty list of images gives NaN rather than an error.
    ranked_scores, matched, n_gt = [np.zeros(0)], [np.zeros((IOU_THRESHOLDS.size, 0), bool)], 0
    for i, ((pred, gt), image_scores) in enumerate(zip(pairs, per_image_scores, strict=True)):
        overlaps = _Overlaps.of(pred, gt)
        scores_name = _item_name("scores", i if is_list else None)
        det_scores = _instance_scores(image_scores, overlaps.pred_ids, scores_name)
        order = np.argsort(-det_scores, kind="mergesort")
        ranked_scores.append(det_scores[order])
        matched.append(_coco_greedy_matches(overlaps, order))
        n_gt += overlaps.n_gt
    all_scores = np.concatenate(ranked_scores)
    precision = _coco_interpolated_precision(all_scores, np.concatenate(matched, axis=1), n_gt)
    return CocoMaskAP(
        ap50=float(precision[0].mean()),
        ap75=float(precision[5].mean()),
        map=float(precision.ravel().mean()),
        ap_per_threshold=precision.mean(axis=1),
        iou_thresholds=IOU_THRESHOLDS.copy(),
        n_gt=n_gt,
        n_pred=int(all_scores.size),
    )


def object_accuracy(pred_labels, gt_labels, threshold=0.5) -> ObjectAccuracy:
    """Object accuracy ``TP / (TP + FP + FN)`` with optimal one-to-one matching (SPEC 10).

    Per image, predictions and ground-truth instances are paired one-to-one so that the number of
    pairs with ``IoU >= threshold`` is as large as possible, then their total IoU is (the
    cellpose/stardist ``linear_sum_assignment`` criterion; pairs below the threshold play no part,
    which changes no count). Counts are summed over images before the ratios are taken.

    Args:
        pred_labels: ``(H, W)`` integer label image, or a list of them.
        gt_labels: same shape(s) as ``pred_labels``.
        threshold: IoU a pair needs to match, in ``(0, 1]``.

    Returns:
        :class:`ObjectAccuracy`; with no instance at all every ratio is 0.0 (stardist convention).

    Raises:
        ValueError: mismatched shapes or list lengths, labels that are not non-negative integers,
            or a threshold outside ``(0, 1]``.
    """
    threshold = _check_threshold(threshold)
    tp = fp = fn = 0
    matched_iou = 0.0
    for pred, gt in _image_pairs(pred_labels, gt_labels):
        overlaps = _Overlaps.of(pred, gt)
        ious = overlaps.iou()
        keep = ious >= threshold
        n_matched, iou_sum = _max_matching(
            overlaps.pair_pred[keep], overlaps.pair_gt[keep], ious[keep]
        )
        tp += n_matched
        fp += overlaps.n_pred - n_matched
        fn += overlaps.n_gt - n_matched
        matched_iou += iou_sum
    return ObjectAccuracy(
        threshold=threshold,
        tp=tp,
        fp=fp,
        fn=fn,
        accuracy=_safe_ratio(tp, tp + fp + fn),
        precision=_safe_ratio(tp, tp + fp),
        recall=_safe_ratio(tp, tp + fn),
        f1=_safe_ratio(2 * tp, 2 * tp + fp + fn),
        mean_matched_iou=_safe_ratio(matched_iou, tp),
    )


# ----------------------------------------------------------------------------- input checks


def _as_label_image(x, name: str) -> np.ndarray:
    """Check one label image and return it as ``(H, W) int64``."""
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D label image (H, W), got shape {a.shape}")
    if a.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold integer labels, got dtype {a.dtype}")
    if a.dtype.kind == "f" and not (np.all(np.isfinite(a)) and np.array_equal(a, np.floor(a))):
        raise ValueError(f"{name} must hold integer labels, got non-integer or non-finite values")
    if a.size and a.min() < 0:
        raise ValueError(f"{name} must hold non-negative labels (0 = background), got {a.min()}")
    if a.size and a.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} holds labels beyond the int64 range")
    return a.astype(np.int64, copy=False)


def _image_pairs(pred_labels, gt_labels) -> list[tuple[np.ndarray, np.ndarray]]:
    """Normalise a single pair or two lists of label images into checked ``(pred, gt)`` pairs."""
    pred_is_list = isinstance(pred_labels, list | tuple)
    if pred_is_list != isinstance(gt_labels, list | tuple):
        raise ValueError("pred_labels and gt_labels must both be single arrays or both be lists")
    if not pred_is_list:
        pred_labels, gt_labels = [pred_labels], [gt_labels]
    if len(pred_labels) != len(gt_labels):
        raise ValueError(
            f"pred_labels has {len(pred_labels)} images but gt_labels has {len(gt_labels)}"
        )
    pairs = []
    for i, (pred, gt) in enumerate(zip(pred_labels, gt_labels, strict=True)):
        pred_name = _item_name("pred_labels", i if pred_is_list else None)
        gt_name = _item_name("gt_labels", i if pred_is_list else None)
        pred, gt = _as_label_image(pred, pred_name), _as_label_image(gt, gt_name)
        if pred.shape != gt.shape:
            raise ValueError(f"{pred_name} shape {pred.shape} does not match {gt_name} {gt.shape}")
        pairs.append((pred, gt))
    return pairs


def _item_name(name: str, index: int | None) -> str:
    return name if index is None else f"{name}[{index}]"


def _per_image(value, name: str, n_images: int, is_list: bool) -> list:
    """Split a per-image argument: one value for a single image, a list (or None) for a list."""
    if not is_list:
        return [value]
    if value is None:
        return [None] * n_images
    if not isinstance(value, list | tuple) or len(value) != n_images:
        raise ValueError(f"{name} must be None or a list with one entry per image ({n_images})")
    return list(value)


def _instance_scores(scores, labels: np.ndarray, name: str) -> np.ndarray:
    """Scores ``(K,) float64`` of the instances ``labels`` (sorted), from a mapping or array."""
    if scores is None:
        return np.ones(labels.shape, np.float64)
    if isinstance(scores, Mapping):
        missing = [int(k) for k in labels if int(k) not in scores]
        if missing:
            raise ValueError(f"{name} has no score for predicted labels {missing[:10]}")
        values = np.array([scores[int(k)] for k in labels], np.float64)
    else:
        table = np.asarray(scores, np.float64)
        if table.ndim != 1:
            raise ValueError(f"{name} must be a mapping or a 1-D array, got shape {table.shape}")
        if labels.size and labels[-1] > table.size:
            raise ValueError(
                f"{name} has {table.size} entries but predicted label {labels[-1]} needs "
                f"scores[{labels[-1] - 1}]"
            )
        values = table[labels - 1]
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} holds non-finite scores for predicted instances")
    return values


def _check_threshold(threshold) -> float:
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"threshold must be a number in (0, 1], got {threshold!r}") from None
    if not 0.0 < t <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    return t


def _safe_ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator > 0 else 0.0


# ----------------------------------------------------------------------------- overlaps


@dataclasses.dataclass(frozen=True)
class _Overlaps:
    """Sparse contingency table of one (prediction, ground truth) pair of label images.

    Instances are indexed ``0..n-1`` in ascending label order. ``pair_*`` list every overlapping
    (prediction index, ground-truth index) pair, sorted by prediction then ground truth, with its
    intersection in pixels.
    """

    pred_ids: np.ndarray  # (n_pred,) int64 labels
    pred_areas: np.ndarray  # (n_pred,) int64 pixels
    gt_areas: np.ndarray  # (n_gt,) int64 pixels
    pair_pred: np.ndarray  # (P,) int64
    pair_gt: np.ndarray  # (P,) int64
    pair_intersection: np.ndarray  # (P,) int64 pixels

    @property
    def n_pred(self) -> int:
        return int(self.pred_ids.size)

    @property
    def n_gt(self) -> int:
        return int(self.gt_areas.size)

    @classmethod
    def of(cls, pred: np.ndarray, gt: np.ndarray) -> _Overlaps:
        pred_ids, pred_index = _dense_index(pred.ravel())
        gt_ids, gt_index = _dense_index(gt.ravel())
        n_pred, n_gt = pred_ids.size, gt_ids.size
        both = (pred_index >= 0) & (gt_index >= 0)
        # COO -> CSR sums the duplicate (pred, gt) entries: one linear pass, no dense table.
        table = sparse.coo_matrix(
            (np.ones(int(both.sum()), np.int64), (pred_index[both], gt_index[both])),
            shape=(n_pred, n_gt),
        ).tocsr()
        table.sum_duplicates()
        table = table.tocoo()
        return cls(
            pred_ids=pred_ids,
            pred_areas=np.bincount(pred_index[pred_index >= 0], minlength=n_pred),
            gt_areas=np.bincount(gt_index[gt_index >= 0], minlength=n_gt),
            pair_pred=table.row.astype(np.int64),
            pair_gt=table.col.astype(np.int64),
            pair_intersection=table.data.astype(np.int64),
        )

    def iou(self) -> np.ndarray:
        """``(P,) float64`` IoU of each overlapping pair, computed as pycocotools does."""
        union = (
            self.pred_areas[self.pair_pred] + self.gt_areas[self.pair_gt] - self.pair_intersection
        )
        return self.pair_intersection / union


def _dense_index(flat_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels present (ascending, background excluded) and each pixel's index in them (-1 = bg)."""
    if flat_labels.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    max_label = int(flat_labels.max())
    if max_label <= 4 * flat_labels.size + 1024:
        # A lookup table is linear in pixels; sorting (np.unique) is only for sparse huge ids.
        present = np.flatnonzero(np.bincount(flat_labels, minlength=1))
        lookup = np.full(max_label + 1, -1, np.int64)
        lookup[present] = np.arange(present.size) - (present[0] == 0)
        ids = present[present > 0]
        return ids.astype(np.int64), lookup[flat_labels]
    ids, inverse = np.unique(flat_labels, return_inverse=True)
    has_background = ids[0] == 0
    return ids[int(has_background) :], inverse.reshape(-1) - int(has_background)


# ----------------------------------------------------------------------------- COCO AP


def _coco_greedy_matches(overlaps: _Overlaps, order: np.ndarray) -> np.ndarray:
    """pycocotools' per-image matching: ``(T, n_pred) bool``, column ``r`` = detection ``order[r]``.

    Detections in ``order`` each take the unmatched ground truth of highest IoU ``>= t``; a later
    ground truth with an equal IoU replaces an earlier one (pycocotools' ``<`` comparison).
    """
    ious = overlaps.iou()
    # Pairs below the lowest threshold can never match; the rest are few (disjoint instances give
    # each detection at most two ground truths with IoU >= 0.5), so plain Python loops are cheap.
    keep = ious >= IOU_THRESHOLDS[0]
    candidates: dict[int, list[tuple[int, float]]] = {}
    for det, gt, iou in zip(
        overlaps.pair_pred[keep].tolist(),
        overlaps.pair_gt[keep].tolist(),
        ious[keep].tolist(),
        strict=True,
    ):
        candidates.setdefault(det, []).append((gt, iou))
    thresholds = np.minimum(IOU_THRESHOLDS, 1 - 1e-10).tolist()
    gt_taken = np.zeros((len(thresholds), overlaps.n_gt), bool)
    matched = np.zeros((len(thresholds), overlaps.n_pred), bool)
    for rank, det in enumerate(order.tolist()):
        for t_index, t in enumerate(thresholds):
            best_gt, best_iou = -1, t
            for gt, iou in candidates.get(det, ()):
                if not gt_taken[t_index, gt] and iou >= best_iou:
                    best_gt, best_iou = gt, iou
            if best_gt >= 0:
                gt_taken[t_index, best_gt] = True
                matched[t_index, rank] = True
    return matched


def _coco_interpolated_precision(scores: np.ndarray, matched: np.ndarray, n_gt: int) -> np.ndarray:
    """pycocotools' ``accumulate``: ``(T, 101) float64`` interpolated precision, NaN if no GT.

    ``scores`` ``(D,)`` and ``matched`` ``(T, D)`` hold every image's detections, image after image,
    each image's in its own score order; the stable global sort keeps that order for equal scores.
    """
    n_thresholds, n_recall = IOU_THRESHOLDS.size, RECALL_THRESHOLDS.size
    if n_gt == 0:
        return np.full((n_thresholds, n_recall), np.nan)
    order = np.argsort(-scores, kind="mergesort")
    tp = np.cumsum(matched[:, order], axis=1).astype(np.float64)
    fp = np.cumsum(~matched[:, order], axis=1).astype(np.float64)
    recall = tp / n_gt
    precision = tp / (fp + tp + np.spacing(1))
    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    interpolated = np.zeros((n_thresholds, n_recall))
    for t in range(n_thresholds):
        at = np.searchsorted(recall[t], RECALL_THRESHOLDS, side="left")
        reached = at < scores.size  # recall points beyond the last detection keep precision 0
        interpolated[t, reached] = envelope[t, at[reached]]
    return interpolated


# ----------------------------------------------------------------------------- object accuracy


def _max_matching(
    pair_pred: np.ndarray, pair_gt: np.ndarray, ious: np.ndarray
) -> tuple[int, float]:
    """Most one-to-one matches among the given (pred, gt, IoU) edges, then the largest IoU sum.

    Returns ``(number of matches, sum of their IoUs)``. The edge graph splits into connected
    components (almost all a single pair); each is solved with ``linear_sum_assignment``.
    """
    if pair_pred.size == 0:
        return 0, 0.0
    _, pred_node = np.unique(pair_pred, return_inverse=True)
    _, gt_node = np.unique(pair_gt, return_inverse=True)
    n_pred_nodes = int(pred_node.max()) + 1
    graph = sparse.coo_matrix(
        (np.ones(pair_pred.size), (pred_node, n_pred_nodes + gt_node)),
        shape=(n_pred_nodes + int(gt_node.max()) + 1,) * 2,
    )
    _, component = connected_components(graph, directed=False)
    edge_component = component[pred_node]
    n_matches, iou_sum = 0, 0.0
    for edges in np.split(np.argsort(edge_component, kind="stable"), _group_starts(edge_component)):
        if edges.size == 1:
            n_matches, iou_sum = n_matches + 1, iou_sum + float(ious[edges[0]])
            continue
        matches, matched_sum = _assign_component(pred_node[edges], gt_node[edges], ious[edges])
        n_matches, iou_sum = n_matches + matches, iou_sum + matched_sum
    return n_matches, iou_sum


def _group_starts(keys: np.ndarray) -> np.ndarray:
    """Split points of ``np.sort(keys)`` into runs of equal keys."""
    return np.flatnonzero(np.diff(np.sort(keys))) + 1


def _assign_component(preds: np.ndarray, gts: np.ndarray, ious: np.ndarray) -> tuple[int, float]:
    """Optimal matching on one connected component given as edge lists."""
    pred_ids, rows = np.unique(preds, return_inverse=True)
    gt_ids, cols = np.unique(gts, return_inverse=True)
    k = min(pred_ids.size, gt_ids.size)
    # Gain per edge 1 + IoU/(2k): the IoU terms of at most k matches add up to <= 1/2 < 1, so the
    # number of matches dominates and the IoU sum only breaks ties (the cellpose/stardist cost).
    gain = np.zeros((pred_ids.size, gt_ids.size))
    gain[rows, cols] = 1.0 + ious / (2 * k)
    is_edge = np.zeros(gain.shape, bool)
    is_edge[rows, cols] = True
    iou_table = np.zeros(gain.shape)
    iou_table[rows, cols] = ious
    r, c = linear_sum_assignment(gain, maximize=True)
    hit = is_edge[r, c]
    return int(hit.sum()), float(iou_table[r, c][hit].sum())
