"""The mask threshold per modality, and what rescaling small cells does to their masks
(``docs/results.md``, "Mask threshold and rescaling").

Usage::

    KERAS_BACKEND=jax python benchmarks/mask_threshold.py [--model generalist | PATH.keras]
        [--images 24] [--small 16]

On the held-out sets of ``examples/train_generalist.py`` (first ``--images`` per modality), with
the model's other thresholds:

1. ``segmentation_threshold`` 0.3-0.7: COCO AP50 / AP75, F1 at IoU 0.5 and 0.75, mean matched
   IoU (the calibrated value is one number for every modality; this shows what each prefers).
2. The images whose true median cell diameter is under ``--small`` px, predicted at scale 1 and
   at ``diameter=`` their true median diameter (the upscaling ``diameter`` asks for): AP50 /
   AP75, mean matched IoU and the median area ratio predicted / true of matched cells (> 1: the
   masks are too large).

Prints markdown tables.
"""

from __future__ import annotations

import argparse

import numpy as np
from mask_quality import held_out, load

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)


def area_ratios(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per true cell matched at IoU > 0.5 (at most one such cell exists): predicted / true area."""
    from lacss_core.metrics import _Overlaps

    table = _Overlaps.of(pred, truth)
    pred_areas, true_areas = table.pred_areas[table.pair_pred], table.gt_areas[table.pair_gt]
    matched = 2 * table.pair_intersection > pred_areas + true_areas - table.pair_intersection
    return pred_areas[matched] / true_areas[matched]


def scores(preds, truths) -> dict:
    from lacss_core.metrics import coco_mask_ap, object_accuracy

    labels = [label for label, _ in preds]
    ap = coco_mask_ap(labels, truths, [details["scores"] for _, details in preds])
    at_50 = object_accuracy(labels, truths, 0.5)
    ratios = np.concatenate([area_ratios(p, t) for p, t in zip(labels, truths, strict=True)])
    return {
        "ap50": ap.ap50,
        "ap75": ap.ap75,
        "f1_50": at_50.f1,
        "f1_75": object_accuracy(labels, truths, 0.75).f1,
        "iou": at_50.mean_matched_iou,
        "area_ratio": float(np.median(ratios)) if ratios.size else float("nan"),
    }


def row(*cells) -> str:
    return "| " + " | ".join(cells) + " |"


def metric_cells(result: dict, keys: str) -> list[str]:
    return [f"{result[k]:.3f}" for k in keys.split()]


def threshold_table(model, sets) -> None:
    from lacss_core.predict import predict_instances

    print("| modality | threshold | AP50 | AP75 | F1 @ 0.5 | F1 @ 0.75 | matched IoU |")
    print("|---|---|---|---|---|---|---|")
    for modality, samples in sets.items():
        truths = [s.label for s in samples]
        for threshold in THRESHOLDS:
            preds = [
                predict_instances(model, s.image, segmentation_threshold=threshold) for s in samples
            ]
            r = scores(preds, truths)
            print(
                row(modality, f"{threshold:g}", *metric_cells(r, "ap50 ap75 f1_50 f1_75 iou")),
                flush=True,
            )


def rescale_table(model, sets, small: float) -> None:
    from lacss_core.postprocess import median_diameter
    from lacss_core.predict import predict_instances

    print("\n| modality | images (cells) | predicted at | AP50 | AP75 | matched IoU | area ratio |")
    print("|---|---|---|---|---|---|---|")
    for modality, samples in sets.items():
        chosen = [s for s in samples if median_diameter(s.label) < small]
        if not chosen:
            continue
        truths = [s.label for s in chosen]
        cells = sum(int(t.max()) for t in truths)
        for how in ("scale 1", "true diameter"):
            preds = [
                predict_instances(model, s.image)
                if how == "scale 1"
                else predict_instances(model, s.image, diameter=median_diameter(s.label))
                for s in chosen
            ]
            r = scores(preds, truths)
            cells_text = f"{len(chosen)} ({cells})"
            print(
                row(modality, cells_text, how, *metric_cells(r, "ap50 ap75 iou area_ratio")),
                flush=True,
            )


def main(argv=None) -> None:
    from lacss_core.data.realistic import MODALITIES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="generalist", help="a shipped model's name or a .keras path")
    p.add_argument("--images", type=int, default=24, help="held-out images per modality")
    p.add_argument("--small", type=float, default=16.0, help="px: images of smaller cells")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    model = load(args.model)
    sets = {m: list(held_out(k, m, args)) for k, m in enumerate(MODALITIES)}
    print(f"model {args.model}: train_diameter {model.train_diameter}, "
          f"segmentation_threshold {model.segmentation_threshold}\n")  # fmt: skip
    threshold_table(model, sets)
    rescale_table(model, sets, args.small)


if __name__ == "__main__":
    main()
