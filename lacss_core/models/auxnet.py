"""Auxiliary boundary network for weakly supervised training (SPEC 2, 8)."""

from __future__ import annotations

import keras
from keras import ops

from lacss_core import _validation
from lacss_core.models import factory, layout


@keras.saving.register_keras_serializable(package="lacss")
class AuxNet(keras.layers.Layer):
    """``num_layers`` conv3x3 on the image at stride 1: ReLU ``filters``-wide layers, then a
    1-channel sigmoid layer, predicting the cell boundary map ``B_P`` (SPEC 2).

    Input ``(B, H, W, C)`` float32 (``(B, C, H, W)`` with ``data_format="channels_first"``;
    ``None``: ``keras.config.image_data_format()``); output ``(B, H, W)`` float32 in ``(0, 1)``
    under any dtype policy (the last layer computes in float32, ``factory.head_dtype``).
    Its receptive field stays small (``2 * num_layers + 1`` pixels) on purpose: boundaries are
    local.
    """

    def __init__(
        self, filters: int = 32, num_layers: int = 4, data_format: str | None = None, **kwargs
    ):
        super().__init__(**kwargs)
        self.filters = _validation.positive_int(filters, "filters")
        self.num_layers = _validation.positive_int(num_layers, "num_layers")
        self.data_format = fmt = layout.check_data_format(data_format)
        self.hidden = [
            factory.conv2d(
                filters, 3, f"conv{i}", activation="relu", data_format=fmt, dtype=self.dtype_policy
            )
            for i in range(num_layers - 1)
        ]
        # float32 under any policy (factory.head_dtype): the map meets the boundary loss.
        self.out = factory.conv2d(
            1, 3, "boundary", data_format=fmt, dtype=factory.head_dtype(self.dtype_policy)
        )

    def build(self, input_shape):
        """Create the conv weights for images of ``input_shape``."""
        shape = tuple(input_shape)
        for conv in self.hidden:
            conv.build(shape)
            shape = layout.feature_shape(self.filters, self.data_format, batch=shape[0])
        self.out.build(shape)
        self.built = True

    def call(self, images):
        """Images ``(B, H, W, C)`` -> boundary probabilities ``(B, H, W)``."""
        x = images
        for conv in self.hidden:
            x = conv(x)
        return layout.single_channel(ops.sigmoid(self.out(x)), self.data_format)

    def get_config(self):
        """The constructor arguments (Keras serialisation)."""
        return {
            **super().get_config(),
            "filters": self.filters,
            "num_layers": self.num_layers,
            "data_format": self.data_format,
        }
