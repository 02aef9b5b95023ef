"""Building and loading a model: host initializers, seeding, no per-weight compilation (issue 12).

Construction time itself is measured in ``benchmarks/forward.py``; these tests check what makes
it fast (no XLA compilation per weight shape on JAX) and that seeding still fixes every weight.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from keras.src.initializers.random_initializers import compute_fans

from lacss_core.models import Lacss
from lacss_core.models.initializers import (
    HostConstant,
    HostVarianceScaling,
    glorot_uniform,
    he_normal,
    host,
)

BACKEND = keras.backend.backend()


def _tiny(seed):
    keras.utils.set_random_seed(seed)
    model = Lacss.from_preset("lacss_tiny", use_auxnet=True)
    model.build((None, None, None, 1))
    return {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}


def test_the_same_seed_gives_the_same_model_bit_for_bit():
    first, again, other = _tiny(3), _tiny(3), _tiny(4)
    assert list(first) == list(again)
    for path, value in first.items():
        np.testing.assert_array_equal(again[path], value, err_msg=path)
    kernels = [p for p in first if p.endswith("kernel")]
    assert all(not np.array_equal(first[p], other[p]) for p in kernels)


@pytest.mark.parametrize("shape", [(3, 3, 16, 32), (64, 8), (1, 1, 256, 1024)])
def test_he_normal_is_truncated_at_two_stddev_with_keras_fans(shape):
    values = keras.ops.convert_to_numpy(he_normal()(shape, "float32"))
    assert values.shape == shape and values.dtype == np.float32
    fan_in, _ = compute_fans(shape)
    stddev = math.sqrt(2.0 / fan_in) / 0.87962566103423978
    assert np.abs(values).max() <= 2 * stddev * (1 + 1e-6)
    # The truncated distribution's own standard deviation is sqrt(2 / fan_in).
    np.testing.assert_allclose(values.std(), math.sqrt(2.0 / fan_in), rtol=0.1)


def test_glorot_uniform_limit():
    shape = (3, 3, 8, 24)
    values = keras.ops.convert_to_numpy(glorot_uniform()(shape, "float32"))
    fan_in, fan_out = compute_fans(shape)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    assert np.abs(values).max() <= limit and np.abs(values).max() > 0.9 * limit


def test_host_names_and_constants():
    assert isinstance(host("he_normal"), HostVarianceScaling)
    assert isinstance(host(-4.0), HostConstant) and host(-4.0).value == -4.0
    ones = keras.ops.convert_to_numpy(host("ones")((2, 3), "float32"))
    np.testing.assert_array_equal(ones, np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="no host initializer named 'orthogonal'"):
        host("orthogonal")


def test_host_initializers_round_trip_their_config():
    for initializer in (he_normal(), glorot_uniform(), host(0.5)):
        config = keras.initializers.serialize(initializer)
        again = keras.initializers.deserialize(config)
        assert type(again) is type(initializer)
        assert again.get_config() == initializer.get_config()


@pytest.mark.skipif(BACKEND != "jax", reason="XLA compilations happen on JAX only")
def test_building_and_loading_compile_no_program_per_weight(tmp_path):
    import jax.monitoring

    compiles = []

    def listener(name, duration, **kwargs):
        if name.endswith("backend_compile_duration"):
            compiles.append(name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    model = Lacss.from_preset("lacss_tiny")
    model.build((None, None, None, 1))
    model.compile(optimizer="adam")
    model.optimizer.build(model.trainable_variables)
    path = str(tmp_path / "tiny.keras")
    model.save(path)
    compiles.clear()
    loaded = keras.saving.load_model(path)
    # One scalar cast for each of Keras' loss-tracking metrics at most, not one per weight.
    assert len(compiles) <= 3, f"{len(compiles)} XLA compilations while loading"
    assert len(loaded.optimizer.variables) == len(model.optimizer.variables)
    assert len(model.weights) > 50


def test_a_loaded_optimizer_is_this_backends_class(tmp_path):
    model = Lacss.from_preset("lacss_tiny")
    model.build((None, None, None, 1))
    model.compile(optimizer="adam")
    model.optimizer.build(model.trainable_variables)
    config = model.get_compile_config()
    other = {"jax": "torch", "torch": "jax"}[BACKEND]
    config["optimizer"]["module"] = f"keras.src.backend.{other}.optimizers.{other}_adam"
    fresh = Lacss.from_preset("lacss_tiny")
    fresh.build((None, None, None, 1))
    fresh.compile_from_config(config)
    assert type(fresh.optimizer) is type(keras.optimizers.Adam())
    assert len(fresh.optimizer.variables) == len(model.optimizer.variables)
