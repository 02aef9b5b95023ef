"""Smoke tests: every example in ``examples/`` runs end to end at tiny sizes.

Each runs in a subprocess under this process's Keras backend (CI runs the suite once per
backend); the training examples run in the pass of the backend they are written for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BACKEND = keras.backend.backend()

pytestmark = pytest.mark.slow


def run_example(script: str, *args: str) -> str:
    """Run ``examples/<script>`` with ``args``; its stdout, or a failure showing its output."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        env={**os.environ, "KERAS_BACKEND": BACKEND},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def only_on(backend: str):
    return pytest.mark.skipif(
        BACKEND != backend, reason=f"a {backend} example: runs in the KERAS_BACKEND={backend} pass"
    )


TRAINING_ARGS = ("--steps", "2", "--size", "64", "--images", "2", "--max-instances", "16")


@only_on("torch")
def test_train_in_torch(tmp_path):
    out = tmp_path / "lacss.pt"
    stdout = run_example("train_in_torch.py", *TRAINING_ARGS, "--out", str(out))
    assert "step 2: loss" in stdout
    assert out.stat().st_size > 0


@only_on("jax")
def test_train_in_jax_optax(tmp_path):
    out = tmp_path / "lacss.keras"
    stdout = run_example("train_in_jax_optax.py", *TRAINING_ARGS, "--out", str(out))
    assert "step 2: loss" in stdout
    assert out.stat().st_size > 0


def test_validate_with_oracle_on_synthetic_cells():
    stdout = run_example("validate_with_oracle.py", "--size", "64")
    assert "all checks passed" in stdout


def test_validate_with_oracle_on_files(tmp_path):
    import tifffile

    from lacss_core.data import synthetic_cells

    sample = synthetic_cells(3, size=(48, 64), n_cells=5)
    tifffile.imwrite(tmp_path / "cells.tif", (sample.image[..., 0] * 1000).astype(np.uint16))
    tifffile.imwrite(tmp_path / "cells_masks.tif", sample.label.astype(np.uint16))
    stdout = run_example(
        "validate_with_oracle.py",
        "--image",
        str(tmp_path / "cells.tif"),
        "--label",
        str(tmp_path / "cells_masks.tif"),
    )
    assert f"image (48, 64, 1), {int(sample.label.max())} cells" in stdout
    assert "all checks passed" in stdout


def test_segment_folder(tmp_path):
    import tifffile

    from lacss_core.data import synthetic_cells
    from lacss_core.models import Lacss

    images = tmp_path / "images"
    images.mkdir()
    for i, size in enumerate([(64, 64), (40, 72)]):
        tifffile.imwrite(images / f"cells{i}.tif", synthetic_cells(i, size=size).image[..., 0])
    model = Lacss.from_preset("lacss_tiny")
    model.build((None, None, None, 1))
    model.save(tmp_path / "lacss.keras")

    stdout = run_example(
        "segment_folder.py", str(images), "--model", str(tmp_path / "lacss.keras"), "--overlay"
    )
    results = images / "lacss"
    for i, size in enumerate([(64, 64), (40, 72)]):
        label = tifffile.imread(results / f"cells{i}_label.tif")
        assert label.shape == size
        header = (results / f"cells{i}_cells.csv").read_text().splitlines()[0]
        assert header.startswith("label,score,y,x,area")
        assert (results / f"cells{i}_overlay.png").exists()
        assert f"cells{i}.tif: {int(label.max())} cells" in stdout


def test_realistic_gallery(tmp_path):
    out = tmp_path / "gallery.png"
    stdout = run_example("realistic_gallery.py", "--out", str(out), "--per-modality", "1",
                         "--size", "64")  # fmt: skip
    assert f"wrote {out}" in stdout
    assert out.stat().st_size > 1000


@only_on("jax")
def test_train_generalist_stops_on_its_time_budget_and_resumes(tmp_path):
    args = ["--out", str(tmp_path / "run"), "--preset", "lacss_tiny", "--steps", "2",
            "--size", "64", "--max-instances", "16", "--batch-size", "2",
            "--checkpoint-every", "1", "--validate-every", "2", "--validation-images", "2",
            "--test-images", "1", "--test-size", "64", "--bn-batches", "2",
            "--calibration-images", "2"]  # fmt: skip
    first = run_example("train_generalist.py", *args, "--time-budget", "0.001")
    assert "trained to step 1/2" in first and "stopped by the time budget" in first
    second = run_example("train_generalist.py", *args)
    assert "trained to step 2/2: 1 steps" in second
    assert "| nuclei |" in second and "| phase |" in second
    assert "calibrated on 2 images" in second
    assert (tmp_path / "run" / "generalist.weights.h5").stat().st_size > 0
    assert "ap50" in (tmp_path / "run" / "metrics.json").read_text()
    third = run_example(
        "train_generalist.py", *args, "--evaluate-only", "--choose-by", "calibrated"
    )
    assert "last model calibrated on 2 images" in third
    assert "best model calibrated on 2 images" in third
    assert third.count("calibrated on 2 images") == 2  # the chosen one is not calibrated again


def test_average_weights_gives_the_mean_of_the_models(tmp_path):
    from lacss_core.models import Lacss

    paths = []
    for k in range(2):
        model = Lacss.from_preset("lacss_tiny", min_score=0.1 * (k + 1))
        model.build((None, None, None, 1))
        for variable in model.weights:
            variable.assign(np.full(variable.shape, float(k + 1), "float32"))
        paths.append(str(tmp_path / f"m{k}.keras"))
        model.save(paths[-1])
    out = tmp_path / "mean.keras"
    assert "the mean of 2 models" in run_example("average_weights.py", *paths, "-o", str(out))
    averaged = keras.saving.load_model(out)
    for variable in averaged.weights:
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), 1.5)
    assert averaged.min_score == pytest.approx(0.2)  # the last model's config


def test_average_weights_refuses_other_architectures(tmp_path):
    from lacss_core.models import Lacss

    paths = []
    for preset in ("lacss_tiny", "lacss_small"):
        model = Lacss.from_preset(preset)
        model.build((None, None, None, 1))
        paths.append(str(tmp_path / f"{preset}.keras"))
        model.save(paths[-1])
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "average_weights.py"), *paths, "-o", str(tmp_path / "x")],
        env={**os.environ, "KERAS_BACKEND": BACKEND}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode != 0 and "does not have the variables of" in result.stderr


def test_modality_thresholds_measures_a_modality(tmp_path):
    from lacss_core import pretrained

    if not pretrained.has_weights("generalist"):
        pytest.skip("no generalist shipped")
    said = run_example(
        "modality_thresholds.py", "measure", "--out", str(tmp_path), "--modalities", "phase",
        "--calibration-images", "1", "--test-images", "1", "--test-size", "96",
    )  # fmt: skip
    assert "phase: calibrated on 1 images" in said and "thresholds of its own" in said
    result = json.loads((tmp_path / "phase.json").read_text())
    assert result["modality"] == "phase" and result["metric"] == "ap50"
    assert set(result["config"]) == {
        "min_score", "predict_nms_distance", "segmentation_threshold", "calibration"
    }  # fmt: skip
    assert result["config"]["calibration"]["images"] == 1
    assert {"ap50", "ap75"} <= set(result["heldout"]) & set(result["heldout_own_thresholds"])
