"""The models the widgets offer, and loading them.

A model is named by a :class:`ModelSource`: a pretrained model shipped with lacss-core
(``lacss_core.pretrained``, listed first and chosen by default), a ``.keras`` file, a model
trained in this napari session (also a file), or a preset (an untrained architecture: random
weights, useful to start training, not to segment). Models trained by the Train widget are
added to :data:`registry`, whose ``changed`` signal makes every model chooser list them at once.

Loaded files are kept (keyed by path and modification time) so that segmenting again does not
reload and recompile; a model to be trained is always a fresh copy, since training changes it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import threading
from pathlib import Path

from psygnal import Signal

FILE = "file"
PRESET = "preset"
SHIPPED = "shipped"


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: ``kind`` is ``"file"`` (``name`` is a path; empty means "the
    file chosen in the widget"), ``"preset"`` (``name`` is a ``Lacss`` preset) or ``"shipped"``
    (``name`` is a pretrained model of ``lacss_core.pretrained``)."""

    kind: str
    name: str = ""

    def describe(self) -> str:
        """A short name for the user: the file name, or the kind and name."""
        if self.kind == FILE:
            return Path(self.name).name
        return f"{self.kind} model {self.name}" if self.kind == SHIPPED else f"preset {self.name}"


#: Stands for "the .keras file chosen in the widget's file field".
CHOSEN_FILE = ModelSource(FILE)


class _Registry:
    """Models trained in this session, newest first: ``{label: path}``."""

    changed = Signal()

    def __init__(self):
        self.trained: dict[str, Path] = {}

    def add(self, path) -> ModelSource:
        path = Path(path).resolve()
        label = f"trained: {path.name}"
        self.trained = {label: path, **{k: v for k, v in self.trained.items() if v != path}}
        self.changed.emit()
        return ModelSource(FILE, str(path))


registry = _Registry()


def shipped_models() -> list[str]:
    """Names of the pretrained models this lacss-core ships (none before it ships any), the
    default model (``lacss predict``'s, the generalist) first: a widget selects its first choice."""
    if importlib.util.find_spec("lacss_core.pretrained") is None:  # none shipped yet
        return []
    from lacss_core import pretrained

    return sorted(pretrained.available(), key=lambda name: name != pretrained.DEFAULT_MODEL)


def segment_choices() -> list[tuple[str, ModelSource]]:
    """Choices for segmenting: shipped models, trained models, a file, the untrained presets."""
    from lacss_core.models import Lacss

    choices = [(f"{name} (shipped)", ModelSource(SHIPPED, name)) for name in shipped_models()]
    choices += [(label, ModelSource(FILE, str(path))) for label, path in registry.trained.items()]
    choices.append(("a .keras file (below)", CHOSEN_FILE))
    choices += [(f"{name} (untrained)", ModelSource(PRESET, name)) for name in Lacss.presets()]
    return choices


#: The preset a new model starts from by default, as in ``lacss train``: trains on a CPU.
DEFAULT_TRAIN_PRESET = "lacss_tiny"


def train_choices() -> list[tuple[str, ModelSource]]:
    """Choices to start training from: new models of each preset (``DEFAULT_TRAIN_PRESET``
    first), shipped models (fine-tuning), trained models, a file."""
    from lacss_core.models import Lacss

    presets = sorted(Lacss.presets(), key=lambda name: name != DEFAULT_TRAIN_PRESET)
    choices = [(f"new {name}", ModelSource(PRESET, name)) for name in presets]
    choices += [(f"{name} (shipped)", ModelSource(SHIPPED, name)) for name in shipped_models()]
    choices += [(label, ModelSource(FILE, str(path))) for label, path in registry.trained.items()]
    choices.append(("a .keras file (below)", CHOSEN_FILE))
    return choices


def resolve(source: ModelSource, chosen_file) -> ModelSource:
    """``source`` with ``CHOSEN_FILE`` replaced by the widget's file; checks the file exists."""
    if source != CHOSEN_FILE:
        return source
    path = Path(str(chosen_file or "")).expanduser()
    if not str(chosen_file or "").strip() or path.is_dir():
        raise ValueError("choose a model file (.keras) in the model file field")
    if not path.is_file():
        raise ValueError(f"model file {path} does not exist")
    return ModelSource(FILE, str(path.resolve()))


_cache: dict[tuple, object] = {}
_cache_lock = threading.Lock()


def load_for_prediction(source: ModelSource):
    """The model named by a resolved ``source``, loaded once and then reused."""
    key = _cache_key(source)
    with _cache_lock:
        if key not in _cache:
            _cache.clear()  # one model at a time: a large model's memory is freed when switching
            _cache[key] = _load(source)
        return _cache[key]


def load_for_training(source: ModelSource, *, weak: bool, diameter: float | None = None):
    """A fresh model to train: a new preset (for ``weak`` training from scratch with the head
    bias and centre prior of ``lacss train --weak``, the prior sized to the cells' median
    ``diameter`` in pixels when it is known) or a copy loaded from its file."""
    if source.kind == PRESET:
        from lacss_core.cli.train import preset_crop_size, weak_from_scratch
        from lacss_core.models import Lacss

        options = weak_from_scratch(preset_crop_size(source.name), diameter) if weak else {}
        return Lacss.from_preset(source.name, **options)
    return _load(source)


def _cache_key(source: ModelSource) -> tuple:
    """Files by path and modification time (a retrained file is reloaded), others by name."""
    if source.kind == FILE:
        return (FILE, source.name, Path(source.name).stat().st_mtime_ns)
    return (source.kind, source.name)


def _load(source: ModelSource):
    if source.kind == PRESET:
        from lacss_core.models import Lacss

        return Lacss.from_preset(source.name)
    if source.kind == SHIPPED:
        from lacss_core import pretrained

        return pretrained.load_pretrained(source.name)
    from lacss_core.cli.predict import load_model

    return load_model(source.name)
