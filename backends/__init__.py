"""Adapters that embed LACSS in plain PyTorch or plain JAX programs (installed as
``lacss_core.backends``).

* ``lacss_core.backends.torch`` (``KERAS_BACKEND=torch``): :class:`LacssModule`, the model as a
  ``torch.nn.Module``, with ``lacss_loss(outputs, batch)`` for a hand-written torch loop.
* ``lacss_core.backends.jax`` (``KERAS_BACKEND=jax``): pure functions ``init``, ``apply`` and
  ``loss_fn`` over pytrees, for ``jax.jit``, ``jax.grad`` and optax.

Keras fixes its backend once per process, so each adapter refuses to import under the other
backend (``lacss_core.BackendError``). Nothing is imported here: ``import lacss_core.backends``
works under either backend.
"""


def require_keras_backend(name: str, module: str) -> None:
    """Raise ``lacss_core.BackendError`` unless Keras runs on ``name`` in this process.

    Called at the top of each adapter; ``module`` is the adapter's import name, for the message.
    """
    import keras

    from lacss_core import BackendError

    active = keras.backend.backend()
    if active != name:
        raise BackendError(
            f"{module} needs the Keras backend {name!r}, but this process runs Keras on "
            f"{active!r}. Set KERAS_BACKEND={name} before Python starts (Keras fixes its backend "
            "once per process), e.g. `KERAS_BACKEND=" + name + " python train.py`."
        )
