"""The example and benchmark scripts run without ``KERAS_BACKEND`` set: they import
``lacss_core`` before Keras, which picks JAX or PyTorch (else Keras falls back to TensorFlow,
which is not installed, and fails with "No module named 'tensorflow'")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = [
    "examples/train_generalist.py",
    "examples/segment_folder.py",
    "examples/train_synthetic.py",
    "examples/validate_with_oracle.py",
    "benchmarks/train_race.py",
    "benchmarks/weak_seeds.py",
]


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_imports_without_keras_backend_set(script):
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    result = subprocess.run(
        [sys.executable, str(ROOT / script), "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
