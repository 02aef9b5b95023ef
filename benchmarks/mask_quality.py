"""Mask quality, fragments and the automatic diameter of a model on held-out realistic synthetic
images, per modality and per cell size (issue 15).

Usage::

    KERAS_BACKEND=jax python benchmarks/mask_quality.py [--model generalist | PATH.keras]
        [--images 24] [--size 256] [--seed 0] [--json OUT.json]

The held-out sets are those of ``examples/train_generalist.py`` (``RealisticCells`` with seeds
``seed + 2000 + modality index``, cells of 8-64 px, no cell cap), so the numbers line up with the
model card's. For each modality it reports

- COCO AP50 / AP75 and the mean IoU of matched cells (F1 matching at IoU 0.5), with the model's
  own thresholds;
- recall at IoU 0.5 and mean best IoU of the true cells per diameter bin (the metrics above pool
  cells, so a few crowded images of small cells dominate them: this says where the cells are
  lost);
- cells with more than one 4-connected piece or with holes (``postprocess.count_defects``) with
  ``clean_masks=False`` (the painted masks) and with the default ``clean_masks=True``;
- ``diameter="auto"``: the estimate against the true median diameter of each image (median
  absolute error of ``log(estimate / truth)`` as a percentage, and the fraction of images within
  25 %), and AP50 when predicting with it.

Prints markdown tables; ``--json`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

BINS = (0, 12, 20, 32, 48, np.inf)  # true equivalent diameter, pixels


def held_out(modality_index: int, modality: str, args):
    from lacss_core.data import RealisticCells

    return RealisticCells(
        args.images, seed=args.seed + 2000 + modality_index, modality=modality, size=args.size,
        diameter=(8.0, 64.0), max_cells=None,
    )  # fmt: skip


def best_ious(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per true cell: its equivalent diameter and the best IoU any predicted cell has with it."""
    n_true, n_pred = int(truth.max()), int(pred.max())
    pairs = np.bincount(
        truth.ravel().astype(np.int64) * (n_pred + 1) + pred.ravel(),
        minlength=(n_true + 1) * (n_pred + 1),
    ).reshape(n_true + 1, n_pred + 1)
    area_true, area_pred = pairs.sum(1), pairs.sum(0)
    inter = pairs[1:, 1:]
    union = area_true[1:, None] + area_pred[None, 1:] - inter
    ious = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    best = ious.max(1) if n_pred else np.zeros(n_true)
    return 2 * np.sqrt(area_true[1:] / np.pi), best


def measure(model, samples) -> dict:
    from lacss_core.metrics import coco_mask_ap, object_accuracy
    from lacss_core.postprocess import count_defects, median_diameter
    from lacss_core.predict import predict_instances

    labels, raw_labels, scores, truths, diameters, ious = [], [], [], [], [], []
    auto_labels, auto_scores, estimates = [], [], []
    for sample in samples:
        label, details = predict_instances(model, sample.image)
        raw, _ = predict_instances(model, sample.image, clean_masks=False)
        auto, auto_details = predict_instances(model, sample.image, diameter="auto")
        labels.append(label), raw_labels.append(raw), scores.append(details["scores"])
        auto_labels.append(auto), auto_scores.append(auto_details["scores"])
        truths.append(sample.label)
        d, iou = best_ious(label, sample.label)
        diameters.append(d), ious.append(iou)
        truth_d, estimate = median_diameter(sample.label), auto_details.get("diameter")
        if truth_d and estimate:
            estimates.append(np.log(estimate / truth_d))
    ap, acc = coco_mask_ap(labels, truths, scores), object_accuracy(labels, truths, 0.5)
    d, iou = np.concatenate(diameters), np.concatenate(ious)
    bins = []
    for low, high in zip(BINS[:-1], BINS[1:], strict=True):
        inside = (d >= low) & (d < high)
        bins.append({
            "bin": f"{low:g}-{high:g}", "cells": int(inside.sum()),
            "recall50": float((iou[inside] >= 0.5).mean()) if inside.any() else None,
            "mean_best_iou": float(iou[inside].mean()) if inside.any() else None,
        })  # fmt: skip

    def defects(images):
        totals = [count_defects(x) for x in images]
        return {k: int(sum(t[k] for t in totals)) for k in ("cells", "fragmented", "with_holes")}

    errors = np.abs(np.array(estimates))
    return {
        "ap50": ap.ap50, "ap75": ap.ap75, "f1": acc.f1, "mean_matched_iou": acc.mean_matched_iou,
        "bins": bins, "defects_raw": defects(raw_labels), "defects_clean": defects(labels),
        "auto_ap50": coco_mask_ap(auto_labels, truths, auto_scores).ap50,
        "auto_median_error_pct": float(100 * np.expm1(np.median(errors))) if errors.size else None,
        "auto_within_25pct": float((errors <= np.log(1.25)).mean()) if errors.size else None,
        "auto_images": int(errors.size),
    }  # fmt: skip


def load(name: str):
    import keras

    from lacss_core.models import Lacss

    if name.endswith(".keras"):
        return keras.saving.load_model(name)
    return Lacss.from_preset("lacss_small", weights=name)


def tables(results: dict) -> str:
    def f(x):
        return "-" if x is None else f"{x:.2f}"

    lines = [
        "| modality | AP50 | AP75 | F1 | mean matched IoU | fragmented raw / clean "
        "| holes raw / clean | auto diameter: median error, within 25 % | AP50 with auto |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m, r in results.items():
        raw, clean = r["defects_raw"], r["defects_clean"]
        lines.append(
            f"| {m} | {f(r['ap50'])} | {f(r['ap75'])} | {f(r['f1'])} | {f(r['mean_matched_iou'])} "
            f"| {raw['fragmented']}/{raw['cells']} / {clean['fragmented']}/{clean['cells']} "
            f"| {raw['with_holes']} / {clean['with_holes']} "
            f"| {f(r['auto_median_error_pct'])} %, {f(r['auto_within_25pct'])} "
            f"| {f(r['auto_ap50'])} |"
        )
    bins = [b["bin"] for b in next(iter(results.values()))["bins"]]
    lines += ["", "Recall at IoU 0.5 (cells) per true diameter bin, px:", ""]
    lines += ["| modality | " + " | ".join(bins) + " |", "|---|" + "---|" * len(bins)]
    for m, r in results.items():
        cells = [f"{f(b['recall50'])} ({b['cells']})" for b in r["bins"]]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="generalist", help="a shipped model name or a .keras path")
    p.add_argument("--images", type=int, default=24, help="held-out images per modality")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="the training run's seed")
    p.add_argument("--json", help="also write the numbers to this file")
    args = p.parse_args(argv)
    from lacss_core.data.realistic import MODALITIES

    model = load(args.model)
    results = {m: measure(model, held_out(k, m, args)) for k, m in enumerate(MODALITIES)}
    print(f"model {args.model}, {args.images} images of {args.size} px per modality\n")
    print(tables(results))
    if args.json:
        from lacss_core._atomic import atomic_path

        with atomic_path(args.json) as tmp, open(tmp, "w") as out:
            json.dump(results, out, indent=1)


if __name__ == "__main__":
    main()
