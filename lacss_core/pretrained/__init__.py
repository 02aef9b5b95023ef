"""Pretrained models shipped inside the package, loadable offline.

Each model is a preset (``lacss_core.models.presets``) plus a weights file in this folder, listed
in ``models.json`` with its input channels, the inference settings it was tuned with (``Lacss``
config overrides), the data it was trained on, its held-out metrics and the SHA-256 of its
weights. Load one with::

    from lacss_core.models import Lacss
    model = Lacss.from_preset("lacss_small", weights="generalist")
    # or lacss_core.pretrained.load_pretrained("generalist"); on the command line:
    # lacss predict generalist images/ -o out/   (the default model when none is named)

A folder named by the environment variable ``LACSS_PRETRAINED_DIR`` (its own ``models.json`` and
weights files) adds models or replaces shipped ones of the same name, e.g. a lab's own models.
``docs/model_card.md`` describes each shipped model: data, recipe, held-out metrics and limits.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path

REGISTRY = "models.json"
ENV_DIR = "LACSS_PRETRAINED_DIR"
#: The model ``lacss predict`` uses when none is named.
DEFAULT_MODEL = "generalist"


def _folders() -> list[Path]:
    """Registry folders, later ones winning: the package's, then ``$LACSS_PRETRAINED_DIR``."""
    folders = [Path(str(resources.files(__name__)))]
    if os.environ.get(ENV_DIR):
        folders.append(Path(os.environ[ENV_DIR]))
    return folders


def _registry() -> dict[str, dict]:
    """Every known model's entry, with ``folder`` set to where its weights file lives."""
    entries = {}
    for folder in _folders():
        path = folder / REGISTRY
        if not path.is_file():
            raise ValueError(f"no {REGISTRY} in the pretrained-model folder {folder}")
        try:
            registry = json.loads(path.read_text())
        except ValueError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
        for name, entry in registry.items():
            entries[name] = {**entry, "folder": str(folder)}
    return entries


def available() -> list[str]:
    """Names of the known models (shipped, or added through ``$LACSS_PRETRAINED_DIR``)."""
    return sorted(_registry())


def info(name: str) -> dict:
    """The registry entry of model ``name`` (preset, weights file, channels, config, training,
    held-out metrics, status); ``ValueError`` naming the known models if unknown."""
    registry = _registry()
    if name not in registry:
        raise ValueError(f"unknown pretrained model {name!r}; known models: {sorted(registry)}")
    return dict(registry[name])


def has_weights(name: str) -> bool:
    """Whether ``name`` is known and its weights file is present (not checked)."""
    try:
        entry = info(name)
    except ValueError:
        return False
    return bool(entry.get("weights")) and (Path(entry["folder"]) / entry["weights"]).is_file()


def weights_path(name: str) -> Path:
    """Path of the weights file of ``name``, checked against its SHA-256.

    Raises:
        ValueError: unknown name, no trained weights yet, or the file is missing or corrupted.
    """
    entry = info(name)
    if not entry.get("weights"):
        raise ValueError(
            f"pretrained model {name!r} has no trained weights in this installation yet "
            f"({entry.get('status', 'not trained')}); see docs/model_card.md, name a .keras "
            "model instead, or train one: python examples/train_generalist.py --install"
        )
    path = Path(entry["folder"]) / entry["weights"]
    if not path.is_file():
        raise ValueError(f"the weights of {name!r} ({path}) are missing; reinstall lacss-core")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != entry.get("sha256"):
        raise ValueError(
            f"the weights of {name!r} ({path}) are corrupted (SHA-256 {digest[:12]}..., expected "
            f"{str(entry.get('sha256'))[:12]}...); reinstall lacss-core"
        )
    return path


def load_into(model, preset: str, name: str) -> None:
    """Build ``model`` (made from ``preset``) for the model's channels and load its weights.

    Raises:
        ValueError: ``name`` is unknown, has no weights, was trained for another preset, or
            its weights do not fit ``model`` (an architecture override), each said plainly.
    """
    entry = info(name)
    if entry["preset"] != preset:
        raise ValueError(
            f"pretrained model {name!r} is a {entry['preset']!r} model, not {preset!r}: use "
            f"Lacss.from_preset({entry['preset']!r}, weights={name!r})"
        )
    path = weights_path(name)
    model.build((None, None, None, int(entry["channels"])))
    try:
        model.load_weights(path)
    except Exception as e:  # Keras raises several types for mismatched shapes
        raise ValueError(
            f"the weights of {name!r} do not fit this model (an override changed the "
            f"architecture?): {e}"
        ) from e


def load_pretrained(name: str = DEFAULT_MODEL, **overrides):
    """The pretrained model ``name`` as a ``Lacss`` model, ready for ``predict_instances``.

    ``overrides`` are ``Lacss`` arguments that leave the architecture alone (e.g. ``min_score``,
    ``max_output``); they win over the settings stored with the model.
    """
    from lacss_core.models import Lacss

    return Lacss.from_preset(info(name)["preset"], weights=name, **overrides)


__all__ = [
    "DEFAULT_MODEL",
    "ENV_DIR",
    "available",
    "has_weights",
    "info",
    "load_into",
    "load_pretrained",
    "weights_path",
]
