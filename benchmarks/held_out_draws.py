"""Held-out metrics of models over several independent draws of the held-out sets
(``docs/results.md``, "AP50 calibration takes `min_score` by F1"): one 24-image draw per modality
moves AP50 by more than the differences between models, so compare models by the mean over draws.

Usage::

    KERAS_BACKEND=jax python benchmarks/held_out_draws.py --models generalist \\
        runs/S7/model.keras@0.45,0.4,6 --draws 500 1500 2500 [--test-images 24] [--json OUT]

A model is a shipped model's name or a ``.keras`` path, predicted at its stored thresholds, or
with ``@MIN_SCORE,MASK_THRESHOLD,NMS_PX`` at those. Draw ``d`` is the held-out test sets of
``examples/train_generalist.py --seed d`` (seeds ``d + 2000 +`` modality index, 256 px, no cell
cap), scored by that script's ``evaluate``. A draw whose sets would reuse a seed the run of
``--run-seed`` trains its BatchNorm statistics or thresholds on, or validates or tests on, is
refused. Prints one markdown table per draw and the mean over draws.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from calibration_metric import generalist_script
from mask_quality import load  # a shipped model's name or a .keras path

COLUMNS = ("ap50", "ap75", "f1")


def parse_model(spec: str) -> tuple[str, tuple[float, float, float] | None]:
    """``NAME`` or ``NAME@MIN_SCORE,MASK_THRESHOLD,NMS_PX``."""
    name, _, values = spec.partition("@")
    if not values:
        return name, None
    try:
        thresholds = tuple(float(v) for v in values.split(","))
    except ValueError:
        thresholds = ()
    if len(thresholds) != 3:
        raise SystemExit(f"{spec!r}: thresholds must be MIN_SCORE,MASK_THRESHOLD,NMS_PX")
    return name, thresholds


def check_draws(draws: list[int], run_seed: int, script) -> None:
    """Refuse repeated draws and draws whose test seeds are another held-out set of the run."""
    if len(set(draws)) != len(draws):
        raise SystemExit(f"--draws repeats a seed: {draws}")
    taken = script.held_out_seeds(run_seed)
    others = {seed: name for name, seed in taken.items() if not name.endswith(" test")}
    for draw in draws:
        if draw == run_seed:
            continue
        for name, seed in script.held_out_seeds(draw).items():
            if name.endswith(" test") and seed in others:
                raise SystemExit(
                    f"draw {draw}: its {name} set would use seed {seed}, the run's "
                    f"{others[seed]} set (--run-seed {run_seed}); choose another draw"
                )


def load_at(spec: str):
    """The model ``spec`` names, at the thresholds it names (else its stored ones)."""
    from lacss_core.calibrate import apply_calibration

    name, thresholds = parse_model(spec)
    model = load(name)
    if thresholds:
        keys = ("min_score", "segmentation_threshold", "nms_distance")
        apply_calibration(model, dict(zip(keys, thresholds, strict=True)))
    return model


def test_sets(draw: int, script, test_images: int) -> dict:
    args = script.parse_args(
        ["--out", "unused", "--seed", str(draw), "--test-images", str(test_images)]
    )
    return script.test_sets(args)


def table(rows: dict[str, dict]) -> str:
    """``rows``: model -> modality -> metrics; one line per model, the mean AP50 / F1 last."""
    modalities = list(next(iter(rows.values())))
    header = " | ".join(f"{m} AP50 / AP75 / F1" for m in modalities)
    lines = [f"| model | {header} | mean AP50 / F1 |", "|---" * (len(modalities) + 2) + "|"]
    for spec, result in rows.items():
        cells = [" / ".join(f"{result[m][c]:.3f}" for c in COLUMNS) for m in modalities]
        means = [np.mean([result[m][c] for m in modalities]) for c in ("ap50", "f1")]
        lines.append(f"| {spec} | {' | '.join(cells)} | {means[0]:.3f} / {means[1]:.3f} |")
    return "\n".join(lines)


def mean_over_draws(results: dict[int, dict[str, dict]]) -> dict[str, dict]:
    draws = list(results)
    first = results[draws[0]]
    return {
        spec: {
            m: {c: float(np.mean([results[d][spec][m][c] for d in draws])) for c in COLUMNS}
            for m in first[spec]
        }
        for spec in first
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["generalist"], help="NAME[@MIN,MASK,NMS]")
    p.add_argument("--draws", nargs="+", type=int, required=True, help="held-out draw seeds")
    p.add_argument("--run-seed", type=int, default=0, help="the training run's --seed")
    p.add_argument("--test-images", type=int, default=24, help="per modality and draw")
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args(argv)
    script = generalist_script()
    check_draws(args.draws, args.run_seed, script)
    models = {spec: load_at(spec) for spec in args.models}  # bad thresholds fail here
    results = {}
    for draw in args.draws:
        sets = test_sets(draw, script, args.test_images)
        results[draw] = {spec: script.evaluate(m, sets) for spec, m in models.items()}
        print(f"\ndraw {draw} ({args.test_images} images per modality)\n")
        print(table(results[draw]), flush=True)
    print(f"\nmean over draws {', '.join(map(str, args.draws))}\n")
    print(table(mean_over_draws(results)))
    if args.json:
        from lacss_core._atomic import atomic_path

        with atomic_path(Path(args.json)) as tmp:
            tmp.write_text(json.dumps(results, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
