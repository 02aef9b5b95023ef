"""``lacss calibrate``: choose a model's prediction thresholds on labelled validation images."""

from __future__ import annotations

import json
from pathlib import Path


def add_calibrate_parser(subparsers) -> None:
    """Register ``lacss calibrate`` and its options."""
    p = subparsers.add_parser(
        "calibrate",
        help="choose a model's min_score, segmentation threshold and NMS distance on "
        "labelled validation images",
        description="Segment the validation images with every combination of the grids below "
        "and keep the combination with the best F1 at IoU 0.5 (or AP50): the network runs once "
        "per image and NMS distance. The chosen values are stored in the model's config, so "
        "`lacss predict` and predict_instances use them by default. Prints the best settings, "
        "the score at the model's current values and at the chosen ones. The model is written "
        "to -o OUT_MODEL; MODEL itself is replaced only with --in-place (atomically: never "
        "half-written). Use images held out from training.",
        epilog="example: lacss calibrate cells.keras data/val -o cells_calibrated.keras",
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="a .keras model file (from `lacss train`) or a shipped pretrained model name",
    )
    p.add_argument(
        "data",
        metavar="VALIDATION_DATA",
        help="folder of labelled images: IMAGE.tif with IMAGE_masks.tif (as for lacss train)",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("-o", "--output", metavar="OUT_MODEL", help="calibrated model (.keras)")
    where.add_argument(
        "--in-place", action="store_true", help="replace MODEL with the calibrated model"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT_MODEL")
    _add_grid_options(p)
    _add_prediction_options(p)
    p.set_defaults(run=run_calibrate)


def _add_grid_options(p) -> None:
    """What is maximised, the values tried, and the report."""
    from lacss_core.calibrate import DEFAULT_MIN_SCORES, DEFAULT_SEGMENTATION_THRESHOLDS, METRICS

    g = p.add_argument_group("search")
    g.add_argument(
        "--metric",
        choices=METRICS,
        default="f1",
        help="what to maximise: f1 (F1 at IoU 0.5, the default), f1_mean (mean F1 at IoU "
        "0.5-0.95, for tight masks too), ap50 (COCO AP50 for the mask threshold and NMS "
        "distance; min_score by F1, as AP50 would always take the lowest) or map (the same "
        "with COCO mAP at IoU 0.5-0.95, which chooses the mask threshold for tight masks)",
    )
    g.add_argument(
        "--min-scores",
        type=parse_numbers,
        default=DEFAULT_MIN_SCORES,
        help="comma-separated proposal score thresholds to try (default: 0.05 to 0.9 by 0.05)",
    )
    g.add_argument(
        "--thresholds",
        type=parse_numbers,
        default=DEFAULT_SEGMENTATION_THRESHOLDS,
        help="segmentation thresholds to try (default: "
        + ",".join(f"{v:g}" for v in DEFAULT_SEGMENTATION_THRESHOLDS)
        + ")",
    )
    g.add_argument(
        "--nms-distances",
        type=parse_numbers,
        help="NMS distances in pixels to try (default: 0.5, 1, 1.5 and 2 times the LPN stride); "
        "each costs one more pass of the per-instance layers",
    )
    g.add_argument(
        "--report",
        metavar="JSON",
        help="also write the whole score table and the choice to this JSON file",
    )


def _add_prediction_options(p) -> None:
    """The ``predict_instances`` options the validation images are segmented with."""
    from lacss_core.cli._common import add_max_overlap_option

    g = p.add_argument_group("prediction options (use those you will predict with)")
    g.add_argument("--scale", type=float, default=1.0, help="resize factor (default: 1)")
    g.add_argument("--diameter", type=float, help="typical cell diameter in pixels (not auto)")
    g.add_argument(
        "--normalize",
        choices=("model", "percentile", "range", "standard", "none"),
        default="model",
        help="per-image intensity normalisation (default: the model's)",
    )
    g.add_argument("--channels", help="image channels to feed the model: indices or 'grey'")
    g.add_argument("--min-area", type=int, default=0, help="drop cells with fewer pixels")
    g.add_argument(
        "--no-clean-masks",
        dest="clean_masks",
        action="store_false",
        help="score the masks as painted (default: largest piece, holes filled)",
    )
    add_max_overlap_option(g, "score without")
    g.add_argument(
        "--augment",
        action="store_true",
        help="segment with flip test-time augmentation (for models you predict with "
        "`lacss predict --augment`)",
    )


def parse_numbers(text: str) -> list[float]:
    """``0.1,0.2,0.3`` -> ``[0.1, 0.2, 0.3]``."""
    import argparse

    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"must name at least one number, got {text!r}")
    return values


def _output_path(args) -> Path:
    """Where the calibrated model goes, checked before any work."""
    from lacss_core.cli.train import _check_writable

    if args.in_place:
        path = Path(args.model)
        if not path.is_file():
            raise ValueError(
                f"--in-place needs MODEL to be a .keras file, got {args.model!r}; use -o"
            )
        return path
    path = Path(args.output)
    if not path.name.endswith(".keras"):
        raise ValueError(f"-o must name a .keras file, got {args.output!r}")
    if path.is_dir():
        raise ValueError(f"-o {path} is a folder; name a .keras file")
    if path.exists() and not args.overwrite:
        raise ValueError(f"{path} exists; use --overwrite to replace it, or another -o")
    _check_writable(path.parent if str(path.parent) else Path("."), "-o")
    return path


def _check_report(args) -> None:
    from lacss_core.cli.train import _check_writable

    if args.report:
        report = Path(args.report)
        if report.is_dir():
            raise ValueError(f"--report {report} is a folder; name a .json file")
        _check_writable(report.parent if str(report.parent) else Path("."), "--report")


def run_calibrate(args) -> int:
    """``lacss calibrate``: choose the prediction settings on validation images; exit code."""
    from lacss_core._atomic import atomic_open
    from lacss_core._progress import track
    from lacss_core.calibrate import calibrate, format_table
    from lacss_core.cli.predict import load_model, parse_channels
    from lacss_core.data import load_labelled_folder
    from lacss_core.train import save_model

    output = _output_path(args)
    _check_report(args)
    if not Path(args.data).is_dir():
        raise ValueError(f"VALIDATION_DATA {args.data} does not exist or is not a folder")
    model = load_model(args.model)
    samples = load_labelled_folder(args.data)
    print(f"calibrating {args.model} on {len(samples)} image(s) in {args.data} ...", flush=True)
    result = calibrate(
        model,
        track(samples, "lacss calibrate", "image"),  # a crowded image takes seconds to minutes
        min_scores=args.min_scores,
        segmentation_thresholds=args.thresholds,
        nms_distances=args.nms_distances,
        metric=args.metric,
        store=True,
        scale=args.scale,
        diameter=args.diameter,
        normalize=None if args.normalize == "none" else args.normalize,
        channels=parse_channels(args.channels),
        clean_masks=args.clean_masks,
        max_overlap=args.max_overlap,
        min_area=args.min_area,
        augment=args.augment,
    )
    print(format_table(result))
    save_model(model, output)
    if args.report:
        with atomic_open(args.report, "w") as f:
            json.dump(result, f, indent=1)
    print(f"wrote {output}" + (f" and {args.report}" if args.report else ""))
    return 0
