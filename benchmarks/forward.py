"""Forward-pass benchmark of the paper preset ``lacss_resnet50`` (issue 4), batch 1.

Usage::

    .venv/bin/python benchmarks/forward.py [--sizes 256 512] [--repeats 3] [--slots 64]
        [--backends jax torch]

Each backend runs in its own subprocess (Keras fixes its backend per process). For every image
size the worker reports the median time of ``model.predict_on_batch`` (compiled with XLA on JAX,
eager ``no_grad`` on torch; the first, compiling call is not timed), the convolution/dense FLOPs
of that call counted from the layer shapes, the achieved GFLOP/s, a float32 matmul ceiling
(2048^3) measured in the same process, and the process's peak RSS.

The per-instance head costs the same for every slot, valid or not (about 0.18 GFLOP per slot at
crop 96), so the fixed-size ``call`` with the preset's 1024 slots spends ~180 GFLOP on the head
whatever the image holds. Inference runs the head on a slot count that covers the valid
proposals (``Lacss.predict_compact``), so the benchmark builds the preset with
``max_output=--slots`` (default 64: what ``predict_compact`` runs for up to 64 cells) and
reports the FLOPs in two parts, dense (backbone, FPN, LPN, segmentor trunk, auxnet) and
per-instance. Prints a Markdown table (and with ``--json`` the raw rows).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

MATMUL_N = 2048
PER_INSTANCE_LAYERS = ("head_conv", "head_upsample")


def _layer_flops(layer, inputs, outputs) -> float:
    """Multiply-adds x 2 of one Conv2D / Conv2DTranspose / Dense call, from its shapes."""
    import keras

    kernel = tuple(layer.kernel.shape)
    if isinstance(layer, keras.layers.Conv2DTranspose):  # each input pixel scatters a kernel
        kh, kw, c_out, c_in = kernel
        return 2.0 * kh * kw * c_in * c_out * np.prod(inputs.shape[:-1])
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw, c_in, c_out = kernel
        return 2.0 * kh * kw * c_in * c_out * np.prod(outputs.shape[:-1])
    c_in, c_out = kernel  # Dense
    return 2.0 * c_in * c_out * np.prod(outputs.shape[:-1])


def count_flops(model) -> dict[str, float]:
    """Wrap every conv/dense layer's ``call`` so the next forward pass (trace or eager) records
    its FLOPs into the returned dict: ``{"dense": ..., "instances": ...}`` (per-instance head)."""
    import keras

    counts = {"dense": 0.0, "instances": 0.0}
    kinds = (keras.layers.Conv2D, keras.layers.Dense)  # Conv2DTranspose is a Conv2D subclass
    for layer in model._flatten_layers(include_self=False):
        if not isinstance(layer, kinds):
            continue
        part = "instances" if layer.name in PER_INSTANCE_LAYERS else "dense"

        def counting_call(inputs, *args, _layer=layer, _call=layer.call, _part=part, **kwargs):
            outputs = _call(inputs, *args, **kwargs)
            counts[_part] += _layer_flops(_layer, inputs, outputs)
            return outputs

        layer.call = counting_call
    return counts


def matmul_gflops(backend: str, repeats: int = 5) -> float:
    """Float32 ``N x N @ N x N`` throughput of the backend's own matmul, in GFLOP/s."""
    a = np.random.default_rng(0).normal(size=(MATMUL_N, MATMUL_N)).astype("float32")
    if backend == "jax":
        import jax

        x = jax.numpy.asarray(a)
        f = jax.jit(lambda m: m @ m)
        f(x).block_until_ready()

        def run():
            f(x).block_until_ready()
    else:
        import torch

        x = torch.from_numpy(a)

        def run():
            torch.matmul(x, x)

    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 2.0 * MATMUL_N**3 / statistics.median(times) / 1e9


def worker(sizes: list[int], repeats: int, slots: int) -> list[dict]:
    import keras

    from lacss_core.models import Lacss

    backend = keras.backend.backend()
    model = Lacss.from_preset("lacss_resnet50", max_output=slots)
    model.build((None, None, None, 1))
    ceiling = matmul_gflops(backend)
    rows = []
    for size in sizes:
        image = np.random.default_rng(size).uniform(size=(1, size, size, 1)).astype("float32")
        counts = count_flops(model)
        start = time.perf_counter()
        model.predict_on_batch(image)  # compiles on JAX; counts the FLOPs while tracing
        first = time.perf_counter() - start
        flops = dict(counts)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.predict_on_batch(image)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        total = flops["dense"] + flops["instances"]
        rows.append(
            {
                "backend": backend,
                "size": size,
                "slots": slots,
                "first_call_s": first,
                "median_s": median,
                "dense_gflop": flops["dense"] / 1e9,
                "instance_gflop": flops["instances"] / 1e9,
                "gflops_per_s": total / median / 1e9,
                "matmul_ceiling_gflops_per_s": ceiling,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    header = (
        "| backend | size | slots | median forward (s) | GFLOP (dense + instances) | GFLOP/s | "
        "matmul ceiling GFLOP/s | % of ceiling | peak RSS (MB) |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['backend']} | {r['size']}^2 | {r['slots']} | {r['median_s']:.2f} | "
        f"{r['dense_gflop']:.1f} + {r['instance_gflop']:.1f} | {r['gflops_per_s']:.1f} | "
        f"{r['matmul_ceiling_gflops_per_s']:.1f} | "
        f"{100 * r['gflops_per_s'] / r['matmul_ceiling_gflops_per_s']:.0f}% | "
        f"{r['peak_rss_mb']:.0f} |"
        for r in rows
    ]
    return header + "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slots", type=int, default=64, help="instance slots (max_output)")
    parser.add_argument("--backends", nargs="+", default=["jax", "torch"])
    parser.add_argument("--json", action="store_true", help="also print the raw rows as JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:  # one backend, chosen by KERAS_BACKEND in the environment
        print(json.dumps(worker(args.sizes, args.repeats, args.slots)))
        return
    rows = []
    for backend in args.backends:
        command = [sys.executable, __file__, "--worker", "--repeats", str(args.repeats)]
        command += ["--slots", str(args.slots)]
        command += ["--sizes", *map(str, args.sizes)]
        env = {**os.environ, "KERAS_BACKEND": backend}
        done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
        rows.extend(json.loads(done.stdout.strip().splitlines()[-1]))
    print(table(rows))
    if args.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
