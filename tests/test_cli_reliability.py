"""Nothing lost, nothing mixed up: `lacss predict` / `evaluate` with messy inputs (issue 14).

Each test is a case of docs/reliability.md, run through the CLI's ``main`` (or the console script
where the process start matters).
"""

import csv
import json
import os
import socket
import subprocess
import sys

import imageio.v3 as iio
import keras
import numpy as np
import pytest
import roifile
import tifffile

from lacss_core import cli, export
from lacss_core._lock import LOCK_NAME, FolderLock

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


@pytest.fixture(scope="module")
def other_model_path(tmp_path_factory):
    from lacss_core.models import Lacss

    keras.utils.set_random_seed(1)
    model = Lacss.from_preset("lacss_tiny", min_score=0.0)
    model.build((None, None, None, 1))
    path = tmp_path_factory.mktemp("model") / "other.keras"
    model.save(path)
    return str(path)


def grey(seed=0, shape=(64, 64)):
    return np.random.default_rng(seed).integers(0, 4000, shape, dtype=np.uint16)


@pytest.fixture
def two_images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", grey(0))
    tifffile.imwrite(folder / "b.tif", grey(1))
    return folder


def predict(model_path, inputs, out, *extra):
    return cli.main(["predict", model_path, *map(str, inputs), "-o", str(out), *extra])


def files_in(folder):
    return sorted(p.name for p in folder.iterdir())


def no_segmentation(monkeypatch):
    """Fail the test if any image is segmented (usage errors must come first)."""

    def refuse(*args, **kwargs):
        raise AssertionError("an image was segmented before the usage error was reported")

    monkeypatch.setattr("lacss_core.predict.predict_instances", refuse)


# ---------------------------------------------------------------------------- stacks (bad 1)
def write_stacks(folder):
    stack = np.stack([grey(i) for i in range(3)])
    tifffile.imwrite(folder / "zstack.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(folder / "series.tif", stack[:2], imagej=True, metadata={"axes": "TYX"})
    for page in stack:  # a plain 3-page TIFF, no metadata
        tifffile.imwrite(folder / "pages.tif", page, append=True, metadata=None)
    return stack


def test_stacks_are_refused_with_how_to_pick_a_plane(model_path, tmp_path, capsys):
    folder = tmp_path / "stacks"
    folder.mkdir()
    write_stacks(folder)
    out = tmp_path / "out"
    assert predict(model_path, [folder], out) == 1
    err = capsys.readouterr().err
    for name, axes in (("zstack", "Z=3"), ("series", "T=2"), ("pages", "I=3")):
        assert f"{name}.tif is a stack, not one 2-D image" in err
        assert axes in err
    assert "--plane N" in err and "--stack-mode per-plane" in err
    assert "2 channel" not in err  # the 2-frame time series is not "2 channels"
    assert files_in(out) == [LOG]


def test_one_plane_or_every_plane_of_a_stack(model_path, tmp_path):
    folder = tmp_path / "stacks"
    folder.mkdir()
    stack = write_stacks(folder)
    (folder / "series.tif").unlink()
    (folder / "pages.tif").unlink()
    one, every = tmp_path / "one", tmp_path / "every"
    assert predict(model_path, [folder / "zstack.tif"], one, "--plane", "1") == 0
    assert tifffile.imread(one / "zstack_label.tif").shape == (64, 64)
    argv = ["--stack-mode", "per-plane", "--coco", "--rois"]
    assert predict(model_path, [folder / "zstack.tif"], every, *argv) == 0
    with tifffile.TiffFile(every / "zstack_label.tif") as tif:
        assert tif.series[0].axes == "ZYX" and tif.series[0].shape == (3, 64, 64)
        labels = tif.asarray()
    np.testing.assert_array_equal(labels[1], tifffile.imread(one / "zstack_label.tif"))
    with tifffile.TiffFile(every / "zstack_overlay.tif") as tif:
        assert tif.series[0].shape == (3, 64, 64, 3)
    with open(every / "zstack_cells.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["plane"]) for r in rows] == sorted(int(r["plane"]) for r in rows)
    for plane in range(3):
        assert sum(int(r["plane"]) == plane for r in rows) == labels[plane].max()
    coco = json.loads((every / "zstack_coco.json").read_text())
    assert [image["id"] for image in coco["images"]] == [1, 2, 3]
    assert len(coco["annotations"]) == len(rows)
    rois = roifile.roiread(every / "zstack_rois.zip")
    assert sorted({roi.position for roi in rois}) == [1, 2, 3] and len(rois) == len(rows)
    assert stack.shape == (3, 64, 64)


def test_a_stack_whose_pages_are_channels(model_path, tmp_path):
    path = tmp_path / "pages.tif"
    for i in range(2):
        tifffile.imwrite(path, grey(i), append=True, metadata=None)
    out = tmp_path / "out"
    assert predict(model_path, [path], out, "--stack-mode", "channels", "--channels", "1") == 0
    assert tifffile.imread(out / "pages_label.tif").shape == (64, 64)


# ---------------------------------------------------------------------------- two runs (bad 2)
def test_a_folder_another_run_writes_into_is_refused(model_path, two_images, tmp_path, capsys):
    out = tmp_path / "out"
    with FolderLock(out, purpose="lacss predict"):  # another run holds the folder
        assert predict(model_path, [two_images], out) == 1
        err = capsys.readouterr().err
        assert f"in use by another run: lacss predict (pid {os.getpid()}" in err
        assert files_in(out) == [LOCK_NAME]


def test_a_lock_left_by_a_killed_run_does_not_block(model_path, two_images, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    stale = {"pid": child.pid, "host": socket.gethostname(), "started": "earlier"}
    (out / LOCK_NAME).write_text(json.dumps(stale))
    assert predict(model_path, [two_images / "a.tif"], out) == 0
    assert not (out / LOCK_NAME).exists()


def test_results_of_another_model_are_not_mixed_in(
    model_path, other_model_path, two_images, tmp_path, capsys
):
    out = tmp_path / "out"
    assert predict(model_path, [two_images / "a.tif"], out) == 0
    capsys.readouterr()
    assert predict(other_model_path, [two_images], out) == 2  # b.tif would be another model's
    err = capsys.readouterr().err
    assert "made with other settings (model.sha256:" in err and "--overwrite" in err
    assert not (out / "b_label.tif").exists()
    assert predict(model_path, [two_images], out, "--min-area", "3") == 2  # other options too
    assert "options.min_area: 0 -> 3" in capsys.readouterr().err
    assert predict(other_model_path, [two_images], out, "--overwrite") == 0
    log = [json.loads(line) for line in (out / LOG).read_text().splitlines()]
    ids = {e["image"]: e["id"] for e in log if "image" in e}
    assert ids["a"] == ids["b"] != log[0]["id"]


# ---------------------------------------------------------------------------- Ctrl-C (bad 5)
def test_an_interrupted_run_is_finished_by_running_it_again(
    model_path, two_images, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out"
    real_write_csv = export.write_csv

    def interrupted_on_b(path, details):
        if "b_" in str(path):
            raise KeyboardInterrupt  # Ctrl-C after b's label and overlay were written
        real_write_csv(path, details)

    monkeypatch.setattr(export, "write_csv", interrupted_on_b)
    assert predict(model_path, [two_images], out) == 130
    assert "Run the same command again" in capsys.readouterr().err
    assert files_in(out) == sorted(
        ["a_cells.csv", "a_label.tif", "a_overlay.png", "b_label.tif", "b_overlay.png", LOG]
    )  # no temporary file, no lock left
    monkeypatch.setattr(export, "write_csv", real_write_csv)
    assert predict(model_path, [two_images], out) == 0
    err = capsys.readouterr().err
    assert "skipped" in err and "a.tif" in err and "1 image(s) segmented" in err
    assert (out / "b_cells.csv").is_file()


def test_a_crash_cut_log_line_is_ignored_and_the_image_redone(model_path, two_images, tmp_path):
    out = tmp_path / "out"
    assert predict(model_path, [two_images], out) == 0
    lines = (out / LOG).read_text().splitlines()
    (out / LOG).write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])  # b's line cut short
    (out / "b_cells.csv").unlink()
    assert predict(model_path, [two_images], out) == 0
    assert (out / "b_cells.csv").is_file()
    entries = [json.loads(line) for line in (out / LOG).read_text().splitlines()[-1:]]
    assert entries[0]["image"] == "b"


# ---------------------------------------------------------------------------- poor cases
@pytest.mark.parametrize(
    "option, message",
    [
        (["--scale", "0"], "--scale must be a finite number > 0"),
        (["--threshold", "1.5"], "--threshold must be in [0, 1)"),
        (["--tile-size", "10"], "--tile-size must be an int > tile_overlap"),
        (["--min-score", "1.5"], "--min-score must be a number in [0, 1]"),
        (["--min-area", "-1"], "--min-area must be an int >= 0"),
        (["--channels", "red"], "--channels must be 'grey' or comma-separated"),
        (["--channels", "0,1"], "picks 2 channel(s) but the model expects 1"),
        (["--plane", "-1"], "--plane must be >= 0"),
        (["--plane", "0", "--stack-mode", "per-plane"], "cannot be combined"),
    ],
)
def test_usage_errors_are_reported_once_before_any_work(
    model_path, two_images, tmp_path, capsys, monkeypatch, option, message
):
    no_segmentation(monkeypatch)
    out = tmp_path / "out"
    assert predict(model_path, [two_images], out, *option) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and message in err
    assert not out.exists()


def test_an_unwritable_output_folder_is_found_first(
    model_path, two_images, tmp_path, capsys, monkeypatch
):
    no_segmentation(monkeypatch)
    (tmp_path / "a_file").write_text("x")
    assert predict(model_path, [two_images], tmp_path / "a_file") == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert predict(model_path, [two_images], tmp_path / "a_file" / "out") == 2
    assert "cannot write into the output folder" in capsys.readouterr().err


def write_sequential(path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.save(path)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p, good: p.write_bytes(b""), "is empty (0 bytes)"),
        (lambda p, good: p.write_bytes(os.urandom(512)), "not a complete zip file"),
        (
            lambda p, good: p.write_bytes(open(good, "rb").read()[: os.path.getsize(good) // 2]),
            "not a complete zip file",
        ),
        (lambda p, good: write_sequential(p), "holds a Keras 'Sequential' model, not a LACSS"),
        (lambda p, good: None, "does not exist"),
    ],
    ids=["empty", "random-bytes", "truncated", "not-lacss", "missing"],
)
def test_bad_model_files_are_named_with_what_is_wrong(
    model_path, two_images, tmp_path, capsys, monkeypatch, make, message
):
    no_segmentation(monkeypatch)
    bad = tmp_path / "model.keras"
    make(bad, model_path)
    assert predict(str(bad), [two_images], tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert f"model file {bad}" in err and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_files_that_are_not_images_are_said_to_be(model_path, two_images, tmp_path, capsys):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "points.csv").write_text("y,x\n1,2\n")
    inputs = [tmp_path / "empty.png", tmp_path / "notes.txt", tmp_path / "points.csv"]
    assert predict(model_path, inputs + [two_images / "a.tif"], tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "empty.png is empty (0 bytes), not an image" in err
    assert "notes.txt is not an image file" in err and "points.csv is not an image file" in err
    assert "pyav" not in err and "backend" not in err and "1 image(s) segmented" in err


def test_overwrite_removes_outputs_of_kinds_not_asked_for(model_path, two_images, tmp_path):
    out = tmp_path / "out"
    assert predict(model_path, [two_images / "a.tif"], out, "--coco", "--rois") == 0
    assert (out / "a_coco.json").exists() and (out / "a_rois.zip").exists()
    assert predict(model_path, [two_images / "a.tif"], out, "--overwrite") == 0
    assert files_in(out) == ["a_cells.csv", "a_label.tif", "a_overlay.png", LOG]


def test_asking_for_more_kinds_completes_the_set(model_path, two_images, tmp_path, capsys):
    out = tmp_path / "out"
    assert predict(model_path, [two_images / "a.tif"], out) == 0
    assert predict(model_path, [two_images / "a.tif"], out, "--rois") == 0
    assert (out / "a_rois.zip").exists() and "1 image(s) segmented" in capsys.readouterr().err


def test_colour_needs_a_channel_choice_for_a_grey_model(model_path, tmp_path, capsys):
    rng = np.random.default_rng(0)
    iio.imwrite(tmp_path / "rgb.png", rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    iio.imwrite(tmp_path / "greyrgb.png", np.repeat(grey()[..., None] // 16, 3, -1).astype("u1"))
    out = tmp_path / "out"
    assert predict(model_path, [tmp_path / "rgb.png", tmp_path / "greyrgb.png"], out) == 1
    err = capsys.readouterr().err
    assert "rgb.png: image has 3 channel(s) but the model expects 1" in err
    assert "--channels grey" in err and (out / "greyrgb_label.tif").exists()  # grey saved as RGB
    assert predict(model_path, [tmp_path / "rgb.png"], tmp_path / "o2", "--channels", "1") == 0


# ---------------------------------------------------------------------------- evaluate
def test_evaluate_output_is_checked_before_the_work(tmp_path, capsys):
    label = np.zeros((16, 16), np.uint16)
    label[2:8, 2:8] = 1
    for name in ("pred", "gt"):
        (tmp_path / name).mkdir()
        tifffile.imwrite(tmp_path / name / "a.tif", label)
    pred, gt = str(tmp_path / "pred"), str(tmp_path / "gt")
    report = tmp_path / "missing_dir" / "x.json"
    assert cli.main(["evaluate", pred, gt, "-o", str(report)]) == 0
    assert json.loads(report.read_text())["all"]["accuracy"]["accuracy"] == 1.0
    capsys.readouterr()
    assert cli.main(["evaluate", pred, gt, "-o", str(report)]) == 2
    captured = capsys.readouterr()
    assert "exists; use --overwrite" in captured.err and "AP50" not in captured.out
    assert cli.main(["evaluate", pred, gt, "-o", str(report), "--overwrite"]) == 0
    (tmp_path / "file").write_text("x")
    assert cli.main(["evaluate", pred, gt, "-o", str(tmp_path / "file" / "x.json")]) == 2
    assert "cannot write into" in capsys.readouterr().err


# ---------------------------------------------------------------------------- process start
def lacss_script():
    return os.path.join(os.path.dirname(sys.executable), "lacss")


def test_an_unsupported_backend_is_one_line_from_the_cli():
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    for command in ([lacss_script(), "--help"], [sys.executable, "-m", "lacss_core.cli", "demo"]):
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        assert result.returncode == 2
        assert result.stderr.strip().count("\n") == 0, result.stderr
        assert result.stderr.startswith("lacss: error: lacss-core supports the Keras backends")


@pytest.mark.parametrize(
    "code",
    [
        "import keras, lacss_core",  # Keras first (the backend is set in the environment)
        "import lacss_core, keras",  # lacss_core first, Keras imported later
    ],
)
def test_importing_lacss_core_is_enough_to_load_a_model(model_path, code):
    code += f"; m = keras.saving.load_model({model_path!r}); print(type(m).__name__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Lacss"


def test_importing_lacss_core_stays_light():
    code = "import sys, lacss_core; print('keras' in sys.modules, 'jax' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["False", "False"], result.stderr
