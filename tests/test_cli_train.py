"""`lacss train` and `lacss demo` end to end, at toy sizes."""

import csv
import json

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


def _write_samples(folder, weak: bool, first_seed=0):
    folder.mkdir()
    for i in range(2):
        sample = synthetic_cells(seed=first_seed + i, size=(64, 64), n_cells=4, radius=(5.0, 7.0))
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
    if weak:  # the prior sized to the measured cells: 3 px per 12.4 px of median diameter
        want = 3.0 * config["train_diameter"] / 12.4
        assert config["centre_prior_sigma"] == pytest.approx(want, abs=0.011)
    else:
        assert config["centre_prior_sigma"] is None


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
    assert "\r" not in printed and "training: 2/2 steps" in printed  # a log, not bar redraws
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


# ---------------------------------------------------------------------------- issue 14 cases
def _history(out):
    state = json.loads((out.parent / f"{out.stem}_checkpoints" / "state.json").read_text())
    return state["history"]


def test_the_same_seed_gives_the_same_model_bit_for_bit(tmp_path):
    data = _write_samples(tmp_path / "train", weak=False)
    outs = [tmp_path / f"{name}.keras" for name in ("a", "b", "c")]
    for out, seed in zip(outs, ("0", "0", "1"), strict=True):
        assert cli.main(["train", str(data), "-o", str(out), *TOY, "--seed", seed]) == 0
    a, b, c = (keras.saving.load_model(out) for out in outs)
    for wa, wb in zip(a.weights, b.weights, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(wa), keras.ops.convert_to_numpy(wb), err_msg=wa.path
        )
    assert _history(outs[0]) == _history(outs[1])  # the loss trajectory, exactly
    assert _history(outs[0])["loss"] != _history(outs[2])["loss"]
    assert any(
        not np.array_equal(keras.ops.convert_to_numpy(wa), keras.ops.convert_to_numpy(wc))
        for wa, wc in zip(a.weights, c.weights, strict=True)
    )


def test_training_again_with_other_data_or_settings_is_refused(tmp_path, capsys):
    data = _write_samples(tmp_path / "train", weak=False)
    other = _write_samples(tmp_path / "other", weak=False, first_seed=10)
    out = tmp_path / "m.keras"
    assert cli.main(["train", str(data), "-o", str(out), *TOY]) == 0
    before = out.read_bytes()
    capsys.readouterr()

    assert cli.main(["train", str(other), "-o", str(out), *TOY]) == 2
    err = capsys.readouterr().err
    assert "holds checkpoints of a different run (at step 2): data.samples" in err
    assert "--resume" in err and "--overwrite" in err
    assert out.read_bytes() == before

    bigger_crop = [*TOY[: TOY.index("--crop-size")], "--crop-size", "24", *TOY[-2:]]
    for extra in ([], ["--resume"]):
        assert cli.main(["train", str(data), "-o", str(out), *bigger_crop, *extra]) == 2
        err = capsys.readouterr().err
        assert "model.config.crop_size: 16 -> 24" in err and "different model" in err
    assert out.read_bytes() == before

    more_steps = ["--steps", "3", *TOY[2:]]
    assert cli.main(["train", str(other), "-o", str(out), *more_steps, "--resume"]) == 0
    assert "warning: resuming" in capsys.readouterr().err
    assert _history(out)["step"] == [1, 2, 3]
    assert cli.main(["train", str(other), "-o", str(out), *TOY, "--overwrite"]) == 0
    assert _history(out)["step"] == [1, 2]


def test_damaged_checkpoint_files_are_named(tmp_path, capsys):
    data = _write_samples(tmp_path / "train", weak=False)
    out = tmp_path / "m.keras"
    argv = ["train", str(data), "-o", str(out), *TOY]
    assert cli.main(argv) == 0
    folder = tmp_path / "m_checkpoints"
    state = (folder / "state.json").read_text()
    (folder / "state.json").write_text(state[:100])
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"checkpoint state {folder / 'state.json'} is corrupt or truncated" in err
    assert "Traceback" not in err
    (folder / "state.json").write_text(state)
    checkpoint = folder / "ckpt-00000002.keras"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {checkpoint} cannot be loaded" in err and "not a complete zip" in err
    assert "--overwrite" in err


def test_train_usage_errors_come_before_any_work(tmp_path, capsys, monkeypatch):
    data = _write_samples(tmp_path / "train", weak=False)

    def no_loading(*args, **kwargs):
        raise AssertionError("data was loaded before the usage error was reported")

    out = str(tmp_path / "m.keras")
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "old.keras").write_text("an earlier model")
    cases = [
        (["-o", out, "--checkpoint-dir", str(tmp_path / "a_file")], "exists and is not a folder"),
        (["-o", str(tmp_path / "old.keras")], "use --overwrite to replace it"),
        (["-o", out, "--steps", "0"], "--steps must be >= 1"),
        (["-o", out, "--target-diameter", "0"], "--target-diameter must be a number of pixels > 0"),
        (["-o", out, "--target-diameter", "nan"], "must be a number of pixels > 0, got nan"),
        (["-o", out, "--target-diameter", "-2"], "must be a number of pixels > 0, got -2"),
        (["-o", out, "--init", str(tmp_path / "none.keras")], "no such model file"),
        (["-o", str(tmp_path / "a_file" / "m.keras")], "cannot write into"),
    ]
    with monkeypatch.context() as patch:
        patch.setattr("lacss_core.data.load_labelled_folder", no_loading)
        for extra, message in cases:
            assert cli.main(["train", str(data), *extra]) == 2
            err = capsys.readouterr().err
            assert message in err and "Traceback" not in err, (extra, err)


def test_a_failed_run_leaves_no_empty_checkpoint_folder(tmp_path, capsys):
    data = _write_samples(tmp_path / "train", weak=False)
    out = tmp_path / "m.keras"
    few = [*TOY, "--max-instances", "1"]  # 4 cells per image: the first batch fails
    assert cli.main(["train", str(data), "-o", str(out), *few]) == 2
    err = capsys.readouterr().err
    assert "--max-instances" in err and "--subsample" in err and "subsample=True" in err
    assert not (tmp_path / "m_checkpoints").exists() and not out.exists()
    assert cli.main(["train", str(data), "-o", str(out), *few, "--subsample"]) == 0


def test_one_large_image_trains_with_no_size_options(tmp_path, capsys):
    # Issue 17: one 512 x 512 image, batch 4: every step takes 4 random crops of it, of a size
    # chosen from the cells (the crops of points + masks: tests/data/test_random_crops.py; the
    # choice: tests/data/test_sizes.py).
    folder = tmp_path / "one"
    folder.mkdir()
    sample = synthetic_cells(seed=5, size=(512, 512), n_cells=60, radius=(6.0, 9.0))
    tifffile.imwrite(folder / "big.tif", sample.image[..., 0])
    tifffile.imwrite(folder / "big_masks.tif", sample.label.astype(np.uint16))
    out = tmp_path / "big.keras"
    assert cli.main(["train", str(folder), "-o", str(out), "--steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert "sizes from the data: 60 cells in 1 image(s), from labels" in printed
    assert "--crop-size     32" in printed and "--size          128" in printed
    assert _history(out)["step"] == [1, 2]
    state = json.loads((tmp_path / "big_checkpoints" / "state.json").read_text())
    assert state["run"]["data"]["size"] == [128, 128]
    config = keras.saving.load_model(out).get_config()
    assert config["crop_size"] == 32 and 14 < config["train_diameter"] < 17


@pytest.mark.parametrize("weak", [False, True], ids=["labels", "points"])
def test_target_diameter_rescales_training_and_prediction_repeats_it(tmp_path, weak, capsys):
    # Issue 17 item 3: cells ~12 px across trained at 8 px; predict(diameter=d) resizes by 8 / d.
    from lacss_core.predict import predict_instances

    data = _write_samples(tmp_path / "train", weak)
    out = tmp_path / "small.keras"
    argv = ["train", str(data), "-o", str(out), "--steps", "2", "--batch-size", "2"]
    argv += ["--size", "64", "--max-instances", "16", "--target-diameter", "8"]
    assert cli.main(argv + (["--weak"] if weak else [])) == 0
    printed = capsys.readouterr().out
    rescale = next(line for line in printed.splitlines() if line.startswith("  rescale"))
    scale = float(rescale.split()[1][1:])
    median = float(rescale.split("the median diameter ")[1].split()[0])
    assert scale == pytest.approx(8 / median, abs=5e-3) and 0.5 < scale < 0.8, rescale
    assert "train_diameter  8.0" in printed
    state = json.loads((tmp_path / "small_checkpoints" / "state.json").read_text())
    assert state["run"]["data"]["samples"]["rescaled"] == pytest.approx(scale, abs=5e-4)
    model = keras.saving.load_model(out)
    assert model.train_diameter == 8.0 and model.get_config()["train_diameter"] == 8.0
    image = synthetic_cells(seed=9, size=(64, 64), n_cells=4, radius=(5.0, 7.0)).image
    _, details = predict_instances(model, image, diameter=median)
    assert details["scale"] == pytest.approx(scale, abs=5e-3)
