"""Size and CPU speed of the presets: parameters, weight file size, forward time at 512^2.

Usage::

    python benchmarks/presets.py [--presets lacss_tiny lacss_small lacss_resnet50] [--size 512]
        [--slots 64] [--repeats 3] [--backends jax torch]

Each backend runs in its own subprocess (Keras fixes its backend per process); run it under
``/work/bin/heavy`` (or with ``OMP_NUM_THREADS=1``) for one-core numbers. Per preset it reports
the parameter count, the float32 weight size in MB, and the median time of
``model.predict_on_batch`` on one ``size x size`` single-channel image with ``--slots`` instance
slots (the first, compiling call is not timed), as in ``benchmarks/forward.py``, with its
convolution FLOPs split into the dense part and the per-instance head.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def worker(presets: list[str], size: int, slots: int, repeats: int) -> list[dict]:
    import keras
    from forward import count_flops

    from lacss_core.models import Lacss

    rows = []
    image = np.random.default_rng(0).uniform(size=(1, size, size, 1)).astype("float32")
    for name in presets:
        model = Lacss.from_preset(name, max_output=slots)
        model.build((None, None, None, 1))
        counts = count_flops(model)
        start = time.perf_counter()
        model.predict_on_batch(image)
        first = time.perf_counter() - start
        flops = dict(counts)  # eager torch counts every call: keep the first one's
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.predict_on_batch(image)
            times.append(time.perf_counter() - start)
        params = int(model.count_params())
        rows.append(
            {
                "backend": keras.backend.backend(),
                "preset": name,
                "params": params,
                "weights_mb": params * 4 / 2**20,
                "size": size,
                "first_call_s": first,
                "median_s": statistics.median(times),
                "dense_gflop": flops["dense"] / 1e9,
                "instance_gflop": flops["instances"] / 1e9,
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| backend | preset | parameters | weights (MB, float32) | forward at "
        f"{rows[0]['size']}^2 (s) | GFLOP (dense + instances) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['backend']} | {r['preset']} | {r['params'] / 1e6:.2f} M | {r['weights_mb']:.1f} | "
        f"{r['median_s']:.2f} | {r['dense_gflop']:.1f} + {r['instance_gflop']:.1f} |"
        for r in rows
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--presets", nargs="+", default=["lacss_tiny", "lacss_small", "lacss_resnet50"]
    )
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", nargs="+", default=["jax", "torch"])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.presets, args.size, args.slots, args.repeats)))
        return
    rows = []
    for backend in args.backends:
        command = [sys.executable, __file__, "--worker", "--size", str(args.size)]
        command += ["--slots", str(args.slots), "--repeats", str(args.repeats)]
        command += ["--presets", *args.presets]
        env = {**os.environ, "KERAS_BACKEND": backend}
        done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
        rows.extend(json.loads(done.stdout.strip().splitlines()[-1]))
    print(table(rows))


if __name__ == "__main__":
    main()
