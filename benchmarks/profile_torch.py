"""Where a torch forward spends its time, per layout and with BatchNorm folded (issue 12).

Usage::

    KERAS_BACKEND=torch python benchmarks/profile_torch.py [--preset lacss_resnet50] [--size 256]
        [--variants channels_last channels_first fused] [--top 8]

For each variant: one warm-up forward, then one under ``torch.profiler``; prints the operators
with the largest share of self CPU time (shares, not times: they say what stands in the way,
``aten::copy_`` being the layout copies of Keras' channels-last torch conv). Eager, no autodiff,
as prediction runs the network on torch.
"""

from __future__ import annotations

import argparse

import numpy as np


def profile(model, image, top: int) -> list[tuple[str, float, int]]:
    """``(operator, share of self CPU time, calls)`` of one forward, largest first."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch.no_grad():
        model(image)  # warm-up: first-call allocations and caches
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            model(image)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: -e.self_cpu_time_total)
    return [(e.key, e.self_cpu_time_total / total, e.count) for e in events[:top]]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="lacss_resnet50")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument(
        "--variants", nargs="+", default=["channels_last", "channels_first", "fused"]
    )
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args(argv)

    import keras

    from lacss_core.models import Lacss

    if keras.backend.backend() != "torch":
        raise SystemExit("run with KERAS_BACKEND=torch")
    image = np.random.default_rng(0).uniform(size=(1, args.size, args.size, 1)).astype("float32")
    image = keras.ops.convert_to_tensor(image)
    for variant in args.variants:
        data_format = "channels_first" if variant == "fused" else variant
        model = Lacss.from_preset(args.preset, max_output=args.slots, data_format=data_format)
        model.build((None, None, None, 1))
        if variant == "fused":
            model = model.fused()
        print(f"\n{variant} ({args.preset}, {args.size}^2, {args.slots} slots)")
        for name, share, calls in profile(model, image, args.top):
            print(f"  {100 * share:5.1f}%  {calls:5d} calls  {name}")


if __name__ == "__main__":
    main()
