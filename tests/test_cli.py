"""The ``lacss`` command: predict, evaluate and conformance, on a saved tiny model."""

import csv
import json
import os
import subprocess
import sys

import imageio.v3 as iio
import keras
import numpy as np
import pytest
import roifile
import tifffile

from lacss_core import cli

OUTPUTS = ("_label.tif", "_overlay.png", "_cells.csv", "_coco.json", "_rois.zip")
LOG = "lacss_predict.jsonl"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    from lacss_core.models import Lacss

    keras.utils.set_random_seed(0)
    model = Lacss.from_preset("lacss_tiny", min_score=0.0)
    model.build((None, None, None, 1))
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    return str(path)


@pytest.fixture
def images(tmp_path):
    """A folder with a grey TIFF, an RGB PNG, a corrupt TIFF and a text file (not an image)."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    tifffile.imwrite(folder / "grey.tif", rng.integers(0, 4000, (64, 64), dtype=np.uint16))
    iio.imwrite(folder / "colour.png", rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    (folder / "broken.tif").write_bytes(b"II*\x00 this is not a tiff")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_predict_writes_every_output_and_reports_the_corrupt_file(
    model_path, images, tmp_path, capsys
):
    out = tmp_path / "out"
    argv = ["predict", model_path, str(images), "-o", str(out), "--coco", "--rois"]
    status = cli.main(argv + ["--channels", "grey"])
    assert status == 1
    err = capsys.readouterr().err
    assert "broken.tif" in err and "2 image(s) segmented" in err and "1 failed" in err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [stem + suffix for stem in ("colour", "grey") for suffix in OUTPUTS] + [LOG]
    )
    label = tifffile.imread(out / "grey_label.tif")
    assert label.shape == (64, 64) and label.max() > 0  # min_score 0: random weights give cells
    with open(out / "grey_cells.csv") as f:
        assert len(f.read().splitlines()) == label.max() + 1  # header + one row per cell
    assert len(roifile.roiread(out / "grey_rois.zip") or []) == label.max()
    with open(out / "colour_coco.json") as f:
        assert json.load(f)["images"][0]["height"] == 48
    assert iio.imread(out / "colour_overlay.png").shape == (48, 64, 3)


def test_predict_augment_gives_the_labels_of_predict_instances_augment(
    model_path, images, tmp_path
):
    from lacss_core.predict import predict_instances

    out = tmp_path / "out"
    argv = ["predict", model_path, str(images / "grey.tif"), "-o", str(out), "--augment"]
    assert cli.main(argv) == 0
    model = keras.saving.load_model(model_path)
    image = tifffile.imread(images / "grey.tif")
    plain, _ = predict_instances(model, image)
    augmented, _ = predict_instances(model, image, augment=True)
    assert not np.array_equal(plain, augmented)
    np.testing.assert_array_equal(tifffile.imread(out / "grey_label.tif"), augmented)


def test_predict_reports_saturated_tiles(model_path, images, tmp_path, capsys):
    # min_score 0 on random weights: proposals everywhere, far more than 16 slots hold
    out = tmp_path / "out"
    grey = str(images / "grey.tif")
    status = cli.main(["predict", model_path, grey, "-o", str(out), "--max-output", "16", "--coco"])
    assert status == 0
    err = capsys.readouterr().err
    assert "grey.tif: 1 tile(s) still held" in err and "1 image(s) had saturated tiles" in err
    with open(out / "grey_cells.csv") as f:
        rows = list(csv.DictReader(f))
    assert 0 < len(rows) <= 16 and {r["in_saturated_tile"] for r in rows} == {"1"}
    with open(out / "grey_coco.json") as f:
        assert json.load(f)["info"]["saturated_tiles"] == 1


def test_predict_keeps_existing_outputs_unless_overwrite(model_path, images, tmp_path, capsys):
    out = tmp_path / "out"
    grey = str(images / "grey.tif")
    assert cli.main(["predict", model_path, grey, "-o", str(out)]) == 0
    (out / "grey_label.tif").write_bytes(b"keep me")
    assert cli.main(["predict", model_path, grey, "-o", str(out)]) == 0
    assert (out / "grey_label.tif").read_bytes() == b"keep me"
    assert "--overwrite" in capsys.readouterr().err
    assert cli.main(["predict", model_path, grey, "-o", str(out), "--overwrite"]) == 0
    assert tifffile.imread(out / "grey_label.tif").shape == (64, 64)


def test_predict_globs_and_missing_paths(model_path, images, tmp_path, capsys):
    out = tmp_path / "out"
    pattern = str(images / "*.png")
    argv = ["predict", model_path, pattern, str(tmp_path / "nope.tif"), "-o", str(out)]
    status = cli.main(argv + ["--channels", "grey"])
    assert status == 1
    assert "nope.tif: no such file or folder" in capsys.readouterr().err
    assert (out / "colour_label.tif").exists() and not (out / "grey_label.tif").exists()


def test_predict_with_a_bad_model_name(images, tmp_path, capsys):
    status = cli.main(["predict", "no_such_model", str(images), "-o", str(tmp_path / "o")])
    assert status == 2
    assert "neither a .keras file nor a preset" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["0", "-3", "nan", "inf", "big"])
def test_predict_refuses_a_bad_diameter_before_loading_anything(images, tmp_path, capsys, text):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["predict", str(images), "-o", str(tmp_path / "o"), "--diameter", text])
    assert stopped.value.code == 2
    assert "diameter must be 'auto' or a number of pixels > 0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def write_label(path, label):
    tifffile.imwrite(path, label.astype(np.uint16))


def test_evaluate_pairs_by_stem_and_writes_json(tmp_path, capsys):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    label = np.zeros((32, 32), np.int32)
    label[2:10, 2:10], label[15:25, 15:30] = 1, 2
    write_label(gt / "a_masks.tif", label)
    iio.imwrite(gt / "a.png", np.full((32, 32, 3), 9, np.uint8))  # its image: not a label
    write_label(pred / "a_label.tif", label)  # perfect
    write_label(gt / "b.tif", label)
    write_label(pred / "b_label.tif", np.where(label == 2, 1, 0))  # one of two, one miss
    write_label(gt / "c.tif", label)  # no prediction
    report = tmp_path / "m.json"
    assert cli.main(["evaluate", str(pred), str(gt), "-o", str(report)]) == 1
    captured = capsys.readouterr()
    assert "c.tif: no prediction" in captured.err
    lines = captured.out.splitlines()
    assert lines[0].split()[:4] == ["image", "n_gt", "n_pred", "AP50"]
    assert lines[1].split()[0] == "a" and lines[3].split()[0] == "all"
    with open(report) as f:
        result = json.load(f)
    assert [r["image"] for r in result["images"]] == ["a", "b"]
    assert result["images"][0]["accuracy"]["accuracy"] == 1.0
    assert result["images"][1]["accuracy"]["fn"] == 1
    assert result["all"]["accuracy"]["tp"] == 3 and result["all"]["coco"]["n_gt"] == 4


def test_evaluate_uses_scores_from_the_cells_table(tmp_path, model_path, images, capsys):
    out = tmp_path / "out"
    cli.main(["predict", model_path, str(images / "grey.tif"), "-o", str(out)])
    gt = tmp_path / "gt"
    gt.mkdir()
    write_label(gt / "grey.tif", tifffile.imread(out / "grey_label.tif"))
    report = tmp_path / "m.json"
    assert cli.main(["evaluate", str(out), str(gt), "-o", str(report)]) == 0
    with open(report) as f:
        coco = json.load(f)["all"]["coco"]
    assert coco["n_gt"] > 0 and coco["n_pred"] == coco["n_gt"] and coco["map"] == 1.0


def test_evaluate_with_nothing_to_pair(tmp_path, capsys):
    (tmp_path / "gt").mkdir()
    write_label(tmp_path / "gt" / "a.tif", np.ones((4, 4)))
    status = cli.main(["evaluate", str(tmp_path / "missing"), str(tmp_path / "gt")])
    assert status == 1
    assert "no such file or folder" in capsys.readouterr().err


def test_evaluate_rejects_a_bad_label_image(tmp_path, capsys):
    for name in ("pred", "gt"):
        (tmp_path / name).mkdir()
    iio.imwrite(tmp_path / "pred" / "a.png", np.zeros((8, 8, 3), np.uint8))
    write_label(tmp_path / "gt" / "a.tif", np.ones((8, 8)))
    out = str(tmp_path / "m.json")
    assert cli.main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "-o", out]) == 1
    assert "a label image has one" in capsys.readouterr().err


def test_conformance_delegates_to_the_runner(monkeypatch):
    from lacss_core.conformance import __main__ as runner

    calls = []
    monkeypatch.setattr(runner, "main", lambda argv, prog: calls.append(argv) or 7)
    assert cli.main(["conformance", "--backends", "jax", "--output", "x"]) == 7
    assert cli.main(["conformance", "--help"]) == 7
    assert calls == [["--backends", "jax", "--output", "x"], ["--help"]]


@pytest.mark.parametrize("command", ["demo", "predict", "train", "evaluate"])
def test_help_of_each_command(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert "example: lacss " + command in capsys.readouterr().out


def test_unknown_option_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["evaluate", "a", "b", "--frobnicate"])
    assert exit_info.value.code == 2
    assert "--frobnicate" in capsys.readouterr().err


def test_console_script_lists_the_commands():
    env = dict(os.environ, KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "jax"))
    lacss = os.path.join(os.path.dirname(sys.executable), "lacss")
    result = subprocess.run([lacss, "--help"], capture_output=True, text=True, env=env)
    assert result.returncode == 0
    for command in ("demo", "predict", "train", "evaluate", "conformance"):
        assert command in result.stdout


def test_predict_help_names_every_pretrained_model(capsys):
    from lacss_core import pretrained

    with pytest.raises(SystemExit):
        cli.main(["predict", "--help"])
    # argparse wraps the help: compare without line breaks
    text = " ".join(capsys.readouterr().out.split())
    assert all(f"{name}," in text or f"{name};" in text for name in pretrained.available())
    assert f"{pretrained.DEFAULT_MODEL} is the default when MODEL is left out" in text


def test_predict_help_names_the_default_model_it_uses(monkeypatch, capsys):
    from lacss_core import pretrained

    monkeypatch.setattr(pretrained, "DEFAULT_MODEL", "nuclei")
    with pytest.raises(SystemExit):
        cli.main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "nuclei is the default when MODEL is left out" in text
    assert "generalist is the default" not in text
