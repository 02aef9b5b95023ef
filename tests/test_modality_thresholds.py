"""``examples/modality_thresholds.py``: per-modality thresholds for a shipped model, installed
as ``<model>_<modality>`` only where they beat the model's own on held-out images."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import pytest

from lacss_core import pretrained
from lacss_core.models import Lacss

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
OWN = {"ap50": 0.70, "ap75": 0.40}
SETTINGS = {
    "min_score": 0.3,
    "predict_nms_distance": 4.0,
    "segmentation_threshold": 0.5,
    "calibration": None,
}


@pytest.fixture(scope="module")
def script():
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(EXAMPLES))  # the script imports train_generalist beside it
        yield importlib.import_module("modality_thresholds")


@pytest.mark.parametrize(
    ("calibrated", "ok", "reason"),
    [
        ({"ap50": 0.70, "ap75": 0.45}, True, "AP75 0.400 -> 0.450"),
        ({"ap50": 0.696, "ap75": 0.42}, True, "AP50 0.700 -> 0.696"),
        ({"ap50": 0.75, "ap75": 0.39}, False, "loses more than 0.005"),
        ({"ap50": 0.705, "ap75": 0.405}, False, "gains less than 0.01"),
    ],
)
def test_worth_installing_needs_a_gain_and_no_loss(script, calibrated, ok, reason):
    decided, why = script.worth_installing(OWN, calibrated)
    assert decided is ok and reason in why


def _result(modality: str, heldout: dict) -> dict:
    return {
        "model": "generalist", "modality": modality, "metric": "ap50", "config": SETTINGS,
        "heldout_own_thresholds": {**OWN, "f1": 0.8}, "heldout": {**heldout, "f1": 0.81},
        "command": "python examples/modality_thresholds.py measure --out x",
    }  # fmt: skip


@pytest.fixture
def folder(tmp_path):
    """A copy of the shipped registry beside (a link to) the shipped weights."""
    if not pretrained.has_weights("generalist"):
        pytest.skip("no generalist shipped")
    shipped = Path(pretrained.info("generalist")["folder"])
    shutil.copy(shipped / "models.json", tmp_path / "models.json")
    weights = pretrained.info("generalist")["weights"]
    (tmp_path / weights).symlink_to(shipped / weights)
    return tmp_path


def test_install_records_the_profiles_that_pass_and_they_load(script, folder, monkeypatch, capsys):
    files = []
    for modality, heldout in [("nuclei", {"ap50": 0.72, "ap75": 0.46}), ("phase", OWN)]:
        files.append(folder / f"{modality}.json")
        files[-1].write_text(json.dumps(_result(modality, heldout)))
    script.main(["install", *map(str, files), "--pretrained-dir", str(folder)])
    said = capsys.readouterr().out
    assert "generalist_nuclei: installed" in said and "generalist_phase: not installed" in said
    registry = json.loads((folder / "models.json").read_text())
    assert "generalist_phase" not in registry
    entry = registry["generalist_nuclei"]
    assert entry["sha256"] == registry["generalist"]["sha256"]
    assert entry["profile"]["modality"] == "nuclei"
    assert entry["heldout_metrics"] == {"nuclei": {"ap50": 0.72, "ap75": 0.46, "f1": 0.81}}
    assert entry["config"]["train_diameter"] == registry["generalist"]["config"]["train_diameter"]
    monkeypatch.setenv(pretrained.ENV_DIR, str(folder))
    model = Lacss.from_preset("lacss_small", weights="generalist_nuclei")
    assert (model.min_score, model.segmentation_threshold) == (0.3, 0.5)
    assert model.predict_nms_distance == 4.0


def test_install_refuses_a_model_not_in_the_registry(script, folder):
    file = folder / "nuclei.json"
    file.write_text(json.dumps({**_result("nuclei", OWN), "model": "nonesuch"}))
    with pytest.raises(SystemExit, match="'nonesuch' is not in"):
        script.main(["install", str(file), "--pretrained-dir", str(folder)])


def test_install_refuses_a_file_that_is_not_a_measure_result(script, folder):
    before = (folder / "models.json").read_text()
    broken, partial = folder / "broken.json", folder / "partial.json"
    broken.write_text("{not json")
    partial.write_text(json.dumps({"model": "generalist", "modality": "nuclei"}))
    with pytest.raises(SystemExit, match="broken.json: not a readable measure result"):
        script.main(["install", str(broken), "--pretrained-dir", str(folder)])
    with pytest.raises(SystemExit, match="partial.json: not a measure result .missing metric"):
        script.main(["install", str(partial), "--pretrained-dir", str(folder)])
    assert (folder / "models.json").read_text() == before  # nothing written
