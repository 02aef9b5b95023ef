"""Register the LACSS classes with Keras whenever Keras is loaded, so ``import lacss_core`` is
enough for ``keras.saving.load_model`` of a LACSS model.

Keras finds a saved model's classes in its registry of serializable objects, which
``lacss_core.models`` fills on import. Importing Keras (and the backend) inside ``import
lacss_core`` would make that import slow and would fix the backend too early, so instead:

* Keras already loaded: ``lacss_core.models`` is imported at once.
* Keras not loaded yet: a one-shot import hook runs ``import lacss_core.models`` right after
  Keras's own module has executed, whoever imports Keras (the user, or ``lacss_core.models``).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings


def register_lacss_classes() -> None:
    """Import ``lacss_core.models`` (its classes register themselves); warn, never fail."""
    try:
        importlib.import_module("lacss_core.models")
    except Exception as e:  # a broken install must not break `import keras`
        warnings.warn(f"lacss_core: could not register the LACSS model classes: {e}", stacklevel=2)


class _AfterKerasImport(importlib.abc.MetaPathFinder):
    """Finds ``keras`` like the other finders, then registers the classes once it has run."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        sys.meta_path.remove(self)  # one shot; the real finders answer from here on
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader
        execute = loader.exec_module

        def exec_module(module):
            execute(module)
            register_lacss_classes()

        loader.exec_module = exec_module  # this loader instance only serves this import
        return spec


def install() -> None:
    """Register now if Keras is loaded, else when it is."""
    if "keras" in sys.modules:
        register_lacss_classes()
    elif not any(isinstance(finder, _AfterKerasImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterKerasImport())
