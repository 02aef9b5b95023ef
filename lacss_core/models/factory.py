"""The Keras layers the model is made of, created in one place so that every one of them gets
host (NumPy) initializers (``lacss_core.models.initializers``: no XLA program per weight shape)
and the dtype policy of the layer that owns it (``dtype``: a ``keras.DTypePolicy`` or its name;
None: Keras' global policy), as keras-hub passes ``dtype=self.dtype_policy`` down.
"""

from __future__ import annotations

import keras

from lacss_core.models.initializers import host

# 16-bit compute dtypes (Keras' "mixed_bfloat16", "mixed_float16", "bfloat16", "float16").
HALF_DTYPES = ("bfloat16", "float16")


def head_dtype(policy):
    """The dtype policy of an output head of a layer with ``policy``: the layer's own, except
    that a 16-bit compute dtype becomes ``"float32"``.

    The heads (the LPN's score and offset convolutions, the segmentor's last layer, the auxnet's)
    produce what leaves the network for geometry, thresholds and losses: proposal offsets,
    scores, patch and boundary logits. Rounded to bfloat16 an offset would be off by up to 1/512
    grid cell and a probability near 1 by 1/256; in float32 these few output channels cost next
    to nothing (their input stays in the compute dtype, as the rest of the network).
    """
    policy = keras.dtype_policies.get(policy)
    return "float32" if policy.compute_dtype in HALF_DTYPES else policy


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
    dtype=None,
) -> keras.layers.Conv2D:
    """:class:`Conv2D` with ``padding="same"`` (SPEC 2), host initializers and ``dtype``."""
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
        dtype=dtype,
    )


def conv2d_transpose(
    filters: int,
    size: int,
    name: str,
    *,
    strides: int,
    bias_initializer="zeros",
    data_format: str = "channels_last",
    dtype=None,
) -> keras.layers.Conv2DTranspose:
    """``keras.layers.Conv2DTranspose`` with ``padding="same"``, host initializers and ``dtype``."""
    return keras.layers.Conv2DTranspose(
        filters,
        size,
        strides=strides,
        padding="same",
        data_format=data_format,
        kernel_initializer=host("glorot_uniform"),
        bias_initializer=host(bias_initializer),
        name=name,
        dtype=dtype,
    )


def dense(units: int, name: str, *, activation=None, dtype=None) -> keras.layers.Dense:
    """``keras.layers.Dense`` with host initializers and ``dtype``."""
    return keras.layers.Dense(
        units,
        activation=activation,
        kernel_initializer=host("glorot_uniform"),
        bias_initializer=host("zeros"),
        name=name,
        dtype=dtype,
    )
