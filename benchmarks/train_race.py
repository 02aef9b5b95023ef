"""A fair race (issue 17 item 5): full vs weak training for the same wall-clock budget.

Usage::

    KERAS_BACKEND=jax .venv/bin/python benchmarks/train_race.py [--budget 1200]
        [--regimes full weak]
        [--preset lacss_tiny] [--train-images 8] [--test-images 8] [--val-images 4]
        [--image-size 256] [--batch-size 4] [--seed 0] [--json race.json]

Each regime trains a new model from scratch on the same ``SyntheticCells`` training images (fully
supervised from labels, or weakly from points + masks), with what ``lacss train`` would choose
(random crops weighted by area, ``--crop-size`` / ``--size`` / ``--max-instances`` from the
measured cells, ``lacss_core.data.sizes``; the weak regime gets ``weak_from_scratch``), until
``--budget`` seconds of training wall clock have passed (checked after every step). It then
reports, on held-out images (another seed): AP50 / AP75 (COCO mask AP) and F1 at IoU 0.5 with
the default thresholds and after calibrating them on separate validation images
(``lacss_core.calibrate``; its time is reported, not counted in the budget), the steps reached
and the median step time (the first, compiling step excluded).

Only meaningful on a quiet machine: the output says how many CPUs there were and the load
average at the start. A run is recorded in docs/results.md ("A fair race").
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

from lacss_core._atomic import atomic_open
from lacss_core.calibrate import calibrate
from lacss_core.cli.train import weak_from_scratch
from lacss_core.data import LacssDataset, SyntheticCells
from lacss_core.data.sizes import choose_training_sizes, measure_samples
from lacss_core.metrics import coco_mask_ap, object_accuracy
from lacss_core.models import Lacss
from lacss_core.predict import predict_instances
from lacss_core.train import train


class WallClockBudget(keras.callbacks.Callback):
    """Stops ``fit`` after the first step that ends past ``seconds``; records every step's time."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = float(seconds)
        self.step_times: list[float] = []

    def on_train_begin(self, logs=None):
        self._start = self._last = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):  # train(): one fit epoch is one step
        now = time.perf_counter()
        self.step_times.append(now - self._last)
        self._last = now
        if now - self._start >= self.seconds:
            self.model.stop_training = True


def _cells(n: int, seed: int, args) -> SyntheticCells:
    return SyntheticCells(n, seed=seed, size=args.image_size, n_cells=args.cells, radius=(6, 10))


def held_out_scores(model, samples) -> dict[str, float]:
    """AP50, AP75, mAP and F1 (IoU 0.5) of ``model`` on labelled ``samples``, images pooled."""
    preds, gts, scores = [], [], []
    for sample in samples:
        label, details = predict_instances(model, sample.image)
        preds.append(label)
        gts.append(sample.label)
        scores.append(details["scores"])
    ap = coco_mask_ap(preds, gts, scores)
    return {"ap50": ap.ap50, "ap75": ap.ap75, "map": ap.map, "f1": object_accuracy(preds, gts).f1}


def race(supervision: str, args) -> dict:
    """Train one regime for the budget and score it (see the module docstring)."""
    keras.utils.set_random_seed(args.seed)
    samples = _cells(args.train_images, args.seed, args)
    sizes = choose_training_sizes(measure_samples(samples))
    data = LacssDataset(
        samples,
        batch_size=args.batch_size,
        max_instances=sizes.max_instances,
        supervision=supervision,
        size=(sizes.size, sizes.size),
        augment=True,
        random_crops=True,
        seed=args.seed,
    )
    overrides = {"crop_size": sizes.crop_size}
    if supervision == "weak":
        overrides.update(weak_from_scratch(sizes.crop_size, sizes.train_diameter))
    model = Lacss.from_preset(args.preset, **overrides)
    budget = WallClockBudget(args.budget)
    start = time.perf_counter()
    history = train(model, data, steps=10**9, callbacks=[budget], verbose=0, calibrate=False)
    trained_s = time.perf_counter() - start
    test = _cells(args.test_images, args.seed + 1000, args)
    result = {
        "supervision": supervision,
        "steps": len(history.get("step", [])),
        "train_s": round(trained_s, 1),
        "median_step_s": round(statistics.median(budget.step_times[1:] or budget.step_times), 4),
        "first_step_s": round(budget.step_times[0], 2),
        "sizes": {"crop_size": sizes.crop_size, "size": sizes.size},
        "default_thresholds": held_out_scores(model, test),
    }
    start = time.perf_counter()
    calibrate(model, _cells(args.val_images, args.seed + 2000, args), store=True)
    result["calibrate_s"] = round(time.perf_counter() - start, 1)
    result["calibrated"] = held_out_scores(model, test)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=1200.0, help="training seconds per regime")
    p.add_argument("--regimes", nargs="+", default=["full", "weak"], choices=["full", "weak"])
    p.add_argument("--preset", default="lacss_tiny")
    p.add_argument("--train-images", type=int, default=8)
    p.add_argument("--test-images", type=int, default=8)
    p.add_argument("--val-images", type=int, default=4)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--cells", type=int, default=40, help="cells per synthetic image")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    machine = {
        "backend": keras.backend.backend(),
        "cpus": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "budget_s": args.budget,
    }
    results = {"machine": machine, "regimes": []}
    for supervision in args.regimes:
        results["regimes"].append(race(supervision, args))
        print(json.dumps(results["regimes"][-1], default=_plain), flush=True)
    if args.json:
        with atomic_open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=_plain)
    return 0


def _plain(value):
    return float(value) if isinstance(value, np.floating) else str(value)


if __name__ == "__main__":
    sys.exit(main())
