"""``lacss predict``: segment image files with a saved model.

What keeps a folder of results trustworthy:

* Options are checked once, against the model, before any image is read (exit 2).
* The output folder is locked for the run (``OUT/.lacss.lock`` names the holder), so two runs
  cannot mix their files, and an unwritable folder is found before any work.
* Every file is written atomically (``lacss_core._atomic``), so an interrupted run leaves no
  truncated file, and an image counts as done only when all its requested outputs were written
  and logged in ``OUT/lacss_predict.jsonl``: a rerun of the same command finishes what an
  interrupted one left partial.
* The log also records the model and options that made each image's outputs; adding results of
  other settings to the folder needs ``--overwrite`` (else the folder would mix two models).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from lacss_core.cli._common import (
    IMAGE_EXTENSIONS,
    OUTPUT_SUFFIXES,
    STACK_OVERLAY_SUFFIX,
    add_max_overlap_option,
    expand_inputs,
    report,
)

STACK_MODES = ("error", "per-plane", "channels")
LOG_NAME = "lacss_predict.jsonl"


def _pretrained_models_help() -> str:
    """The known pretrained models and the default one, for the help (a broken
    ``$LACSS_PRETRAINED_DIR`` is said there, not raised: ``--help`` must still print)."""
    from lacss_core import pretrained

    try:
        names = ", ".join(pretrained.available())
    except ValueError as error:
        names = f"the model registry cannot be read: {error}"
    return f"{names}; {pretrained.DEFAULT_MODEL} is the default"


def add_predict_parser(subparsers) -> None:
    """Register ``lacss predict`` and its options."""
    p = subparsers.add_parser(
        "predict",
        help="segment image files with a model",
        description="Segment every input image and write, per image, into OUT: STEM_label.tif "
        "(uint16 label image, 0 = background, cells numbered by descending score), "
        "STEM_overlay.png (cell outlines on the image), STEM_cells.csv (label, score, y, x, area, "
        "bbox_y0, bbox_x0, bbox_y1, bbox_x1, in_saturated_tile; pixels, bbox end exclusive) and, "
        "on request, STEM_coco.json and STEM_rois.zip. An unreadable file is reported and "
        "skipped; the exit status is 1 if any input failed, 2 for a usage error (nothing is "
        "done). Large images are tiled automatically; a tile that holds as many cells as the "
        "model can return is split, and one still full at the smallest tile size is reported as "
        "saturated (cells may be missing there): on stderr, in the CSV's in_saturated_tile "
        "column and in the COCO json's info.saturated_tiles. Files are written atomically and "
        "the folder is locked while "
        "a run writes into it; a rerun skips images whose outputs are complete and finishes the "
        "others. Z-stacks and time series (from the file's axes metadata) are refused unless "
        "you pick a plane (--plane) or segment every plane (--stack-mode per-plane: a label "
        "stack, an overlay TIFF stack and one table with a plane column). A zarr array or OME-Zarr "
        "image (a .zarr folder) is segmented block by block, in memory that does not grow with "
        "its size, into STEM_label.zarr (int32, chunked, compressed) and STEM_cells.csv; "
        "--dask runs its blocks on a Dask cluster.",
        epilog="example: lacss predict images/ -o results/ (the default pretrained model), or "
        "lacss predict model.keras images/ extra/*.tif -o results/",
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        nargs="?",
        help=f"a shipped pretrained model ({_pretrained_models_help()} "
        "when MODEL is left out; docs/model_card.md describes each), a model saved by Keras "
        "(.keras file, e.g. from `lacss train` or `lacss demo`), or a preset name (lacss_tiny, "
        "lacss_small, lacss_resnet50) for an UNTRAINED model with random weights, useful only "
        "to try the pipeline",
    )
    p.add_argument(
        "inputs",
        metavar="INPUT",
        nargs="+",
        help="image files (.tif, .tiff, .png, .jpg), zarr arrays or OME-Zarr images (.zarr "
        "folders), folders (their image files, not recursive; this command's own outputs are "
        "left out) or quoted glob patterns",
    )
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (created)")
    _add_detection_options(p)
    _add_scale_options(p)
    _add_input_options(p)
    _add_tiling_options(p)
    _add_output_options(p)
    p.set_defaults(run=run_predict)


def _add_detection_options(p) -> None:
    """Thresholds and mask clean-up (default: the model's own settings)."""
    g = p.add_argument_group("detection")
    g.add_argument(
        "--min-score", type=float, help="proposal score threshold in [0, 1] (default: model's)"
    )
    g.add_argument(
        "--nms-distance", type=float, help="min distance in pixels between cells (model's)"
    )
    g.add_argument(
        "--threshold",
        type=float,
        help="segmentation probability threshold in [0, 1) (default: the model's, 0.5 unless "
        "calibrated by `lacss calibrate` or `lacss train --validation`)",
    )
    g.add_argument(
        "--min-area", type=int, default=0, help="drop cells with fewer pixels (default: 0)"
    )
    g.add_argument(
        "--no-clean-masks",
        dest="clean_masks",
        action="store_false",
        help="keep the masks as painted (default: each cell's largest piece, holes filled)",
    )
    add_max_overlap_option(g)
    g.add_argument(
        "--augment",
        action="store_true",
        help="average the model over the image and its three flips (test-time augmentation: "
        "smoother masks and steadier scores, about 4x slower)",
    )


def _add_scale_options(p) -> None:
    """How images are resized and normalised before the model sees them."""
    g = p.add_argument_group("scale and intensity")
    g.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="resize images by this factor before inference, e.g. 2 if cells are half the size "
        "of the training cells; results are mapped back (default: 1)",
    )
    g.add_argument(
        "--diameter",
        type=diameter_argument,
        help="typical cell diameter in pixels (instead of --scale: images are resized by the "
        "model's training diameter / this), or 'auto' to estimate it from a first pass",
    )
    g.add_argument(
        "--normalize",
        choices=("model", "percentile", "range", "standard", "none"),
        default="model",
        help="per-image intensity normalisation (default: the one the model was trained with, "
        "percentile 1-99.8 for new models)",
    )


def _add_input_options(p) -> None:
    """Which channels and planes of an image are segmented."""
    g = p.add_argument_group("channels and stacks")
    g.add_argument(
        "--channels",
        help="which image channels feed the model: comma-separated indices (e.g. 1 for green, "
        "0,0,0 to repeat grey for a 3-channel model) or 'grey' (their mean). Default: the "
        "image must have the model's channel count (identical channels count as grey)",
    )
    g.add_argument(
        "--plane",
        type=int,
        help="segment only this plane of a stack (0-based, in the file's order)",
    )
    g.add_argument(
        "--stack-mode",
        choices=STACK_MODES,
        default="error",
        help="a z-stack / time series / multi-page TIFF: 'error' (refuse, default), "
        "'per-plane' (segment every plane, write stacks), 'channels' (its planes are channels)",
    )


def _add_tiling_options(p) -> None:
    """Tiling, model capacity, and zarr / Dask block processing."""
    g = p.add_argument_group("tiles and large images")
    g.add_argument(
        "--tile-size",
        type=int,
        help="tile side in pixels for images larger than it (default: from the model's "
        "capacity, max_output cells per tile)",
    )
    g.add_argument(
        "--tile-overlap",
        type=int,
        help="tile overlap in pixels, >= the model's crop size (default: 2 x crop size)",
    )
    g.add_argument(
        "--max-output",
        type=int,
        metavar="N",
        help="the most cells one tile can hold (default: the model's max_output); raise it if "
        "tiles are reported saturated",
    )
    g.add_argument(
        "--dask",
        nargs="?",
        const="local",
        metavar="SCHEDULER_ADDRESS",
        help="segment zarr inputs on Dask: alone, a LocalCluster of worker processes on this "
        "machine; with an address (e.g. tcp://host:8786, or put it last or write "
        "--dask=ADDRESS), that cluster's workers (docs/large_images.md)",
    )
    g.add_argument(
        "--workers",
        type=int,
        help="worker processes of the --dask LocalCluster (default: half the cores, at most 8)",
    )
    g.add_argument(
        "--block-size",
        type=int,
        default=2048,
        help="zarr inputs: block side in pixels; memory follows it (default: 2048)",
    )


def _add_output_options(p) -> None:
    """Extra output files and --overwrite."""
    g = p.add_argument_group("outputs")
    g.add_argument("--coco", action="store_true", help="also write STEM_coco.json (COCO, RLE)")
    g.add_argument(
        "--rois", action="store_true", help="also write STEM_rois.zip (ImageJ/Fiji ROI set)"
    )
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="segment every input again, replacing its outputs (and deleting outputs of kinds "
        "not requested now), also when OUT holds results of another model or other options",
    )


# ---------------------------------------------------------------------------- options
def parse_channels(text: str | None):
    """``--channels``: None, ``"grey"`` or a list of channel indices."""
    if text is None:
        return None
    if text.strip().lower() in ("grey", "gray"):
        return "grey"
    try:
        indices = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--channels must be 'grey' or comma-separated channel indices, got {text!r}"
        ) from None
    if any(i < 0 for i in indices):
        raise ValueError(f"--channels indices must be >= 0, got {text!r}")
    return indices


def diameter_argument(text: str):
    """``--diameter``: ``"auto"`` or a number of pixels > 0."""
    from lacss_core.predict import parse_diameter  # lazy: keeps ``lacss --help`` fast

    try:
        return parse_diameter(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def predict_options(args) -> dict:
    """The keyword arguments of ``predict_instances`` that the command line sets."""
    return dict(
        min_score=args.min_score,
        nms_distance=args.nms_distance,
        segmentation_threshold=args.threshold,
        min_area=args.min_area,
        scale=args.scale,
        diameter=args.diameter,
        normalize=None if args.normalize == "none" else args.normalize,
        clean_masks=args.clean_masks,
        max_overlap=args.max_overlap,
        tile_size=args.tile_size,
        tile_overlap=args.tile_overlap,
        max_output=args.max_output,
        channels=parse_channels(args.channels),
        augment=args.augment,
    )


def _cli_message(error: ValueError) -> str:
    """The library's option names, as the command line spells them."""
    text = str(error)
    for name, option in (
        ("segmentation_threshold", "--threshold"),
        ("min_score", "--min-score"),
        ("nms_distance", "--nms-distance"),
        ("min_area", "--min-area"),
        ("tile_overlap", "--tile-overlap"),
        ("tile_size", "--tile-size"),
        ("max_output", "--max-output"),
        ("scale", "--scale"),
        ("diameter", "--diameter"),
    ):
        if text.startswith(name):
            return option + text[len(name) :]
    return text


def check_predict_args(args, model) -> dict:
    """Every usage error, once, before any image is read; returns ``predict_options``."""
    from lacss_core.predict import check_options

    if args.plane is not None and args.plane < 0:
        raise ValueError(f"--plane must be >= 0, got {args.plane}")
    if args.plane is not None and args.stack_mode != "error":
        raise ValueError("--plane picks one plane; it cannot be combined with --stack-mode")
    options = predict_options(args)
    try:
        check_options(model, **options)
    except ValueError as e:
        raise ValueError(_cli_message(e)) from None
    return options


def model_identity(name_or_path: str) -> dict:
    """What the results depend on about the model: a preset name, or the file's SHA-256 (so a
    moved or renamed model file is still the same model)."""
    from lacss_core import pretrained

    if pretrained.has_weights(name_or_path):
        return {"pretrained": name_or_path, "sha256": pretrained.info(name_or_path)["sha256"]}
    path = Path(name_or_path)
    if not path.is_file():
        return {"preset": name_or_path}
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"sha256": digest.hexdigest()}


# ---------------------------------------------------------------------------- the run
def run_predict(args) -> int:
    """``lacss predict``: segment every input image into the output folder; exit code
    (1 if any image failed)."""
    from lacss_core._atomic import remove_stale_temporaries
    from lacss_core._progress import track

    model_name, inputs = split_model_argument(args.model, args.inputs)
    zarrs, files, failures = _collect_inputs(args, inputs)
    if not files:
        report("error: no input images found")
        return 1
    model = load_model(model_name)
    options = check_predict_args(args, model)
    if zarrs:
        check_zarr_args(args)
    out_dir = Path(args.output)
    lock = _lock_output_folder(out_dir)
    try:
        remove_stale_temporaries(out_dir)
        batch = _PredictBatch(args, model, model_name, options, out_dir, zarrs)
        for path in track(files, "lacss predict", "image"):
            batch.segment(path)
    finally:
        lock.release()
    failures += batch.failures
    if batch.saturated:
        report(f"warning: {batch.saturated} image(s) had saturated tiles: cells may be missing")
    report(
        f"{batch.done} image(s) segmented into {out_dir}, {batch.skipped} skipped, "
        f"{len(failures)} failed"
    )
    return 1 if failures else 0


class _PredictBatch:
    """One ``lacss predict`` run over its inputs: the result log, the run's settings and counts.

    ``segment(path)`` does one input: refuses a name that would clash with an earlier input's
    outputs, skips one whose outputs this run's settings already completed, else segments it,
    removes outputs of other kinds and logs what it wrote. A failure is reported and counted,
    and the batch goes on.
    """

    def __init__(self, args, model, model_name, options, out_dir: Path, zarrs):
        self.args, self.model, self.model_name = args, model, model_name
        self.options, self.out_dir, self.zarrs = options, out_dir, set(zarrs)
        self.log = ResultLog(out_dir)
        settings = {
            "model": model_identity(model_name),
            "options": options,
            "plane": args.plane,
            "stack_mode": args.stack_mode,
        }
        self.run_id = self.log.start(settings, overwrite=args.overwrite, model=model_name)
        self.kinds = [k for k in OUTPUT_SUFFIXES if k not in ("coco", "rois") or getattr(args, k)]
        self.done = self.skipped = self.saturated = 0
        self.failures: list[str] = []
        self._stems: dict[str, Path] = {}  # output stem -> the input that claimed it

    def segment(self, path: Path) -> None:
        if self._clashes(path):
            return
        wanted = ZARR_KINDS if path in self.zarrs else self.kinds
        if not self.args.overwrite and self.log.complete(path.stem, self.run_id, wanted):
            report(f"skipped {path}: its outputs exist (use --overwrite to replace them)")
            self.skipped += 1
            return
        try:
            written, saturated_tiles = self._write_outputs(path)
        except Exception as e:  # any reader or model error: report it, go on with the batch
            self._fail(f"{path}: {e}")
            return
        self.log.record(path, self.run_id, wanted, written)
        self.done += 1
        if saturated_tiles:
            self.saturated += 1
            report(
                f"warning: {path}: {saturated_tiles} tile(s) still held the model's full "
                f"capacity ({self.args.max_output or self.model.max_output} cells) at the "
                "smallest tile size, so cells may be missing there (in_saturated_tile = 1 in "
                "its CSV marks the cells found in them); raise --max-output or check --min-score"
            )

    def _clashes(self, path: Path) -> bool:
        """True (and reported) if an earlier input already claimed ``path``'s output names."""
        if path.stem in self._stems:
            self._fail(f"{path}: same name as {self._stems[path.stem]}; its outputs would clash")
            return True
        self._stems[path.stem] = path
        if path in self.zarrs and zarr_stem(path) != path.stem:
            self._stems[zarr_stem(path)] = path
        return False

    def _write_outputs(self, path: Path):
        """``(written, saturated_tiles)`` of segmenting one input into the output folder."""
        args, out_dir = self.args, self.out_dir
        if path in self.zarrs:
            return segment_zarr(self.model, self.model_name, path, out_dir, self.options, args)
        written, saturated_tiles = segment_file(
            self.model, path, out_dir, self.kinds, self.options, args
        )
        remove_other_outputs(out_dir, path.stem, keep=written)
        return written, saturated_tiles

    def _fail(self, message: str) -> None:
        self.failures.append(message)
        report(f"error: {message}")


def _collect_inputs(args, inputs) -> tuple[list[Path], list[Path], list[str]]:
    """``(zarrs, files, failures)``: the zarr folders first in ``files``, then the image files of
    ``inputs`` (files, folders, patterns; not this command's own outputs); each failure is
    reported as it is found. ``--dask`` takes zarr images only (ValueError otherwise)."""
    from lacss_core.zarr_io import is_zarr_path

    own_outputs = (OUTPUT_SUFFIXES["label"], OUTPUT_SUFFIXES["overlay"], STACK_OVERLAY_SUFFIX)
    zarrs = [Path(item) for item in inputs if is_zarr_path(item) and Path(item).is_dir()]
    inputs = [item for item in inputs if Path(item) not in zarrs]
    files, failures = (
        expand_inputs(inputs, IMAGE_EXTENSIONS, skip=own_outputs) if inputs else ([], [])
    )
    for failure in failures:
        report(f"error: {failure}")
    if args.dask is not None and files:
        raise ValueError(
            f"--dask segments zarr images; {files[0]} is not one (convert it to zarr, or leave "
            "out --dask)"
        )
    return zarrs, zarrs + files, failures


def _lock_output_folder(out_dir: Path):
    """The acquired ``FolderLock`` of ``out_dir`` (created if missing), or ValueError naming it."""
    from lacss_core._lock import FolderLock

    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output folder {out_dir} exists and is not a folder")
    try:
        lock = FolderLock(out_dir, purpose="lacss predict")
        lock.acquire()
    except OSError as e:
        raise ValueError(f"cannot write into the output folder {out_dir}: {e}") from e
    return lock


def split_model_argument(model, inputs) -> tuple[str, list[str]]:
    """``(model, inputs)``: MODEL is optional, so a first argument that is an input (an existing
    image file or folder, or a glob pattern) and names no model is the first input, and the
    default model (``lacss_core.pretrained.DEFAULT_MODEL``) segments them all."""
    from lacss_core import pretrained

    if model is None:
        return pretrained.DEFAULT_MODEL, list(inputs)
    path = Path(model)
    pattern = any(char in model for char in "*?[")
    is_input = (path.is_dir() or path.suffix.lower() in IMAGE_EXTENSIONS or pattern) and (
        model not in pretrained.available()
    )
    if is_input:
        return pretrained.DEFAULT_MODEL, [model, *inputs]
    return model, list(inputs)


def load_model(name_or_path: str):
    """A ``Lacss`` model: a shipped pretrained model, a ``.keras`` file or, for a preset name,
    one with random weights."""
    from lacss_core import pretrained
    from lacss_core._model_file import load_lacss_model
    from lacss_core.models import Lacss

    if name_or_path in pretrained.available():
        return pretrained.load_pretrained(name_or_path)

    path = Path(name_or_path)
    if path.exists() or name_or_path.endswith(".keras"):
        return load_lacss_model(path)
    if name_or_path in Lacss.presets():
        report(f"warning: {name_or_path} is an untrained preset: random weights, random output")
        return Lacss.from_preset(name_or_path)
    presets = ", ".join(Lacss.presets())
    raise ValueError(
        f"model {name_or_path!r} is neither a .keras file nor a preset ({presets}) nor a "
        f"pretrained model ({', '.join(pretrained.available())})"
    )


# ---------------------------------------------------------------------------- zarr images
# What a zarr input gives: a label zarr and the per-cell table (no overlay, COCO or ROIs: an
# image larger than memory has no useful overlay PNG).
ZARR_KINDS = ("label", "csv")


def zarr_stem(path: Path) -> str:
    """``big.zarr`` -> ``big``; ``big.ome.zarr`` -> ``big``."""
    name = path.name
    for suffix in (".zarr", ".ome"):
        name = name[: -len(suffix)] if name.lower().endswith(suffix) else name
    return name


def check_zarr_args(args) -> None:
    """Options that zarr inputs cannot take, refused before any work."""
    if args.stack_mode != "error":
        raise ValueError("zarr inputs take one plane of a stack: use --plane N, not --stack-mode")
    if args.diameter is not None or args.scale != 1:
        raise ValueError(
            "zarr inputs are segmented at their own scale: leave out --scale and --diameter"
        )
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")


def segment_zarr(model, model_name, path: Path, out_dir: Path, options: dict, args):
    """Segment one zarr image block by block (on Dask with --dask); returns ``(names,
    saturated_tiles)`` like ``segment_file``. A rerun resumes an interrupted job."""
    from lacss_core import blockwise

    stem = zarr_stem(path)
    label = out_dir / f"{stem}_label.zarr"
    common = dict(plane=args.plane, block_size=args.block_size, overwrite=args.overwrite)
    if args.dask is None:
        summary = blockwise.predict_zarr(model, path, label, **common, **options)
    else:
        from lacss_core.dask_predict import distributed_predict

        client = None if args.dask == "local" else args.dask
        summary = distributed_predict(
            path, model_name, label, client=client, n_workers=args.workers, **common, **options
        )
    names = [label.name, Path(summary["table"]).name]
    return names, summary["saturated_tiles"]


# ---------------------------------------------------------------------------- one file
def output_names(stem: str, kinds, stacked: bool) -> dict[str, str]:
    """``{kind: file name}`` of an image's outputs."""
    names = {k: f"{stem}{OUTPUT_SUFFIXES[k]}" for k in kinds}
    if stacked and "overlay" in names:
        names["overlay"] = f"{stem}{STACK_OVERLAY_SUFFIX}"
    return names


def remove_other_outputs(out_dir: Path, stem: str, keep) -> None:
    """Delete outputs of ``stem`` that this run did not write (another kind, the 2-D / stack
    variant of the overlay), so a folder never pairs new outputs with stale ones."""
    suffixes = list(OUTPUT_SUFFIXES.values()) + [STACK_OVERLAY_SUFFIX]
    for name in (f"{stem}{suffix}" for suffix in suffixes):
        if name not in keep:
            (out_dir / name).unlink(missing_ok=True)


def _stack_message(path, planes) -> str:
    return (
        f"{path} is a stack, not one 2-D image: {planes.describe()}. Pick a plane with --plane N "
        f"(0..{len(planes.images) - 1}), segment every plane with --stack-mode per-plane, or, if "
        "that axis holds channels, use --stack-mode channels"
    )


def select_planes(path: Path, planes, args):
    """The image(s) to segment: ``(images (P, H, W, C), stacked)`` by --plane / --stack-mode."""
    count = len(planes.images)
    if args.plane is not None:
        if args.plane >= count:
            raise ValueError(f"--plane {args.plane}: {path} has {count} plane(s)")
        return planes.images[args.plane : args.plane + 1], False
    if count == 1:
        return planes.images, False
    if args.stack_mode == "per-plane":
        return planes.images, True
    if args.stack_mode == "channels":
        merged = np.moveaxis(planes.images, 0, -2)  # (H, W, P, C)
        return merged.reshape(merged.shape[:2] + (-1,))[None], False
    raise ValueError(_stack_message(path, planes))


def segment_file(model, path: Path, out_dir: Path, kinds, options: dict, args):
    """Read, segment and write every requested output of one image file.

    Returns ``(names, saturated_tiles)``: the file names written, and the number of saturated
    tiles over its planes (``details["saturated_tiles"]``; the caller reports them by file name).
    """
    import warnings

    from lacss_core import export
    from lacss_core.data.io import read_planes
    from lacss_core.predict import SaturationWarning, predict_instances

    planes = read_planes(path)
    images, stacked = select_planes(path, planes, args)
    names = output_names(path.stem, kinds, stacked)
    targets = {k: out_dir / name for k, name in names.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SaturationWarning)
        results = [predict_instances(model, image, **options) for image in images]
    labels = [label for label, _ in results]
    details = [d for _, d in results]
    if stacked:
        stack = {"axes": planes.axes, "shape": planes.shape}
        export.write_label_stack_tiff(targets["label"], np.stack(labels), **stack)
        export.write_overlay_stack_tiff(targets["overlay"], images, labels, **stack)
        export.write_stack_csv(targets["csv"], details)
        if "coco" in targets:
            export.write_stack_coco_json(targets["coco"], labels, details, file_name=path.name)
        if "rois" in targets:
            export.write_stack_imagej_rois(targets["rois"], labels)
        return list(names.values()), sum(d["saturated_tiles"] for d in details)
    export.write_label_tiff(targets["label"], labels[0])
    export.write_overlay_png(targets["overlay"], images[0], labels[0])
    export.write_csv(targets["csv"], details[0])
    if "coco" in targets:
        export.write_coco_json(targets["coco"], labels[0], details[0], file_name=path.name)
    if "rois" in targets:
        export.write_imagej_rois(targets["rois"], labels[0])
    return list(names.values()), details[0]["saturated_tiles"]


# ---------------------------------------------------------------------------- the result log
class ResultLog:
    """``OUT/lacss_predict.jsonl``: which settings made which image's outputs.

    One JSON object per line, appended and flushed: ``{"settings": ..., "id": ...}`` when a run
    starts, ``{"image": STEM, "input": ..., "id": ..., "kinds": [...], "outputs": [...]}`` once all
    of an image's outputs are written. A line cut short by a crash is ignored, so an image is
    complete only if its line made it (and its files still exist). The folder lock makes this
    process the only writer.
    """

    def __init__(self, out_dir: Path):
        self.path = out_dir / LOG_NAME
        self.out_dir = out_dir
        self.settings: dict[str, dict] = {}
        self.images: dict[str, dict] = {}
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash
                if "settings" in entry:
                    self.settings[entry["id"]] = entry["settings"]
                elif "image" in entry:
                    self.images[entry["image"]] = entry

    def start(self, settings: dict, *, overwrite: bool, model: str = "") -> str:
        """Log the run's settings (and, for people, the ``model`` argument); returns their id.
        Without ``overwrite``, refuse a folder that holds outputs made with other settings."""
        from lacss_core._run_record import differences

        settings = json.loads(json.dumps(settings))
        run_id = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        others = {e["id"] for e in self.images.values() if self._exists(e)} - {run_id}
        if others and not overwrite:
            other = self.settings.get(sorted(others)[0], {})
            count = sum(1 for e in self.images.values() if e["id"] in others)
            changes = "; ".join(differences(other, settings)[:4]) or "unknown settings"
            raise ValueError(
                f"{self.out_dir} holds results of {count} image(s) made with other settings "
                f"({changes}); use --overwrite to add these results beside them and replace "
                "those of the same images, or another output folder"
            )
        if run_id not in self.settings:
            started = time.strftime("%Y-%m-%d %H:%M:%S %z")
            self._append({"settings": settings, "id": run_id, "model": model, "started": started})
            self.settings[run_id] = settings
        return run_id

    def complete(self, stem: str, run_id: str, kinds) -> bool:
        """All requested outputs of ``stem`` exist and were logged by a run with these settings;
        outputs from before the log (no entry) count when all of their 2-D files exist."""
        entry = self.images.get(stem)
        if entry is None:
            names = output_names(stem, kinds, stacked=False).values()
            return all((self.out_dir / n).exists() for n in names)
        return entry["id"] == run_id and set(kinds) <= set(entry["kinds"]) and self._exists(entry)

    def _exists(self, entry) -> bool:
        return all((self.out_dir / name).exists() for name in entry["outputs"])

    def record(self, path: Path, run_id: str, kinds, outputs) -> None:
        """Append the completed outputs of one image to the log."""
        entry = {"image": path.stem, "input": str(path), "id": run_id}
        entry.update(kinds=list(kinds), outputs=list(outputs))
        self._append(entry)
        self.images[path.stem] = entry

    def _append(self, entry: dict) -> None:
        import os

        with open(self.path, "ab+") as f:
            if f.seek(0, os.SEEK_END) > 0:  # end a line a crash cut short, so this one parses
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
            f.write(json.dumps(entry).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
