"""Throughput of the realistic synthetic generator (``lacss_core.data.realistic``), one core.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/realistic_data.py [--size 256] [--images 60]

For each modality (and the training mix of all four, capped at ``--max-cells`` cells per image
as the training script does) it renders ``--images`` images of ``size x size`` pixels after one
warm-up image and prints images per second and the mean number of labelled cells. The generator
is NumPy/SciPy in one thread; run it with nothing else on the machine for clean numbers.
"""

from __future__ import annotations

import argparse
import time

from lacss_core.data.realistic import MODALITIES, render_scene


def throughput(modality, size: int, images: int, max_cells: int | None) -> tuple[float, float]:
    """``(images per second, mean labelled cells)`` for one modality (or mix)."""
    render_scene(0, modality=modality, size=size, max_cells=max_cells)
    cells = 0
    start = time.perf_counter()
    for i in range(images):
        cells += int(render_scene((1, i), modality=modality, size=size, max_cells=max_cells)
                     .label.max())  # fmt: skip
    return images / (time.perf_counter() - start), cells / images


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--max-cells", type=int, default=192)
    args = parser.parse_args(argv)
    print(f"| modality | images/s at {args.size}^2 (one core) | mean cells per image |")
    print("|---|---|---|")
    for modality in (*MODALITIES, MODALITIES):
        cap = args.max_cells if isinstance(modality, tuple) else None
        rate, cells = throughput(modality, args.size, args.images, cap)
        name = f"mix of all four (max_cells {cap})" if cap else modality
        print(f"| {name} | {rate:.1f} | {cells:.0f} |", flush=True)


if __name__ == "__main__":
    main()
