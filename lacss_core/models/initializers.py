"""Weight initializers that draw on the host with NumPy.

Keras' own initializers draw with the backend's random ops. On JAX every distinct weight shape
then compiles its own small XLA program (truncated normal, uniform, zeros, ones, the scaling
multiply), about 90 compilations and 20 s for the paper preset before the first image is seen,
and the same again when a saved model is loaded. These subclasses compute the same
distributions in NumPy and hand Keras the array, which is copied to the device as it is.

Seeds follow Keras: an initializer without a ``seed`` draws one from Python's ``random`` when it
is created (``keras.random.make_default_seed``), so ``keras.utils.set_random_seed(s)`` before
building a model fixes every weight, bit for bit, on every backend (NumPy's generator does not
depend on the platform). The numbers differ from those of Keras' initializers of the same name,
not their distribution.
"""

from __future__ import annotations

import math

import keras
import numpy as np

# Keras' truncated normal keeps draws within two standard deviations; this is the standard
# deviation of the standard normal truncated to [-2, 2] (keras.initializers.VarianceScaling).
TRUNCATED_STDDEV = 0.87962566103423978
TRUNCATION = 2.0


def _to_tensor(values: np.ndarray, dtype):
    """``values`` as a backend tensor of the variable's dtype. With an explicit dtype Keras
    copies the array to the device; a plain ``jnp.asarray(values)``, which Keras would otherwise
    call on a returned NumPy array, compiles an XLA program per shape in current JAX."""
    return keras.ops.convert_to_tensor(values, dtype=dtype or keras.config.floatx())


def truncated_standard_normal(rng: np.random.Generator, shape) -> np.ndarray:
    """float32 standard normal draws of ``shape`` redrawn until all lie in [-2, 2]."""
    values = rng.standard_normal(int(np.prod(shape)), dtype=np.float32)
    outside = np.flatnonzero(np.abs(values) > TRUNCATION)
    while outside.size:
        values[outside] = rng.standard_normal(outside.size, dtype=np.float32)
        outside = outside[np.abs(values[outside]) > TRUNCATION]
    return values.reshape(shape)


def _fans(shape) -> tuple[int, int]:
    """``(fan_in, fan_out)`` as Keras computes them: ``(in, out)`` for a dense kernel and
    receptive field x ``(in, out)`` for a conv kernel ``(kh, kw, in, out)``."""
    shape = tuple(int(s) for s in shape)
    if not shape:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


@keras.saving.register_keras_serializable(package="lacss")
class HostVarianceScaling(keras.initializers.VarianceScaling):
    """``keras.initializers.VarianceScaling`` drawn with NumPy (same arguments, same config).

    Returns a backend tensor of ``shape`` in the requested dtype (drawn in float32).
    """

    def __call__(self, shape, dtype=None):
        fan_in, fan_out = _fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}
        scale = self.scale / max(1.0, fan[self.mode])
        rng = np.random.default_rng(self.seed)
        if self.distribution == "truncated_normal":
            values = truncated_standard_normal(rng, shape) * (math.sqrt(scale) / TRUNCATED_STDDEV)
        elif self.distribution == "untruncated_normal":
            values = rng.standard_normal(shape, dtype=np.float32) * math.sqrt(scale)
        else:
            limit = math.sqrt(3.0 * scale)
            values = rng.uniform(-limit, limit, size=shape).astype(np.float32)
        return _to_tensor(values, dtype)

    def keras_twin(self) -> keras.initializers.VarianceScaling:
        """Keras' initializer of the same distribution, drawn with backend random ops (for
        traceable initialisation from a JAX key, ``lacss_core.backends.jax.init``)."""
        return keras.initializers.VarianceScaling(**self.get_config())


@keras.saving.register_keras_serializable(package="lacss")
class HostConstant(keras.initializers.Constant):
    """``keras.initializers.Constant`` filled on the host (zeros, ones and fixed biases)."""

    def __call__(self, shape, dtype=None):
        return _to_tensor(np.full(tuple(shape), self.value, dtype=np.float32), dtype)

    def keras_twin(self) -> keras.initializers.Constant:
        """Keras' constant initializer of the same value (traceable)."""
        return keras.initializers.Constant(self.value)


def he_normal() -> HostVarianceScaling:
    """Keras' ``he_normal``: truncated normal, ``scale=2``, fan in."""
    return HostVarianceScaling(2.0, "fan_in", "truncated_normal")


def glorot_uniform() -> HostVarianceScaling:
    """Keras' ``glorot_uniform`` (the default kernel initializer of its layers)."""
    return HostVarianceScaling(1.0, "fan_avg", "uniform")


def constant(value: float) -> HostConstant:
    """A host initializer filling every element with ``value``."""
    return HostConstant(float(value))


_NAMED = {"he_normal": he_normal, "glorot_uniform": glorot_uniform}
_CONSTANTS = {"zeros": 0.0, "ones": 1.0}


def host(initializer):
    """The host twin of ``initializer``: a name (``"he_normal"``, ``"glorot_uniform"``,
    ``"zeros"``, ``"ones"``), a number (a constant) or an initializer object, which is returned
    unchanged. ``ValueError`` for a name without a host twin."""
    if isinstance(initializer, str):
        if initializer in _NAMED:
            return _NAMED[initializer]()
        if initializer in _CONSTANTS:
            return constant(_CONSTANTS[initializer])
        raise ValueError(
            f"no host initializer named {initializer!r}; use one of "
            f"{sorted(_NAMED) + sorted(_CONSTANTS)} or pass an initializer object"
        )
    if isinstance(initializer, (int, float)) and not isinstance(initializer, bool):
        return constant(initializer)
    return initializer


class HostZeros(HostConstant):
    """Zeros filled on the host; stands in for Keras' ``"zeros"`` inside :func:`host_zeros`."""

    def __init__(self):
        super().__init__(0.0)

    def get_config(self):
        """No arguments (Keras serialisation)."""
        return {}

    @classmethod
    def from_config(cls, config):
        """A ``HostZeros`` (it has no arguments)."""
        return cls()


def host_zeros():
    """A scope in which the initializer name ``"zeros"`` means :class:`HostZeros`.

    Keras' optimizers create their slots (Adam's moments: two per weight) with
    ``initializer="zeros"``; on JAX each distinct shape would compile its own program. The
    scope is Keras' thread-local ``custom_object_scope``, so nothing outside it changes.
    """
    return keras.saving.custom_object_scope({"zeros": HostZeros})
