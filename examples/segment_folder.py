"""Segment every image in a folder with a saved LACSS model (either backend).

    python examples/segment_folder.py images/ --model lacss.keras --output results/

For each image ``name.tif`` (TIFF, PNG or JPEG) it writes ``name_label.tif`` (uint16 label image,
0 = background, cells numbered by descending score), ``name_cells.csv`` (one row per cell:
score, location, area, bounding box) and, with ``--overlay``, ``name_overlay.png``. Large images
are tiled automatically (``--tile-size``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lacss_core  # noqa: F401  # isort: skip (first: picks JAX or PyTorch for Keras)
import keras

from lacss_core import export
from lacss_core.data import read_image
from lacss_core.data.io import IMAGE_EXTENSIONS
from lacss_core.models import Lacss  # importing it registers the class for load_model
from lacss_core.predict import predict_instances


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder of images")
    parser.add_argument("--model", required=True, help="a saved .keras LACSS model")
    parser.add_argument("--output", type=Path, help="results folder (default: FOLDER/lacss)")
    parser.add_argument("--min-score", type=float, help="proposal score threshold")
    parser.add_argument("--min-area", type=int, default=0, help="smallest cell kept, pixels")
    parser.add_argument("--tile-size", type=int, help="tile side for large images, pixels")
    parser.add_argument("--overlay", action="store_true", help="also write outline overlays")
    return parser.parse_args(argv)


def image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise SystemExit(f"{folder} is not a folder")
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )
    if not files:
        raise SystemExit(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return files


def main(argv=None):
    args = parse_args(argv)
    files = image_files(args.folder)
    output = args.output or args.folder / "lacss"
    output.mkdir(parents=True, exist_ok=True)
    model = keras.saving.load_model(args.model)
    if not isinstance(model, Lacss):
        raise SystemExit(f"{args.model} holds a {type(model).__name__}, not a LACSS model")
    for path in files:
        image = read_image(path)
        label, details = predict_instances(
            model,
            image,
            min_score=args.min_score,
            min_area=args.min_area,
            tile_size=args.tile_size,
        )
        export.write_label_tiff(output / f"{path.stem}_label.tif", label)
        export.write_csv(output / f"{path.stem}_cells.csv", details)
        if args.overlay:
            export.write_overlay_png(output / f"{path.stem}_overlay.png", image, label)
        print(f"{path.name}: {int(label.max())} cells", flush=True)
    print(f"results in {output}")


if __name__ == "__main__":
    main()
