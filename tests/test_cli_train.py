"""`lacss train` and `lacss demo` end to end, at toy sizes."""

import csv

import keras
import numpy as np
import pytest
import tifffile

from lacss_core import cli
from lacss_core.data import synthetic_cells

pytestmark = pytest.mark.slow

TOY = [
    "--steps",
    "2",
    "--batch-size",
    "2",
    "--size",
    "64",
    "--max-instances",
    "16",
    "--crop-size",
    "16",
    "--checkpoint-every",
    "1",
]


def _write_samples(folder, weak: bool):
    folder.mkdir()
    for i in range(2):
        sample = synthetic_cells(seed=i, size=(64, 64), n_cells=4, radius=(5.0, 7.0))
        tifffile.imwrite(folder / f"img{i}.tif", sample.image[..., 0])
        if not weak:
            tifffile.imwrite(folder / f"img{i}_masks.tif", sample.label.astype(np.uint16))
            continue
        tifffile.imwrite(folder / f"img{i}_mask.tif", sample.mask.astype(np.uint8))
        with open(folder / f"img{i}_points.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["y", "x"])
            writer.writerows(sample.locations.tolist())
    return folder


@pytest.mark.parametrize("weak", [False, True], ids=["labels", "points"])
def test_train_writes_model_curve_and_checkpoints(tmp_path, weak, capsys):
    data = _write_samples(tmp_path / "train", weak)
    out = tmp_path / "cells.keras"
    argv = ["train", str(data), "-o", str(out), *TOY] + (["--weak", "--auxnet"] if weak else [])
    assert cli.main(argv) == 0
    assert out.is_file()
    assert (tmp_path / "cells_training_curve.png").is_file()
    assert (tmp_path / "cells_checkpoints" / "state.json").is_file()
    assert f"wrote {out}" in capsys.readouterr().out
    config = keras.saving.load_model(out).get_config()
    assert config["centre_prior_sigma"] == (
        cli.WEAK_FROM_SCRATCH["centre_prior_sigma"] if weak else None
    )


def test_train_explains_bad_input(tmp_path, capsys):
    data = _write_samples(tmp_path / "train", weak=False)
    (data / "img1_masks.tif").unlink()
    assert cli.main(["train", str(data), "-o", str(tmp_path / "m.keras"), *TOY]) == 2
    assert "img1" in capsys.readouterr().err
    assert cli.main(["train", str(data), "-o", str(tmp_path / "m.h5")]) == 2
    assert "--output must end in .keras" in capsys.readouterr().err


def test_demo_writes_its_files_and_prints_ap(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "-o", str(out), "--steps", "2", "--test-images", "1"]) == 0
    printed = capsys.readouterr().out
    assert "AP50" in printed and "cells found" in printed
    for name in (
        "model.keras",
        "training_curve.png",
        "images/synthetic_00.tif",
        "ground_truth/synthetic_00_masks.tif",
        "predictions/synthetic_00_label.tif",
        "predictions/synthetic_00_overlay.png",
        "predictions/synthetic_00_cells.csv",
    ):
        assert (out / name).is_file(), name
    # The README's next steps work on the demo's folders.
    results = tmp_path / "results"
    model = str(out / "model.keras")
    assert cli.main(["predict", model, str(out / "images"), "-o", str(results)]) == 0
    scores = str(tmp_path / "evaluation.json")
    assert cli.main(["evaluate", str(results), str(out / "ground_truth"), "-o", scores]) == 0
    assert "AP50" in capsys.readouterr().out
    assert cli.main(["demo", "--steps", "0"]) == 2


def test_train_data_parallel(tmp_path, capsys):
    data = _write_samples(tmp_path / "train", weak=False)
    argv = ["train", str(data), "-o", str(tmp_path / "dp.keras"), "--data-parallel", *TOY]
    if keras.backend.backend() == "torch":  # DDP runs under torchrun, not from this command
        assert cli.main(argv) == 2
        assert "torchrun" in capsys.readouterr().err
        return
    try:
        assert cli.main(argv) == 0
    finally:
        keras.distribution.set_distribution(None)  # data_parallel() is process-wide
    assert (tmp_path / "dp.keras").is_file()
