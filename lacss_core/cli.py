"""The ``lacss`` command line: ``lacss COMMAND --help`` describes each command.

Each command is a pair of functions, ``add_<command>_parser(subparsers)`` and
``run_<command>(args) -> int`` (the exit status); ``COMMANDS`` lists the ``add_*`` functions in
the order ``lacss --help`` shows them. Keras and the model are imported only by the commands that
need them, so ``lacss --help`` answers at once.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
LABEL_EXTENSIONS = (".tif", ".tiff", ".png")
# File name endings of `lacss predict`'s outputs, after the input's stem.
OUTPUT_SUFFIXES = {
    "label": "_label.tif",
    "overlay": "_overlay.png",
    "csv": "_cells.csv",
    "coco": "_coco.json",
    "rois": "_rois.zip",
}
# Trailing parts of a label file's stem that `lacss evaluate` drops to pair it with its partner.
LABEL_STEM_SUFFIXES = ("_cp_masks", "_masks", "_mask", "_labels", "_label")


def main(argv=None) -> int:
    """Entry point of the ``lacss`` console script; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if extra and not getattr(args, "pass_through", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    try:
        return args.run(args)
    except ValueError as error:  # bad input, named by the library: a message, not a traceback
        print(f"lacss {args.command}: error: {error}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lacss",
        description="LACSS cell segmentation: segment images, score segmentations, check the "
        "implementation. Run `lacss COMMAND --help` for the options of a command.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add_parser in COMMANDS:
        add_parser(subparsers)
    return parser


def _report(message: str) -> None:
    """A message for the user on stderr that does not break a tqdm progress bar."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


# ---------------------------------------------------------------------------- predict
def add_predict_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="segment image files with a model",
        description="Segment every input image and write, per image, into OUT: STEM_label.tif "
        "(uint16 label image, 0 = background, cells numbered by descending score), "
        "STEM_overlay.png (cell outlines on the image), STEM_cells.csv (label, score, y, x, area, "
        "bbox_y0, bbox_x0, bbox_y1, bbox_x1; pixels, bbox end exclusive) and, on request, "
        "STEM_coco.json and STEM_rois.zip. An unreadable file is reported and skipped; the exit "
        "status is 1 if any input failed. Large images are tiled automatically.",
        epilog="example: lacss predict model.keras images/ extra/*.tif -o results/",
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="a model saved by Keras (.keras file, e.g. from `lacss train` or `lacss demo`), or a "
        "preset name (lacss_tiny, lacss_resnet50) for an UNTRAINED model with random weights, "
        "useful only to try the pipeline",
    )
    p.add_argument(
        "inputs",
        metavar="INPUT",
        nargs="+",
        help="image files (.tif, .tiff, .png, .jpg), folders (their image files, not recursive; "
        "this command's own outputs are left out) or quoted glob patterns",
    )
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (created)")
    p.add_argument("--min-score", type=float, help="proposal score threshold (default: model's)")
    p.add_argument(
        "--nms-distance", type=float, help="min distance in pixels between cells (model's)"
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="segmentation probability threshold (default: %(default)s)",
    )
    p.add_argument(
        "--min-area", type=int, default=0, help="drop cells with fewer pixels (default: 0)"
    )
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="resize images by this factor before inference, e.g. 2 if cells are half the size "
        "of the training cells; results are mapped back (default: 1)",
    )
    p.add_argument(
        "--normalize",
        choices=("range", "standard", "none"),
        default="range",
        help="per-image intensity normalisation, as used in training (default: %(default)s)",
    )
    p.add_argument(
        "--tile-size",
        type=int,
        help="tile side in pixels for images larger than it (default: 1024)",
    )
    p.add_argument(
        "--tile-overlap",
        type=int,
        help="tile overlap in pixels, >= the model's crop size (default: 2 x crop size)",
    )
    p.add_argument("--coco", action="store_true", help="also write STEM_coco.json (COCO, RLE)")
    p.add_argument(
        "--rois", action="store_true", help="also write STEM_rois.zip (ImageJ/Fiji ROI set)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(run=run_predict)


def run_predict(args) -> int:
    from tqdm import tqdm

    own_outputs = (OUTPUT_SUFFIXES["label"], OUTPUT_SUFFIXES["overlay"])
    files, failures = expand_inputs(args.inputs, IMAGE_EXTENSIONS, skip=own_outputs)
    for failure in failures:
        _report(f"error: {failure}")
    if not files:
        _report("error: no input images found")
        return 1
    try:
        model = load_model(args.model)
    except ValueError as e:
        _report(f"error: {e}")
        return 2
    out_dir = Path(args.output)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _report(f"error: cannot create the output folder {out_dir}: {e}")
        return 2
    kinds = [k for k in OUTPUT_SUFFIXES if k not in ("coco", "rois") or getattr(args, k)]
    done, skipped, seen = 0, 0, {}
    for path in tqdm(files, desc="lacss predict", unit="image"):
        targets = {k: out_dir / f"{path.stem}{OUTPUT_SUFFIXES[k]}" for k in kinds}
        if path.stem in seen:
            failures.append(f"{path}: same name as {seen[path.stem]}; its outputs would clash")
            _report(f"error: {failures[-1]}")
            continue
        seen[path.stem] = path
        existing = [str(t) for t in targets.values() if t.exists()]
        if existing and not args.overwrite:
            _report(f"skipped {path}: {existing[0]} exists (use --overwrite to replace)")
            skipped += 1
            continue
        try:
            segment_file(model, path, targets, args)
            done += 1
        except Exception as e:  # any reader or model error: report it, go on with the batch
            failures.append(f"{path}: {e}")
            _report(f"error: {failures[-1]}")
    _report(f"{done} image(s) segmented into {out_dir}, {skipped} skipped, {len(failures)} failed")
    return 1 if failures else 0


def expand_inputs(inputs, extensions, skip=()) -> tuple[list[Path], list[str]]:
    """Files named by ``inputs`` (files, folders, glob patterns), and messages for the bad ones.

    Folders and patterns give their visible files with one of ``extensions`` whose names do not
    end with one of ``skip``; a file named explicitly is taken as it is.
    """
    files, failures = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = [p for p in sorted(path.iterdir()) if _is_input_file(p, extensions, skip)]
            if not found:
                failures.append(f"{item}: folder has no {'/'.join(extensions)} files")
        elif path.is_file():
            found = [path]
        elif any(char in item for char in "*?["):
            found = [Path(p) for p in sorted(glob.glob(item))]
            found = [p for p in found if _is_input_file(p, extensions, skip)]
            if not found:
                failures.append(f"{item}: pattern matches no {'/'.join(extensions)} file")
        else:
            found = []
            failures.append(f"{item}: no such file or folder")
        files.extend(p for p in found if p not in files)
    return files, failures


def _is_input_file(path: Path, extensions, skip) -> bool:
    return (
        path.is_file()
        and not path.name.startswith(".")
        and path.suffix.lower() in extensions
        and not path.name.endswith(tuple(skip))
    )


def load_model(name_or_path: str):
    """A ``Lacss`` model from a ``.keras`` file or, for a preset name, with random weights."""
    from lacss_core.models import Lacss

    path = Path(name_or_path)
    if path.is_file():
        import keras

        try:
            return keras.saving.load_model(path)
        except Exception as e:  # Keras raises many types for a bad archive
            raise ValueError(f"cannot load model {path}: {e}") from e
    if name_or_path in Lacss.presets():
        _report(f"warning: {name_or_path} is an untrained preset: random weights, random output")
        return Lacss.from_preset(name_or_path)
    presets = ", ".join(Lacss.presets())
    raise ValueError(f"model {name_or_path!r} is neither a .keras file nor a preset ({presets})")


def model_image(image: np.ndarray, channels) -> np.ndarray:
    """Fit a read ``(H, W, C)`` image to the model's channel count: colour to grey by the mean
    of the first three channels, grey to colour by repetition; other mismatches are errors."""
    have = image.shape[-1]
    if channels is None or have == channels:
        return image
    if channels == 1 and have in (3, 4):
        return image[..., :3].mean(axis=-1, keepdims=True)
    if have == 1:
        return np.repeat(image, channels, axis=-1)
    raise ValueError(f"image has {have} channels but the model expects {channels}")


def segment_file(model, path: Path, targets: dict, args) -> None:
    """Read, segment and write every requested output of one image file."""
    from lacss_core import export
    from lacss_core.data.io import read_image
    from lacss_core.predict import model_channels, predict_instances

    image = read_image(path)
    label, details = predict_instances(
        model,
        model_image(image, model_channels(model)),
        min_score=args.min_score,
        nms_distance=args.nms_distance,
        segmentation_threshold=args.threshold,
        min_area=args.min_area,
        scale=args.scale,
        normalize=None if args.normalize == "none" else args.normalize,
        tile_size=args.tile_size,
        tile_overlap=args.tile_overlap,
    )
    export.write_label_tiff(targets["label"], label)
    export.write_overlay_png(targets["overlay"], image, label)
    export.write_csv(targets["csv"], details)
    if "coco" in targets:
        export.write_coco_json(targets["coco"], label, details, file_name=path.name)
    if "rois" in targets:
        export.write_imagej_rois(targets["rois"], label)


# ---------------------------------------------------------------------------- evaluate
def add_evaluate_parser(subparsers) -> None:
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
        help="JSON file for the metrics (default: %(default)s)",
    )
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
    overlays = (OUTPUT_SUFFIXES["overlay"],)
    pred_files, failures = expand_inputs([pred_arg], LABEL_EXTENSIONS, skip=overlays)
    gt_files, gt_failures = expand_inputs([gt_arg], LABEL_EXTENSIONS, skip=overlays)
    failures += gt_failures
    preds, gts = _by_key(pred_files, failures), _by_key(gt_files, failures)
    for key in sorted(set(preds) - set(gts)):
        failures.append(f"{preds[key]}: no ground truth with stem {key!r}")
    for key in sorted(set(gts) - set(preds)):
        failures.append(f"{gts[key]}: no prediction with stem {key!r}")
    return [(k, preds[k], gts[k]) for k in sorted(set(preds) & set(gts))], failures


def run_evaluate(args) -> int:
    from lacss_core import export

    if not 0 < args.iou <= 1:
        print(f"error: --iou must be in (0, 1], got {args.iou}", file=sys.stderr)
        return 2
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
    with open(args.output, "w") as f:
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


# ---------------------------------------------------------------------------- conformance
def add_conformance_parser(subparsers) -> None:
    from lacss_core.conformance.__main__ import __doc__ as runner_doc

    p = subparsers.add_parser(
        "conformance",
        help="check the Keras ops against the NumPy oracle on every backend",
        description=runner_doc,
        add_help=False,  # `lacss conformance --help` shows the runner's own options
    )
    p.set_defaults(run=run_conformance, pass_through=True)


def run_conformance(args) -> int:
    from lacss_core.conformance.__main__ import main as conformance_main

    return conformance_main(args.extra, prog="lacss conformance")


# ---------------------------------------------------------------------------- demo
def add_demo_parser(subparsers) -> None:
    from lacss_core.demo import DemoSettings

    defaults = DemoSettings()
    p = subparsers.add_parser(
        "demo",
        help="train a tiny model on synthetic cells and segment held-out images (a few minutes)",
        description="Generate synthetic cells, train the lacss_tiny model fully supervised on the "
        "CPU, segment held-out images, print the COCO mask AP and write model.keras, "
        "training_curve.png and per-image label TIFFs and overlay PNGs into OUT.",
        epilog="example: lacss demo -o lacss_demo",
    )
    p.add_argument(
        "-o", "--output", default="lacss_demo", help="output folder (default: %(default)s)"
    )
    p.add_argument(
        "--steps", type=int, default=defaults.steps, help="training steps (default: %(default)s)"
    )
    p.add_argument(
        "--test-images",
        type=int,
        default=defaults.test_images,
        help="held-out images to segment (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=defaults.seed, help="default: %(default)s")
    p.set_defaults(run=run_demo)


def run_demo(args) -> int:
    from dataclasses import replace

    from lacss_core.demo import DemoSettings, run_demo

    for name in ("steps", "test_images"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    settings = replace(
        DemoSettings(), steps=args.steps, test_images=args.test_images, seed=args.seed
    )
    run_demo(args.output, settings)
    return 0


# ---------------------------------------------------------------------------- train
def add_train_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model from a folder of labelled images, or of points + masks",
        description="Train LACSS. Fully supervised: DATA holds IMAGE.tif with IMAGE_masks.tif "
        "label images. Weakly supervised (--weak): DATA holds IMAGE.tif, IMAGE_points.csv (y,x "
        "per cell) and IMAGE_mask.tif (binary foreground). Writes the model (-o), checkpoints "
        "(resumed if present) and a training-curve PNG beside the model.",
        epilog="example: lacss train data/train -o cells.keras --steps 5000 --validation data/val",
    )
    p.add_argument("data", help="training folder")
    p.add_argument("-o", "--output", required=True, help="model file to write (.keras)")
    g = p.add_argument_group("model")
    g.add_argument(
        "--preset", default="lacss_tiny", help="model preset for a new model (default: %(default)s)"
    )
    g.add_argument("--init", help="start from this saved model (transfer learning)")
    g.add_argument("--crop-size", type=int, help="segmentation crop in pixels (new models)")
    g.add_argument(
        "--auxnet",
        action="store_true",
        help="with --weak: add the auxnet and its cell-boundary loss (new models)",
    )
    g = p.add_argument_group("training")
    g.add_argument(
        "--weak",
        action="store_true",
        help="weakly supervised (points + masks); a new model then gets the segmentor head bias "
        "and centre prior that keep it from collapsing (docs/results.md)",
    )
    g.add_argument("--steps", type=int, default=1000, help="default: %(default)s")
    g.add_argument("--batch-size", type=int, default=4, help="default: %(default)s")
    g.add_argument(
        "--size", type=int, default=256, help="training crop side in pixels (default: %(default)s)"
    )
    g.add_argument(
        "--max-instances",
        type=int,
        default=256,
        help="cells per training image (default: %(default)s)",
    )
    g.add_argument("--learning-rate", type=float, default=1e-3, help="default: %(default)s")
    g.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    g.add_argument(
        "--data-parallel",
        action="store_true",
        help="JAX: split every batch over all local devices (keras.distribution)",
    )
    g = p.add_argument_group("checkpoints and validation")
    g.add_argument(
        "--checkpoint-dir", help="checkpoint folder (default: OUTPUT without suffix + _checkpoints)"
    )
    g.add_argument("--checkpoint-every", type=int, default=500, help="default: %(default)s")
    g.add_argument("--validation", help="folder of labelled images for validation AP50")
    g.add_argument("--validate-every", type=int, default=500, help="default: %(default)s")
    p.set_defaults(run=run_train)


# Opt-in segmentor settings that let weakly supervised training from random weights learn.
WEAK_FROM_SCRATCH = {"segmentor_head_bias_init": -4.0, "centre_prior_sigma": 3.0}


def _training_model(args):
    import keras

    from lacss_core.models import Lacss

    if args.init:
        return keras.saving.load_model(args.init)
    overrides = {"use_auxnet": bool(args.weak and args.auxnet)}
    if args.weak:  # from scratch, the SPEC head collapses under L_WS (docs/results.md)
        overrides.update(WEAK_FROM_SCRATCH)
    if args.crop_size:
        overrides["crop_size"] = args.crop_size
    return Lacss.from_preset(args.preset, **overrides)


def run_train(args) -> int:
    from lacss_core.data import LacssDataset, load_labelled_folder, load_point_folder
    from lacss_core.train import BEST_FILE, plot_history, train

    if not args.output.endswith(".keras"):
        raise ValueError(f"--output must end in .keras, got {args.output!r}")
    if args.data_parallel:  # before the model exists, so its weights are replicated
        from lacss_core.distributed import data_parallel

        data_parallel()
    samples = load_point_folder(args.data) if args.weak else load_labelled_folder(args.data)
    data = LacssDataset(
        samples,
        batch_size=args.batch_size,
        max_instances=args.max_instances,
        supervision="weak" if args.weak else "full",
        size=(args.size, args.size),
        augment=True,
        seed=args.seed,
    )
    if args.data_parallel:
        from lacss_core.distributed import local_batches

        data = local_batches(data)  # each host feeds its rows of every batch (no-op on one)
    validation = load_labelled_folder(args.validation) if args.validation else None
    stem = Path(args.output).with_suffix("")
    checkpoint_dir = args.checkpoint_dir or f"{stem}_checkpoints"
    model = _training_model(args)
    history = train(
        model,
        data,
        steps=args.steps,
        learning_rate=args.learning_rate,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=args.checkpoint_every,
        validation_data=validation,
        validate_every=args.validate_every,
        seed=args.seed,
    )
    model.save(args.output)
    plot_history(history, f"{stem}_training_curve.png")
    best = Path(checkpoint_dir) / BEST_FILE
    print(
        f"wrote {args.output} and {stem}_training_curve.png"
        + (f"; best validation model: {best}" if validation else "")
    )
    return 0


COMMANDS = [
    add_demo_parser,
    add_predict_parser,
    add_train_parser,
    add_evaluate_parser,
    add_conformance_parser,
]

if __name__ == "__main__":
    sys.exit(main())
