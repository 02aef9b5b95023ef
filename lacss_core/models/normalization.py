"""The normalization choice shared by the backbone and the LPN (SPEC 2: batch, group or layer)."""

from __future__ import annotations

import math

import keras

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


def make_norm(normalization: str, channels: int, name: str) -> keras.layers.Layer:
    """A channels-last normalization layer for a ``channels``-wide feature map.

    ``"batch"``: BatchNormalization (batch statistics when ``training=True``, moving averages
    otherwise). ``"group"``: GroupNormalization with ``gcd(32, channels)`` groups, so any width
    works. ``"layer"``: LayerNormalization over the channel axis only (per pixel).
    """
    check_normalization(normalization)
    scale_and_shift = {"gamma_initializer": host("ones"), "beta_initializer": host("zeros")}
    if normalization == "batch":
        return keras.layers.BatchNormalization(
            axis=-1,
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
            groups=groups, axis=-1, epsilon=NORM_EPSILON, name=name, **scale_and_shift
        )
    return keras.layers.LayerNormalization(
        axis=-1, epsilon=NORM_EPSILON, name=name, **scale_and_shift
    )
