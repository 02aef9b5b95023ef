"""Per-layer parity with small NumPy references, for the layers where backends are known to differ.

The references are in ``lacss_core.oracle.network``, shared with the value tests of
``test_layers.py``.

"same" padding with stride 2 is asymmetric (TensorFlow convention: the extra row/column goes
bottom/right), Conv2DTranspose "same" crops its full output in a convention of its own, and
BatchNorm has two modes plus a moving-average update. Each reference is written from those
definitions, in float64, and the Keras layer must match it on the current backend.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from lacss_core.models import ChannelAttention, upsample2x_nearest
from lacss_core.models.normalization import BATCH_NORM_MOMENTUM, NORM_EPSILON, make_norm
from lacss_core.oracle.network import conv2d_same, conv2d_transpose_same

ATOL = 1e-5  # float32 sums of <= 3*3*8 products of O(1) values


def _rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("size", [(8, 8), (7, 10)])
@pytest.mark.parametrize("kernel_size", [1, 3])
def test_strided_same_conv_matches_reference(size, kernel_size):
    x = _rng().normal(size=(2, *size, 3)).astype("float32")
    layer = keras.layers.Conv2D(4, kernel_size, strides=2, padding="same")
    layer.build(x.shape)
    layer.bias.assign(_rng(1).normal(size=4).astype("float32"))
    got = keras.ops.convert_to_numpy(layer(x))
    kernel, bias = (np.asarray(w.numpy(), np.float64) for w in layer.weights)
    np.testing.assert_allclose(got, conv2d_same(x, kernel, bias, 2), atol=ATOL)


@pytest.mark.parametrize("size", [(4, 4), (3, 5)])
def test_strided_same_conv_transpose_matches_reference(size):
    x = _rng().normal(size=(2, *size, 5)).astype("float32")
    layer = keras.layers.Conv2DTranspose(2, 3, strides=2, padding="same")
    layer.build(x.shape)
    layer.bias.assign(_rng(1).normal(size=2).astype("float32"))
    got = keras.ops.convert_to_numpy(layer(x))
    kernel, bias = (np.asarray(w.numpy(), np.float64) for w in layer.weights)
    assert got.shape == (2, 2 * size[0], 2 * size[1], 2)
    np.testing.assert_allclose(got, conv2d_transpose_same(x, kernel, bias, 2), atol=ATOL)


def test_upsample2x_nearest_matches_reference():
    x = _rng().normal(size=(2, 3, 5, 4)).astype("float32")
    rows, cols = np.arange(6) // 2, np.arange(10) // 2
    expected = x[:, rows][:, :, cols]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(upsample2x_nearest(x)), expected)


def _batch_norm_with_random_state(channels):
    layer = make_norm("batch", channels, "bn")
    layer.build((None, None, None, channels))
    rng = _rng(2)
    layer.gamma.assign(rng.uniform(0.5, 1.5, channels).astype("float32"))
    layer.beta.assign(rng.normal(size=channels).astype("float32"))
    layer.moving_mean.assign(rng.normal(size=channels).astype("float32"))
    layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels).astype("float32"))
    return layer


def _state(layer):
    names = ("gamma", "beta", "moving_mean", "moving_variance")
    return [np.asarray(getattr(layer, n).numpy(), np.float64) for n in names]


def test_batch_norm_inference_uses_moving_statistics():
    x = _rng().normal(2.0, 3.0, size=(2, 4, 5, 3)).astype("float32")
    layer = _batch_norm_with_random_state(3)
    gamma, beta, mean, var = _state(layer)
    got = keras.ops.convert_to_numpy(layer(x, training=False))
    expected = gamma * (x - mean) / np.sqrt(var + NORM_EPSILON) + beta
    np.testing.assert_allclose(got, expected, atol=ATOL)
    np.testing.assert_allclose(_state(layer)[2:], [mean, var], atol=0)  # no update


def test_batch_norm_training_uses_batch_statistics_and_updates_moving_averages():
    x = _rng().normal(2.0, 3.0, size=(2, 4, 5, 3)).astype("float32")
    layer = _batch_norm_with_random_state(3)
    gamma, beta, mean, var = _state(layer)
    got = keras.ops.convert_to_numpy(layer(x, training=True))
    batch_mean = x.mean(axis=(0, 1, 2), dtype=np.float64)
    batch_var = x.var(axis=(0, 1, 2), dtype=np.float64)  # biased, as in the normalisation
    expected = gamma * (x - batch_mean) / np.sqrt(batch_var + NORM_EPSILON) + beta
    np.testing.assert_allclose(got, expected, atol=ATOL)
    m = BATCH_NORM_MOMENTUM
    new_mean, new_var = _state(layer)[2:]
    np.testing.assert_allclose(new_mean, m * mean + (1 - m) * batch_mean, rtol=1e-5)
    np.testing.assert_allclose(new_var, m * var + (1 - m) * batch_var, rtol=1e-5)


def test_channel_attention_matches_reference():
    x = _rng().normal(size=(2, 3, 4, 32)).astype("float32")
    layer = ChannelAttention(reduction=8)
    got = keras.ops.convert_to_numpy(layer(x))
    w1, b1, w2, b2 = (np.asarray(w.numpy(), np.float64) for w in layer.weights)

    def mlp(v):
        return np.maximum(v @ w1 + b1, 0) @ w2 + b2

    logits = mlp(x.max(axis=(1, 2))) + mlp(x.mean(axis=(1, 2)))
    expected = x * (1 / (1 + np.exp(-logits)))[:, None, None, :]
    np.testing.assert_allclose(got, expected, atol=ATOL)
