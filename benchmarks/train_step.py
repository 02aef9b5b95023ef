"""Training step time against the cells per crop and against ``max_instances`` (issue 17).

Usage::

    .venv/bin/python benchmarks/train_step.py [--cells 8 32 128 512] [--max-instances 256 1024]
        [--size 256] [--batch-size 4] [--preset lacss_tiny] [--repeats 5] [--backends jax]
        [--supervision full weak] [--no-write]

For every supervision, cell count ``n`` and capacity ``max_instances >= n`` it builds one
training batch of ``--batch-size`` crops of ``--size`` px, each holding exactly ``n`` cells (discs
on a jittered grid, radius up to a third of the crop size), and times ``model.train_on_batch``
(one optimizer step: forward, losses, backward, Adam) twice: with the locations *bucketed* (as
``LacssDataset`` serves them: the next power of two covering the cells, at least 16 rows) and
*padded* to ``max_instances`` rows (``bucket_instances=False``, the cost before issue 17). The
median of ``--repeats`` steps is reported after one untimed step that compiles (JAX) and
warms up; the first step's time is reported separately (it includes the compilation of that
shape). Random weights; the preset's ``train_max_output`` proposals feed location mixing.

Each backend runs in its own subprocess. The table is printed and written as the
"## Training step" section of ``docs/performance.md`` unless ``--no-write``. Only meaningful on
a quiet machine: the table says how many CPUs there were and the load average at the start.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
from perfdoc import write_section  # benchmarks/ is on sys.path when run as a script

SECTION = "## Training step"


def grid_cells(count: int, size: int, crop: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``size x size`` image and label with exactly ``count`` disc cells on a jittered grid.

    The radius is 40 % of the grid spacing, at most ``crop / 3`` (so a cell fits its patch).
    Returns ``image (size, size, 1) float32`` and ``label (size, size) int32``.
    """
    rng = np.random.default_rng(seed)
    per_side = int(np.ceil(np.sqrt(count)))
    spacing = size / per_side
    radius = min(0.4 * spacing, crop / 3)
    cells = np.stack(np.meshgrid(np.arange(per_side), np.arange(per_side), indexing="ij"), -1)
    centres = (cells.reshape(-1, 2)[:count] + 0.5) * spacing
    centres += rng.uniform(-0.05, 0.05, centres.shape) * spacing
    rows, cols = np.mgrid[:size, :size]
    label = np.zeros((size, size), np.int32)
    for n, (cy, cx) in enumerate(centres):
        label[((rows - cy) ** 2 + (cols - cx) ** 2 <= radius**2) & (label == 0)] = n + 1
    image = (label > 0) + rng.normal(0.0, 0.1, label.shape)
    return image.astype(np.float32)[..., None], label


def make_batch(count, max_instances, args, crop, supervision, bucket):
    from lacss_core.data import Sample, batch_samples

    samples = []
    for i in range(args.batch_size):
        image, label = grid_cells(count, args.size, crop, seed=i)
        samples.append(Sample(image, label=label))
    return batch_samples(
        samples, max_instances=max_instances, supervision=supervision, bucket=bucket
    )


def time_steps(model, batch, repeats: int) -> tuple[float, float]:
    """``(first step seconds, median of the next repeats)`` of ``model.train_on_batch``."""
    x, y = batch
    start = time.perf_counter()
    model.train_on_batch(x, y)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def worker(args) -> list[dict]:
    import keras

    from lacss_core.models import Lacss

    backend = keras.backend.backend()
    rows = []
    for supervision in args.supervision:
        keras.utils.set_random_seed(0)
        overrides = {"use_auxnet": supervision == "weak"}
        if args.crop_size:
            overrides["crop_size"] = args.crop_size
        if args.train_max_output:
            overrides["train_max_output"] = args.train_max_output
        model = Lacss.from_preset(args.preset, **overrides)
        model.build((None, None, None, 1))
        model.compile(optimizer=keras.optimizers.Adam(1e-4))
        for count in args.cells:
            for max_instances in args.max_instances:
                if count > max_instances:
                    continue
                for bucket in (True, False):
                    batch = make_batch(
                        count, max_instances, args, model.crop_size, supervision, bucket
                    )
                    first, median = time_steps(model, batch, args.repeats)
                    rows.append(
                        {
                            "backend": backend,
                            "preset": args.preset,
                            "supervision": supervision,
                            "cells": count,
                            "max_instances": max_instances,
                            "rows": int(batch[0]["locations"].shape[1]),
                            "bucketed": bucket,
                            "first_step_s": first,
                            "median_step_s": median,
                            "crop_size": model.crop_size,
                            "train_max_output": model.train_max_output,
                        }
                    )
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict], args) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    first = rows[0]
    options = [a for a in sys.argv[1:] if a not in ("--no-write", "--json")]
    command = " ".join(["python benchmarks/train_step.py", *options])
    lines = [
        SECTION,
        "",
        f"`{command}`: one "
        f"optimizer step (`model.train_on_batch`, Adam) of `{first['preset']}` (crop "
        f"{first['crop_size']}, `train_max_output` {first['train_max_output']}) on a batch of "
        f"{args.batch_size} crops of {args.size} x {args.size} px, each holding exactly the given "
        "number of cells; median of "
        f"{args.repeats} steps after one that compiles. *bucketed*: the locations cut to the "
        "next power of two covering the cells (at least 16 rows), as `LacssDataset` serves them; "
        "*padded*: `max_instances` rows (`bucket_instances=False`). "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f} at the end.",
        "",
        "| backend | supervision | cells per crop | max_instances | rows | bucketed step (s) "
        "| padded step (s) | padded / bucketed | first bucketed step (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    keyed = {
        (r["backend"], r["supervision"], r["cells"], r["max_instances"], r["bucketed"]): r
        for r in rows
    }
    for key, r in keyed.items():
        if not r["bucketed"]:
            continue
        padded = keyed[key[:-1] + (False,)]
        lines.append(
            f"| {r['backend']} | {r['supervision']} | {r['cells']} | {r['max_instances']} | "
            f"{r['rows']} | {r['median_step_s']:.3f} | {padded['median_step_s']:.3f} | "
            f"{padded['median_step_s'] / r['median_step_s']:.1f}x | {r['first_step_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, nargs="+", default=[8, 32, 128, 512])
    p.add_argument("--max-instances", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--preset", default="lacss_tiny")
    p.add_argument("--crop-size", type=int, help="default: the preset's")
    p.add_argument(
        "--train-max-output", type=int, help="proposals kept for mixing (default: the preset's)"
    )
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--supervision", nargs="+", default=["full", "weak"])
    p.add_argument("--backends", nargs="+", default=["jax"])
    p.add_argument("--no-write", action="store_true", help="print only; leave the doc alone")
    p.add_argument("--json", action="store_true", help="also print the raw rows as JSON")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:  # one backend, chosen by KERAS_BACKEND in the environment
        print(json.dumps(worker(args)))
        return
    rows = []
    for backend in args.backends:
        command = [sys.executable, os.path.abspath(__file__), "--worker", *(argv or sys.argv[1:])]
        env = {**os.environ, "KERAS_BACKEND": backend}
        done = subprocess.run(command, env=env, check=True, stdout=subprocess.PIPE, text=True)
        rows.extend(json.loads(done.stdout.strip().splitlines()[-1]))
    section = table(rows, args)
    print(section)
    if args.json:
        print(json.dumps(rows, indent=1))
    if not args.no_write:
        write_section(SECTION, section)


if __name__ == "__main__":
    main()
