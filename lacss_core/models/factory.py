"""The Keras layers the model is made of, created in one place so that every one of them gets
host (NumPy) initializers (``lacss_core.models.initializers``: no XLA program per weight shape).
"""

from __future__ import annotations

import keras

from lacss_core.models.initializers import host


@keras.saving.register_keras_serializable(package="lacss")
class Conv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` ("same" padding, dilation 1, one group) computed through the
    backend seam (``lacss_core._backend.current().conv2d``): the same variables and numbers, and
    on torch channels-first without Keras' per-call kernel copy and separate bias add."""

    def call(self, inputs):
        from lacss_core import _backend

        bias = self.bias if self.use_bias else None
        outputs = _backend.current().conv2d(
            inputs, self.kernel, bias, self.strides, self.data_format
        )
        return outputs if self.activation is None else self.activation(outputs)


def conv2d(
    filters: int,
    size: int,
    name: str,
    *,
    strides: int = 1,
    activation=None,
    use_bias: bool = True,
    kernel_initializer="glorot_uniform",
    bias_initializer="zeros",
    data_format: str = "channels_last",
) -> keras.layers.Conv2D:
    """:class:`Conv2D` with ``padding="same"`` (SPEC 2) and host initializers."""
    return Conv2D(
        filters,
        size,
        strides=strides,
        padding="same",
        data_format=data_format,
        activation=activation,
        use_bias=use_bias,
        kernel_initializer=host(kernel_initializer),
        bias_initializer=host(bias_initializer),
        name=name,
    )


def conv2d_transpose(
    filters: int,
    size: int,
    name: str,
    *,
    strides: int,
    bias_initializer="zeros",
    data_format: str = "channels_last",
) -> keras.layers.Conv2DTranspose:
    """``keras.layers.Conv2DTranspose`` with ``padding="same"`` and host initializers."""
    return keras.layers.Conv2DTranspose(
        filters,
        size,
        strides=strides,
        padding="same",
        data_format=data_format,
        kernel_initializer=host("glorot_uniform"),
        bias_initializer=host(bias_initializer),
        name=name,
    )


def dense(units: int, name: str, *, activation=None) -> keras.layers.Dense:
    """``keras.layers.Dense`` with host initializers."""
    return keras.layers.Dense(
        units,
        activation=activation,
        kernel_initializer=host("glorot_uniform"),
        bias_initializer=host("zeros"),
        name=name,
    )
