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
refused. Prints one markdown table per draw, the mean over draws and, with two or more models,
each model's paired difference from the first (mean over draws, and on how many draws it is
higher): a model is judged by such paired differences, as the draws differ more than the models.

``--from-json A.json B.json`` prints the same tables from earlier runs' ``--json`` files (models
measured in parallel, one process per core, on the same draws), measuring nothing.
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


def header(first: str, modalities: list[str]) -> list[str]:
    """The two header lines of a table with one ``AP50 / AP75 / F1`` column per modality."""
    columns = " | ".join(f"{m} AP50 / AP75 / F1" for m in modalities)
    return [f"| {first} | {columns} | mean AP50 / F1 |", "|---" * (len(modalities) + 2) + "|"]


def table(rows: dict[str, dict]) -> str:
    """``rows``: model -> modality -> metrics; one line per model, the mean AP50 / F1 last."""
    modalities = list(next(iter(rows.values())))
    lines = header("model", modalities)
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


def paired(results: dict[int, dict[str, dict]]) -> str:
    """Each model after the first minus the first, per modality and metric: the mean difference
    over the draws and, in brackets, the draws where it is higher (``+0.012 (7/8)``)."""
    draws = list(results)
    specs = list(results[draws[0]])
    reference, modalities = specs[0], list(results[draws[0]][specs[0]])
    lines = header(f"model - {reference}", modalities)

    def cell(spec, values) -> str:
        diffs = np.array([values(results[d][spec]) - values(results[d][reference]) for d in draws])
        return f"{diffs.mean():+.3f} ({int((diffs > 0).sum())}/{len(draws)})"

    for spec in specs[1:]:
        cells = [
            " / ".join(cell(spec, lambda r, m=m, c=c: r[m][c]) for c in COLUMNS) for m in modalities
        ]
        means = [
            cell(spec, lambda r, c=c: np.mean([r[m][c] for m in modalities]))
            for c in ("ap50", "f1")
        ]
        lines.append(f"| {spec} | {' | '.join(cells)} | {' / '.join(means)} |")
    return "\n".join(lines)


def merge_runs(paths: list[str]) -> dict[int, dict[str, dict]]:
    """The ``--json`` files of earlier runs as one result; they must hold the same draws."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    draws = [sorted(run, key=int) for run in runs]
    if any(d != draws[0] for d in draws):
        raise SystemExit(f"--from-json: the files hold different draws: {draws}")
    merged = {int(d): {} for d in draws[0]}
    for path, run in zip(paths, runs, strict=True):
        for d, models in run.items():
            repeated = set(models) & set(merged[int(d)])
            if repeated:
                raise SystemExit(f"--from-json: {path} repeats model(s) {sorted(repeated)}")
            merged[int(d)].update(models)
    return merged


def report(results: dict[int, dict[str, dict]], test_images: int | None) -> None:
    for draw, rows in results.items():
        size = f" ({test_images} images per modality)" if test_images else ""
        print(f"\ndraw {draw}{size}\n")
        print(table(rows), flush=True)
    print(f"\nmean over draws {', '.join(map(str, results))}\n")
    print(table(mean_over_draws(results)))
    if len(next(iter(results.values()))) > 1:
        print("\npaired differences from the first model\n")
        print(paired(results))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["generalist"], help="NAME[@MIN,MASK,NMS]")
    p.add_argument("--draws", nargs="+", type=int, help="held-out draw seeds")
    p.add_argument("--run-seed", type=int, default=0, help="the training run's --seed")
    p.add_argument("--test-images", type=int, default=24, help="per modality and draw")
    p.add_argument("--json", help="also write the numbers here")
    p.add_argument("--from-json", nargs="+", help="report earlier runs' --json files instead")
    args = p.parse_args(argv)
    if args.from_json:
        report(merge_runs(args.from_json), None)
        return
    if not args.draws:
        p.error("--draws is required (or --from-json)")
    script = generalist_script()
    check_draws(args.draws, args.run_seed, script)
    models = {spec: load_at(spec) for spec in args.models}  # bad thresholds fail here
    results = {}
    for draw in args.draws:
        sets = test_sets(draw, script, args.test_images)
        results[draw] = {spec: script.evaluate(m, sets) for spec, m in models.items()}
    report(results, args.test_images)
    if args.json:
        from lacss_core._atomic import atomic_path

        with atomic_path(Path(args.json)) as tmp:
            tmp.write_text(json.dumps(results, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
