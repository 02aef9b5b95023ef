"""The normalization choice shared by the backbone and the LPN (SPEC 2: batch, group or layer)."""

from __future__ import annotations

import math

import keras
from keras import ops

from lacss_core.models import layout
from lacss_core.models.initializers import host

NORMALIZATIONS = ("batch", "group", "layer")

# PyTorch's BatchNorm epsilon (Keras defaults to 1e-3); the same value for all three kinds so a
# model's numbers do not depend on which framework's defaults one remembers.
NORM_EPSILON = 1e-5
BATCH_NORM_MOMENTUM = 0.99
MAX_GROUPS = 32


def check_normalization(normalization: str) -> str:
    """Return ``normalization`` if it names a supported kind, else raise ``ValueError``."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    return normalization


def make_norm(
    normalization: str,
    channels: int,
    name: str,
    data_format: str = "channels_last",
    dtype=None,
) -> keras.layers.Layer:
    """A normalization layer for a ``channels``-wide feature map in ``data_format``, with the
    dtype policy ``dtype`` (None: Keras' global one). Under a mixed policy all three compute their
    statistics in float32 and return the compute dtype (Keras' layers do so themselves).

    ``"batch"``: BatchNormalization (batch statistics when ``training=True``, moving averages
    otherwise). ``"group"``: GroupNormalization with ``gcd(32, channels)`` groups, so any width
    works. ``"layer"``: LayerNormalization over the channel axis only (per pixel). Each normalizes
    over the channel axis of ``data_format``; the weights are ``(channels,)`` in both layouts.
    """
    check_normalization(normalization)
    axis = layout.channel_axis(data_format)
    scale_and_shift = {
        "gamma_initializer": host("ones"),
        "beta_initializer": host("zeros"),
        "dtype": dtype,
    }
    if normalization == "batch":
        return keras.layers.BatchNormalization(
            axis=axis,
            momentum=BATCH_NORM_MOMENTUM,
            epsilon=NORM_EPSILON,
            moving_mean_initializer=host("zeros"),
            moving_variance_initializer=host("ones"),
            name=name,
            **scale_and_shift,
        )
    if normalization == "group":
        groups = math.gcd(MAX_GROUPS, channels)
        return keras.layers.GroupNormalization(
            groups=groups, axis=axis, epsilon=NORM_EPSILON, name=name, **scale_and_shift
        )
    # Keras' torch LayerNormalization calls F.layer_norm, which normalizes trailing axes only.
    kind = keras.layers.LayerNormalization if axis == -1 else ChannelsFirstLayerNormalization
    return kind(axis=axis, epsilon=NORM_EPSILON, name=name, **scale_and_shift)


def apply_norm(norm, x, training):
    """``norm(x, training=training)``, or ``x`` itself where the norm was folded into the
    convolution before it (``norm`` is None: ``Lacss.fused``)."""
    return x if norm is None else norm(x, training=training)


def build_norm(norm, shape) -> None:
    """Build ``norm`` for ``shape`` unless it was folded away (None)."""
    if norm is not None:
        norm.build(shape)


def check_foldable(fold_batch_norm, normalization: str) -> bool:
    """``bool(fold_batch_norm)``; folding needs BatchNormalization (inference statistics)."""
    if fold_batch_norm and normalization != "batch":
        raise ValueError(
            f"fold_batch_norm needs normalization='batch', got normalization={normalization!r}"
        )
    return bool(fold_batch_norm)


@keras.saving.register_keras_serializable(package="lacss")
class ChannelsFirstLayerNormalization(keras.layers.LayerNormalization):
    """LayerNormalization over axis 1 of ``(B, C, H, W)`` (per pixel) that works on every backend:
    Keras' own fails on torch for a non-trailing axis. Same weights (``gamma``, ``beta`` of
    ``(C,)``) and, up to float rounding, the same numbers as channels-last ``axis=-1``."""

    def call(self, inputs):
        """Normalise ``(B, C, H, W)`` over ``C`` at every pixel (other inputs: Keras' own)."""
        if self.axis != [1] or len(inputs.shape) != 4:
            return super().call(inputs)
        # Statistics in float32 whatever the compute dtype, as Keras' own layer: a bfloat16 mean
        # and variance over C channels lose the 8 bits that normalisation is about.
        x = ops.cast(inputs, "float32")
        # Two passes (not ops.moments' E[x^2] - E[x]^2, which cancels when the mean is large).
        centred = x - ops.mean(x, axis=1, keepdims=True)
        variance = ops.mean(ops.square(centred), axis=1, keepdims=True)
        y = centred * ops.rsqrt(variance + self.epsilon)
        if self.scale:
            y = y * ops.reshape(ops.cast(self.gamma, y.dtype), (1, -1, 1, 1))
        if self.center:
            y = y + ops.reshape(ops.cast(self.beta, y.dtype), (1, -1, 1, 1))
        return ops.cast(y, self.compute_dtype)
