"""Thresholds per imaging modality for a shipped model (``generalist_nuclei``, ...).

Usage::

    KERAS_BACKEND=jax python examples/modality_thresholds.py measure --out runs/profiles \\
        [--model generalist] [--modalities nuclei phase] [--metric ap50] \\
        [--calibration-images 32] [--test-images 24]
    python examples/modality_thresholds.py install runs/profiles/*.json

The generalist's thresholds are calibrated on a mix of four modalities, so every modality gets
the compromise (its mask threshold 0.4 suits phase contrast; nuclei alone do better at 0.5,
docs/results.md). ``measure`` calibrates the model's ``min_score``, NMS distance and mask
threshold (``lacss_core.calibrate``) on one modality's own threshold images (the seeds
``"<modality> threshold calibration"`` of ``examples/train_generalist.py``, never trained on),
scores the model on that modality's held-out set of the same script with its own and with the
new thresholds, and writes ``OUT/<modality>.json``.

``install`` records each measured modality whose thresholds pass ``worth_installing`` (no worse
held-out AP50 or AP75 than the model's own thresholds, beyond 0.005, and one of them at least
0.01 better) in ``models.json`` as ``<model>_<modality>``: the same weights file, the
modality's thresholds. ``Lacss.from_preset("lacss_small", weights="generalist_nuclei")`` and
``lacss predict generalist_nuclei images/`` then use them, as cellpose users pick its "nuclei"
or "cyto" model.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import lacss_core  # noqa: F401  (first: picks JAX or PyTorch before keras is imported)

# isort: split
from train_generalist import (
    MODALITIES,
    PRETRAINED,
    _atomic_json,
    evaluate,
    print_metrics,
    rounded_metrics,
    shipped_config,
    test_sets,
    threshold_data,
)
from train_generalist import parse_args as generalist_args

from lacss_core.calibrate import CONFIG_ENTRIES, METRICS, calibrate, describe

#: The config entries calibration writes (the thresholds and their record).
THRESHOLDS = (*CONFIG_ENTRIES.values(), "calibration")
#: ``worth_installing``: the largest loss (AP50 or AP75) tolerated, and the smallest gain needed.
TOLERANCE, GAIN = 0.005, 0.01


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="calibrate per modality and score on held-out images")
    m.add_argument("--out", required=True, help="folder for the <modality>.json results")
    m.add_argument("--model", default="generalist", help="a shipped model's name")
    m.add_argument("--modalities", nargs="+", choices=MODALITIES, default=list(MODALITIES))
    m.add_argument("--metric", choices=METRICS, default="ap50", help="calibration metric")
    m.add_argument("--calibration-images", type=int, default=32, help="per modality")
    m.add_argument("--test-images", type=int, default=24, help="held out, per modality")
    m.add_argument("--test-size", type=int, default=256, help="side of those images, pixels")
    i = sub.add_parser("install", help="record the profiles that pass in models.json")
    i.add_argument("results", nargs="+", help="<modality>.json files written by measure")
    i.add_argument("--pretrained-dir", default=str(PRETRAINED), help="folder of models.json")
    return p.parse_args(argv)


def data_args(args):
    """train_generalist's settings for the same held-out and threshold images."""
    return generalist_args([
        "--out", "unused", "--calibration-images", str(args.calibration_images),
        "--test-images", str(args.test_images), "--test-size", str(args.test_size),
    ])  # fmt: skip


def measure(args) -> None:
    from lacss_core import pretrained

    settings, out = data_args(args), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sets, preset = test_sets(settings), pretrained.info(args.model)["preset"]
    for modality in args.modalities:
        held_out = {modality: sets[modality]}
        model = pretrained.load_pretrained(args.model)  # fresh: calibrate stores in place
        own = evaluate(model, held_out)
        result = calibrate(
            model, threshold_data(settings, modality), metric=args.metric, store=True
        )
        print(f"\n{modality}: calibrated on {args.calibration_images} images: {describe(result)}")
        calibrated = evaluate(model, held_out)
        print_metrics(f"{modality}, {args.model}'s thresholds", own)
        print_metrics(f"{modality}, thresholds of its own", calibrated)
        config = shipped_config(model, preset)
        _atomic_json(out / f"{modality}.json", {
            "model": args.model, "modality": modality, "metric": args.metric,
            "config": {k: config[k] for k in THRESHOLDS},
            "heldout_own_thresholds": own[modality], "heldout": calibrated[modality],
            "command": shlex.join(["python", "examples/modality_thresholds.py", *sys.argv[1:]]),
        })  # fmt: skip


def worth_installing(own: dict, calibrated: dict) -> tuple[bool, str]:
    """Whether a modality's thresholds beat the model's own on its held-out set, and why."""
    changes = {k: calibrated[k] - own[k] for k in ("ap50", "ap75")}
    said = ", ".join(f"{k.upper()} {own[k]:.3f} -> {calibrated[k]:.3f}" for k in changes)
    if min(changes.values()) < -TOLERANCE:
        return False, f"{said}: loses more than {TOLERANCE}"
    if max(changes.values()) < GAIN:
        return False, f"{said}: gains less than {GAIN}"
    return True, said


def profile_entry(base: dict, result: dict) -> dict:
    """The registry entry of ``result``'s profile: ``base``'s weights, its own thresholds."""
    entry = {k: v for k, v in base.items() if k != "folder"}
    return {
        **entry,
        "config": {**base["config"], **result["config"]},
        "profile": {
            "of": result["model"], "modality": result["modality"], "metric": result["metric"],
            "command": result["command"],
        },
        "heldout_metrics": {result["modality"]: rounded_metrics(result["heldout"])},
        "status": f"the {result['model']} weights with thresholds calibrated on "
        f"{result['modality']} images",
    }  # fmt: skip


RESULT_KEYS = ("model", "modality", "metric", "config", "heldout_own_thresholds", "heldout")


def read_result(file: str) -> dict:
    """A ``<modality>.json`` written by ``measure``; ``SystemExit`` naming what is wrong."""
    try:
        result = json.loads(Path(file).read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"{file}: not a readable measure result ({e})") from e
    missing = [k for k in RESULT_KEYS if not isinstance(result, dict) or k not in result]
    if missing:
        raise SystemExit(f"{file}: not a measure result (missing {', '.join(missing)})")
    return result


def install(args) -> None:
    folder = Path(args.pretrained_dir)
    path = folder / "models.json"
    if not path.is_file():
        raise SystemExit(f"no models.json in {folder}")
    registry = json.loads(path.read_text())
    for file in args.results:
        result = read_result(file)
        name = f"{result['model']}_{result['modality']}"
        if result["model"] not in registry:
            raise SystemExit(f"{file}: {result['model']!r} is not in {path}")
        ok, why = worth_installing(result["heldout_own_thresholds"], result["heldout"])
        if ok:
            registry[name] = profile_entry(registry[result["model"]], result)
        print(f"{name}: {'installed' if ok else 'not installed'} ({why})")
    _atomic_json(path, registry)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.command == "measure":
        measure(args)
    else:
        install(args)


if __name__ == "__main__":
    main()
