"""``lacss_core.backends.jax``: init, apply and loss_fn as pure JAX functions (JAX only)."""

from __future__ import annotations

import keras
import pytest

if keras.backend.backend() != "jax":
    pytest.skip(
        "the JAX adapter needs KERAS_BACKEND=jax (this process runs Keras on "
        f"{keras.backend.backend()!r})",
        allow_module_level=True,
    )

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from lacss_core import oracle  # noqa: E402
from lacss_core.backends import jax as lacss_jax  # noqa: E402
from lacss_core.conformance import tolerances  # noqa: E402
from lacss_core.data import LacssDataset, SyntheticCells  # noqa: E402
from lacss_core.models import preset_config  # noqa: E402

# Few proposal slots keep the per-instance layers and NMS cheap on CPU.
CONFIG = {"preset": "lacss_tiny", "max_output": 16, "train_max_output": 16, "pre_nms_topk": 64}
SHAPE = (None, 64, 64, 1)

# Compiled once per test session and shared, so each compiles once.
apply_jit = jax.jit(lacss_jax.apply, static_argnames="training")
value_and_grad_jit = jax.jit(jax.value_and_grad(lacss_jax.loss_fn, has_aux=True))


@pytest.fixture(scope="module")
def model():
    return lacss_jax.init(CONFIG, jax.random.key(0), SHAPE)


@pytest.fixture(scope="module")
def batch():
    dataset = LacssDataset(
        SyntheticCells(2, size=64, n_cells=6), batch_size=2, max_instances=16, shuffle=False
    )
    return dataset[0]


def test_init_is_deterministic_in_the_key(model):
    params, state = model
    again, again_state = lacss_jax.init(CONFIG, jax.random.PRNGKey(0), SHAPE)  # raw key: same
    other, _ = lacss_jax.init(CONFIG, jax.random.key(1), SHAPE)
    keras_model = lacss_jax.to_keras(params, state)
    assert len(params) == len(keras_model.trainable_variables)
    assert len(state.variables) == len(keras_model.non_trainable_variables)
    for name in params:
        np.testing.assert_array_equal(params[name], again[name])
    kernel = "backbone/stem_conv0/kernel"
    assert not np.array_equal(params[kernel], other[kernel])
    # Constant initializers stay constant (the LPN's score prior, BatchNorm statistics).
    np.testing.assert_array_equal(params["lpn/score/bias"], other["lpn/score/bias"])
    np.testing.assert_array_equal(state.variables["lpn/norm1/moving_variance"], 1.0)


def test_a_config_dict_gives_the_same_static_metadata_every_time():
    config = {**preset_config("lacss_tiny"), "max_output": 16}  # no preset and no name
    _, first = lacss_jax.init(config, jax.random.key(0), SHAPE)
    _, second = lacss_jax.init(config, jax.random.key(1), SHAPE)
    assert first.config == second.config  # else every call would compile anew under jit
    assert jax.tree.structure(first) == jax.tree.structure(second)


def test_outputs_equal_the_keras_model_call_with_the_same_weights(model, batch):
    params, state = model
    keras_model = lacss_jax.to_keras(params, state)
    round_trip, _ = lacss_jax.from_keras(keras_model)
    for name in params:
        np.testing.assert_array_equal(round_trip[name], params[name])
    images = batch[0]["image"]
    expected = keras_model(images, training=False)
    outputs, new_state = apply_jit(params, state, images, training=False)
    assert outputs.keys() == expected.keys()
    for key in outputs:
        actual, wanted = np.asarray(outputs[key]), np.asarray(expected[key])
        if np.issubdtype(wanted.dtype, np.floating):  # jit may fuse float32 ops differently
            np.testing.assert_allclose(
                actual, wanted, rtol=tolerances.FLOAT_RTOL, atol=tolerances.FLOAT_ATOL, err_msg=key
            )
        else:
            np.testing.assert_array_equal(actual, wanted, err_msg=key)
    unchanged = jax.tree.map(np.array_equal, new_state, state)  # inference: statistics kept
    assert all(jax.tree.leaves(unchanged))


def _oracle_loss(outputs, batch, stride):
    """The fully supervised total (SPEC 8) in float64 by the NumPy oracle, on model outputs."""
    x, y = batch
    out = {k: np.asarray(v) for k, v in outputs.items()}
    score_target, offset_target = oracle.lpn_targets(x["locations"], x["image"].shape[1:3], stride)
    lpn = oracle.lpn_loss(out["lpn_scores"], out["lpn_offsets"], score_target, offset_target)
    return lpn + oracle.fs_seg_loss(out["patches"], out["locations"], y["label"])


def _with_shift(params, name, delta):
    return {**params, name: params[name] + delta}


# Scalar biases after the last normalisation, so a shift is not normalised away. Shifting the
# score logit keeps the score order (NMS and location mixing stay put, the loss stays smooth).
@pytest.mark.parametrize("name", ["lpn/score/bias", "segmentor/head_upsample/bias"])
def test_jitted_gradient_matches_oracle_finite_differences(model, batch, name):
    params, state = model
    (loss, (_, logs)), grads = value_and_grad_jit(params, state, batch)
    stride = 2 ** lacss_jax.to_keras(params, state).lpn_level

    def oracle_loss_at(delta):
        outputs, _ = apply_jit(_with_shift(params, name, delta), state, batch[0], training=True)
        return _oracle_loss(outputs, batch, stride)

    np.testing.assert_allclose(loss, oracle_loss_at(0.0), rtol=tolerances.FLOAT_RTOL)
    np.testing.assert_allclose(loss, logs["lpn_loss"] + logs["seg_loss"], rtol=1e-6)
    step = 1e-2  # float32 forward: a larger step than the oracle's float64 FD_STEP
    finite_difference = (oracle_loss_at(step) - oracle_loss_at(-step)) / (2 * step)
    assert abs(finite_difference) > 1e-3  # the direction matters
    np.testing.assert_allclose(grads[name][0], finite_difference, rtol=tolerances.GRAD_RTOL)


def test_a_few_optax_steps_lower_the_loss(model, batch):
    params, state = model
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(params)

    @jax.jit
    def train_step(params, state, opt_state, batch):
        (loss, (state, _)), grads = jax.value_and_grad(lacss_jax.loss_fn, has_aux=True)(
            params, state, batch
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), state, opt_state, loss

    losses = []
    for _ in range(4):
        params, state, opt_state, loss = train_step(params, state, opt_state, batch)
        losses.append(float(loss))
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 0.05, losses
    initial_state = model[1]
    moving_mean = "lpn/norm1/moving_mean"
    assert not np.array_equal(state.variables[moving_mean], initial_state.variables[moving_mean])


def test_vmap_over_an_ensemble_of_models(model, batch):
    params, state = model
    others = lacss_jax.init(CONFIG, jax.random.key(7), SHAPE)
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), model, others)
    ensemble = jax.jit(jax.vmap(lambda p, s, x: lacss_jax.apply(p, s, x)[0], in_axes=(0, 0, None)))
    images = batch[0]["image"]
    outputs = ensemble(*stacked, images)
    for member, (p, s) in enumerate((model, others)):
        single, _ = apply_jit(p, s, images, training=False)
        np.testing.assert_allclose(
            outputs["lpn_scores"][member], single["lpn_scores"], rtol=tolerances.FLOAT_RTOL
        )


def test_bad_arguments_raise_value_error(model, batch):
    params, state = model
    images = batch[0]["image"]
    with pytest.raises(ValueError, match=r"images must have shape \(B, H, W, 1\)"):
        lacss_jax.apply(params, state, np.zeros((1, 64, 64, 3), "float32"))
    with pytest.raises(ValueError, match="params does not match the model: 103 missing keys"):
        lacss_jax.apply({"lpn/score/bias": params["lpn/score/bias"]}, state, images)
    with pytest.raises(ValueError, match="training must be a Python bool"):
        lacss_jax.apply(params, state, images, training=np.bool_(True))
    with pytest.raises(ValueError, match="state must be the LacssState"):
        lacss_jax.apply(params, dict(state.variables), images)
    with pytest.raises(ValueError, match="input_shape must end with the channel count"):
        lacss_jax.init(CONFIG, jax.random.key(0), (64, 64, None))
    with pytest.raises(ValueError, match="config must be a preset name"):
        lacss_jax.init(3, jax.random.key(0), SHAPE)
