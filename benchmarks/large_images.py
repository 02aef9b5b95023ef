"""Throughput and peak memory of blockwise zarr prediction: one process, and Dask LocalClusters.

Usage: ``KERAS_BACKEND=jax python benchmarks/large_images.py [--size 8192] [--block 2048]
[--model model.keras] [--memory-sizes 4096 16384] [--no-write]``.

* Throughput (megapixels of input per second, wall time of the whole job, model loading and
  compilation included) and peak RSS per process, on a ``--size`` square uint16
  ``SyntheticSlide`` zarr (one cell per 32 x 32 px): ``predict_zarr`` in one process, and
  ``distributed_predict`` on a LocalCluster of 1 and of 2 worker processes (peak RSS of each
  worker; the client process holds no pixels).
* Memory does not grow with the image: ``predict_zarr``'s peak RSS on ``--memory-sizes`` images
  (4096^2 and 16384^2 by default; the issue asks for the larger within 20% of the smaller).

Every case runs in a fresh Python process (``--case``), so peaks do not mix. The model is
``--model`` or an untrained ``lacss_tiny`` with ``min_score`` 0.012 (random weights score about
0.008-0.014, so that keeps a few proposals per cell, as a trained model finds cells). The table is
printed and written as the "## Large images" section of ``docs/performance.md``. Run it on a quiet
machine: CI only checks that it runs at a tiny size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

SECTION = "## Large images"
MIN_SCORE = 0.012


def peak_rss_mb() -> float:
    """This process's peak resident set size, MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_image(size: int, folder: str) -> str:
    from lacss_core.data import SyntheticSlide

    path = os.path.join(folder, f"slide_{size}.zarr")
    if not os.path.exists(path):
        SyntheticSlide(size, seed=0).write_zarr(path, chunk=1024)
    return path


def make_model(folder: str) -> str:
    import keras

    from lacss_core.models import Lacss

    path = os.path.join(folder, "tiny.keras")
    if not os.path.exists(path):
        keras.utils.set_random_seed(0)
        model = Lacss.from_preset("lacss_tiny", min_score=MIN_SCORE)
        model.build((None, None, None, 1))
        model.save(path)
    return path


def run_case(args) -> dict:
    """One measurement in this process: ``single`` or ``dask`` with ``--workers``."""
    import shutil

    from lacss_core import blockwise

    output = os.path.join(args.folder, f"out_{args.case}_{args.workers}_{args.size}_label.zarr")
    shutil.rmtree(output, ignore_errors=True)
    shutil.rmtree(blockwise.work_folder(output), ignore_errors=True)
    start = time.perf_counter()
    if args.case == "single":
        model = blockwise.load_model_spec(args.model)
        summary = blockwise.predict_zarr(
            model, args.image, output, block_size=args.block, progress=False
        )
        rss = [peak_rss_mb()]
    else:
        from dask.distributed import Client, LocalCluster

        from lacss_core import distributed_predict

        with (
            LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=None) as c,
            Client(c) as client,
        ):
            summary = distributed_predict(
                args.image, args.model, output, client=client, block_size=args.block
            )
            rss = sorted(client.run(peak_rss_mb).values())
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "mp_per_s": args.size**2 / 1e6 / seconds,
        "rss_mb": rss,
        "cells": summary["cells"],
    }


def measure(case, workers, size, image, model, block, folder) -> dict:
    """``run_case`` in a fresh process; its JSON line."""
    command = [sys.executable, __file__, "--case", case, "--workers", str(workers)]
    command += ["--size", str(size), "--image", image, "--model", model]
    command += ["--block", str(block), "--folder", folder]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def table(rows) -> str:
    lines = [
        "| case | image | seconds | MP/s | peak RSS per process (MB) | cells |",
        "|---|---|---|---|---|---|",
    ]
    for name, size, r in rows:
        rss = ", ".join(f"{m:.0f}" for m in r["rss_mb"])
        lines.append(
            f"| {name} | {size}^2 | {r['seconds']:.1f} | {r['mp_per_s']:.2f} | {rss} | "
            f"{r['cells']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--block", type=int, default=2048)
    parser.add_argument("--memory-sizes", type=int, nargs="*", default=[4096, 16384])
    parser.add_argument("--model", help="a .keras file (default: an untrained lacss_tiny)")
    parser.add_argument("--folder", help="where images and outputs go (default: a temp folder)")
    parser.add_argument("--no-write", action="store_true", help="do not edit docs/performance.md")
    parser.add_argument("--case", choices=("single", "dask"), help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--image", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args)))
        return
    folder = args.folder or tempfile.mkdtemp(prefix="lacss-large-")
    os.makedirs(folder, exist_ok=True)
    model = args.model or make_model(folder)
    image = make_image(args.size, folder)
    rows = [("one process (predict_zarr)", args.size,
             measure("single", 1, args.size, image, model, args.block, folder))]  # fmt: skip
    for workers in (1, 2):
        result = measure("dask", workers, args.size, image, model, args.block, folder)
        rows.append((f"LocalCluster, {workers} worker(s)", args.size, result))
    peaks = []
    for size in args.memory_sizes:
        result = measure("single", 1, size, make_image(size, folder), model, args.block, folder)
        rows.append(("one process, memory check", size, result))
        peaks.append(result["rss_mb"][0])
    import keras

    text = table(rows)
    if len(peaks) >= 2:
        text += f"\n\nPeak RSS {args.memory_sizes[-1]}^2 / {args.memory_sizes[0]}^2: "
        text += f"{peaks[-1] / peaks[0]:.2f} (the issue's bound: 1.20)."
    header = (
        f"{SECTION}\n\n`benchmarks/large_images.py`: blockwise zarr prediction, blocks of "
        f"{args.block} px, backend {keras.backend.backend()}, {platform.processor() or 'cpu'}, "
        f"{os.cpu_count()} cores.\n\n"
    )
    print(text)
    if not args.no_write:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from perfdoc import write_section

        write_section(SECTION, header + text + "\n")


if __name__ == "__main__":
    main()
