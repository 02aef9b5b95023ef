"""lacss-core: LACSS cell segmentation written once in Keras 3, for JAX and PyTorch.

The backend is chosen (and checked) on import, before Keras loads; see ``lacss_core._backend``.
Heavy names (the model, prediction) are imported lazily so that ``lacss_core.oracle`` stays a
pure-NumPy import; the LACSS classes are registered with Keras as soon as Keras is loaded
(``lacss_core._registration``), so ``keras.saving.load_model`` finds them.
"""

from lacss_core import _backend, _registration
from lacss_core._backend import BackendError, configure

__version__ = "0.1.0"
try:
    BACKEND = configure()
except BackendError as _error:
    _backend.exit_if_command_line(_error)  # the `lacss` command: one line, not a traceback
    raise
_registration.install()  # `import lacss_core` is enough for keras.saving.load_model

_LAZY = {
    "Lacss": "lacss_core.models",
    "distributed_predict": "lacss_core.dask_predict",
    "predict_zarr": "lacss_core.blockwise",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lacss_core' has no attribute {name!r}")


__all__ = [
    "BACKEND",
    "BackendError",
    "Lacss",
    "__version__",
    "distributed_predict",
    "predict_zarr",
]
