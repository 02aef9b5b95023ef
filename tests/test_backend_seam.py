"""The backend seam (``lacss_core._backend.current()``): the same behaviour on every backend."""

from __future__ import annotations

import pathlib

import keras
import numpy as np
import pytest

from lacss_core import _backend

BACKEND = _backend.current()


def test_current_is_the_active_keras_backend_and_cached():
    assert BACKEND.name == keras.backend.backend()
    assert _backend.current() is BACKEND
    assert isinstance(BACKEND, _backend.Backend)


def test_supported_backends_are_the_modules_of_the_package():
    folder = pathlib.Path(_backend.__file__).parent
    files = {p.stem for p in folder.glob("*.py") if not p.stem.startswith("_")}
    assert set(_backend.SUPPORTED) == files
    assert _backend.SUPPORTED[:2] == ("jax", "torch")  # the auto-selection order


def test_options_choose_compiled_or_eager():
    assert BACKEND.compiles(_backend.COMPILED) and not BACKEND.compiles(_backend.EAGER)
    assert BACKEND.compiles(_backend.DEFAULT) == BACKEND.compiles_by_default
    assert BACKEND.compiles_by_default == (BACKEND.name == "jax")

    def f(x):
        return x * 2.0

    assert BACKEND.compile(f, _backend.EAGER) is f
    x = keras.ops.convert_to_tensor(np.arange(3, dtype="float32"))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(BACKEND.compile(f)(x)), [0, 2, 4])


def _dense_with_batchnorm():
    layer = keras.Sequential([keras.layers.Dense(2), keras.layers.BatchNormalization()])
    layer.build((None, 3))
    return layer


@pytest.mark.parametrize("options", [_backend.DEFAULT, _backend.EAGER], ids=["default", "eager"])
def test_compile_with_variables_reads_current_values_and_writes_updates_back(options):
    model = _dense_with_batchnorm()
    x = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    infer = BACKEND.compile_with_variables(lambda t: model(t, training=False), model.variables)
    train = BACKEND.compile_with_variables(
        lambda t: model(t, training=True), model.variables, options
    )
    before = keras.ops.convert_to_numpy(infer(x))
    np.testing.assert_allclose(before, keras.ops.convert_to_numpy(model(x)), rtol=1e-6)

    dense = model.layers[0]
    dense.kernel.assign(2.0 * keras.ops.convert_to_numpy(dense.kernel))
    after = keras.ops.convert_to_numpy(infer(x))  # the new weights, not the traced ones
    np.testing.assert_allclose(after, keras.ops.convert_to_numpy(model(x)), rtol=1e-6)
    assert not np.allclose(after, before)

    mean = model.layers[1].moving_mean
    assert np.all(keras.ops.convert_to_numpy(mean) == 0.0)
    train(x)  # BatchNorm's moving mean moves, as an eager training call would move it
    moved = keras.ops.convert_to_numpy(mean)
    expected_batch_mean = x @ keras.ops.convert_to_numpy(dense.kernel)  # bias is 0
    np.testing.assert_allclose(moved, 0.01 * expected_batch_mean.mean(0), rtol=1e-5, atol=1e-7)


def test_compile_with_variables_records_no_gradient():
    model = _dense_with_batchnorm()
    out = BACKEND.compile_with_variables(lambda t: model(t), model.variables)(np.ones((1, 3), "f"))
    assert not getattr(out, "requires_grad", False)


@pytest.mark.parametrize("options", [_backend.DEFAULT, _backend.EAGER], ids=["default", "eager"])
def test_grad_of_a_scalar_function(options):
    def loss(x, w):
        return keras.ops.sum(w * x * x)

    x = keras.ops.convert_to_tensor(np.array([1.0, -2.0, 3.0], "float32"))
    w = keras.ops.convert_to_tensor(np.array([0.5, 1.0, 2.0], "float32"))
    grad = BACKEND.grad(loss, 0, options)(x, w)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(grad), [1.0, -4.0, 12.0])


def test_no_grad_and_devices():
    with BACKEND.no_grad():
        y = keras.ops.convert_to_tensor(np.ones(2, "float32")) * 2.0
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(BACKEND.block_until_ready(y)), 2.0)
    assert BACKEND.device_kind() in ("cpu", "gpu", "tpu")
    assert BACKEND.process_index_and_count() == (0, 1)
    assert BACKEND.compile_mode in ("jit", "compile")


def test_pad_zeros_is_keras_pad():
    x = np.arange(2 * 3 * 4, dtype="float32").reshape(2, 3, 4)
    widths = [[0, 0], [1, 2], [3, 0]]
    for dtype in ("float32", "int32"):
        got = BACKEND.pad_zeros(keras.ops.convert_to_tensor(x.astype(dtype)), widths)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), np.pad(x, widths))
        assert keras.backend.standardize_dtype(got.dtype) == dtype


def test_segment_max_is_keras_segment_max_with_empty_segments_at_minus_inf():
    data = np.array([1.0, 5.0, -2.0, 3.0, 0.5], "float32")
    ids = np.array([0, 0, 2, 2, 4], "int32")
    got = BACKEND.segment_max(
        keras.ops.convert_to_tensor(data), keras.ops.convert_to_tensor(ids), 5
    )
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), [5, -np.inf, 3, -np.inf, 0.5])


def test_outside_compiler_runs_eagerly_inside_a_compiled_function():
    seen = []

    def probe(x):
        seen.append(_compiling())
        return x + 1.0

    def f(x):
        return BACKEND.outside_compiler(probe)(x) * 2.0

    x = keras.ops.convert_to_tensor(np.arange(3, dtype="float32"))
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(BACKEND.compile(f, _backend.COMPILED)(x)), [2, 4, 6]
    )
    assert seen and not any(seen)


def _compiling():
    if BACKEND.name == "torch":
        import torch

        return torch.compiler.is_compiling()
    return False  # jax.jit traces ``probe`` into the program: the seam changes nothing there


@pytest.mark.skipif(BACKEND.name != "torch", reason="torch.compile's guards")
@pytest.mark.skipif(not BACKEND.compile_available(), reason="torch.compile needs a C++ compiler")
def test_compiled_keras_layers_and_pads_compile_once():
    """Two ways a torch.compile'd Keras function compiled again on its second call: Keras
    created its layer-call context only on the first layer call of the process (the seam now
    makes it exist before compiling), and ``keras.ops.pad`` bumps a global name counter on
    every call (``pad_zeros`` does not)."""
    import torch
    from keras.src.backend.common import global_state
    from torch._dynamo.utils import counters

    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    # as in a fresh process: no layer called yet (other tests called some)
    if hasattr(global_state.GLOBAL_STATE_TRACKER, "current_call_ctx"):
        delattr(global_state.GLOBAL_STATE_TRACKER, "current_call_ctx")
    torch._dynamo.reset()
    counters.clear()

    def f(x):
        return BACKEND.pad_zeros(layer(x), [[1, 1], [0, 2]])

    compiled = BACKEND.compile(f, _backend.COMPILED)
    x = keras.ops.convert_to_tensor(np.ones((4, 3), "float32"))
    for _ in range(3):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(compiled(x)), keras.ops.convert_to_numpy(f(x)), rtol=1e-6
        )
    assert counters["stats"]["unique_graphs"] == 1


@pytest.mark.skipif(BACKEND.name != "torch", reason="torch.compile's recompile limit")
@pytest.mark.skipif(not BACKEND.compile_available(), reason="torch.compile needs a C++ compiler")
def test_closures_of_one_function_each_compile():
    """Dynamo's recompile limit (8) counts per code object: ten closures of one ``def`` compiled
    through the seam must all compile, not the first eight."""
    import torch
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()

    def scaled(factor):
        def f(x):
            return x * factor

        return f

    x = keras.ops.convert_to_tensor(np.ones(3, "float32"))
    for factor in range(10):
        BACKEND.compile(scaled(float(factor)), _backend.COMPILED)(x)
    assert counters["stats"]["unique_graphs"] == 10
