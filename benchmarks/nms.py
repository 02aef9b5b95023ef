"""Time ``ops.nms`` (jax.jit, torch eager) against ``oracle.nms`` at 4096 candidates.

Usage: ``python benchmarks/nms.py [--runs 20] [--backends jax torch] [--no-write]``.

Each backend runs in its own subprocess (Keras fixes its backend per process) and reports the
median wall time of ``--runs`` calls, after one warm-up call (which includes the jit compile).
The candidates imitate a decoded LPN output: a 64 x 64 grid at stride 8 (a 512 x 512 image, the
4096 cells of ``pre_nms_topk``), each location jittered inside its cell. Two score patterns:
"dense" (uniform scores: the output fills all 1024 slots, the most loop steps) and "sparse"
(200 cells scoring 0.5-1, the rest below ``min_score``, like an image with 200 cells). NMS
uses the inference defaults (SPEC 2): ``max_output=1024``, ``min_score=0.2``,
``nms_distance=8``. The table is printed and written as the "## NMS" section of
``docs/performance.md``.
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

GRID, STRIDE = 64, 8
SETTINGS = dict(max_output=1024, nms_distance=8.0, min_score=0.2, pre_nms_topk=4096)
PATTERNS = ("dense", "sparse")


def candidates(pattern: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``locations (1, 4096, 2)`` and ``scores (1, 4096)`` float32, like a decoded LPN output."""
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.arange(GRID), np.arange(GRID), indexing="ij")
    centres = np.stack([rows, cols], -1).reshape(-1, 2) * STRIDE + (STRIDE - 1) / 2
    locations = centres + rng.uniform(-STRIDE / 2, STRIDE / 2, centres.shape)
    locations = np.clip(locations, 0, GRID * STRIDE - 1)
    if pattern == "dense":
        scores = rng.uniform(0, 1, len(centres))
    else:
        scores = rng.uniform(0, 0.2, len(centres))
        scores[rng.choice(len(centres), 200, replace=False)] = rng.uniform(0.5, 1, 200)
    return locations[None].astype(np.float32), scores[None].astype(np.float32)


def median_seconds(call, runs: int) -> float:
    call()  # warm-up: compiles under jax.jit
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def worker(runs: int, torch_threads: int) -> list[dict]:
    """Time this process's backend and the oracle on both patterns; check that they agree."""
    import keras
    from keras import ops as kops

    from lacss_core import ops, oracle

    if keras.backend.backend() == "jax":
        import jax

        fn, mode = jax.jit(lambda l, s: ops.nms(l, s, **SETTINGS)), "jax.jit"
    else:
        import torch

        torch.set_num_threads(torch_threads)
        fn, mode = (lambda l, s: ops.nms(l, s, **SETTINGS)), "torch eager"
    rows = []
    for pattern in PATTERNS:
        locations, scores = candidates(pattern)
        expected = oracle.nms(locations, scores, **SETTINGS)
        tensors = (kops.convert_to_tensor(locations), kops.convert_to_tensor(scores))

        def run_op(tensors=tensors):
            return [kops.convert_to_numpy(o) for o in fn(*tensors)]  # waits for the result

        got = run_op()
        if not all(np.array_equal(g, e) for g, e in zip(got, expected, strict=True)):
            raise AssertionError(f"ops.nms ({mode}) disagrees with oracle.nms ({pattern})")
        rows.append(
            dict(
                pattern=pattern,
                mode=mode,
                kept=int((expected[2] >= 0).sum()),
                op_s=median_seconds(run_op, runs),
                oracle_s=median_seconds(
                    lambda l=locations, s=scores: oracle.nms(l, s, **SETTINGS), runs
                ),
            )
        )
    return rows


def markdown(rows: list[dict], runs: int, torch_threads: int) -> str:
    lines = [
        "## NMS",
        "",
        f"`python benchmarks/nms.py --runs {runs}`: median of {runs} calls after a warm-up "
        f"(compile) call; one image, 4096 candidates ({GRID} x {GRID} grid, stride {STRIDE}), "
        f"`max_output={SETTINGS['max_output']}`, `min_score={SETTINGS['min_score']}`, "
        f"`nms_distance={SETTINGS['nms_distance']:g}`. dense: uniform scores; sparse: 200 cells "
        f"above `min_score`. CPU: {platform.machine()}, {os.cpu_count()} cores shared with "
        f"other jobs (expect noise); torch with {torch_threads} intra-op thread(s). Each loop "
        "step decides `NMS_WINDOW` candidates; in torch eager every step pays Keras dispatch "
        "for a few dozen small ops.",
        "",
        "| scores | kept | implementation | median (ms) | oracle.nms (ms) | speed-up vs oracle |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['pattern']} | {r['kept']} | ops.nms, {r['mode']} | {r['op_s'] * 1e3:.2f} "
            f"| {r['oracle_s'] * 1e3:.1f} | {r['oracle_s'] / r['op_s']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--backends", nargs="+", choices=("jax", "torch"), default=["jax", "torch"])
    p.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a shared 2-core machine more threads mostly "
        "add synchronisation waits)",
    )
    p.add_argument("--no-write", action="store_true", help="print only; leave the doc alone")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.runs, args.torch_threads)))
        return
    rows: list[dict] = []
    for backend in args.backends:
        env = dict(os.environ, KERAS_BACKEND=backend)
        cmd = [sys.executable, __file__, "--worker", "--runs", str(args.runs)]
        cmd += ["--torch-threads", str(args.torch_threads)]
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        rows.extend(json.loads(out.strip().splitlines()[-1]))
    section = markdown(rows, args.runs, args.torch_threads)
    print(section)
    if not args.no_write:
        write_section("## NMS", section)


if __name__ == "__main__":
    main()
