"""Backend selection: explicit choice, keras.json, the default, and clear errors."""

import json
import os
import subprocess
import sys

import pytest

from lacss_core import _backend


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """configure() as on a first import: no Keras loaded, no env var, an empty KERAS_HOME."""
    monkeypatch.delitem(sys.modules, "keras", raising=False)
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    return tmp_path


def test_env_var_wins(fresh, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert _backend.configure() == "torch"


def test_keras_json_is_read(fresh):
    (fresh / "keras.json").write_text(json.dumps({"backend": "torch"}))
    assert _backend.configure() == "torch"


@pytest.mark.parametrize("tensorflow_installed", [True, False])
def test_unsupported_keras_json_entry_is_ignored(fresh, monkeypatch, caplog, tensorflow_installed):
    # Keras itself writes "tensorflow" into keras.json on its first import: only when TensorFlow
    # is installed can it be the user's choice, and only then is it worth a warning.
    (fresh / "keras.json").write_text(json.dumps({"backend": "tensorflow"}))
    monkeypatch.setattr(
        _backend,
        "_installed",
        lambda name: name == "torch" or (tensorflow_installed and name == "tensorflow"),
    )
    assert _backend.configure() == "torch"
    warned = "keras.json selects the Keras backend 'tensorflow'" in caplog.text
    assert warned == tensorflow_installed


def test_default_prefers_jax_and_sets_env(fresh, monkeypatch):
    monkeypatch.setattr(_backend, "_installed", lambda name: True)
    assert _backend.configure() == "jax"
    assert os.environ["KERAS_BACKEND"] == "jax"


def test_default_falls_back_to_torch(fresh, monkeypatch):
    monkeypatch.setattr(_backend, "_installed", lambda name: name == "torch")
    assert _backend.configure() == "torch"


@pytest.mark.parametrize("name", ["tensorflow", "numpy", "openvino"])
def test_unsupported_backend_is_named(fresh, monkeypatch, name):
    monkeypatch.setenv("KERAS_BACKEND", name)
    with pytest.raises(_backend.BackendError, match=f"selects {name!r}.*KERAS_BACKEND=jax"):
        _backend.configure()


def test_missing_backend_names_the_extra(fresh, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.setattr(_backend, "_installed", lambda name: False)
    with pytest.raises(_backend.BackendError, match=r"pip install 'lacss-core\[jax\]'"):
        _backend.configure()


def test_nothing_installed(fresh, monkeypatch):
    monkeypatch.setattr(_backend, "_installed", lambda name: False)
    with pytest.raises(_backend.BackendError, match="neither is installed"):
        _backend.configure()


def test_import_error_is_clear_in_a_fresh_process():
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    proc = subprocess.run(
        [sys.executable, "-c", "import lacss_core"], env=env, capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert "lacss-core supports the Keras backends ('jax', 'torch')" in proc.stderr


def test_oracle_import_does_not_load_keras():
    code = "import sys, lacss_core.oracle; print('keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
