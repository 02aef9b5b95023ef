"""Forward-pass benchmark of one preset (default the paper's ``lacss_resnet50``), batch 1, per
backend variant (issue 12).

Usage::

    python benchmarks/forward.py [--preset lacss_resnet50] [--size 512 1024] [--repeats 5]
        [--slots 64] [--variants jax torch_channels_last torch_channels_first torch_fused ...]
        [--device cpu|gpu] [--dtypes float32 [bfloat16]] [--output PREFIX] [--json]

Variants, each in its own subprocess (Keras fixes its backend per process):

- ``jax``: ``data_format=None`` (channels-last), the network under ``jax.jit``.
- ``torch_channels_last`` / ``torch_channels_first``: eager torch without autodiff, the layers
  channels-last (Keras 3.15's torch conv copies every input to channels-first and back) or
  channels-first (the torch default of ``Lacss(data_format=None)``).
- ``torch_compiled``: channels-first under ``torch.compile`` (opt in: on a CPU its first call
  has taken minutes for the paper preset, 157 s even for ``lacss_tiny`` at 64^2 on a loaded CPU).
- ``jax_fused`` / ``torch_fused``: the backend's default layout, ``Lacss.fused()`` (BatchNorm
  folded into the convolutions); its construction time includes the fold.

Each runs the network as ``lacss_core._backend``'s ``compile_with_variables`` runs it for
prediction, and reports per image size: the median of ``--repeats`` timed forward passes (the
first, compiling call is timed separately as ``first_call_s``), the convolution/dense FLOPs of
one pass (counted from the layer shapes during the first call; dense part and per-instance head),
the achieved GFLOP/s and its share of a float32 ``2048^3`` matmul measured in the same process,
and the process's peak RSS (and on a GPU the device's peak memory). Per variant also
``construct_s`` (``Lacss.from_preset`` + ``build``) and ``load_s`` (``load_lacss_model`` of that
model saved to a temporary ``.keras`` file).

The per-instance head costs the same for every slot, valid or not (about 0.18 GFLOP per slot at
crop 96), so the preset is built with ``max_output=--slots`` (default 64: what prediction runs
for up to 64 cells).

``--device cpu`` (the default) hides GPUs from both frameworks; ``--device gpu`` fails unless
the backend sees one and turns TF32 off (float32 is float32). ``--dtypes bfloat16`` runs under
the ``mixed_bfloat16`` Keras dtype policy (bfloat16 layers, float32 variables and heads).
``benchmarks/gpu.sh`` is the one-script run for a lent GPU machine.

Prints a Markdown table; ``--output PREFIX`` also writes ``PREFIX.json`` and ``PREFIX.md``
(atomically). Timings are only worth recording on a quiet machine: say so with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

MATMUL_N = 2048
PER_INSTANCE_LAYERS = ("head_conv", "head_upsample")
#: variant -> (KERAS_BACKEND, data_format, compiled?, BatchNorm folded?)
VARIANTS = {
    "jax": ("jax", None, None, False),
    "jax_fused": ("jax", None, None, True),
    "torch_channels_last": ("torch", "channels_last", False, False),
    "torch_channels_first": ("torch", "channels_first", False, False),
    "torch_fused": ("torch", "channels_first", False, True),
    "torch_compiled": ("torch", "channels_first", True, False),
}
DEFAULT_VARIANTS = ("jax", "torch_channels_last", "torch_channels_first", "torch_fused")
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


def _layer_flops(layer, inputs, outputs) -> float:
    """Multiply-adds x 2 of one Conv2D / Conv2DTranspose / Dense call, from its shapes (either
    data format: the batch and spatial sizes are the output's without its channel axis)."""
    import keras

    def positions(x):  # the product of every size but the channel count
        shape = tuple(x.shape)
        channel = len(shape) - 1 if layer.data_format == "channels_last" else 1
        return np.prod([n for i, n in enumerate(shape) if i != channel])

    kernel = tuple(layer.kernel.shape)
    if isinstance(layer, keras.layers.Conv2DTranspose):  # each input pixel scatters a kernel
        kh, kw, c_out, c_in = kernel
        return 2.0 * kh * kw * c_in * c_out * positions(inputs)
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw, c_in, c_out = kernel
        return 2.0 * kh * kw * c_in * c_out * positions(outputs)
    c_in, c_out = kernel  # Dense
    return 2.0 * c_in * c_out * np.prod(tuple(outputs.shape)[:-1])


def count_flops(model) -> dict[str, float]:
    """Wrap every conv/dense layer's ``call`` so the next forward pass (trace or eager) records
    its FLOPs into the returned dict: ``{"dense": ..., "instances": ...}`` (per-instance head).
    ``uncount_flops(model)`` puts the layers' own ``call`` back."""
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

        layer._uncounted_call = layer.call
        layer.call = counting_call
    return counts


def uncount_flops(model) -> None:
    """Undo ``count_flops`` (so timed calls, and ``torch.compile``, see the plain layers)."""
    for layer in model._flatten_layers(include_self=False):
        original = layer.__dict__.pop("_uncounted_call", None)
        if original is not None:
            layer.call = original


def matmul_gflops(backend: str, repeats: int = 5) -> float:
    """Float32 ``N x N @ N x N`` throughput of the backend's own matmul on its default device,
    in GFLOP/s."""
    a = np.random.default_rng(0).normal(size=(MATMUL_N, MATMUL_N)).astype("float32")
    if backend == "jax":
        import jax

        x = jax.numpy.asarray(a)
        f = jax.jit(lambda m: m @ m)

        def run():
            f(x).block_until_ready()
    else:
        import torch

        x = torch.from_numpy(a).to("cuda" if torch.cuda.is_available() else "cpu")

        def run():
            torch.matmul(x, x)
            if x.is_cuda:
                torch.cuda.synchronize()

    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 2.0 * MATMUL_N**3 / statistics.median(times) / 1e9


def _device_peak_mb(backend: str) -> float | None:
    if backend == "jax":
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        peak = stats.get("peak_bytes_in_use")
        return None if peak is None else peak / 2**20
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def _build(preset: str, slots: int, data_format, fused: bool):
    from lacss_core.models import Lacss

    start = time.perf_counter()
    model = Lacss.from_preset(preset, max_output=slots, data_format=data_format)
    model.build((None, None, None, 1))
    if fused:
        model = model.fused()
    return model, time.perf_counter() - start


def _load_seconds(model) -> float:
    from lacss_core._model_file import load_lacss_model

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        model.save(path)
        start = time.perf_counter()
        load_lacss_model(path)
        return time.perf_counter() - start


def _forward_function(model, compiled: bool | None):
    """The network as prediction runs it (the backend seam), returning after the device is
    done (``block_until_ready``)."""
    from lacss_core import _backend

    backend = _backend.current()
    options = _backend.CompileOptions(enabled=compiled)
    forward = backend.compile_with_variables(lambda images: model(images), model.variables, options)

    def run(images):
        return backend.block_until_ready(forward(images))

    return run


def worker(variant: str, preset: str, sizes, repeats: int, slots: int, dtype: str, device: str):
    import keras

    from lacss_core import _backend

    backend_name, data_format, compiled, fused = VARIANTS[variant]
    backend = _backend.current()
    if backend.name != backend_name:
        raise SystemExit(f"variant {variant} needs KERAS_BACKEND={backend_name}")
    if device == "gpu":
        if backend.device_kind() != "gpu":
            raise SystemExit(f"--device gpu: the {backend.name} backend sees no GPU")
        backend.disable_tf32()
    keras.mixed_precision.set_dtype_policy(POLICIES[dtype])
    model, construct = _build(preset, slots, data_format, fused)
    load = _load_seconds(model)
    ceiling = matmul_gflops(backend.name)
    run = _forward_function(model, compiled)
    rows = []
    for size in sizes:
        image = np.random.default_rng(size).uniform(size=(1, size, size, 1)).astype("float32")
        images = keras.ops.convert_to_tensor(image)
        counts = count_flops(model) if not compiled else {"dense": 0.0, "instances": 0.0}
        start = time.perf_counter()
        run(images)  # compiles on JAX (and with torch.compile); counts the FLOPs
        first = time.perf_counter() - start
        flops = dict(counts)
        uncount_flops(model)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run(images)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        total = flops["dense"] + flops["instances"]
        rows.append(
            {
                "variant": variant,
                "backend": backend.name,
                "data_format": model.data_format,
                "dtype": dtype,
                "device": backend.device_kind(),
                "preset": preset,
                "size": size,
                "slots": slots,
                "repeats": repeats,
                "construct_s": construct,
                "load_s": load,
                "first_call_s": first,
                "median_s": median,
                "dense_gflop": flops["dense"] / 1e9 if total else None,
                "instance_gflop": flops["instances"] / 1e9 if total else None,
                "gflops_per_s": total / median / 1e9 if total else None,
                "matmul_ceiling_gflops_per_s": ceiling,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "peak_device_mb": _device_peak_mb(backend.name),
            }
        )
    return rows


def fill_flops(rows: list[dict]) -> list[dict]:
    """Rows without FLOP counts (``torch_compiled``) take them from a row of the same preset,
    size and slots (the same network), so their GFLOP/s can be given too."""
    counted = {(r["preset"], r["size"], r["slots"]): r for r in rows if r["dense_gflop"]}
    for r in rows:
        other = counted.get((r["preset"], r["size"], r["slots"]))
        if r["dense_gflop"] is None and other is not None:
            r["dense_gflop"], r["instance_gflop"] = other["dense_gflop"], other["instance_gflop"]
            r["gflops_per_s"] = (r["dense_gflop"] + r["instance_gflop"]) / r["median_s"]
    return rows


def _number(value, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict]) -> str:
    header = (
        "| variant | dtype | device | size | median forward (s) | first call (s) | construct (s) "
        "| load (s) | GFLOP (dense + instances) | GFLOP/s | % of f32 matmul | peak RSS (MB) "
        "| peak device (MB) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        rate, ceiling = r["gflops_per_s"], r["matmul_ceiling_gflops_per_s"]
        flop = "n/a"
        if r["dense_gflop"] is not None:
            flop = f"{r['dense_gflop']:.1f} + {r['instance_gflop']:.1f}"
        share = "n/a" if rate is None else f"{100 * rate / ceiling:.0f}%"
        lines.append(
            f"| {r['variant']} | {r['dtype']} | {r['device']} | {r['size']}^2 "
            f"| {r['median_s']:.4f} | {r['first_call_s']:.2f} | {r['construct_s']:.2f} "
            f"| {r['load_s']:.2f} | {flop} | {_number(rate, 1)} | {share} "
            f"| {r['peak_rss_mb']:.0f} | {_number(r['peak_device_mb'], 0)} |"
        )
    return header + "\n".join(lines)


def _worker_command(args, variant: str, dtype: str) -> list[str]:
    command = [sys.executable, os.path.abspath(__file__), "--worker", variant, "--dtypes", dtype]
    command += ["--preset", args.preset, "--repeats", str(args.repeats)]
    command += ["--slots", str(args.slots), "--device", args.device]
    return command + ["--size", *map(str, args.size)]


def _environment(variant: str, device: str) -> dict:
    env = {**os.environ, "KERAS_BACKEND": VARIANTS[variant][0]}
    if device == "cpu":
        env.update(CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")
    return env


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="lacss_resnet50")
    parser.add_argument("--size", "--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls (median)")
    parser.add_argument("--slots", type=int, default=64, help="instance slots (max_output)")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=None)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--dtypes", nargs="+", choices=sorted(POLICIES), default=["float32"])
    parser.add_argument("--output", help="also write PREFIX.json and PREFIX.md")
    parser.add_argument("--json", action="store_true", help="also print the raw rows as JSON")
    parser.add_argument("--worker", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.slots < 1 or min(args.size) < 1:
        parser.error("--repeats, --slots and every --size must be positive")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:  # one variant, its backend chosen by KERAS_BACKEND in the environment
        options = (args.preset, args.size, args.repeats, args.slots, args.dtypes[0], args.device)
        print(json.dumps(worker(args.worker, *options)))
        return
    rows = []
    for variant in args.variants or DEFAULT_VARIANTS:
        for dtype in args.dtypes:
            done = subprocess.run(
                _worker_command(args, variant, dtype),
                env=_environment(variant, args.device),
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                sys.stderr.write(done.stderr[-4000:])
                raise SystemExit(f"variant {variant} ({dtype}) failed (exit {done.returncode})")
            rows.extend(json.loads(done.stdout.strip().splitlines()[-1]))
    rows = fill_flops(rows)
    text = table(rows)
    print(text)
    if args.json:
        print(json.dumps(rows, indent=1))
    if args.output:
        from lacss_core._atomic import atomic_open

        with atomic_open(args.output + ".json") as f:
            json.dump(rows, f, indent=1)
        with atomic_open(args.output + ".md") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
