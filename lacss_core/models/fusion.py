"""Inference fusion: BatchNorm folded into the convolution before it (issue 12, item 2).

In inference BatchNorm is a per-channel affine map, ``y = (x - mean) * s + beta`` with
``s = gamma / sqrt(moving_variance + epsilon)``, so ``norm(conv(x))`` is one convolution with
kernel ``kernel * s`` (scaled along its output-channel axis) and bias ``beta - mean * s`` (plus
``bias * s`` if the convolution had one). Keras keeps kernels ``(kh, kw, in, out)`` in both data
formats, so the same fold serves both. Torch runs eagerly, one pass over the feature map per op:
each fold saves BatchNorm's passes (XLA fuses them on JAX anyway).

The stem's norm follows a ReLU, so it is folded forwards instead: into the input side of the two
convolutions that read the stem, the first block's ``conv1`` and projection shortcut. Both are
1x1 (no zero padding, which would not commute with the norm's shift), so
``conv(x * a + b) = conv'(x)`` with the kernel scaled along its input axis and the bias
``sum_in kernel[0, 0, in, :] * b[in]``.
"""

from __future__ import annotations

import numpy as np


def folds(model):
    """``(conv, input_norm, output_norm)`` for every convolution of a ``Lacss`` that absorbs a
    BatchNorm: ``output_norm(conv(input_norm(x)))``, either norm possibly None. The bottlenecks'
    three (and the projection shortcut's) norms, the LPN's two, and the stem's norm (the input
    of the first block's ``conv1`` and shortcut)."""
    stem_norm = model.backbone.stem_norm
    for i, block in enumerate(model.backbone.blocks):
        first = stem_norm if i == 0 else None
        yield block.conv1, first, block.norm1
        yield block.conv2, None, block.norm2
        yield block.conv3, None, block.norm3
        if block.projects:
            yield block.shortcut_conv, first, block.shortcut_norm
        elif first is not None:
            raise ValueError("the first block must project to absorb the stem's norm")
    yield model.lpn.conv1, None, model.lpn.norm1
    yield model.lpn.conv2, None, model.lpn.norm2


def _affine(norm) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, shift)``: inference BatchNorm as ``x * scale + shift`` per channel (float64)."""
    mean = np.asarray(norm.moving_mean.numpy(), np.float64)
    variance = np.asarray(norm.moving_variance.numpy(), np.float64)
    scale = np.asarray(norm.gamma.numpy(), np.float64) / np.sqrt(variance + norm.epsilon)
    return scale, np.asarray(norm.beta.numpy(), np.float64) - mean * scale


def folded(conv, input_norm=None, output_norm=None) -> tuple[np.ndarray, np.ndarray]:
    """The float32 ``(kernel, bias)`` of ``output_norm(conv(input_norm(x)))`` in inference,
    computed in float64. An ``input_norm`` needs a 1x1 ``conv``."""
    kernel = np.asarray(conv.kernel.numpy(), np.float64)  # (kh, kw, in, out)
    bias = np.asarray(conv.bias.numpy(), np.float64) if conv.use_bias else 0.0
    if input_norm is not None:
        if kernel.shape[:2] != (1, 1):
            raise ValueError(f"{conv.name}: a norm before a {kernel.shape[:2]} conv cannot fold")
        scale, shift = _affine(input_norm)
        bias = bias + np.einsum("hwio,i->o", kernel, shift)
        kernel = kernel * scale[:, None]
    if output_norm is not None:
        scale, shift = _affine(output_norm)
        kernel, bias = kernel * scale, bias * scale + shift
    return kernel.astype(np.float32), np.broadcast_to(bias, kernel.shape[-1:]).astype(np.float32)


def _relative(path: str) -> str:
    return path.split("/", 1)[1]  # without the model's own name


def copy_folded(source, target) -> None:
    """Give the built ``target`` (``source``'s config with ``fold_batch_norm=True``) the weights
    of ``source`` with every norm folded into a convolution (``folds``).

    Raises:
        ValueError: a ``target`` variable has no counterpart in ``source``.
    """
    values = {_relative(v.path): v.numpy() for v in source.variables}
    for conv, input_norm, output_norm in folds(source):
        kernel, bias = folded(conv, input_norm, output_norm)
        prefix = _relative(conv.kernel.path).rsplit("/", 1)[0]
        values[f"{prefix}/kernel"], values[f"{prefix}/bias"] = kernel, bias
    for variable in target.variables:
        path = _relative(variable.path)
        if path not in values:
            raise ValueError(f"no weights for {path} in the model being fused")
        variable.assign(values[path])
