"""The Keras backend: which one runs (chosen before Keras is imported), and the one seam through
which lacss-core does what differs between the frameworks beyond ``keras.ops``.

Choice: Keras fixes its backend at import time from ``KERAS_BACKEND`` or ``~/.keras/keras.json``.
lacss-core runs on JAX and PyTorch only, so :func:`configure` makes that choice explicit and turns
a missing or unsupported backend into an error that names the extra to install, instead of a
traceback from deep inside Keras.

Seam: :func:`current` returns the active backend's :class:`Backend` (``_interface.py``):
compiling a function (``jax.jit`` / ``torch.compile``, see :class:`CompileOptions`), compiling a
function of a model's variables, gradients, ``no_grad``, the device and the process group. Each
backend is one module of this package named after it (``jax.py``, ``torch.py``), imported on first
use (the einops ``_backends`` shape), so adding a backend is adding one file; the modules found
here are the supported backends::

    from lacss_core import _backend
    backend = _backend.current()
    predict = backend.compile_with_variables(fn, model.variables)   # jit on JAX, eager on torch
    fast = backend.compile(fn, _backend.CompileOptions(enabled=True, dynamic=False))
    with backend.no_grad():
        ...
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import pkgutil
import sys

from lacss_core._backend._interface import COMPILED, DEFAULT, EAGER, Backend, CompileOptions

# The auto-selection order when nothing chooses; other backend modules follow alphabetically.
_PREFERRED = ("jax", "torch")


def _backend_modules() -> tuple[str, ...]:
    names = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    rank = {name: i for i, name in enumerate(_PREFERRED)}
    return tuple(sorted(names, key=lambda n: (rank.get(n, len(rank)), n)))


#: The Keras backends lacss-core runs on: one module of this package each.
SUPPORTED = _backend_modules()
_log = logging.getLogger("lacss_core")
_INSTANCES: dict[str, Backend] = {}


class BackendError(ImportError):
    """The Keras backend is missing or not one lacss-core supports."""


def _keras_json_backend() -> str | None:
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    path = os.path.join(home, "keras.json")
    try:
        with open(path) as f:
            return json.load(f).get("backend")
    except (OSError, ValueError):
        return None


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _check(name: str, source: str) -> str:
    if name not in SUPPORTED:
        raise BackendError(
            f"lacss-core supports the Keras backends {SUPPORTED}, but {source} selects {name!r}. "
            "Set KERAS_BACKEND=jax or KERAS_BACKEND=torch."
        )
    if not _installed(name):
        raise BackendError(
            f"{source} selects the Keras backend {name!r}, but {name} is not installed. "
            f"Install it with: pip install 'lacss-core[{name}]'"
        )
    return name


def configure() -> str:
    """Select the backend (setting ``KERAS_BACKEND`` if unset) and return its name.

    Order: ``KERAS_BACKEND``, then ``keras.json`` (when it names jax or torch; any other entry
    is ignored with a warning), then jax if installed, else torch.
    Raises:
        BackendError: the chosen backend is unsupported or not installed, or neither is installed.
    """
    if "keras" in sys.modules:  # Keras already fixed its backend; just check it.
        from keras import backend

        return _check(backend.backend(), "the already imported Keras")
    if os.environ.get("KERAS_BACKEND"):
        return _check(os.environ["KERAS_BACKEND"], "KERAS_BACKEND")
    configured = _keras_json_backend()
    if configured in SUPPORTED:
        return _check(configured, "keras.json")
    if configured:
        # Keras writes keras.json with "tensorflow" on its first import, whatever backend ran,
        # so an unsupported entry there is usually Keras' default, not the user's choice: say so
        # out loud only when that backend is installed (then it may well be the user's choice).
        level = logging.WARNING if _installed(configured) else logging.DEBUG
        _log.log(
            level,
            "keras.json selects the Keras backend %r, which lacss-core does not support; "
            "ignoring it. Set KERAS_BACKEND=jax or KERAS_BACKEND=torch to choose.",
            configured,
        )
    for name in SUPPORTED:
        if _installed(name):
            os.environ["KERAS_BACKEND"] = name
            _log.debug("KERAS_BACKEND not set; lacss-core selected %r", name)
            return name
    raise BackendError(
        "lacss-core needs JAX or PyTorch as the Keras backend and neither is installed. "
        "Install one with: pip install 'lacss-core[jax]' or pip install 'lacss-core[torch]'"
    )


def exit_if_command_line(error: BackendError) -> None:
    """Started as the ``lacss`` command (console script or ``python -m lacss_core.cli``): print
    ``error`` as one line and exit with status 2 (a usage error) instead of a traceback."""
    script = os.path.basename(sys.argv[0]) if sys.argv else ""
    argv = list(getattr(sys, "orig_argv", []))
    as_module = any(
        a == "-m" and argv[i + 1 : i + 2] == ["lacss_core.cli"] for i, a in enumerate(argv)
    )
    if script in ("lacss", "lacss.exe", "lacss-script.py") or as_module:
        print(f"lacss: error: {error}", file=sys.stderr)
        raise SystemExit(2)


def current() -> Backend:
    """The :class:`Backend` of the active Keras backend (created on first use, then cached)."""
    import keras

    name = keras.backend.backend()
    if name not in _INSTANCES:
        if name not in SUPPORTED:
            raise BackendError(f"lacss-core has no backend module for Keras backend {name!r}")
        module = importlib.import_module(f"{__name__}.{name}")
        _INSTANCES[name] = module.Backend()
    return _INSTANCES[name]


__all__ = [
    "COMPILED",
    "DEFAULT",
    "EAGER",
    "SUPPORTED",
    "Backend",
    "BackendError",
    "CompileOptions",
    "configure",
    "exit_if_command_line",
    "current",
]
