"""What calibrated thresholds gain: held-out F1 and AP50 of a tiny model at the default thresholds
and at those ``lacss_core.calibrate`` chose on separate validation images.

Usage::

    KERAS_BACKEND=jax python benchmarks/calibration.py [--steps 40 150] [--val 24] [--test 16]

Per training length it trains ``lacss_tiny`` (crop 24) on 16 synthetic 64 x 64 images (the
setting of ``tests/test_calibrate.py`` and ``docs/results.md``), calibrates on ``--val`` images
(seed 100) with the default grids, and scores ``--test`` held-out images (seed 200). Prints a
markdown table; the calibration time is wall time (compilation included) and only indicative on a
loaded machine.
"""

from __future__ import annotations

import argparse
import time

CELLS = dict(size=(64, 64), n_cells=6, radius=(5.0, 8.0))


def scores(model, samples, **options) -> tuple[float, float]:
    from lacss_core.metrics import coco_mask_ap, object_accuracy
    from lacss_core.predict import predict_instances

    outs = [predict_instances(model, s.image, **options) for s in samples]
    labels, truth = [o[0] for o in outs], [s.label for s in samples]
    ap = coco_mask_ap(labels, truth, [o[1]["scores"] for o in outs])
    return object_accuracy(labels, truth).f1, ap.ap50


def run(steps: int, n_val: int, n_test: int) -> str:
    import keras

    from lacss_core.calibrate import CALIBRATED, calibrate
    from lacss_core.data import LacssDataset, SyntheticCells
    from lacss_core.models import Lacss
    from lacss_core.train import train

    keras.utils.set_random_seed(0)
    model = Lacss.from_preset("lacss_tiny", crop_size=24, max_output=64, train_max_output=32)
    data = LacssDataset(SyntheticCells(16, seed=0, **CELLS), batch_size=4, max_instances=12,
                        size=CELLS["size"], augment=True, seed=0)  # fmt: skip
    train(model, data, steps=steps, learning_rate=2e-3, seed=0, verbose=0, calibrate=False)
    validation, test = (
        SyntheticCells(n_val, seed=100, **CELLS),
        SyntheticCells(n_test, seed=200, **CELLS),
    )
    before = scores(model, test)
    start = time.perf_counter()
    result = calibrate(model, validation)
    seconds = time.perf_counter() - start
    after = scores(model, test, **{k: result[k] for k in CALIBRATED})
    chosen = ", ".join(f"{result[k]:g}" for k in CALIBRATED)
    return (
        f"| {keras.backend.backend()} | {steps} | {before[0]:.3f} | {after[0]:.3f} | "
        f"{before[1]:.3f} | {after[1]:.3f} | {chosen} | {seconds:.1f} s |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[40, 150])
    parser.add_argument("--val", type=int, default=24, help="validation images")
    parser.add_argument("--test", type=int, default=16, help="held-out test images")
    args = parser.parse_args()
    print("| backend | steps | F1 default | F1 calibrated | AP50 default | AP50 calibrated | "
          "chosen min_score, seg. threshold, NMS px | calibration time |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for steps in args.steps:
        print(run(steps, args.val, args.test), flush=True)


if __name__ == "__main__":
    main()
