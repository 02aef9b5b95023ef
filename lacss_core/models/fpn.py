"""Feature pyramid network with nearest-neighbour upsampling (SPEC 2)."""

from __future__ import annotations

import keras
from keras import ops

from lacss_core import _validation
from lacss_core.models import factory, layout


def upsample2x_nearest(x, data_format: str = "channels_last"):
    """Nearest-neighbour 2x upsampling: ``(B, H, W, C) -> (B, 2H, 2W, C)`` (or ``(B, C, H, W) ->
    (B, C, 2H, 2W)``), ``out[2i+a, 2j+b] = x[i, j]``. ``ops.repeat`` gives the same result on every
    backend (no resize kernel involved)."""
    rows, cols = layout.spatial_axes(data_format)
    return ops.repeat(ops.repeat(x, 2, axis=rows), 2, axis=cols)


@keras.saving.register_keras_serializable(package="lacss")
class FPN(keras.layers.Layer):
    """Top-down feature pyramid (SPEC 2).

    ``lat_k = conv1x1(C_k)``; the coarsest output is ``P_L = lat_L`` (no conv, no ReLU);
    ``P_k = relu(conv3x3(lat_k + upsample2x_nearest(P_{k+1})))`` going finer, using the post-conv
    ``P_{k+1}``. Input: list ``[C1, ..., C_L]`` with ``C_k`` of shape ``(B, H/2**k, W/2**k, *)``
    (each level exactly half the previous); output: list ``[P1, ..., P_L]``, all ``channels`` wide.
    All maps are channels-first with ``data_format="channels_first"`` (``None``:
    ``keras.config.image_data_format()``). How this differs from Lin et al.'s FPN, and why:
    docs/spec.md, "The FPN".

    Args:
        channels: width of every lateral and output, ``>= 1``.
        lateral_relu: ``lat_k = relu(conv1x1(C_k))``, as in the original LACSS code (so
            ``P_L >= 0`` too). Default False: the SPEC form, which the saved models use.
        data_format: ``"channels_last"``, ``"channels_first"`` or None (Keras' setting).
    """

    def __init__(
        self,
        channels: int = 256,
        lateral_relu: bool = False,
        data_format: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.channels = _validation.positive_int(channels, "channels")
        self.lateral_relu = _validation.check_bool(lateral_relu, "lateral_relu")
        self.data_format = layout.check_data_format(data_format)

    def build(self, input_shape):
        """Create the laterals and smoothing convs for the levels of ``input_shape`` (a list)."""
        levels = len(input_shape)
        if levels < 2:
            raise ValueError(f"FPN needs at least 2 input levels, got {levels}")
        fmt = self.data_format
        activation = "relu" if self.lateral_relu else None
        layer = {"data_format": fmt, "dtype": self.dtype_policy}
        self.laterals = [
            factory.conv2d(self.channels, 1, f"lateral{k + 1}", activation=activation, **layer)
            for k in range(levels)
        ]
        self.smooths = [
            factory.conv2d(self.channels, 3, f"smooth{k + 1}", activation="relu", **layer)
            for k in range(levels - 1)
        ]
        for lateral, shape in zip(self.laterals, input_shape, strict=True):
            lateral.build(tuple(shape))
        for smooth in self.smooths:
            smooth.build(layout.feature_shape(self.channels, fmt))
        self.built = True

    def call(self, features):
        """``[C1, ..., C_L]`` -> ``[P1, ..., P_L]`` (see the class docstring)."""
        laterals = [conv(c) for conv, c in zip(self.laterals, features, strict=True)]
        outputs = [laterals[-1]]
        for k in range(len(laterals) - 2, -1, -1):
            merged = laterals[k] + upsample2x_nearest(outputs[0], self.data_format)
            outputs.insert(0, self.smooths[k](merged))
        return outputs

    def get_config(self):
        """The constructor arguments (Keras serialisation)."""
        return {
            **super().get_config(),
            "channels": self.channels,
            "lateral_relu": self.lateral_relu,
            "data_format": self.data_format,
        }
