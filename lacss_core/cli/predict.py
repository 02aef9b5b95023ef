"""``lacss predict``: segment image files with a saved model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lacss_core.cli._common import IMAGE_EXTENSIONS, OUTPUT_SUFFIXES, expand_inputs, report


def add_predict_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="segment image files with a model",
        description="Segment every input image and write, per image, into OUT: STEM_label.tif "
        "(uint16 label image, 0 = background, cells numbered by descending score), "
        "STEM_overlay.png (cell outlines on the image), STEM_cells.csv (label, score, y, x, area, "
        "bbox_y0, bbox_x0, bbox_y1, bbox_x1, in_saturated_tile; pixels, bbox end exclusive) and, "
        "on request, STEM_coco.json and STEM_rois.zip. An unreadable file is reported and "
        "skipped; the exit status is 1 if any input failed. Large images are tiled "
        "automatically; a tile that holds as many cells as the model can return is split, and "
        "one still full at the smallest tile size is reported as saturated (cells may be "
        "missing there): on stderr, in the CSV's in_saturated_tile column and in the COCO "
        "json's info.saturated_tiles.",
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
        help="tile side in pixels for images larger than it (default: from the model's "
        "capacity, max_output cells per tile)",
    )
    p.add_argument(
        "--tile-overlap",
        type=int,
        help="tile overlap in pixels, >= the model's crop size (default: 2 x crop size)",
    )
    p.add_argument(
        "--max-output",
        type=int,
        metavar="N",
        help="the most cells one tile can hold (default: the model's max_output); raise it if "
        "tiles are reported saturated",
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
        report(f"error: {failure}")
    if not files:
        report("error: no input images found")
        return 1
    try:
        model = load_model(args.model)
    except ValueError as e:
        report(f"error: {e}")
        return 2
    out_dir = Path(args.output)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        report(f"error: cannot create the output folder {out_dir}: {e}")
        return 2
    kinds = [k for k in OUTPUT_SUFFIXES if k not in ("coco", "rois") or getattr(args, k)]
    done, skipped, saturated, seen = 0, 0, 0, {}
    for path in tqdm(files, desc="lacss predict", unit="image"):
        targets = {k: out_dir / f"{path.stem}{OUTPUT_SUFFIXES[k]}" for k in kinds}
        if path.stem in seen:
            failures.append(f"{path}: same name as {seen[path.stem]}; its outputs would clash")
            report(f"error: {failures[-1]}")
            continue
        seen[path.stem] = path
        existing = [str(t) for t in targets.values() if t.exists()]
        if existing and not args.overwrite:
            report(f"skipped {path}: {existing[0]} exists (use --overwrite to replace)")
            skipped += 1
            continue
        try:
            saturated_tiles = segment_file(model, path, targets, args)
            done += 1
        except Exception as e:  # any reader or model error: report it, go on with the batch
            failures.append(f"{path}: {e}")
            report(f"error: {failures[-1]}")
            continue
        if saturated_tiles:
            saturated += 1
            report(
                f"warning: {path}: {saturated_tiles} tile(s) still held the model's full "
                f"capacity ({args.max_output or model.max_output} cells) at the smallest tile "
                "size, so cells may be missing there (in_saturated_tile = 1 in its CSV marks the "
                "cells found in them); raise --max-output or check --min-score"
            )
    report(f"{done} image(s) segmented into {out_dir}, {skipped} skipped, {len(failures)} failed")
    if saturated:
        report(f"warning: {saturated} image(s) had saturated tiles: cells may be missing")
    return 1 if failures else 0


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
        report(f"warning: {name_or_path} is an untrained preset: random weights, random output")
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


def segment_file(model, path: Path, targets: dict, args) -> int:
    """Read, segment and write every requested output of one image file; returns the number of
    saturated tiles (``details["saturated_tiles"]``; the caller reports them by file name)."""
    import warnings

    from lacss_core import export
    from lacss_core.data.io import read_image
    from lacss_core.predict import SaturationWarning, model_channels, predict_instances

    image = read_image(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SaturationWarning)
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
            max_output=args.max_output,
        )
    export.write_label_tiff(targets["label"], label)
    export.write_overlay_png(targets["overlay"], image, label)
    export.write_csv(targets["csv"], details)
    if "coco" in targets:
        export.write_coco_json(targets["coco"], label, details, file_name=path.name)
    if "rois" in targets:
        export.write_imagej_rois(targets["rois"], label)
    return details["saturated_tiles"]
