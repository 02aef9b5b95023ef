"""Train the shipped generalist (``lacss_small`` + ``weights="generalist"``) on realistic
synthetic microscopy, evaluate it per modality on held-out synthetic sets, and install it.

Usage::

    python examples/train_generalist.py --out runs/generalist --steps 20000 \\
        [--time-budget 28800] [--install]

Training streams fresh images from ``lacss_core.data.RealisticCells`` (a mix of fluorescence
nuclei, cytoplasm/membrane, brightfield and phase contrast; the image for step ``t`` is a pure
function of ``(seed, t)``), fully supervised, with Adam and a warm-up + cosine learning-rate
schedule over ``--steps``. It runs in ``lacss_core.train.train``: checkpoints every
``--checkpoint-every`` steps in ``OUT/ckpt`` and resumes exactly where it stopped when the same
command is run again (after a crash, a kill, or the ``--time-budget`` stop, which ends the run
cleanly at a checkpoint once the budget would be exceeded before the next one). The best model on a
mixed validation set (AP50) is kept as ``OUT/ckpt/best.keras``.

At the end (all steps done, or the budget spent) it evaluates the last and the best model on
held-out sets per modality (seeds never used for training or validation) and writes into OUT:

- ``model.keras`` (the chosen model: the last or ``best.keras``, whichever scores the higher
  validation AP50 once the BatchNorm statistics of both are recalibrated on ``--bn-batches``
  fresh batches, and with ``--choose-by calibrated`` the thresholds of both calibrated) and
  ``generalist.weights.h5``;
- ``metrics.json``: AP50 / AP75 / mAP, F1 at IoU 0.5 and the mean matched IoU per modality, for
  the best and last models (and ``--baseline`` models, e.g. the demo's), with the run's settings;
- ``history.json`` and ``training_curve.png``.

``--install`` copies the weights into ``lacss_core/pretrained/`` and records them (SHA-256,
settings, metrics, ``--status``) in its ``models.json``, so ``Lacss.from_preset("lacss_small",
weights="generalist")`` and ``lacss predict`` use them. ``--evaluate-only`` skips training and
evaluates the current checkpoint (or ``--init``); installing what it evaluates takes ``--recipe``,
a file of the commands that made those weights, which ``models.json`` records in place of the
training settings (this command's own were never used to train them). ``--weights-dtype float16``
stores the weights file in half the space (the package holds at most 20 MB of weights): they are
rounded to float16 before they are evaluated, so every recorded number is of the stored weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lacss_core  # noqa: F401  # isort: skip (first: picks JAX or PyTorch for Keras)
import keras
import numpy as np

from lacss_core._atomic import atomic_path
from lacss_core.calibrate import METRICS, calibrate, describe
from lacss_core.data import LacssDataset, RealisticCells
from lacss_core.data.realistic import MODALITIES
from lacss_core.metrics import coco_mask_ap, object_accuracy
from lacss_core.models import Lacss
from lacss_core.models.presets import preset_config
from lacss_core.predict import model_channels, predict_instances
from lacss_core.train import BEST_FILE, evaluate_ap, load_state, plot_history, train

PRETRAINED = Path(__file__).resolve().parents[1] / "lacss_core" / "pretrained"
WEIGHTS_DTYPES = ("float32", "float16")  # of the saved weights file (--weights-dtype)
# Seeds: training uses (seed, i) (or --training-seed); the held-out sets theirs (held_out_seeds).
VALIDATION_OFFSET, TEST_OFFSET, CALIBRATION_OFFSET, THRESHOLD_OFFSET = 1000, 2000, 3000, 4000


def held_out_seeds(seed: int) -> dict[str, int]:
    """The seed of every set that training must never draw from, by set name (each modality's
    test set is ``"<modality> test"``): validation ``seed + 1000``, tests ``seed + 2000 +``
    modality index, BatchNorm recalibration ``seed + 3000``, threshold calibration ``+ 4000``
    (mixed) and ``+ 4001 +`` modality index (``"<modality> threshold calibration"``, one
    modality's images, for ``examples/modality_thresholds.py``)."""
    return {
        "validation": seed + VALIDATION_OFFSET,
        "BatchNorm recalibration": seed + CALIBRATION_OFFSET,
        "threshold calibration": seed + THRESHOLD_OFFSET,
        **{f"{m} test": seed + TEST_OFFSET + k for k, m in enumerate(MODALITIES)},
        **{
            f"{m} threshold calibration": seed + THRESHOLD_OFFSET + 1 + k
            for k, m in enumerate(MODALITIES)
        },
    }


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder (checkpoints, model, metrics)")
    p.add_argument("--preset", default="lacss_small")
    p.add_argument("--name", default="generalist", help="name of the installed model")
    p.add_argument("--steps", type=int, default=20000, help="total optimizer steps of the run")
    p.add_argument("--time-budget", type=float, help="seconds of training in this invocation")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--size", type=int, default=256, help="training crop side, pixels")
    p.add_argument("--max-instances", type=int, default=128, help="cells per training image")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="peak Adam learning rate")
    p.add_argument("--warmup", type=int, default=200, help="linear warm-up steps")
    p.add_argument("--diameter", type=float, nargs=2, default=(8.0, 64.0), metavar=("LOW", "HIGH"))
    p.add_argument(
        "--diameter-bias", type=float, default=0.0,
        help="training images only: tilt the per-image diameter towards large cells "
        "(RealisticCells diameter_bias; 0 = log-uniform, 1 = uniform in pixels)",
    )  # fmt: skip
    p.add_argument(
        "--scale-range", type=float, nargs=2, default=(0.9, 1.1), metavar=("LOW", "HIGH"),
        help="training images only: resize each by a factor drawn uniformly from [LOW, HIGH] "
        "(upscaled images teach the softer edges that predicting with diameter= shows the model)",
    )  # fmt: skip
    p.add_argument(
        "--modalities",
        nargs="+",
        default=["nuclei=0.35", "cytoplasm=0.25", "brightfield=0.15", "phase=0.25"],
        help="training mix, NAME=WEIGHT",
    )
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--validate-every", type=int, default=500)
    p.add_argument("--validation-images", type=int, default=16, help="mixed, for best.keras")
    p.add_argument("--test-images", type=int, default=24, help="per modality, held out")
    p.add_argument(
        "--calibration-images",
        type=int,
        default=32,
        help="mixed images (seeds of their own) on which the thresholds are calibrated (0: off)",
    )
    p.add_argument(
        "--calibration-metric",
        choices=METRICS,
        default="f1",
        help="what the threshold calibration maximises (lacss_core.calibrate.METRICS)",
    )
    p.add_argument(
        "--choose-by",
        choices=("raw", "calibrated"),
        default="raw",
        help="compare the last and best models by validation AP50 at their own thresholds "
        "(raw) or after calibrating each (calibrated: one calibration per candidate; the raw "
        "ranking can disagree with the calibrated one, docs/results.md)",
    )
    p.add_argument("--test-size", type=int, default=256)
    p.add_argument(
        "--bn-batches",
        type=int,
        default=50,
        help="batches for recalibrating BatchNorm statistics before evaluation (0: off)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--training-seed",
        type=int,
        help="seed of the training images and their augmentation (default: --seed); a run that "
        "continues another can draw fresh images while its validation and test sets stay the same",
    )
    p.add_argument("--init", help="a .keras model to start from (fine-tuning) instead of random")
    p.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="model config overrides (VALUE as JSON, e.g. lpn_level=2); with --init the weights "
        "are carried over by layer (every variable must keep its shape)",
    )
    p.add_argument("--baseline", nargs="*", default=[], help=".keras models to evaluate too")
    p.add_argument("--evaluate-only", action="store_true")
    p.add_argument("--install", action="store_true", help="install into lacss_core/pretrained")
    p.add_argument("--status", default="", help="status line stored with the installed model")
    p.add_argument(
        "--weights-dtype",
        choices=WEIGHTS_DTYPES,
        default="float32",
        help="precision of the saved weights file: float16 halves it (3.9 MB for lacss_small); "
        "the weights are rounded to it before evaluation and threshold calibration, so every "
        "number measured is of the weights shipped",
    )
    p.add_argument(
        "--recipe",
        help="a text file of the commands that made the weights evaluated (--init or the "
        "checkpoint), one per line ('#' starts a comment); needed to --install with "
        "--evaluate-only, and recorded in models.json",
    )
    args = p.parse_args(argv)
    args.mix = _parse_mix(p, args.modalities)
    args.set = _parse_overrides(p, args.set)
    args.training_seed = _training_seed(p, args)
    args.recipe = _recipe(p, args)
    return args


def _recipe(parser, args) -> list[str] | None:
    """The lines of ``--recipe``. An evaluate-only install must name them: its own arguments
    (crop size, learning rate, seeds) were never used to train the weights it installs."""
    if args.recipe is None:
        if args.install and args.evaluate_only:
            parser.error(
                "--install with --evaluate-only needs --recipe FILE: the commands that made "
                "the weights, which models.json records in place of this command's training "
                "settings (never used to train them)"
            )
        return None
    try:
        text = Path(args.recipe).read_text()
    except OSError as error:
        parser.error(f"--recipe {args.recipe}: cannot read it ({error.strerror})")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not any(not line.startswith("#") for line in lines):
        parser.error(f"--recipe {args.recipe} holds no command")
    return lines


def _training_seed(parser, args) -> int:
    """``--training-seed`` (or ``--seed``), refused when it is the seed of a held-out set."""
    if args.training_seed is None:
        return args.seed
    held_out = {seed: name for name, seed in held_out_seeds(args.seed).items()}
    if args.training_seed < 0:
        parser.error(f"--training-seed must be >= 0, got {args.training_seed}")
    if args.training_seed in held_out:
        what = held_out[args.training_seed]
        parser.error(f"--training-seed {args.training_seed} is the {what} set's seed; pick another")
    return args.training_seed


def _parse_mix(parser, items) -> dict[str, float]:
    mix = {}
    for item in items:
        name, _, weight = item.partition("=")
        if name not in MODALITIES:
            parser.error(f"--modalities: unknown modality {name!r}; choose from {MODALITIES}")
        try:
            mix[name] = float(weight or 1)
        except ValueError:
            parser.error(f"--modalities: {item!r} is not NAME=WEIGHT")
    return mix


# ---------------------------------------------------------------------------------- data
def data_config(args) -> dict:
    """The ``RealisticCells`` settings shared by training, validation and test sets."""
    return dict(size=args.size, diameter=tuple(args.diameter), max_cells=args.max_instances)


def training_data(args) -> LacssDataset:
    # the held-out sets keep the log-uniform diameter, so metrics stay comparable across runs
    stream = RealisticCells(
        args.steps * args.batch_size, seed=args.training_seed, modality=args.mix,
        diameter_bias=args.diameter_bias, **data_config(args),
    )  # fmt: skip
    return LacssDataset(
        stream,
        batch_size=args.batch_size,
        max_instances=args.max_instances,
        supervision="full",
        size=(args.size, args.size),
        augment=True,
        scale_range=tuple(args.scale_range),
        seed=args.training_seed,
    )


def validation_data(args) -> RealisticCells:
    return RealisticCells(
        args.validation_images, seed=held_out_seeds(args.seed)["validation"], modality=args.mix,
        **data_config(args),
    )  # fmt: skip


def threshold_data(args, modality: str | None = None) -> RealisticCells:
    """Images at the test size and with no cell cap, for ``lacss_core.calibrate``: the training
    mix, or only ``modality`` (from that modality's own seed)."""
    config = {**data_config(args), "size": args.test_size, "max_cells": None}
    name = "threshold calibration" if modality is None else f"{modality} threshold calibration"
    return RealisticCells(
        args.calibration_images,
        seed=held_out_seeds(args.seed)[name],
        modality=args.mix if modality is None else modality,
        **config,
    )


def test_sets(args) -> dict[str, RealisticCells]:
    """Held-out images per modality, at ``--test-size`` (no cell cap: real images have none)."""
    config = {**data_config(args), "size": args.test_size, "max_cells": None}
    seeds = held_out_seeds(args.seed)
    return {
        m: RealisticCells(args.test_images, seed=seeds[f"{m} test"], modality=m, **config)
        for m in MODALITIES
    }


# ---------------------------------------------------------------------------------- model
def _parse_overrides(parser, items) -> dict:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            parser.error(f"--set {key}: {value!r} is not a JSON value (quote strings: '\"x\"')")
    return overrides


def new_model(args) -> Lacss:
    if args.init:
        model = keras.saving.load_model(args.init)
        return _reconfigured(model, args.set) if args.set else model
    keras.utils.set_random_seed(args.seed)
    # the diameter `predict_instances(diameter=...)` rescales to: the middle (geometric mean) of
    # the trained range; the normalisation is the model's default, as LacssDataset's
    low, high = args.diameter
    return Lacss.from_preset(
        args.preset, train_diameter=round(float(np.sqrt(low * high)), 1), **args.set
    )


def _reconfigured(model: Lacss, overrides: dict) -> Lacss:
    """A copy of ``model`` with config ``overrides`` and its weights (e.g. the LPN moved to
    another FPN level: its head keeps its shapes). Weights go through a file, which Keras matches
    by layer path, so a changed shape fails loudly instead of loading garbage."""
    unknown = sorted(set(overrides) - set(model.get_config()))
    if unknown:
        raise SystemExit(f"--set: {unknown} are not Lacss config keys")
    fresh = Lacss.from_config({**model.get_config(), **overrides})
    fresh.build((None, None, None, model_channels(model)))
    with tempfile.TemporaryDirectory() as folder:
        carry = os.path.join(folder, "carry.weights.h5")
        model.save_weights(carry)
        fresh.load_weights(carry)
    return fresh


def optimizer(args) -> keras.optimizers.Optimizer:
    """Adam with a linear warm-up to ``--learning-rate`` and a cosine decay to 5 % of it."""
    warmup = min(args.warmup, max(args.steps - 1, 0))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else args.learning_rate,
        decay_steps=max(args.steps - warmup, 1),
        alpha=0.05,
        warmup_target=args.learning_rate if warmup else None,
        warmup_steps=warmup,
    )
    return keras.optimizers.Adam(schedule, global_clipnorm=5.0)


class TimeBudget(keras.callbacks.Callback):
    """Stops ``fit`` right after a checkpoint when the next one would end past the budget, so
    a rerun of the same command resumes with nothing lost."""

    def __init__(self, budget_s: float | None, checkpoint_every: int):
        super().__init__()
        self.budget_s, self.every = budget_s, checkpoint_every
        self.start = time.perf_counter()
        self.steps_done, self.stopped = 0, False

    def on_epoch_end(self, epoch, logs=None):
        self.steps_done += 1
        if self.budget_s is None or (epoch + 1) % self.every:
            return
        elapsed = time.perf_counter() - self.start
        per_step = elapsed / self.steps_done
        if elapsed + per_step * self.every > self.budget_s:
            self.model.stop_training = self.stopped = True


def run_training(args, ckpt: str) -> dict:
    model = new_model(args)
    budget = TimeBudget(args.time_budget, args.checkpoint_every)
    start = time.perf_counter()
    history = train(
        model,
        training_data(args),
        steps=args.steps,
        optimizer=optimizer(args),
        checkpoint_dir=ckpt,
        checkpoint_every=args.checkpoint_every,
        validation_data=validation_data(args),
        validate_every=args.validate_every,
        seed=args.seed,
        callbacks=[budget],
        calibrate=False,  # the chosen model is calibrated after its BatchNorm recalibration
    )
    seconds = time.perf_counter() - start
    done = history["step"][-1] if history.get("step") else 0
    print(f"trained to step {done}/{args.steps}: {budget.steps_done} steps in {seconds:.0f} s "
          f"({seconds / max(budget.steps_done, 1):.2f} s/step, validation and checkpoints "
          "included)" + (" -- stopped by the time budget; rerun to resume" if budget.stopped
                         else ""))  # fmt: skip
    return history


def recalibrate_batch_norm(model, data, batches: int) -> None:
    """Precise BatchNorm: set every BatchNormalization layer's moving mean and variance to the
    average of its batch statistics over ``batches`` training-mode forward passes (no weight
    changes). The moving averages (momentum 0.99) trail the weights, and after a short run still
    hold part of their initial values, so inference would run on statistics the trained weights
    never saw."""
    norms = [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    if not norms or batches < 1:
        return
    saved = [layer.momentum for layer in norms]
    try:
        for k in range(batches):
            for layer in norms:
                layer.momentum = k / (k + 1)  # a running mean over the batches seen so far
            x, _ = data[k % len(data)]
            model.dense_forward(keras.ops.convert_to_tensor(x["image"]), training=True)
    finally:
        for layer, momentum in zip(norms, saved, strict=True):
            layer.momentum = momentum


def calibration_data(args) -> LacssDataset:
    """Training-like batches from seeds no other set uses, for ``recalibrate_batch_norm``."""
    stream = RealisticCells(
        max(args.bn_batches, 1) * args.batch_size,
        seed=held_out_seeds(args.seed)["BatchNorm recalibration"],
        modality=args.mix, **data_config(args),
    )  # fmt: skip
    return LacssDataset(
        stream, batch_size=args.batch_size, max_instances=args.max_instances,
        size=(args.size, args.size), shuffle=False,
    )  # fmt: skip


# ---------------------------------------------------------------------------------- evaluation
def evaluate(model, sets: dict[str, RealisticCells]) -> dict[str, dict]:
    """Per modality: COCO AP50/AP75/mAP, F1 at IoU 0.5, mean matched IoU, seconds per image."""
    results = {}
    for modality, samples in sets.items():
        preds, truths, scores = [], [], []
        start = time.perf_counter()
        for sample in samples:
            label, details = predict_instances(model, sample.image)
            preds.append(label)
            truths.append(sample.label)
            scores.append(details["scores"])
        seconds = (time.perf_counter() - start) / len(samples)
        ap = coco_mask_ap(preds, truths, scores)
        acc = object_accuracy(preds, truths, 0.5)
        results[modality] = {
            "ap50": ap.ap50,
            "ap75": ap.ap75,
            "map": ap.map,
            "f1": acc.f1,
            "mean_matched_iou": acc.mean_matched_iou,
            "cells_true": int(sum(int(t.max()) for t in truths)),
            "cells_found": int(sum(int(p.max()) for p in preds)),
            "seconds_per_image": seconds,
        }
    return results


def calibrate_thresholds(model, args, label: str) -> dict:
    """Calibrate ``model``'s thresholds (stored in it) on the threshold images; the result."""
    result = calibrate(model, threshold_data(args), metric=args.calibration_metric, store=True)
    print(f"\n{label} model calibrated on {args.calibration_images} images: {describe(result)}")
    return result


def print_metrics(title: str, metrics: dict) -> None:
    print(f"\n{title}\n| modality | AP50 | AP75 | mAP | F1@0.5 | matched IoU | found / true |")
    print("|---|---|---|---|---|---|---|")
    for modality, m in metrics.items():
        print(f"| {modality} | {m['ap50']:.3f} | {m['ap75']:.3f} | {m['map']:.3f} | "
              f"{m['f1']:.3f} | {m['mean_matched_iou']:.3f} | {m['cells_found']} / "
              f"{m['cells_true']} |")  # fmt: skip


# ---------------------------------------------------------------------------------- outputs
def _atomic_json(path: Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, default=float) + "\n")


def rounded_metrics(metrics: dict) -> dict:
    """One modality's metrics as ``models.json`` records them (4 decimals)."""
    return {k: round(v, 4) for k, v in metrics.items()}


def _atomic_copy(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def save_model(model, out: Path, name: str, dtype: str = "float32") -> Path:
    """``OUT/model.keras`` and the weights-only ``OUT/NAME.weights.h5`` (what is shipped), its
    floating-point arrays stored as ``dtype`` (``round_weights`` first, so that is lossless)."""
    with atomic_path(out / "model.keras") as tmp:
        model.save(tmp)
    weights = out / f"{name}.weights.h5"
    with tempfile.TemporaryDirectory() as folder, atomic_path(weights) as tmp:
        # a copy without the optimizer: save_weights of a compiled model also writes Adam's two
        # slots per weight (3x the file: 22 MB instead of 7 MB for lacss_small)
        inference = Lacss.from_config(model.get_config())
        inference.build((None, None, None, int(model_channels(model))))
        inference.set_weights(model.get_weights())
        full = Path(folder) / "full.weights.h5"
        inference.save_weights(full)
        copy_h5_as(full, tmp, dtype)
    return weights


def round_weights(model, dtype: str) -> None:
    """Round every float32 variable of ``model`` to ``dtype``'s precision in place (it stays
    float32): then a ``dtype`` weights file holds exactly the weights that were measured."""
    if dtype == "float32":
        return
    for variable in model.weights:
        if variable.dtype == "float32":
            value = np.asarray(variable)
            variable.assign(value.astype(dtype).astype(np.float32))


def copy_h5_as(source: Path, target: Path, dtype: str) -> None:
    """Copy the HDF5 file ``source`` to ``target`` with its float32 arrays as ``dtype`` (Keras
    casts them back to the variables' float32 when loading). A new file, not an in-place
    rewrite: HDF5 does not give back the space of replaced datasets."""
    import h5py

    def copy(group, into) -> None:
        into.attrs.update(group.attrs)
        for key, item in group.items():
            if isinstance(item, h5py.Group):
                copy(item, into.create_group(key))
                continue
            data = item[()]
            if getattr(data, "dtype", None) == np.float32:
                data = data.astype(dtype)
            into.create_dataset(key, data=data).attrs.update(item.attrs)

    with h5py.File(source, "r") as src, h5py.File(target, "w") as dst:
        copy(src, dst)


def shipped_config(model, preset: str) -> dict:
    """What ``Lacss.from_preset(preset, weights=name)`` must apply on top of the preset: the
    prediction settings (calibrated thresholds, train diameter, normalisation) and every
    architecture key the run changed (``--set``, e.g. ``lpn_level``), so the weights load into
    the model they were trained in."""
    config, base = model.get_config(), preset_config(preset)
    changed = {k: config[k] for k in base if config.get(k) != base[k]}
    return {**changed, **{k: config[k] for k in Lacss.PREDICTION_SETTINGS}}


def drop_entries_on_replaced_weights(
    registry: dict, name: str, weights: str, sha256: str
) -> list[str]:
    """Remove from ``registry`` every entry but ``name`` that loads the file ``weights`` with a
    SHA-256 other than ``sha256`` (e.g. a ``<name>_<modality>`` profile of ``modality_thresholds``):
    installing over that file leaves them pointing at weights they were never measured on. Returns
    one message per removed entry, naming the command that measures it again."""
    said = []
    for other, entry in list(registry.items()):
        if other == name or entry.get("weights") != weights or entry.get("sha256") == sha256:
            continue
        del registry[other]
        message = f"removed {other!r} from models.json: it was measured on another {weights}"
        rerun = entry.get("profile", {}).get("command")
        if rerun:
            message += f"; measure it again with: {rerun}, then modality_thresholds.py install"
        said.append(message)
    return said


def install(args, model, weights: Path, metrics: dict, steps: int) -> None:
    """Copy the weights into the package and record them in ``models.json``."""
    channels = int(model_channels(model))
    target = PRETRAINED / weights.name
    _atomic_copy(weights, target)
    registry_path = PRETRAINED / "models.json"
    registry = json.loads(registry_path.read_text()) if registry_path.exists() else {}
    sha256 = hashlib.sha256(target.read_bytes()).hexdigest()
    for message in drop_entries_on_replaced_weights(registry, args.name, target.name, sha256):
        warnings.warn(message, stacklevel=2)
    registry[args.name] = {
        "preset": args.preset,
        "weights": target.name,
        "sha256": sha256,
        "channels": channels,
        "weights_dtype": args.weights_dtype,
        # what from_preset applies: the prediction settings (calibrated thresholds, train
        # diameter, normalisation) stored with the weights
        "config": shipped_config(model, args.preset),
        "image_normalization": model.image_normalization,
        "train_diameter": model.train_diameter,
        "diameter_range": list(args.diameter),
        "training": training_record(args, steps),
        "heldout_metrics": {m: rounded_metrics(r) for m, r in metrics.items()},
        "status": args.status,
        "card": "docs/model_card.md",
    }
    _atomic_json(registry_path, registry)
    print(f"installed {args.name} ({target.stat().st_size / 2**20:.1f} MB) into {PRETRAINED}")


def training_record(args, steps: int) -> dict:
    """How the installed weights were made, for ``models.json``: this run's settings, or for an
    evaluate-only install the ``--recipe`` that made ``--init`` and the command that evaluated it
    (whose training settings were never used, so they are not recorded)."""
    # quoted, so the recorded command reruns as it ran (--status takes a sentence)
    command = shlex.join(["python", "examples/train_generalist.py", *sys.argv[1:]])
    if args.evaluate_only:
        return {
            "data": "lacss_core.data.RealisticCells",
            "evaluated_on": args.mix,
            "recipe": [*args.recipe, command],
        }
    return {
        "data": "lacss_core.data.RealisticCells",
        "modalities": args.mix,
        "steps": steps,
        "batch_size": args.batch_size,
        "size": args.size,
        "max_instances": args.max_instances,
        "diameter_bias": args.diameter_bias,
        "scale_range": list(args.scale_range),
        "learning_rate": args.learning_rate,
        "seed": args.seed,
        "training_seed": args.training_seed,
        "command": command,
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = str(out / "ckpt")
    print(f"backend {keras.backend.backend()}, preset {args.preset}, mix {args.mix}")
    if not args.evaluate_only:
        history = run_training(args, ckpt)
        _atomic_json(out / "history.json", history)
        if history.get("step"):
            plot_history(history, str(out / "training_curve.png"))
    state = load_state(ckpt)
    if state is None and not args.init:
        raise SystemExit(f"nothing to evaluate: no checkpoint in {ckpt} and no --init")
    candidates = {"last": os.path.join(ckpt, state["checkpoint"]) if state else args.init}
    if os.path.exists(os.path.join(ckpt, BEST_FILE)):
        candidates["best"] = os.path.join(ckpt, BEST_FILE)
    candidates.update({f"baseline {b}": b for b in args.baseline})
    sets, calibration, validation = test_sets(args), calibration_data(args), validation_data(args)
    metrics, models, validation_ap50, calibrations = {}, {}, {}, {}
    calibrate_each = args.choose_by == "calibrated" and args.calibration_images
    for label, path in candidates.items():
        models[label] = keras.saving.load_model(path)
        if not label.startswith("baseline"):
            recalibrate_batch_norm(models[label], calibration, args.bn_batches)
            round_weights(models[label], args.weights_dtype)
            if calibrate_each:
                calibrations[label] = calibrate_thresholds(models[label], args, label)
            validation_ap50[label] = evaluate_ap(models[label], validation)["ap50"]
        metrics[label] = evaluate(models[label], sets)
        print_metrics(f"held-out synthetic, {label} model ({path})", metrics[label])
    # the better on the validation set (never the test sets); a tie goes to the later model
    chosen = max(
        validation_ap50, key=lambda k: (np.nan_to_num(validation_ap50[k], nan=-1), k == "last")
    )
    model = models[chosen]
    calibration = calibrations.get(chosen)
    if calibration:
        metrics[f"{chosen}, calibrated"] = metrics[chosen]
    elif args.calibration_images:
        calibration = calibrate_thresholds(model, args, chosen)
        metrics[f"{chosen}, calibrated"] = evaluate(model, sets)
        print_metrics(
            f"held-out synthetic, {chosen} model, calibrated", metrics[chosen + ", calibrated"]
        )
    shipped = f"{chosen}, calibrated" if calibration else chosen
    weights = save_model(model, out, args.name, args.weights_dtype)
    steps = state["step"] if state else 0
    _atomic_json(out / "metrics.json", {
        "chosen": chosen, "validation_ap50": validation_ap50, "steps": steps,
        "calibration": {k: v for k, v in (calibration or {}).items() if k != "table"},
        "settings": vars(args), "metrics": metrics,
        "test_images_per_modality": args.test_images, "test_size": args.test_size,
    })  # fmt: skip
    print(
        f"\nchose the {chosen} model (validation AP50 {validation_ap50[chosen]:.3f}); "
        f"wrote {out / 'model.keras'}, {weights}, metrics.json"
    )
    if args.install:
        install(args, model, weights, metrics[shipped], steps)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
