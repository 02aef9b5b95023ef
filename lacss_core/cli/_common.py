"""What several ``lacss`` commands share: file name conventions, input expansion, messages."""

from __future__ import annotations

import glob
import sys
from pathlib import Path

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
# The overlay of a stack segmented per plane (`--stack-mode per-plane`): an RGB TIFF stack.
STACK_OVERLAY_SUFFIX = "_overlay.tif"
# Trailing parts of a label file's stem that `lacss evaluate` drops to pair it with its partner.
LABEL_STEM_SUFFIXES = ("_cp_masks", "_masks", "_mask", "_labels", "_label")


def report(message: str) -> None:
    """A message for the user on stderr that does not break a tqdm progress bar."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def add_progress_options(p, quiet: bool) -> None:
    """``--log-every`` (and ``--quiet``): how a command reports progress (lacss_core._progress)."""
    g = p.add_argument_group("progress")
    g.add_argument(
        "--log-every",
        default="auto",
        metavar="N|Ns",
        help="when output is not a terminal (a log file, CI), print a progress line every N "
        "steps, or every N seconds with Ns (default: about 20 lines per run); on a terminal a "
        "progress bar",
    )
    if quiet:
        g.add_argument("--quiet", action="store_true", help="print nothing but warnings and errors")


def add_max_overlap_option(group, what: str = "drop") -> None:
    """``--max-overlap``: ``predict_instances``' ``max_overlap`` (mask NMS)."""
    from lacss_core.postprocess import DEFAULT_MAX_OVERLAP

    group.add_argument(
        "--max-overlap",
        type=float,
        default=DEFAULT_MAX_OVERLAP,
        help=f"{what} a cell when more than this fraction of its mask lies under better cells "
        f"(a cell found twice; 1 keeps all; default: {DEFAULT_MAX_OVERLAP})",
    )


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
