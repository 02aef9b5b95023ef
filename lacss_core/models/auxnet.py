"""Auxiliary boundary network for weakly supervised training (SPEC 2, 8)."""

from __future__ import annotations

import keras
from keras import ops

from lacss_core import _validation
from lacss_core.models import factory


@keras.saving.register_keras_serializable(package="lacss")
class AuxNet(keras.layers.Layer):
    """``num_layers`` conv3x3 on the image at stride 1: ReLU ``filters``-wide layers, then a
    1-channel sigmoid layer, predicting the cell boundary map ``B_P`` (SPEC 2).

    Input ``(B, H, W, C)`` float32; output ``(B, H, W)`` float32 in ``(0, 1)``. Its receptive field
    stays small (``2 * num_layers + 1`` pixels) on purpose: boundaries are local.
    """

    def __init__(self, filters: int = 32, num_layers: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.filters = _validation.positive_int(filters, "filters")
        self.num_layers = _validation.positive_int(num_layers, "num_layers")
        self.hidden = [
            factory.conv2d(filters, 3, f"conv{i}", activation="relu") for i in range(num_layers - 1)
        ]
        self.out = factory.conv2d(1, 3, "boundary")

    def build(self, input_shape):
        shape = tuple(input_shape)
        for conv in self.hidden:
            conv.build(shape)
            shape = (shape[0], None, None, self.filters)
        self.out.build(shape)
        self.built = True

    def call(self, images):
        x = images
        for conv in self.hidden:
            x = conv(x)
        return ops.sigmoid(self.out(x))[..., 0]

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "num_layers": self.num_layers}
