"""Each adapter imports under its own Keras backend and refuses the other, saying what to set."""

from __future__ import annotations

import importlib
import sys

import keras
import pytest

from lacss_core import BackendError

ACTIVE = keras.backend.backend()
OTHER = {"jax": "torch", "torch": "jax"}[ACTIVE]


def test_the_active_backends_adapter_imports():
    assert importlib.import_module(f"lacss_core.backends.{ACTIVE}")


def test_the_other_backends_adapter_names_the_variable_to_set():
    name = f"lacss_core.backends.{OTHER}"
    with pytest.raises(BackendError, match=f"runs Keras on '{ACTIVE}'.*KERAS_BACKEND={OTHER}"):
        importlib.import_module(name)
    assert name not in sys.modules  # a failed import leaves nothing half-initialised behind
