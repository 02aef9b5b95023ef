"""``lacss evaluate``: score predicted label images against ground truth."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from lacss_core.cli._common import (
    LABEL_EXTENSIONS,
    LABEL_STEM_SUFFIXES,
    OUTPUT_SUFFIXES,
    STACK_OVERLAY_SUFFIX,
    expand_inputs,
)


def add_evaluate_parser(subparsers) -> None:
    """Register ``lacss evaluate`` and its options."""
    p = subparsers.add_parser(
        "evaluate",
        help="score predicted label images against ground truth",
        description="Compare predicted label images with ground-truth label images, paired by "
        "file stem after dropping a trailing " + ", ".join(LABEL_STEM_SUFFIXES) + " (so "
        "img1_label.tif pairs with img1_masks.tif or img1.tif). Prints per-image and overall "
        "COCO mask AP (AP50, AP75, mAP over IoU 0.50:0.95) and object accuracy "
        "TP/(TP+FP+FN) with precision, recall and F1, and writes them as JSON. AP ranks cells by "
        "the scores in STEM_cells.csv beside a prediction when present, else by label id "
        "(which is score order for `lacss predict` output). Exit status 1 if a pair failed.",
        epilog="example: lacss evaluate results/ ground_truth/ -o scores.json",
    )
    p.add_argument("pred", metavar="PRED", help="predicted label images: folder, file or glob")
    p.add_argument("gt", metavar="GT", help="ground-truth label images: folder, file or glob")
    p.add_argument(
        "-o",
        "--output",
        default="evaluation.json",
        help="JSON file for the metrics (its folder is created; default: %(default)s)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT file")
    p.add_argument(
        "--iou",
        type=float,
        default=0.5,
        help="IoU a match needs for object accuracy (default: %(default)s)",
    )
    p.set_defaults(run=run_evaluate)


def label_key(path: Path) -> str:
    """The pairing key of a label file: its stem without a known label suffix."""
    stem = path.stem
    for suffix in LABEL_STEM_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _by_key(files, failures) -> dict:
    """``{label_key: path}``. Where an image and its label share a key (``img.tif`` beside
    ``img_masks.tif``, as in a training folder), the file with the label suffix wins."""
    keyed: dict[str, Path] = {}
    for path in files:
        key = label_key(path)
        other = keyed.get(key)
        if other is None or (label_key(other) == other.stem and key != path.stem):
            keyed[key] = path
        elif (key != path.stem) == (label_key(other) != other.stem):
            failures.append(f"{path}: pairs as {key!r} like {other}; ignored")
    return keyed


def read_label_image(path: Path) -> np.ndarray:
    """``(H, W) int64`` label image; an image with no cell is fine (a prediction may be empty)."""
    from lacss_core.data.io import read_image

    image = read_image(path)
    if image.shape[-1] != 1:
        raise ValueError(f"{path} has {image.shape[-1]} channels; a label image has one")
    plane = image[..., 0]
    if plane.min(initial=0) < 0 or not np.all(plane == np.round(plane)) or plane.max() >= 2**24:
        raise ValueError(f"{path} is not a label image (values must be integers 0 .. 2**24 - 1)")
    return plane.astype(np.int64)


def _pair_files(pred_arg, gt_arg) -> tuple[list, list[str]]:
    """``[(key, pred_path, gt_path)]`` sorted by key, and messages for the unpaired or bad."""
    overlays = (OUTPUT_SUFFIXES["overlay"], STACK_OVERLAY_SUFFIX)
    pred_files, failures = expand_inputs([pred_arg], LABEL_EXTENSIONS, skip=overlays)
    gt_files, gt_failures = expand_inputs([gt_arg], LABEL_EXTENSIONS, skip=overlays)
    failures += gt_failures
    preds, gts = _by_key(pred_files, failures), _by_key(gt_files, failures)
    for key in sorted(set(preds) - set(gts)):
        failures.append(f"{preds[key]}: no ground truth with stem {key!r}")
    for key in sorted(set(gts) - set(preds)):
        failures.append(f"{gts[key]}: no prediction with stem {key!r}")
    return [(k, preds[k], gts[k]) for k in sorted(set(preds) & set(gts))], failures


def check_output(path: Path, overwrite: bool) -> None:
    """Before any work: OUTPUT may be replaced (``--overwrite``) and its folder is writable."""
    import tempfile

    if path.is_dir():
        raise ValueError(f"-o {path} is a folder; name a .json file")
    if path.exists() and not overwrite:
        raise ValueError(f"{path} exists; use --overwrite to replace it, or another -o")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise ValueError(f"-o {path}: cannot write into {folder}: {e.strerror or e}") from e


def run_evaluate(args) -> int:
    """``lacss evaluate``: score predicted label images against ground truth; exit code."""
    from lacss_core import export
    from lacss_core._atomic import atomic_open

    if not 0 < args.iou <= 1:
        raise ValueError(f"--iou must be in (0, 1], got {args.iou}")
    output = Path(args.output)
    check_output(output, args.overwrite)
    pairs, failures = _pair_files(args.pred, args.gt)
    rows, preds, gts, scores = [], [], [], []
    for key, pred_path, gt_path in pairs:
        try:
            pred, gt = read_label_image(pred_path), read_label_image(gt_path)
            csv_path = pred_path.with_name(f"{key}{OUTPUT_SUFFIXES['csv']}")
            image_scores = export.read_csv_scores(csv_path) if csv_path.is_file() else None
            rows.append(_metrics_row(key, pred, gt, image_scores, args.iou))
        except (ValueError, OSError, KeyError) as e:
            failures.append(f"{pred_path} vs {gt_path}: {e}")
            continue
        preds.append(pred)
        gts.append(gt)
        scores.append(image_scores)
    for failure in failures:
        print(f"warning: {failure}", file=sys.stderr)
    if not rows:
        print("error: no (prediction, ground truth) pair could be evaluated", file=sys.stderr)
        return 1
    overall = _metrics_row("all", preds, gts, scores, args.iou)
    print(format_table(rows + [overall], args.iou))
    with atomic_open(output, "w") as f:
        json.dump({"iou_threshold": args.iou, "images": rows, "all": overall}, f, indent=1)
    print(f"metrics written to {args.output}")
    return 1 if failures else 0


def _metrics_row(name, pred, gt, scores, iou) -> dict:
    from lacss_core import metrics

    return {
        "image": name,
        "coco": metrics.coco_mask_ap(pred, gt, scores).to_dict(),
        "accuracy": metrics.object_accuracy(pred, gt, iou).to_dict(),
    }


def format_table(rows, iou) -> str:
    """A fixed-width text table of per-image metrics rows (the last row: all images)."""
    columns = ("image", "n_gt", "n_pred", "AP50", "AP75", "mAP", f"acc@{iou:g}", "prec", "recall")
    columns += ("F1",)
    width = max(12, *(len(r["image"]) for r in rows))
    lines = [f"{columns[0]:<{width}}" + "".join(f"{c:>9}" for c in columns[1:])]
    for row in rows:
        coco, acc = row["coco"], row["accuracy"]
        values = [coco["n_gt"], coco["n_pred"], coco["ap50"], coco["ap75"], coco["map"]]
        values += [acc["accuracy"], acc["precision"], acc["recall"], acc["f1"]]
        cells = [f"{v:>9d}" if isinstance(v, int) else f"{v:>9.3f}" for v in values]
        lines.append(f"{row['image']:<{width}}" + "".join(cells))
    return "\n".join(lines)
