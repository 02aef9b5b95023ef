"""Seed spread of weak training from scratch (issue 17 item 4): AP50 / AP75 per seed, mean, spread.

Usage::

    KERAS_BACKEND=jax .venv/bin/python benchmarks/weak_seeds.py [--seeds 0 1 2]
        [--variant default] [--steps 800] [--learning-rate 1e-3]
        [--train-images 16] [--test-images 16] [--image-size 96] [--cells 10]
        [--json weak_seeds.json]

Every seed trains a new ``lacss_tiny`` from random weights on the same ``SyntheticCells``
training images (data seed 0), weakly supervised (points + foreground masks), as ``lacss train
--weak`` does: random crops weighted by area, ``--crop-size`` / ``--size`` / ``--max-instances``
from the measured cells (``lacss_core.data.sizes``), the head bias and centre prior of
``weak_from_scratch``. The training seed sets the initial weights, the crops and the
augmentation; the data stay the same, so the spread is the training's own. Each model is then
scored on held-out images (data seed 1000) with its default thresholds (no calibration, which
would hide a poor model behind a lower ``min_score``): COCO mask AP50 / AP75 / mAP and F1 at
IoU 0.5.

``--variant`` picks what is tried on top (``VARIANTS``):

- ``default``: what ``lacss train --weak`` does for the given options;
- ``constant``: a constant learning rate, as ``lacss train --weak`` did before issue 17;
- ``schedule``: linear warm-up over ``WARMUP_FRACTION`` of the steps, then cosine decay to 0
  (``lacss_core.train.warmup_cosine``);
- ``auxnet``: the auxnet and its cell-boundary loss (the paper's, ``--auxnet``), constant rate;
- ``auxnet+schedule``: both.

Prints one JSON line per seed, then the mean and standard deviation (and min / max).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import lacss_core  # noqa: F401  # isort: skip (first: picks JAX or PyTorch for Keras)
import keras
import numpy as np
from train_race import held_out_scores  # benchmarks/ is on sys.path when run as a script

from lacss_core._atomic import atomic_open
from lacss_core.cli.train import weak_from_scratch
from lacss_core.data import LacssDataset, SyntheticCells
from lacss_core.data.sizes import choose_training_sizes, measure_samples
from lacss_core.models import Lacss
from lacss_core.train import train, weak_learning_rate

VARIANTS = {
    "default": {"auxnet": False, "schedule": None},
    "constant": {"auxnet": False, "schedule": False},
    "schedule": {"auxnet": False, "schedule": True},
    "auxnet": {"auxnet": True, "schedule": False},
    "auxnet+schedule": {"auxnet": True, "schedule": True},
}


class StepTimes(keras.callbacks.Callback):
    """Wall time of every step (``train``: one fit epoch is one step)."""

    def on_train_begin(self, logs=None):
        self.times, self._last = [], time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self.times.append(now - self._last)
        self._last = now


def _cells(n: int, seed: int, args) -> SyntheticCells:
    return SyntheticCells(
        n, seed=seed, size=args.image_size, n_cells=args.cells, radius=(args.rmin, args.rmax)
    )


def scores(model, samples) -> dict[str, float]:
    """``train_race.held_out_scores`` (AP50, AP75, mAP, F1), rounded for the JSON record."""
    return {k: round(float(v), 4) for k, v in held_out_scores(model, samples).items()}


def one_seed(seed: int, args) -> dict:
    """Train one model weakly from scratch with ``seed`` and score it (module docstring)."""
    variant = VARIANTS[args.variant]
    keras.utils.set_random_seed(seed)
    samples = _cells(args.train_images, 0, args)
    sizes = choose_training_sizes(measure_samples(samples))
    data = LacssDataset(
        samples,
        batch_size=args.batch_size,
        max_instances=sizes.max_instances,
        supervision="weak",
        size=(sizes.size, sizes.size),
        augment=True,
        random_crops=True,
        seed=seed,
    )
    overrides = {"crop_size": sizes.crop_size, "use_auxnet": variant["auxnet"]}
    weak = weak_from_scratch(sizes.crop_size, sizes.train_diameter)
    if args.head_bias_init is not None:
        weak["segmentor_head_bias_init"] = args.head_bias_init
    if args.centre_prior_sigma is not None:
        weak["centre_prior_sigma"] = args.centre_prior_sigma
    model = Lacss.from_preset(args.preset, **overrides, **weak)
    rate = weak_learning_rate(args.learning_rate, args.steps, schedule=variant["schedule"])
    timer = StepTimes()
    start = time.perf_counter()
    history = train(
        model,
        data,
        steps=args.steps,
        optimizer=keras.optimizers.Adam(rate),
        seed=seed,
        callbacks=[timer],
        verbose=0,
        calibrate=False,
    )
    trained = time.perf_counter() - start
    tail = {k: float(np.mean(v[-20:])) for k, v in history.items() if k.endswith("loss")}
    return {
        "seed": seed,
        "variant": args.variant,
        "steps": args.steps,
        "train_s": round(trained, 1),
        "median_step_s": round(statistics.median(timer.times), 4),
        "sizes": {"crop_size": sizes.crop_size, "size": sizes.size},
        "weak_options": weak,
        "last_losses": {k: round(v, 4) for k, v in tail.items()},
        **scores(model, _cells(args.test_images, 1000, args)),
    }


def summary(runs: list[dict]) -> dict:
    """Mean, sample standard deviation, min and max of each score over ``runs``."""
    out = {}
    for key in ("ap50", "ap75", "map", "f1"):
        values = [r[key] for r in runs]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        out[key] = {
            "mean": round(statistics.fmean(values), 4),
            "sd": round(spread, 4),
            "min": min(values),
            "max": max(values),
        }
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variant", choices=list(VARIANTS), default="default")
    p.add_argument("--preset", default="lacss_tiny")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--train-images", type=int, default=16)
    p.add_argument("--test-images", type=int, default=16)
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--cells", type=int, default=10, help="cells placed per synthetic image")
    p.add_argument("--rmin", type=float, default=5.0, help="smallest mean cell radius, px")
    p.add_argument("--rmax", type=float, default=8.0, help="largest mean cell radius, px")
    p.add_argument(
        "--head-bias-init",
        type=float,
        help="segmentor_head_bias_init (default: weak_from_scratch's)",
    )
    p.add_argument(
        "--centre-prior-sigma", type=float, help="px (default: weak_from_scratch's, from the cells)"
    )
    p.add_argument("--json", help="also write the runs and the summary to this JSON file")
    args = p.parse_args(argv)
    machine = {
        "backend": keras.backend.backend(),
        "cpus": os.cpu_count(),
        "threads": os.environ.get("HEAVY_THREADS"),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }
    runs = []
    for seed in args.seeds:
        runs.append(one_seed(seed, args))
        print(json.dumps(runs[-1]), flush=True)
    result = {"machine": machine, "settings": vars(args), "runs": runs, "summary": summary(runs)}
    print(json.dumps(result["summary"]), flush=True)
    if args.json:
        with atomic_open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
