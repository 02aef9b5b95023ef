"""Time ``predict_instances`` end to end against the network alone, at 512 x 512.

Usage: ``KERAS_BACKEND=jax|torch python benchmarks/predict.py [--runs 5] [--presets lacss_tiny
lacss_resnet50] [--no-write]``.

Per preset (random weights, the inference capacity ``max_output=1024`` and the ``min_score``
that keeps 256 proposals, as on an image with 256 cells), the median wall time over ``--runs``
rounds, after one warm-up round (the jit compiles), of the three calls below; each round calls
each once, in turn (compiled as prediction compiles: ``jax.jit`` on JAX, eager on torch):

* ``model(images)``: the whole Keras forward pass (backbone, FPN, LPN, NMS and the
  per-instance layers on all ``max_output`` slots);
* network: what prediction must compute on the accelerator, jitted as predict runs it: the dense
  part and NMS, then the per-instance layers on the slots that cover the valid proposals;
* ``predict_instances``: from a uint16 NumPy image to the label image and the details dict
  (normalisation, the network, label painting, compaction, areas and boxes, host transfers).

Overhead = predict / network - 1: the cost of everything predict adds to the network; the table
also compares predict with ``model(images)``. The table is
printed and written as the "## Prediction overhead" section of ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np
from perfdoc import write_section  # benchmarks/ is on sys.path when run as a script

SECTION = "## Prediction overhead"
SIZE = 512
CAPACITY = 1024  # max_output, the SPEC 2 inference default
INSTANCES = 256


def interleaved_medians(calls: dict, runs: int) -> dict:
    """Median seconds of each call over ``runs`` rounds; one round calls each once, in turn, so
    that load from other jobs on a shared machine hits all of them alike. One warm-up round."""
    times = {name: [] for name in calls}
    for round_ in range(runs + 1):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if round_:  # round 0 compiles under jax.jit
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def time_preset(name: str, runs: int) -> dict:
    import keras

    from lacss_core import _backend
    from lacss_core._network import Network, _slot_count
    from lacss_core.models import Lacss
    from lacss_core.predict import (
        _normalization,
        _prepare_image,
        _resolve_settings,
        predict_instances,
    )

    keras.utils.set_random_seed(0)
    model = Lacss.from_preset(name, max_output=CAPACITY, min_score=0.0)
    model.build((None, None, None, 1))
    image = np.random.default_rng(0).integers(0, 4096, (SIZE, SIZE), dtype=np.uint16)
    backend = _backend.current()
    network = Network.of(model)
    # the image predict_instances gives the network (normalised as the model normalises), so
    # both run the same proposals on the same slot count
    pixels = _prepare_image(image[..., None], 1, _normalization(model, "model"))
    images, size = network._padded(pixels)
    # Greedy NMS keeps a prefix of its min_score=0 output for any higher min_score, so the
    # INSTANCES-th score is the threshold that keeps INSTANCES proposals.
    propose = network._stage("propose", _resolve_settings(network, 0.0, None, 0.5))
    _, scores, _, _ = propose(images, size)
    model.min_score = float(np.sort(keras.ops.convert_to_numpy(scores[0]))[::-1][INSTANCES - 1])
    settings = _resolve_settings(network, None, None, 0.5)
    compiled_call = backend.compile_with_variables(
        lambda x: model(x, training=False)["patches"], model.variables
    )

    def forward():
        backend.block_until_ready(compiled_call(images))

    def network_only():
        locations, scores, shared, _ = network._stage("propose", settings)(images, size)
        count = int(keras.ops.convert_to_numpy(keras.ops.sum(locations[0, :, 0] >= 0)))
        slots = _slot_count(settings, count, network._compiles)
        masks = network._stage("masks", settings, (SIZE, SIZE))
        backend.block_until_ready(masks(shared, locations[:, :slots], scores[:, :slots]))

    label, _ = predict_instances(model, image)
    medians = interleaved_medians(
        {
            "forward_s": forward,
            "network_s": network_only,
            "predict_s": lambda: predict_instances(model, image),
        },
        runs,
    )
    return dict(preset=name, cells=int(label.max()), **medians)


def _heading() -> str:
    """The doc section of the active backend (JAX's is the original one)."""
    import keras

    backend = keras.backend.backend()
    return SECTION if backend == "jax" else f"{SECTION} ({backend})"


def markdown(rows: list[dict], runs: int) -> str:
    import keras

    backend = keras.backend.backend()
    lines = [
        _heading(),
        "",
        f"`KERAS_BACKEND={backend} python benchmarks/predict.py --runs {runs}`: median of {runs} "
        "interleaved rounds after a warm-up (compile) round; one "
        f"{SIZE} x {SIZE} grey image, random weights, `max_output={CAPACITY}` and the "
        f"`min_score` that keeps {INSTANCES} proposals (an image with {INSTANCES} cells). "
        "*network* is the dense part + NMS + per-instance layers on the slots that cover "
        "the proposals (what predict runs on the accelerator); *model(images)* is the "
        "Keras forward pass on all slots; overhead = predict / network - 1. "
        f"{backend} on CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
        "(shared with other jobs, so times are noisy).",
        "",
        "| preset | cells painted | model(images) (ms) | network (ms) | predict_instances (ms) "
        "| overhead vs network | predict vs model(images) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        overhead = r["predict_s"] / r["network_s"] - 1
        versus_forward = r["predict_s"] / r["forward_s"] - 1
        lines.append(
            f"| {r['preset']} | {r['cells']} | {r['forward_s'] * 1e3:.0f} "
            f"| {r['network_s'] * 1e3:.0f} | {r['predict_s'] * 1e3:.0f} | {overhead:+.1%} "
            f"| {versus_forward:+.1%} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--presets", nargs="+", default=["lacss_tiny", "lacss_resnet50"])
    p.add_argument("--no-write", action="store_true", help="print only; leave the doc alone")
    args = p.parse_args(argv)
    if os.environ.get("KERAS_BACKEND") not in ("jax", "torch"):
        sys.exit("run with KERAS_BACKEND=jax or KERAS_BACKEND=torch")
    rows = []
    for name in args.presets:
        rows.append(time_preset(name, args.runs))
        print(rows[-1], flush=True)
    section = markdown(rows, args.runs)
    print(section)
    if not args.no_write:
        write_section(_heading(), section)


if __name__ == "__main__":
    main()
