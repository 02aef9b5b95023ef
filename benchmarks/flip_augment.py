"""What flip test-time augmentation (``predict_instances(augment=True)``) buys and costs
(``docs/results.md``, "Flip test-time augmentation").

Usage::

    KERAS_BACKEND=jax python benchmarks/flip_augment.py [--model generalist | PATH.keras]
        [--modalities nuclei cytoplasm brightfield phase] [--images 24] [--json OUT.json]

Scores the model with and without ``augment`` on the held-out sets of
``examples/train_generalist.py`` (those of ``benchmarks/mask_quality.py``), at the model's own
thresholds: COCO AP50 / AP75 / mAP, F1 at IoU 0.5 and the mean IoU of matched cells, and the
median seconds per image (the first image of each run, which compiles, left out: run on a quiet
machine for the timings to mean anything). With ``--recalibrate``, also with the thresholds
calibrated anew with ``augment=True`` on the script's threshold images (``lacss_core.calibrate``,
its ``f1`` metric, as the shipped thresholds were chosen without augmentation).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from mask_quality import held_out, load

from lacss_core.data.realistic import MODALITIES


def score(model, samples, augment: bool) -> dict:
    from lacss_core.metrics import coco_mask_ap, object_accuracy
    from lacss_core.predict import predict_instances

    labels, scores, seconds = [], [], []
    for sample in samples:
        start = time.perf_counter()
        label, details = predict_instances(model, sample.image, augment=augment)
        seconds.append(time.perf_counter() - start)
        labels.append(label), scores.append(details["scores"])
    truths = [s.label for s in samples]
    ap, accuracy = coco_mask_ap(labels, truths, scores), object_accuracy(labels, truths, 0.5)
    return {
        "ap50": ap.ap50, "ap75": ap.ap75, "map": ap.map, "f1": accuracy.f1,
        "mean_matched_iou": accuracy.mean_matched_iou,
        "found": int(sum(int(x.max()) for x in labels)),
        "true": int(sum(int(x.max()) for x in truths)),
        "seconds_per_image": float(np.median(seconds[1:] or seconds)),
    }  # fmt: skip


def recalibrate(args):
    """A copy of the model calibrated with ``augment=True`` on train_generalist's threshold
    images (the chosen values are printed)."""
    from calibration_metric import generalist_script

    from lacss_core.calibrate import calibrate, describe

    script = generalist_script()
    data_args = script.parse_args(
        ["--out", "unused", "--calibration-images", str(args.calibration_images)]
    )
    model = load(args.model)
    result = calibrate(model, script.threshold_data(data_args), augment=True, store=True)
    print(f"calibrated with augment=True: {describe(result)}", flush=True)
    return model


def table(results: dict) -> str:
    rows = [
        "| modality | augment | AP50 | AP75 | mAP | F1@0.5 | matched IoU | found / true "
        "| s / image |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for modality, runs in results.items():
        for augment, r in runs.items():
            rows.append(
                f"| {modality} | {augment} | {r['ap50']:.3f} | {r['ap75']:.3f} | {r['map']:.3f} "
                f"| {r['f1']:.3f} | {r['mean_matched_iou']:.3f} | {r['found']} / {r['true']} "
                f"| {r['seconds_per_image']:.2f} |"
            )
    return "\n".join(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="generalist", help="a shipped name or a .keras path")
    parser.add_argument("--modalities", nargs="+", choices=MODALITIES, default=list(MODALITIES))
    parser.add_argument("--images", type=int, default=24, help="held-out images per modality")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the numbers here")
    parser.add_argument(
        "--recalibrate", action="store_true", help="also calibrate with augment=True and score"
    )
    parser.add_argument("--calibration-images", type=int, default=32)
    args = parser.parse_args(argv)
    model = load(args.model)
    recalibrated = recalibrate(args) if args.recalibrate else None
    results = {}
    for modality in args.modalities:
        samples = list(held_out(MODALITIES.index(modality), modality, args))
        results[modality] = {str(a): score(model, samples, a) for a in (False, True)}
        if recalibrated is not None:
            results[modality]["True, recalibrated"] = score(recalibrated, samples, True)
        print("\n".join(table({modality: results[modality]}).splitlines()[2:]), flush=True)
    print(table(results))
    if args.json:
        from lacss_core._atomic import atomic_path

        with atomic_path(Path(args.json)) as tmp:
            tmp.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
