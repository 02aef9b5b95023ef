"""Pretrained models (``lacss_core.pretrained``): the registry, offline loading through
``Lacss.from_preset(..., weights=...)``, the same labels on both backends, clear errors, and the
default model of ``lacss predict``.

The tests install a ``lacss_small`` model with fixed non-trivial weights into a temporary
registry folder (``$LACSS_PRETRAINED_DIR``), so they do not depend on which weights are shipped;
the shipped registry itself is checked separately.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tifffile

from lacss_core import cli, pretrained
from lacss_core.data import realistic_cells
from lacss_core.metrics import coco_mask_ap
from lacss_core.models import Lacss
from lacss_core.predict import predict_instances

OTHER_BACKEND = {"jax": "torch", "torch": "jax"}[keras.backend.backend()]
IMAGE = dict(modality="nuclei", size=128, diameter=(14.0, 30.0), layout="scattered")


def _perturb(model, seed=0):
    """Non-trivial weights (random norm statistics and biases) whose untrained proposals pass
    ``min_score`` 0, so the model paints some cells."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        name, shape = variable.path.split("/")[-1], tuple(variable.shape)
        if name in ("moving_mean", "beta", "bias"):
            variable.assign(rng.normal(0.0, 0.1, shape).astype("float32"))
        elif name in ("moving_variance", "gamma"):
            variable.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A folder holding ``testmodel`` (lacss_small, stored ``min_score`` 0) and ``untrained``
    (no weights), in ``$LACSS_PRETRAINED_DIR`` for this module; yields (folder, model)."""
    folder = tmp_path_factory.mktemp("pretrained")
    keras.utils.set_random_seed(0)
    model = Lacss.from_preset("lacss_small", min_score=0.0)
    model.build((None, None, None, 1))
    _perturb(model)
    model.save_weights(folder / "testmodel.weights.h5")
    digest = hashlib.sha256((folder / "testmodel.weights.h5").read_bytes()).hexdigest()
    entry = {"preset": "lacss_small", "channels": 1, "config": {"min_score": 0.0}}
    (folder / "models.json").write_text(json.dumps({
        "testmodel": {**entry, "weights": "testmodel.weights.h5", "sha256": digest},
        "untrained": {**entry, "weights": None, "sha256": None, "status": "not trained yet"},
    }))  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(pretrained.ENV_DIR, str(folder))
        yield folder, model


@pytest.fixture(scope="module")
def image():
    return realistic_cells((9999, 0), **IMAGE).image


def test_from_preset_loads_the_weights_and_the_stored_settings(registry, image):
    _, original = registry
    model = Lacss.from_preset("lacss_small", weights="testmodel")
    assert model.min_score == 0.0  # stored with the model
    for a, b in zip(model.weights, original.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    label, _ = predict_instances(model, image)
    np.testing.assert_array_equal(label, predict_instances(original, image)[0])
    assert label.max() > 3
    assert pretrained.load_pretrained("testmodel", min_score=0.5).min_score == 0.5  # override


def shipped(name: str):
    return pytest.param(
        name,
        marks=pytest.mark.skipif(not pretrained.has_weights(name), reason=f"no {name} shipped yet"),
    )


SHIPPED = shipped("generalist")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["testmodel", SHIPPED, shipped("nuclei"), shipped("cytoplasm")])
def test_same_labels_on_the_other_backend(registry, image, tmp_path, name):
    folder, _ = registry
    np.save(tmp_path / "image.npy", image)
    script = (
        "import sys, numpy as np\n"
        "from lacss_core.models import Lacss\n"
        "from lacss_core.predict import predict_instances\n"
        f"model = Lacss.from_preset('lacss_small', weights={name!r})\n"
        "np.save(sys.argv[2], predict_instances(model, np.load(sys.argv[1]))[0])\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "image.npy"), str(tmp_path / "label.npy")],
        env={**os.environ, "KERAS_BACKEND": OTHER_BACKEND, pretrained.ENV_DIR: str(folder)},
        check=True,
        timeout=900,
    )
    here, _ = predict_instances(Lacss.from_preset("lacss_small", weights=name), image)
    assert name == "testmodel" or here.max() > 0  # the shipped model finds the nuclei
    np.testing.assert_array_equal(np.load(tmp_path / "label.npy"), here)


def test_wrong_preset_unknown_name_override_or_missing_weights_say_so(registry):
    with pytest.raises(ValueError, match="'lacss_small' model"):
        Lacss.from_preset("lacss_tiny", weights="testmodel")
    with pytest.raises(ValueError, match="known models"):
        Lacss.from_preset("lacss_small", weights="no_such_model")
    with pytest.raises(ValueError, match="do not fit"):
        Lacss.from_preset("lacss_small", weights="testmodel", fpn_channels=32)
    with pytest.raises(ValueError, match="no trained weights"):
        Lacss.from_preset("lacss_small", weights="untrained")


def test_corrupted_weights_are_refused(registry, monkeypatch):
    entry = pretrained.info("testmodel")
    monkeypatch.setattr(pretrained, "info", lambda name: {**entry, "sha256": "0" * 64})
    with pytest.raises(ValueError, match="corrupted"):
        pretrained.weights_path("testmodel")


def test_cli_predict_takes_a_pretrained_name_and_defaults_to_the_generalist(
    registry, image, tmp_path, capsys, monkeypatch
):
    images = tmp_path / "images"
    images.mkdir()
    tifffile.imwrite(images / "nuclei.tif", image[..., 0].astype(np.uint16))
    assert cli.main(["predict", "testmodel", str(images), "-o", str(tmp_path / "named")]) == 0
    assert tifffile.imread(tmp_path / "named" / "nuclei_label.tif").max() > 3
    monkeypatch.setattr(pretrained, "DEFAULT_MODEL", "untrained")
    capsys.readouterr()
    assert cli.main(["predict", str(images), "-o", str(tmp_path / "default")]) == 2
    assert "'untrained' has no trained weights" in capsys.readouterr().err
    monkeypatch.setattr(pretrained, "DEFAULT_MODEL", "testmodel")
    assert cli.main(["predict", str(images), "-o", str(tmp_path / "default")]) == 0
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "default" / "nuclei_label.tif"),
        tifffile.imread(tmp_path / "named" / "nuclei_label.tif"),
    )


def test_shipped_registry_is_consistent():
    """Every shipped model names its preset and channels; one with weights verifies (SHA-256)
    and loads; one without says why."""
    assert pretrained.DEFAULT_MODEL in pretrained.available()
    for name in pretrained.available():
        entry = pretrained.info(name)
        assert entry["preset"] in Lacss.presets() and entry["channels"] >= 1
        if entry["weights"] is None:
            assert entry["status"]
            continue
        assert pretrained.weights_path(name).is_file()
        Lacss.from_preset(entry["preset"], weights=name)


def test_the_shipped_weights_fit_the_wheels_20_mb_together():
    files = list(Path(pretrained.__file__).parent.glob("*.weights.h5"))
    assert sum(f.stat().st_size for f in files) <= 20 * 2**20, {
        f.name: f.stat().st_size for f in files
    }


@pytest.mark.skipif(not pretrained.has_weights("generalist"), reason="no generalist shipped yet")
def test_shipped_generalist_segments_held_out_fluorescent_nuclei():
    samples = [realistic_cells((9999, i), **{**IMAGE, "size": 192}) for i in range(3)]
    model = Lacss.from_preset("lacss_small", weights="generalist")
    labels, details = predict_instances(model, [s.image for s in samples])
    ap = coco_mask_ap(labels, [s.label for s in samples], [d["scores"] for d in details])
    assert ap.ap50 > 0.5, ap
