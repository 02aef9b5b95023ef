"""Helpers for the model tests: one compiled call per forward pass on JAX.

Eager JAX compiles every primitive separately on first use, so a one-off eager pass through a
backbone costs far more than compiling it whole; ``forward`` compiles the call through the
backend seam (``jax.jit`` of a stateless call on JAX, an eager call without autodiff on torch).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from lacss_core import _backend


def _to_numpy(tree):
    return keras.tree.map_structure(lambda t: np.asarray(keras.ops.convert_to_numpy(t)), tree)


def forward(layer, *args, **kwargs):
    """``layer(*args, **kwargs)`` as NumPy (a nested structure like the layer's output).

    The layer must be built. Non-trainable updates (BatchNorm moving averages) are written back,
    as an eager call would. ``kwargs`` are Python values (``training=True``), held static.
    """
    compiled = _backend.current().compile_with_variables(
        lambda *inputs: layer(*inputs, **kwargs), layer.variables
    )
    return _to_numpy(compiled(*args))


@pytest.fixture
def run():
    return forward


def perturb_weights(model, seed: int = 0) -> None:
    """Give a model non-trivial weights: random BatchNorm statistics, scales and shifts, random
    biases, and an LPN score bias of 0 (instead of the 0.01 prior) so untrained proposals pass
    the inference ``min_score``. Kernels keep their random initialisation."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        name, shape = variable.path.split("/")[-1], tuple(variable.shape)
        if name == "moving_mean" or name == "beta" or name == "bias":
            value = rng.normal(0.0, 0.1, shape)
        elif name == "moving_variance" or name == "gamma":
            value = rng.uniform(0.5, 1.5, shape)
        else:
            continue
        variable.assign(value.astype("float32"))
    model.lpn.score.bias.assign(np.zeros((1,), "float32"))


def disc_sample(height: int, width: int, centers, radius: float, seed: int = 0):
    """A one-image training batch: an image with bright discs, their GT LOIs padded with two
    ``-1`` rows, the label image (disc ``n`` -> label ``n + 1``) and the foreground mask."""
    rows, cols = np.mgrid[:height, :width]
    label = np.zeros((height, width), "int32")
    for n, (cy, cx) in enumerate(centers):
        label[((rows - cy) ** 2 + (cols - cx) ** 2 <= radius**2) & (label == 0)] = n + 1
    noise = np.random.default_rng(seed).normal(0.0, 0.05, (height, width))
    image = ((label > 0) + noise).astype("float32")[None, :, :, None]
    locations = np.full((1, len(centers) + 2, 2), -1.0, "float32")
    locations[0, : len(centers)] = centers
    x = {"image": image, "locations": locations}
    return x, {"label": label[None]}, {"mask": (label > 0).astype("float32")[None]}
