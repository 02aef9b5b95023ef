"""Tests of lacss_core.metrics: coco_mask_ap against pycocotools, object_accuracy by hand."""

import contextlib
import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy.optimize import linear_sum_assignment

from lacss_core.metrics import IOU_THRESHOLDS, coco_mask_ap, object_accuracy

# ----------------------------------------------------------------------------- helpers


def _strips(shape, spans):
    """Label image holding ``value`` on row 0, columns ``[start, stop)``, per span."""
    label = np.zeros(shape, np.int32)
    for value, start, stop in spans:
        label[0, start:stop] = value
    return label


def _rle(mask):
    return mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))


def _pycocotools_precision(preds, gts, scores):
    """``(T, 101)`` interpolated precision from COCOeval (segm, maxDets raised), -1 if no GT.

    Detections are listed in ascending label order per image, the tie order coco_mask_ap documents;
    a ``None`` score table means every detection scores 1.0.
    """
    images, gt_anns, dt_anns = [], [], []
    for image_id, (pred, gt, table) in enumerate(zip(preds, gts, scores, strict=True), start=1):
        images.append({"id": image_id, "height": gt.shape[0], "width": gt.shape[1]})
        for label in np.unique(gt[gt > 0]):
            mask = gt == label
            gt_anns.append(
                {
                    "id": len(gt_anns) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": _rle(mask),
                    "area": float(mask.sum()),
                    "iscrowd": 0,
                }
            )
        for label in np.unique(pred[pred > 0]):
            score = 1.0 if table is None else float(table[label - 1])
            dt_anns.append(
                {
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": _rle(pred == label),
                    "score": score,
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {
            "images": images,
            "annotations": gt_anns,
            "categories": [{"id": 1, "name": "cell"}],
        }
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(dt_anns), iouType="segm")
        evaluator.params.maxDets = [1, 10, 10000]
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator.eval["precision"][:, :, 0, 0, -1]


def _assert_matches_pycocotools(preds, gts, scores):
    expected = _pycocotools_precision(preds, gts, scores)
    result = coco_mask_ap(preds, gts, scores)
    np.testing.assert_allclose(result.ap50, expected[0].mean(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(result.ap75, expected[5].mean(), rtol=0, atol=1e-9)
    # pycocotools' summarize(): mean over every (threshold, recall) entry that is not -1.
    np.testing.assert_allclose(result.map, expected[expected > -1].mean(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(result.ap_per_threshold, expected.mean(axis=1), rtol=0, atol=1e-9)


def _paint_rectangles(shape, boxes, labels):
    """Paint boxes ``(y0, x0, y1, x1)`` in order (later ones occlude earlier ones)."""
    image = np.zeros(shape, np.int32)
    for (y0, x0, y1, x1), value in zip(boxes, labels, strict=True):
        image[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = value
    return image


def _random_case(rng, *, need_gt, need_pred):
    """One random (pred, gt, score table) triple: jittered copies of GT boxes plus false positives.

    Labels are distinct random ids in 1..80 (not consecutive); scores are rounded to one decimal so
    that ties (within and across images) are common.
    """
    shape = tuple(rng.integers(16, 41, size=2))
    n_gt = int(rng.integers(1 if need_gt else 0, 9))
    sizes = rng.integers(3, 12, size=(n_gt, 2))
    corners = rng.integers(0, shape, size=(n_gt, 2))
    gt_boxes = np.concatenate([corners, corners + sizes], axis=1)
    gt = _paint_rectangles(shape, gt_boxes, rng.permutation(80)[:n_gt] + 1)

    kept = gt_boxes[rng.random(n_gt) < 0.8]
    jitter = rng.integers(-1, 2, size=kept.shape) * (rng.random((kept.shape[0], 1)) < 0.5)
    n_false = int(rng.integers(1 if need_pred else 0, 4))
    false_corners = rng.integers(0, shape, size=(n_false, 2))
    false_boxes = np.concatenate(
        [false_corners, false_corners + rng.integers(2, 8, (n_false, 2))], 1
    )
    pred_boxes = np.concatenate([kept + jitter, false_boxes])
    pred_boxes = pred_boxes[rng.permutation(len(pred_boxes))]
    pred = _paint_rectangles(shape, pred_boxes, rng.permutation(80)[: len(pred_boxes)] + 1)
    scores = np.round(rng.random(80), 1)
    return pred, gt, scores


def _random_dataset(seed):
    """1-3 images; the first has GT and a prediction (pycocotools' loadRes needs one detection),
    the others may lack either or both."""
    rng = np.random.default_rng(seed)
    cases = [_random_case(rng, need_gt=True, need_pred=True)]
    for _ in range(int(rng.integers(0, 3))):
        pred, gt, scores = _random_case(rng, need_gt=False, need_pred=False)
        if rng.random() < 0.3:
            pred = np.zeros_like(pred)
        cases.append((pred, gt, scores))
    preds, gts, scores = (list(column) for column in zip(*cases, strict=True))
    return preds, gts, scores


# ----------------------------------------------------------------------------- coco_mask_ap


@given(seed=st.integers(0, 2**32 - 1))
def test_coco_mask_ap_matches_pycocotools_on_random_images(seed):
    preds, gts, scores = _random_dataset(seed)
    _assert_matches_pycocotools(preds, gts, scores)


@given(seed=st.integers(0, 2**32 - 1))
def test_coco_mask_ap_without_scores_matches_pycocotools_with_equal_scores(seed):
    preds, gts, _ = _random_dataset(seed)
    _assert_matches_pycocotools(preds, gts, [None] * len(preds))


def test_coco_mask_ap_single_image_equals_one_image_list():
    pred, gt, scores = _random_case(np.random.default_rng(7), need_gt=True, need_pred=True)
    single = coco_mask_ap(pred, gt, scores)
    listed = coco_mask_ap([pred], [gt], [scores])
    assert single.to_dict() == listed.to_dict()


def test_coco_mask_ap_ranked_tp_fp_tp():
    # Two GT strips, three predictions: 4 (score .9) = GT 1 exactly, 7 (.8) hits nothing,
    # 9 (.7) = GT 2 exactly. Ranked: TP, FP, TP at every threshold (IoU 1).
    # recall .5, .5, 1; precision 1, 1/2, 2/3; monotone envelope 1, 2/3, 2/3.
    # Recall points 0.00..0.50 (51 of them) read precision 1, points 0.51..1.00 (50) read 2/3.
    gt = _strips((1, 20), [(1, 0, 4), (2, 6, 10)])
    pred = _strips((1, 20), [(4, 0, 4), (7, 12, 15), (9, 6, 10)])
    scores = {4: 0.9, 7: 0.8, 9: 0.7}
    expected = (51 * 1 + 50 * 2 / 3) / 101
    result = coco_mask_ap(pred, gt, scores)
    np.testing.assert_allclose(result.ap_per_threshold, np.full(10, expected), atol=1e-12)
    assert (result.n_gt, result.n_pred) == (2, 3)
    _assert_matches_pycocotools([pred], [gt], [np.array([0, 0, 0, 0.9, 0, 0, 0.8, 0, 0.7])])


def test_coco_mask_ap_iou_exactly_at_thresholds_matches():
    # Prediction 5 (score .9) covers 3 of GT 1's 4 pixels: IoU 3/4, matched for t <= 0.75.
    # Prediction 9 (score .8) covers 2 of GT 2's 4 pixels: IoU 2/4, matched only at t = 0.5.
    # t = .50: TP, TP -> AP 1.
    # t = .55...75 (5 thresholds): TP, FP; recall .5, .5, precision 1, 1/2 -> envelope 1, 1/2;
    #   recall points 0.00..0.50 (51) read 1, the rest are never reached -> AP 51/101.
    # t = .80...95 (4 thresholds): no TP -> AP 0.
    gt = _strips((1, 12), [(1, 0, 4), (2, 6, 10)])
    pred = _strips((1, 12), [(5, 0, 3), (9, 6, 8)])
    scores = {5: 0.9, 9: 0.8}
    result = coco_mask_ap(pred, gt, scores)
    expected = np.array([1.0] + [51 / 101] * 5 + [0.0] * 4)
    np.testing.assert_allclose(result.ap_per_threshold, expected, atol=1e-12)
    assert result.ap50 == pytest.approx(1.0, abs=1e-12)
    assert result.ap75 == pytest.approx(51 / 101, abs=1e-12)
    assert result.map == pytest.approx((1 + 5 * 51 / 101) / 10, abs=1e-12)
    table = np.zeros(9)
    table[[4, 8]] = [0.9, 0.8]
    _assert_matches_pycocotools([pred], [gt], [table])


def test_coco_mask_ap_two_predictions_halving_one_gt():
    # GT 1 is 4 pixels; predictions 2 (score .6) and 3 (score .9) each cover half: IoU exactly .5.
    # At t = .5 the higher-scored 3 takes GT 1 and 2 becomes a false positive: TP, FP with recall
    # 1, 1 and precision 1, 1/2; every recall point reads precision 1 -> AP 1 (a false positive
    # ranked after full recall costs nothing). Above .5 nothing matches -> AP 0.
    gt = _strips((1, 6), [(1, 0, 4)])
    pred = _strips((1, 6), [(2, 0, 2), (3, 2, 4)])
    result = coco_mask_ap(pred, gt, [0.0, 0.6, 0.9])
    assert result.ap50 == pytest.approx(1.0, abs=1e-12)
    assert result.ap_per_threshold[1:].tolist() == [0.0] * 9
    _assert_matches_pycocotools([pred], [gt], [np.array([0.0, 0.6, 0.9])])


def test_coco_mask_ap_no_predictions_is_zero():
    gt = _strips((2, 10), [(1, 0, 3), (2, 5, 9)])
    result = coco_mask_ap([np.zeros_like(gt), np.zeros_like(gt)], [gt, gt])
    assert (result.ap50, result.ap75, result.map, result.n_pred) == (0.0, 0.0, 0.0, 0)


@pytest.mark.parametrize("with_predictions", [False, True])
def test_coco_mask_ap_without_ground_truth_is_nan(with_predictions):
    pred = _strips((2, 10), [(3, 1, 4)] if with_predictions else [])
    result = coco_mask_ap(pred, np.zeros_like(pred))
    assert np.isnan([result.ap50, result.ap75, result.map]).all()
    assert np.isnan(result.ap_per_threshold).all()
    assert result.iou_thresholds.tolist() == IOU_THRESHOLDS.tolist()


def test_coco_mask_ap_mapping_and_array_scores_agree_and_label_values_are_free():
    gt = _strips((1, 30), [(10, 0, 5), (500, 8, 14), (3, 20, 24)])
    pred = _strips((1, 30), [(2, 0, 4), (1, 9, 14), (3, 16, 18), (4, 20, 25)])
    table = np.array([0.3, 0.8, 0.8, 0.5])  # scores[label - 1]; 2 and 3 tie -> label 2 first
    mapping = {1: 0.3, 2: 0.8, 3: 0.8, 4: 0.5}
    assert coco_mask_ap(pred, gt, table).to_dict() == coco_mask_ap(pred, gt, mapping).to_dict()
    _assert_matches_pycocotools([pred], [gt], [table])


def test_coco_mask_ap_accepts_integral_float_and_unsigned_labels():
    pred, gt, scores = _random_case(np.random.default_rng(3), need_gt=True, need_pred=True)
    expected = coco_mask_ap(pred, gt, scores).to_dict()
    assert coco_mask_ap(pred.astype(np.float32), gt.astype(np.uint16), scores).to_dict() == expected


def test_metrics_accept_huge_sparse_label_ids():
    # Ids far beyond the pixel count take the sorting path instead of the lookup table.
    pred, gt, scores = _random_case(np.random.default_rng(5), need_gt=True, need_pred=True)
    big = np.int64(10**12)
    big_pred, big_gt = np.where(pred > 0, pred + big, 0), np.where(gt > 0, gt * big, 0)
    big_scores = {int(k) + big: scores[k - 1] for k in np.unique(pred[pred > 0])}
    assert coco_mask_ap(big_pred, big_gt, big_scores).to_dict() == (
        coco_mask_ap(pred, gt, scores).to_dict()
    )
    assert object_accuracy(big_pred, big_gt) == object_accuracy(pred, gt)


def test_coco_mask_ap_empty_image_list_is_nan():
    result = coco_mask_ap([], [])
    assert np.isnan(result.map)
    assert (result.n_gt, result.n_pred) == (0, 0)


# ----------------------------------------------------------------------------- object_accuracy


def test_object_accuracy_perfect_match():
    gt = _strips((1, 20), [(1, 0, 3), (2, 5, 9), (3, 12, 20)])
    pred = _strips((1, 20), [(7, 0, 3), (8, 5, 9), (9, 12, 20)])  # same masks, other labels
    result = object_accuracy(pred, gt)
    assert (result.tp, result.fp, result.fn) == (3, 0, 0)
    assert (result.accuracy, result.precision, result.recall, result.f1) == (1.0, 1.0, 1.0, 1.0)
    assert result.mean_matched_iou == 1.0


def _partial_case():
    # GT A = [0, 10), GT B = [20, 30).
    # Prediction 1 = [0, 8): IoU with A = 8/10 = 0.8 -> match.
    # Prediction 2 = [20, 24): IoU with B = 4/10 = 0.4 < 0.5 -> no match.
    # Prediction 3 = [40, 45): overlaps nothing.
    gt = _strips((1, 50), [(1, 0, 10), (2, 20, 30)])
    pred = _strips((1, 50), [(1, 0, 8), (2, 20, 24), (3, 40, 45)])
    return pred, gt


def test_object_accuracy_partial_overlaps():
    # tp = 1 (pred 1 - A), fp = 2 (preds 2, 3), fn = 1 (B).
    # accuracy 1/(1+2+1) = 1/4, precision 1/3, recall 1/2, f1 2/(2+2+1) = 2/5, mean IoU 0.8.
    result = object_accuracy(*_partial_case())
    assert (result.tp, result.fp, result.fn) == (1, 2, 1)
    assert result.accuracy == pytest.approx(1 / 4)
    assert result.precision == pytest.approx(1 / 3)
    assert result.recall == pytest.approx(1 / 2)
    assert result.f1 == pytest.approx(2 / 5)
    assert result.mean_matched_iou == pytest.approx(0.8)


def test_object_accuracy_lower_threshold_admits_weaker_match():
    # At t = 0.4 prediction 2 (IoU exactly 4/10 = 0.4) matches B too: tp 2, fp 1, fn 0.
    # accuracy 2/3, precision 2/3, recall 1, f1 4/5, mean IoU (0.8 + 0.4)/2 = 0.6.
    result = object_accuracy(*_partial_case(), threshold=0.4)
    assert (result.tp, result.fp, result.fn) == (2, 1, 0)
    assert result.accuracy == pytest.approx(2 / 3)
    assert result.f1 == pytest.approx(4 / 5)
    assert result.mean_matched_iou == pytest.approx(0.6)


def test_object_accuracy_optimal_matching_beats_greedy():
    # GT 1 = [0, 10), GT 2 = [10, 20); threshold 0.25.
    # Prediction 1 = [3, 15): with GT 1 inter 7, union 15 -> 0.467; with GT 2 inter 5,
    #   union 12 + 10 - 5 = 17 -> 0.294.
    # Prediction 2 = [0, 3): with GT 1 inter 3, union 10 -> 0.3; misses GT 2.
    # Greedy by best IoU gives pred 1 - GT 1 (0.467), then pred 2 has only GT 1, taken: 1 match.
    # Optimal: pred 1 - GT 2 (0.294), pred 2 - GT 1 (0.3): 2 matches, tp 2, fp 0, fn 0.
    gt = _strips((1, 24), [(1, 0, 10), (2, 10, 20)])
    pred = _strips((1, 24), [(1, 3, 15), (2, 0, 3)])
    result = object_accuracy(pred, gt, threshold=0.25)
    assert (result.tp, result.fp, result.fn) == (2, 0, 0)
    assert result.accuracy == 1.0
    assert result.mean_matched_iou == pytest.approx((5 / 17 + 3 / 10) / 2)


def test_object_accuracy_prefers_larger_total_iou_among_maximum_matchings():
    # GT 1 = [0, 4), GT 2 = [4, 12); prediction 1 = [0, 6), prediction 2 = [6, 12); t = 0.25.
    # pred 1: GT 1 inter 4 union 6 -> 2/3; GT 2 inter 2 union 12 -> 1/6 (below t).
    # pred 2: GT 2 inter 6 union 8 -> 3/4.
    # Only one maximum matching: pred 1 - GT 1, pred 2 - GT 2; mean IoU (2/3 + 3/4)/2.
    gt = _strips((1, 12), [(1, 0, 4), (2, 4, 12)])
    pred = _strips((1, 12), [(1, 0, 6), (2, 6, 12)])
    result = object_accuracy(pred, gt, threshold=0.25)
    assert (result.tp, result.fp, result.fn) == (2, 0, 0)
    assert result.mean_matched_iou == pytest.approx((2 / 3 + 3 / 4) / 2)


def test_object_accuracy_aggregates_counts_over_images():
    # Partial case (tp 1, fp 2, fn 1) + a perfect image with 2 instances (tp 2):
    # tp 3, fp 2, fn 1 -> accuracy 3/6, precision 3/5, recall 3/4; mean IoU (0.8 + 1 + 1)/3.
    perfect = _strips((3, 8), [(1, 0, 3), (2, 4, 8)])
    pred, gt = _partial_case()
    result = object_accuracy([pred, perfect], [gt, perfect])
    assert (result.tp, result.fp, result.fn) == (3, 2, 1)
    assert result.accuracy == pytest.approx(1 / 2)
    assert result.precision == pytest.approx(3 / 5)
    assert result.recall == pytest.approx(3 / 4)
    assert result.mean_matched_iou == pytest.approx(2.8 / 3)


def test_object_accuracy_empty_cases_follow_stardist():
    empty = np.zeros((4, 4), np.int32)
    for pred, gt, counts in [
        (empty, empty, (0, 0, 0)),  # nothing at all: every ratio 0.0
        (empty, _strips((4, 4), [(1, 0, 2)]), (0, 0, 1)),  # only GT: precision 0/0 -> 0.0
        (_strips((4, 4), [(1, 0, 2)]), empty, (0, 1, 0)),  # only predictions: recall 0/0 -> 0.0
    ]:
        result = object_accuracy(pred, gt)
        assert (result.tp, result.fp, result.fn) == counts
        ratios = (result.accuracy, result.precision, result.recall, result.f1)
        assert ratios == (0.0, 0.0, 0.0, 0.0)
        assert result.mean_matched_iou == 0.0


def _brute_force_tp(pred, gt, threshold):
    """stardist's ``matching``: dense per-pair IoU and its linear_sum_assignment cost."""
    pred_ids, gt_ids = np.unique(pred[pred > 0]), np.unique(gt[gt > 0])
    iou = np.zeros((gt_ids.size, pred_ids.size))
    for i, g in enumerate(gt_ids):
        for j, p in enumerate(pred_ids):
            iou[i, j] = np.sum((gt == g) & (pred == p)) / np.sum((gt == g) | (pred == p))
    n_matched = min(iou.shape)
    if n_matched == 0:
        return 0
    rows, cols = linear_sum_assignment(-(iou >= threshold).astype(float) - iou / (2 * n_matched))
    return int(np.count_nonzero(iou[rows, cols] >= threshold))


@given(seed=st.integers(0, 2**32 - 1), threshold=st.sampled_from([0.1, 0.3, 0.5, 0.7]))
def test_object_accuracy_counts_match_stardist_brute_force(seed, threshold):
    pred, gt, _ = _random_case(np.random.default_rng(seed), need_gt=False, need_pred=False)
    tp = _brute_force_tp(pred, gt, threshold)
    result = object_accuracy(pred, gt, threshold)
    n_pred, n_gt = np.unique(pred[pred > 0]).size, np.unique(gt[gt > 0]).size
    assert (result.tp, result.fp, result.fn) == (tp, n_pred - tp, n_gt - tp)


# ----------------------------------------------------------------------------- bad input

GOOD = _strips((2, 6), [(1, 0, 3)])


@pytest.mark.parametrize(
    ("pred", "gt", "match"),
    [
        (GOOD, GOOD[:, :5], "pred_labels shape"),
        (GOOD.astype(np.float32) + 0.5, GOOD, "pred_labels must hold integer labels"),
        (GOOD, np.where(GOOD > 0, np.nan, 0.0), "gt_labels must hold integer labels"),
        (GOOD, GOOD > 0, "gt_labels must hold integer labels"),
        (GOOD, -GOOD, "gt_labels must hold non-negative labels"),
        (GOOD[None], GOOD[None], "pred_labels must be a 2-D label image"),
        ([GOOD, GOOD], [GOOD], "pred_labels has 2 images but gt_labels has 1"),
        ([GOOD], GOOD, "both be single arrays or both be lists"),
        ([GOOD, -GOOD], [GOOD, GOOD], r"pred_labels\[1\] must hold non-negative"),
    ],
)
@pytest.mark.parametrize("metric", [coco_mask_ap, object_accuracy])
def test_bad_label_images_raise(metric, pred, gt, match):
    with pytest.raises(ValueError, match=match):
        metric(pred, gt)


@pytest.mark.parametrize(
    ("scores", "match"),
    [
        ({2: 0.5}, r"scores has no score for predicted labels \[1\]"),
        (np.zeros(0), "scores has 0 entries but predicted label 1"),
        (np.zeros((1, 1)), "scores must be a mapping or a 1-D array"),
        ([np.nan], "scores holds non-finite scores"),
    ],
)
def test_bad_scores_raise(scores, match):
    with pytest.raises(ValueError, match=match):
        coco_mask_ap(GOOD, GOOD, scores)


def test_bad_score_list_raises():
    with pytest.raises(ValueError, match="scores must be None or a list with one entry per image"):
        coco_mask_ap([GOOD, GOOD], [GOOD, GOOD], [None])


@pytest.mark.parametrize("threshold", [0.0, 1.5, -0.1, "high", None])
def test_bad_threshold_raises(threshold):
    with pytest.raises(ValueError, match="threshold must be"):
        object_accuracy(GOOD, GOOD, threshold)
