"""Loading ``.keras`` model files with errors that name the file and what is wrong with it.

``keras.saving.load_model`` answers a truncated or random file with "File not found" or a zip
traceback, and happily loads a model that is not LACSS (which then fails per image). This module
checks the archive first (:func:`keras_file_problem`) and the class it holds, so the message
says: missing, empty, not a zip / truncated, not saved by Keras 3, or not a LACSS model.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

#: The name Keras stores for ``lacss_core.models.Lacss`` (its ``register_keras_serializable``).
LACSS_REGISTERED_NAME = "lacss>Lacss"


def keras_file_problem(path) -> str | None:
    """What makes ``path`` unloadable as a Keras 3 ``.keras`` archive, in words; None if nothing
    visible (the archive may still hold weights that do not fit)."""
    path = Path(path)
    if not path.exists():
        return "it does not exist"
    if path.is_dir():
        return "it is a folder, not a .keras file"
    size = path.stat().st_size
    if size == 0:
        return "it is empty (0 bytes)"
    if path.suffix.lower() in (".h5", ".hdf5"):
        return "legacy HDF5 models are not supported; save the model as a .keras file"
    if not zipfile.is_zipfile(path):
        return (
            f"it is not a Keras .keras archive: not a complete zip file ({size} bytes; truncated?)"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "config.json" not in names:
                return "it lacks config.json: not a model saved by Keras 3 (model.save)"
            if "model.weights.h5" not in names:
                return "it lacks model.weights.h5: the archive is incomplete"
            json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return f"the archive is corrupt or truncated ({e})"
    except ValueError as e:
        return f"its config.json is not valid JSON ({e})"
    return None


def keras_file_class(path) -> str:
    """The registered name of the model class a (checked) ``.keras`` file holds."""
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    return str(config.get("registered_name") or config.get("class_name"))


def load_lacss_model(path):
    """Load a ``lacss_core.models.Lacss`` from a ``.keras`` file.

    Raises:
        ValueError: naming the file and what is wrong: missing, empty, truncated, not a Keras
            archive, not a LACSS model, or weights that Keras cannot load.
    """
    import keras

    import lacss_core.models  # noqa: F401  (registers the LACSS classes)

    path = Path(path)
    problem = keras_file_problem(path)
    if problem:
        raise ValueError(f"model file {path}: {problem}")
    held = keras_file_class(path)
    if held != LACSS_REGISTERED_NAME:
        raise ValueError(
            f"model file {path} holds a Keras {held!r} model, not a LACSS model; use a model "
            "saved by `lacss train`, `lacss demo` or Lacss.save"
        )
    try:
        return keras.saving.load_model(path)
    except Exception as e:  # Keras raises many types for a damaged archive
        raise ValueError(f"model file {path} cannot be loaded: {e}") from e


__all__ = ["keras_file_problem", "load_lacss_model"]
