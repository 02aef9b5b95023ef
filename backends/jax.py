"""LACSS as pure JAX functions over pytrees, for your own ``jax.jit`` / ``jax.grad`` / optax loop.

Needs ``KERAS_BACKEND=jax`` (importing it under another backend raises ``lacss_core.BackendError``).

* ``init(config, key, input_shape) -> (params, state)``: ``params`` is a plain ``dict`` of the
  trainable arrays keyed by variable path (``"backbone/stem_conv0/kernel"``), the pytree that
  ``jax.grad`` differentiates and optax updates. ``state`` is a :class:`LacssState`: the
  non-trainable arrays (BatchNorm moving statistics) plus the model's config and channel count as
  static pytree metadata, which is how ``apply`` and ``loss_fn`` know the architecture.
* ``apply(params, state, inputs, training=False) -> (outputs, state)``: ``Lacss.call``.
* ``loss_fn(params, state, batch, training=True) -> (loss, (state, logs))``: ``Lacss.compute_loss``
  on ``Lacss.call``; shaped for ``jax.value_and_grad(loss_fn, has_aux=True)``.

All three are pure: no Keras variable is read or written (the Keras model behind them is a
cached, stateless template driven through ``Model.stateless_call`` and
``Model.stateless_compute_loss``). ``training`` must be a Python bool, so under ``jax.jit`` mark
it static (``static_argnames="training"``). ``jax.vmap`` is meaningful over models, not images
(the model is batched already): ``vmap(init)`` over keys builds an ensemble and
``vmap(apply, in_axes=(0, 0, None))`` runs it on shared images.

Converting: :func:`from_keras` takes the weights of a built Keras ``Lacss`` (e.g. one loaded with
``keras.saving.load_model``); :func:`to_keras` makes a Keras ``Lacss`` holding ``params`` and
``state`` (for ``lacss_core.predict.predict_instances`` or ``model.save``).

Example (optax)::

    params, state = lacss_jax.init("lacss_tiny", jax.random.key(0), (None, 64, 64, 1))
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(params)

    @jax.jit
    def train_step(params, state, opt_state, batch):
        grad_fn = jax.value_and_grad(lacss_jax.loss_fn, has_aux=True)
        (loss, (state, logs)), grads = grad_fn(params, state, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), state, opt_state, logs
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
from collections.abc import Mapping

from lacss_core.backends import require_keras_backend

require_keras_backend("jax", __name__)

import jax  # noqa: E402  (after the backend check, so the error above comes first)
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402

from lacss_core import _validation  # noqa: E402
from lacss_core.models import Lacss  # noqa: E402

__all__ = ["LacssState", "apply", "from_keras", "init", "loss_fn", "to_keras"]


@dataclasses.dataclass(frozen=True, eq=False)  # == on dicts of arrays has no single truth value
class LacssState:
    """The non-trainable part of a LACSS model, as a JAX pytree.

    Attributes:
        variables: ``dict`` variable path -> array: the BatchNorm moving means and variances
            (pytree leaves; ``apply(..., training=True)`` returns them updated).
        config: JSON of ``Lacss.get_config()`` (static metadata: a different config compiles
            separately under ``jax.jit``).
        channels: image channels ``C`` the weights were built for (static metadata).
    """

    variables: dict
    config: str
    channels: int


jax.tree_util.register_dataclass(
    LacssState, data_fields=["variables"], meta_fields=["config", "channels"]
)


@dataclasses.dataclass(frozen=True)
class _Template:
    """A built Keras ``Lacss`` used only as a stateless description of the computation."""

    model: Lacss
    trainable: tuple[str, ...]  # names of model.trainable_variables, in order
    non_trainable: tuple[str, ...]  # names of model.non_trainable_variables, in order
    initializers: dict  # name -> the Keras initializer the variable was created with

    def trainable_values(self, params) -> list:
        return _ordered(params, self.trainable, "params")

    def state_values(self, state: LacssState) -> list:
        return _ordered(state.variables, self.non_trainable, "state.variables")

    def logs(self, metrics_values) -> dict:
        """``{metric name: scalar}`` of the model's loss trackers from their stateless values."""
        logs, start = {}, 0
        for metric in self.model.metrics:
            stop = start + len(metric.variables)
            logs[metric.name] = metric.stateless_result(metrics_values[start:stop])
            start = stop
        return logs


def _relative_path(model, variable) -> str:
    """A variable's path without the model name, e.g. ``"lpn/score/bias"``."""
    return variable.path.removeprefix(model.name + "/")


def _ordered(values, names, what: str) -> list:
    """``values[name]`` for each name, after checking that the keys are exactly ``names``."""
    if not isinstance(values, Mapping):
        raise ValueError(f"{what} must be a dict keyed by variable path, got {type(values)}")
    missing, unexpected = sorted(set(names) - set(values)), sorted(set(values) - set(names))
    if missing or unexpected:
        raise ValueError(
            f"{what} does not match the model: {len(missing)} missing keys (e.g. "
            f"{missing[:3]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"
        )
    return [values[name] for name in names]


# ----------------------------------------------------------------------------- configs
def _model_from(config) -> Lacss:
    """An unbuilt ``Lacss`` from a preset name, a dict of ``Lacss`` arguments (``"preset"`` may
    name a preset that the other entries override) or a ``Lacss`` instance (its config)."""
    if isinstance(config, Lacss):
        return Lacss.from_config(config.get_config())
    if isinstance(config, str):
        return Lacss.from_preset(config)
    if isinstance(config, Mapping):
        arguments = dict(config)
        preset = arguments.pop("preset", None)
        if preset:
            return Lacss.from_preset(preset, **arguments)  # named after the preset
        # A fixed default name: Keras would number unnamed models (lacss_1, ...), which would
        # change the config, and so the cache key and the jit cache, at every call.
        arguments.setdefault("name", "lacss")
        return Lacss(**arguments)
    raise ValueError(
        "config must be a preset name, a dict of Lacss arguments or a Lacss model, "
        f"got {type(config).__name__}"
    )


def _config_json(config) -> str:
    """The canonical (sorted JSON) form of ``Lacss.get_config()`` for ``config``."""
    return json.dumps(_model_from(config).get_config(), sort_keys=True)


def _channels(input_shape) -> int:
    try:
        channels = input_shape[-1]
    except (TypeError, IndexError):
        channels = None
    if not _validation.is_int(channels) or channels < 1:
        raise ValueError(
            f"input_shape must end with the channel count C >= 1, e.g. (B, H, W, C), "
            f"got {input_shape!r}"
        )
    return channels


@functools.lru_cache(maxsize=16)
def _template(config_json: str, channels: int) -> _Template:
    model = Lacss.from_config(json.loads(config_json))
    # Variables created inside a StatelessScope defer their initialisation and keep their
    # initializer until the scope exits; ``init`` re-draws them from a JAX key.
    with keras.StatelessScope():
        model.build((None, None, None, channels))
        initializers = {variable.path: variable._initializer for variable in model.variables}
    return _Template(
        model,
        trainable=tuple(_relative_path(model, v) for v in model.trainable_variables),
        non_trainable=tuple(_relative_path(model, v) for v in model.non_trainable_variables),
        initializers={_relative_path(model, v): initializers[v.path] for v in model.variables},
    )


def _template_of(state) -> _Template:
    if not isinstance(state, LacssState):
        raise ValueError(f"state must be the LacssState from init, got {type(state).__name__}")
    return _template(state.config, state.channels)


# ----------------------------------------------------------------------------- init
def _raw_key(key):
    """``uint32[2]`` key data from a new-style typed key or an old-style raw key."""
    key = jnp.asarray(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return key


def _initial_value(initializer, variable, key):
    """Draw ``variable``'s initial value with its own Keras initializer, seeded by ``key``."""
    if hasattr(initializer, "keras_twin"):  # lacss' host (NumPy) initializers cannot be traced
        initializer = initializer.keras_twin()
    if hasattr(initializer, "seed"):  # a Keras RandomInitializer; constants have no seed
        initializer = copy.copy(initializer)
        initializer.seed = _raw_key(key)  # the JAX backend accepts a key array as the seed
    return jnp.asarray(initializer(variable.shape, dtype=variable.dtype))


def init(config, key, input_shape):
    """A freshly initialised model as ``(params, state)``.

    Args:
        config: a preset name (``"lacss_tiny"``, ``"lacss_resnet50"``), a dict of ``Lacss``
            arguments (``{"preset": "lacss_tiny", "crop_size": 16}`` overrides a preset), or a
            ``Lacss`` model whose config is used.
        key: a JAX PRNG key (``jax.random.key(0)`` or ``jax.random.PRNGKey(0)``); every variable
            is drawn with the initializer Keras would use, from its own fold of the key.
        input_shape: the image shape ``(B, H, W, C)``; only ``C`` matters (any ``B, H, W`` runs).
    Returns:
        ``(params, state)``: ``params`` a dict path -> float32 array (trainable variables),
        ``state`` a :class:`LacssState`.

    Traceable: ``jax.jit(init, static_argnums=(0, 2))`` with a hashable config (a preset name),
    and ``jax.vmap(functools.partial(init, config), in_axes=(0, None))`` over keys.
    """
    channels = _channels(input_shape)
    config_json = _config_json(config)
    template = _template(config_json, channels)
    model = template.model
    keys = jax.random.split(key, len(model.variables))
    values = {}
    for variable, variable_key in zip(model.variables, keys, strict=True):
        name = _relative_path(model, variable)
        values[name] = _initial_value(template.initializers[name], variable, variable_key)
    params = {name: values[name] for name in template.trainable}
    state_values = {name: values[name] for name in template.non_trainable}
    return params, LacssState(state_values, config_json, channels)


# ----------------------------------------------------------------------------- apply, loss
def _as_arrays(inputs):
    return jax.tree.map(jnp.asarray, inputs)


def _check_training(training) -> bool:
    if not isinstance(training, bool):
        raise ValueError(
            f"training must be a Python bool (static under jax.jit), got {type(training).__name__}"
        )
    return training


def _check_channels(inputs, state: LacssState) -> None:
    image = inputs["image"] if isinstance(inputs, Mapping) else inputs
    if image.ndim != 4 or image.shape[-1] != state.channels:
        raise ValueError(
            f"images must have shape (B, H, W, {state.channels}), got {tuple(image.shape)}"
        )


def apply(params, state, inputs, training=False):
    """``Lacss.call`` as a pure function.

    Args:
        params, state: from :func:`init` or :func:`from_keras`.
        inputs: images ``(B, H, W, C)`` float32, or ``{"image": ..., "locations": (B, N, 2)
            float32 GT LOIs in pixels, -1 padded}`` (training-style outputs with mixed locations).
        training: Python bool; True normalises with batch statistics and updates the moving
            statistics in the returned state.
    Returns:
        ``(outputs, state)``: ``outputs`` the dict documented in ``Lacss.call`` (fixed shapes,
        ``-1`` padded); ``state`` with the new moving statistics (unchanged when not training).
    """
    template = _template_of(state)
    inputs = _as_arrays(inputs)
    _check_channels(inputs, state)
    outputs, state_values = template.model.stateless_call(
        template.trainable_values(params),
        template.state_values(state),
        inputs,
        training=_check_training(training),
    )
    return outputs, _with_values(state, template, state_values)


def _with_values(state, template, values) -> LacssState:
    variables = dict(zip(template.non_trainable, values, strict=True))
    return dataclasses.replace(state, variables=variables)


def loss_fn(params, state, batch, training=True):
    """The training loss of ``Lacss.compute_loss`` as a pure function of ``params``.

    Args:
        params, state: from :func:`init` or :func:`from_keras`.
        batch: ``(x, y)`` as a ``lacss_core.data.LacssDataset`` yields it:
            ``x = {"image": (B, H, W, C) float32, "locations": (B, N, 2) float32 GT LOIs}``,
            ``y = {"label": (B, H, W) int32}`` (fully supervised) or ``{"mask": (B, H, W)
            float32}`` (weakly supervised).
        training: Python bool, the BatchNorm mode of the forward pass.
    Returns:
        ``(loss, (state, logs))``: the scalar float32 loss; the state with updated moving
        statistics (when training); ``logs`` a dict of the unweighted terms (``"lpn_loss"``,
        ``"seg_loss"`` and, with the auxnet on weak labels, ``"boundary_loss"``).
    """
    template = _template_of(state)
    x, y = _as_arrays(batch)
    _check_channels(x, state)
    model = template.model
    trainable = template.trainable_values(params)
    outputs, state_values = model.stateless_call(
        trainable, template.state_values(state), x, training=_check_training(training)
    )
    fresh_metrics = [jnp.zeros(v.shape, v.dtype) for v in model.metrics_variables]
    loss, (_, _, metrics_values) = model.stateless_compute_loss(
        trainable, state_values, fresh_metrics, x=x, y=y, y_pred=outputs, training=training
    )
    return loss, (_with_values(state, template, state_values), template.logs(metrics_values))


# ----------------------------------------------------------------------------- Keras models
def from_keras(model: Lacss):
    """``(params, state)`` holding a copy of a built Keras ``Lacss``'s weights."""
    if not isinstance(model, Lacss) or not model.built:
        raise ValueError("model must be a built lacss_core.models.Lacss")
    channels = int(model.backbone.stem_convs[0].kernel.shape[2])
    config_json = _config_json(model)
    template = _template(config_json, channels)
    # A copy: Keras' own fit() on JAX donates variable buffers, which would delete ours.
    values = {_relative_path(model, v): jnp.array(v.value) for v in model.variables}
    params = {name: values[name] for name in template.trainable}
    state_values = {name: values[name] for name in template.non_trainable}
    return params, LacssState(state_values, config_json, channels)


def to_keras(params, state) -> Lacss:
    """A new built Keras ``Lacss`` holding ``params`` and ``state`` (for predict or save)."""
    template = _template_of(state)
    model = Lacss.from_config(json.loads(state.config))
    model.build((None, None, None, state.channels))
    values = dict(zip(template.trainable, template.trainable_values(params), strict=True))
    values.update(zip(template.non_trainable, template.state_values(state), strict=True))
    for variable in model.variables:
        variable.assign(values[_relative_path(model, variable)])
    return model
