"""Wall time of ``lacss_core.calibrate`` on the shipped model's threshold images
(``docs/results.md``, "Calibration cost").

Usage::

    KERAS_BACKEND=jax python benchmarks/calibration_cost.py [--model generalist | PATH.keras]
        [--calibration-images 8] [--augment] [--json OUT.json]

Calibrates the model (nothing stored) with the default grids on the first
``--calibration-images`` threshold images of ``examples/train_generalist.py`` (256 x 256, mixed
modalities, no cell cap: crowded ones fill the model's capacity and are split into tiles), once
on the first image to compile and once timed, and prints the seconds and the chosen values. With
``--json`` the whole table is written too, so two versions of the code can be compared row by
row. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from calibration_metric import generalist_script
from mask_quality import load  # a shipped model's name or a .keras path


def main(argv=None) -> None:
    from lacss_core.calibrate import calibrate, describe

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="generalist", help="a shipped name or a .keras path")
    parser.add_argument("--calibration-images", type=int, default=8)
    parser.add_argument("--augment", action="store_true")
    parser.add_argument("--json", help="also write the seconds, choice and table here")
    args = parser.parse_args(argv)
    script = generalist_script()
    data_args = script.parse_args(
        ["--out", "unused", "--calibration-images", str(args.calibration_images)]
    )
    samples = list(script.threshold_data(data_args))
    model = load(args.model)
    calibrate(model, samples[:1], augment=args.augment)  # compile
    start = time.perf_counter()
    result = calibrate(model, samples, augment=args.augment)
    seconds = time.perf_counter() - start
    print(f"{len(samples)} images, augment={args.augment}: {seconds:.1f} s; {describe(result)}")
    if args.json:
        from lacss_core._atomic import atomic_path

        with atomic_path(Path(args.json)) as tmp:
            tmp.write_text(json.dumps({"seconds": seconds, "result": result}, default=float))


if __name__ == "__main__":
    main()
