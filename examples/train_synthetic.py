"""The recorded experiment of docs/results.md: train the tiny preset on synthetic cells, fully and
weakly supervised, and report COCO mask AP50 / AP75 / mAP on held-out synthetic images.

Protocol (as in the paper, at toy scale): train on one seeded set of synthetic images with
augmentation, measure validation AP50 on a second held-out set every ``--validate-every`` steps,
keep the best model, and report its AP (and the last model's) on a third held-out test set.
Regimes: ``full`` learns from label images; ``weak`` from one point per cell (label centroids)
plus a binary foreground mask, with the auxnet and its cell-boundary loss, from random weights;
``transfer`` fine-tunes the best ``full`` model weakly supervised (no auxnet) on other images, the
paper's transfer-learning protocol. ``weak`` collapses to empty patches with the SPEC model;
the opt-in segmentor options ``--head-bias-init -4 --centre-prior-sigma 3`` (see ``Segmentor``)
let it learn. They apply to every model built from random weights (``full`` and ``weak``).

    KERAS_BACKEND=jax python examples/train_synthetic.py --out docs

writes ``results_curve_<regime>.png`` into ``--out`` and prints a Markdown table of the test APs
(``--json FILE`` also saves the settings, the per-step histories and the APs). Runs on JAX or
torch; about 10 minutes on 2 CPU cores with the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import lacss_core  # noqa: F401  # isort: skip (first: picks JAX or PyTorch for Keras)
import keras

from lacss_core.data import LacssDataset, SyntheticCells
from lacss_core.models import Lacss
from lacss_core.train import BEST_FILE, evaluate_ap, plot_history, train

REGIMES = {
    "full": "fully supervised (label images)",
    "weak": "weakly supervised (points + mask), from scratch",
    "transfer": "weakly supervised, fine-tuned from the full model",
}
# Training images of the transfer regime: disjoint from the pretraining images.
TRANSFER_SEED_OFFSET = 500


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regimes", nargs="+", choices=list(REGIMES), default=list(REGIMES))
    parser.add_argument("--steps", type=int, default=400, help="optimizer steps per regime")
    parser.add_argument("--transfer-steps", type=int, default=200)
    parser.add_argument("--transfer-learning-rate", type=float, default=5e-4)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--size", type=int, default=64, help="image side, pixels")
    parser.add_argument("--cells", type=int, default=6, help="cells placed per image")
    parser.add_argument("--mode", choices=["fluorescence", "phase"], default="fluorescence")
    parser.add_argument("--train-images", type=int, default=32)
    parser.add_argument("--val-images", type=int, default=4)
    parser.add_argument("--test-images", type=int, default=16)
    parser.add_argument("--validate-every", type=int, default=100)
    parser.add_argument("--crop-size", type=int, default=24, help="segmentation crop, pixels")
    parser.add_argument(
        "--head-bias-init",
        type=float,
        default=0.0,
        help="initial logit of the segmentor's last layer (e.g. -4; default 0 is SPEC)",
    )
    parser.add_argument(
        "--centre-prior-sigma",
        type=float,
        default=None,
        help="pixels; add a fixed Gaussian logit prior at each instance location (e.g. 3)",
    )
    parser.add_argument("--centre-prior-scale", type=float, default=12.0, help="its peak logit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=".", help="folder for the training-curve PNGs")
    parser.add_argument("--json", help="also write settings, histories and APs to this file")
    return parser.parse_args(argv)


def synthetic(args, n: int, seed: int) -> SyntheticCells:
    """``n`` synthetic images; train, validation and test sets use disjoint seeds."""
    size = (args.size, args.size)
    return SyntheticCells(
        n, seed=seed, size=size, n_cells=args.cells, radius=(5.0, 8.0), mode=args.mode
    )


def run_regime(args, regime: str, checkpoint_dir: str, init: str | None = None) -> dict:
    """Train one regime; return its history, wall time and the test AP of its best and last model.

    ``init``: a saved model to start from (transfer learning) instead of random weights.
    """
    keras.utils.set_random_seed(args.seed)
    if init is None:
        model = Lacss.from_preset(
            "lacss_tiny",
            crop_size=args.crop_size,
            max_output=64,
            train_max_output=32,
            use_auxnet=regime == "weak",
            segmentor_head_bias_init=args.head_bias_init,
            centre_prior_sigma=args.centre_prior_sigma,
            centre_prior_scale=args.centre_prior_scale,
        )
    else:
        model = keras.models.load_model(init)
    data_seed = args.seed + (TRANSFER_SEED_OFFSET if regime == "transfer" else 0)
    data = LacssDataset(
        synthetic(args, args.train_images, seed=data_seed),
        batch_size=args.batch_size,
        max_instances=4 * args.cells,
        supervision="full" if regime == "full" else "weak",
        size=(args.size, args.size),
        augment=True,
        seed=data_seed,
    )
    validation = synthetic(args, args.val_images, seed=args.seed + 1000)
    test = synthetic(args, args.test_images, seed=args.seed + 2000)
    steps = args.transfer_steps if regime == "transfer" else args.steps
    start = time.perf_counter()
    history = train(
        model,
        data,
        steps=steps,
        learning_rate=args.transfer_learning_rate if regime == "transfer" else args.learning_rate,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=args.validate_every,
        validation_data=validation,
        validate_every=args.validate_every,
        seed=args.seed,
    )
    wall = time.perf_counter() - start
    best = keras.models.load_model(os.path.join(checkpoint_dir, BEST_FILE))
    return {
        "regime": regime,
        "steps": steps,
        "train_seconds": round(wall, 1),
        "test_best": evaluate_ap(best, test),
        "test_last": evaluate_ap(model, test),
        "history": history,
    }


def markdown_table(results: list[dict]) -> str:
    lines = [
        "| regime | steps | model | AP50 | AP75 | mAP | train time |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for which in ("best", "last"):
            ap = result[f"test_{which}"]
            lines.append(
                f"| {REGIMES[result['regime']]} | {result['steps']} | {which} | {ap['ap50']:.3f} "
                f"| {ap['ap75']:.3f} | {ap['map']:.3f} | {result['train_seconds']:.0f} s |"
            )
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    if "transfer" in args.regimes and "full" not in args.regimes:
        raise ValueError("--regimes: 'transfer' fine-tunes the 'full' model; include 'full'")
    os.makedirs(args.out, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="lacss-synthetic-") as work:
        for regime in [r for r in REGIMES if r in args.regimes]:  # "full" before "transfer"
            print(f"=== {REGIMES[regime]}", flush=True)
            init = os.path.join(work, "full", BEST_FILE) if regime == "transfer" else None
            result = run_regime(args, regime, os.path.join(work, regime), init)
            plot_history(result["history"], os.path.join(args.out, f"results_curve_{regime}.png"))
            results.append(result)
    environment = {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    print(markdown_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": vars(args), "environment": environment, "results": results}, f)


if __name__ == "__main__":
    main()
