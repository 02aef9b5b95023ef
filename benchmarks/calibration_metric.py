"""What the calibration metric does to a model's thresholds and masks (``docs/results.md``,
"Calibrating for tight masks").

Usage::

    KERAS_BACKEND=jax python benchmarks/calibration_metric.py [--model generalist | PATH.keras]
        [--metrics f1 f1_mean] [--calibration-images 32] [--validation-images 12]
        [--test-images 24] [--json OUT.json]

The model is calibrated anew with each metric of ``lacss_core.calibrate.METRICS`` named, on the
threshold images of ``examples/train_generalist.py`` (the same seeds, size and modality mix as
the shipped calibration), then measured on that script's validation set (COCO AP50 / AP75) and
on its held-out sets per modality (AP50 / AP75, F1 at IoU 0.5, mean matched IoU). The chosen
thresholds and every number are printed as markdown tables.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

from mask_quality import load  # a shipped model's name or a .keras path

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "train_generalist.py"


def generalist_script():
    """``examples/train_generalist.py`` as a module: its data sets and ``evaluate``."""
    spec = importlib.util.spec_from_file_location("train_generalist", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure(model, metric: str, script, args) -> dict:
    """Calibrate ``model`` with ``metric`` (in place), then score it."""
    from lacss_core.calibrate import calibrate
    from lacss_core.train import evaluate_ap

    result = calibrate(model, script.threshold_data(args), metric=metric, store=True)
    return {
        "chosen": {k: result[k] for k in ("min_score", "segmentation_threshold", "nms_distance")},
        "validation": evaluate_ap(model, script.validation_data(args)),
        "held_out": script.evaluate(model, script.test_sets(args)),
    }


def tables(results: dict) -> str:
    lines = [
        "| metric | min_score | mask threshold | NMS px | validation AP50 | validation AP75 |",
        "|---|---|---|---|---|---|",
    ]
    for metric, r in results.items():
        c, v = r["chosen"], r["validation"]
        lines.append(
            f"| {metric} | {c['min_score']:g} | {c['segmentation_threshold']:g} | "
            f"{c['nms_distance']:g} | {v['ap50']:.3f} | {v['ap75']:.3f} |"
        )
    lines += [
        "",
        "| metric | modality | AP50 | AP75 | F1@0.5 | matched IoU |",
        "|---|---|---|---|---|---|",
    ]
    for metric, r in results.items():
        for modality, m in r["held_out"].items():
            lines.append(
                f"| {metric} | {modality} | {m['ap50']:.3f} | {m['ap75']:.3f} | {m['f1']:.3f} | "
                f"{m['mean_matched_iou']:.3f} |"
            )
    return "\n".join(lines)


def main(argv=None) -> None:
    from lacss_core.calibrate import METRICS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="generalist", help="a shipped model's name or a .keras")
    p.add_argument("--metrics", nargs="+", choices=METRICS, default=["f1", "f1_mean"])
    p.add_argument("--calibration-images", type=int, default=32)
    p.add_argument("--validation-images", type=int, default=12)
    p.add_argument("--test-images", type=int, default=24)
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args(argv)
    script = generalist_script()
    data_args = script.parse_args([
        "--out", "unused", "--calibration-images", str(args.calibration_images),
        "--validation-images", str(args.validation_images),
        "--test-images", str(args.test_images),
    ])  # fmt: skip
    results = {
        metric: measure(load(args.model), metric, script, data_args) for metric in args.metrics
    }
    print(tables(results))
    if args.json:
        from lacss_core._atomic import atomic_path

        with atomic_path(Path(args.json)) as tmp:
            tmp.write_text(json.dumps(results, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
