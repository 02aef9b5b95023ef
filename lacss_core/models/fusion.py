"""Inference fusion: BatchNorm folded into the convolution before it (issue 12, item 2).

In inference BatchNorm is a per-channel affine map, ``y = (x - mean) * s + beta`` with
``s = gamma / sqrt(moving_variance + epsilon)``, so ``norm(conv(x))`` is one convolution with
kernel ``kernel * s`` (scaled along its output-channel axis) and bias ``beta - mean * s`` (plus
``bias * s`` if the convolution had one). Keras keeps kernels ``(kh, kw, in, out)`` in both data
formats, so the same fold serves both. Torch runs eagerly, one pass over the feature map per op:
each fold saves BatchNorm's passes (XLA fuses them on JAX anyway). The stem's norm follows a
ReLU and is left as it is.
"""

from __future__ import annotations

import numpy as np


def conv_norm_pairs(model):
    """``(conv, norm)`` of every BatchNorm that directly follows a convolution in a ``Lacss``:
    the bottlenecks' three (and the projection shortcut's) and the LPN's two."""
    for block in model.backbone.blocks:
        yield block.conv1, block.norm1
        yield block.conv2, block.norm2
        yield block.conv3, block.norm3
        if block.projects:
            yield block.shortcut_conv, block.shortcut_norm
    yield model.lpn.conv1, model.lpn.norm1
    yield model.lpn.conv2, model.lpn.norm2


def folded(conv, norm) -> tuple[np.ndarray, np.ndarray]:
    """The float32 ``(kernel, bias)`` of ``norm(conv(x))`` in inference, computed in float64."""
    kernel = np.asarray(conv.kernel.numpy(), np.float64)
    bias = np.asarray(conv.bias.numpy(), np.float64) if conv.use_bias else 0.0
    mean = np.asarray(norm.moving_mean.numpy(), np.float64)
    variance = np.asarray(norm.moving_variance.numpy(), np.float64)
    scale = np.asarray(norm.gamma.numpy(), np.float64) / np.sqrt(variance + norm.epsilon)
    shift = np.asarray(norm.beta.numpy(), np.float64) + (bias - mean) * scale
    return (kernel * scale).astype(np.float32), shift.astype(np.float32)


def _relative(path: str) -> str:
    return path.split("/", 1)[1]  # without the model's own name


def copy_folded(source, target) -> None:
    """Give the built ``target`` (``source``'s config with ``fold_batch_norm=True``) the weights
    of ``source`` with every norm of ``conv_norm_pairs`` folded into its convolution.

    Raises:
        ValueError: a ``target`` variable has no counterpart in ``source``.
    """
    values = {_relative(v.path): v.numpy() for v in source.variables}
    for conv, norm in conv_norm_pairs(source):
        kernel, bias = folded(conv, norm)
        prefix = _relative(conv.kernel.path).rsplit("/", 1)[0]
        values[f"{prefix}/kernel"], values[f"{prefix}/bias"] = kernel, bias
    for variable in target.variables:
        path = _relative(variable.path)
        if path not in values:
            raise ValueError(f"no weights for {path} in the model being fused")
        variable.assign(values[path])
