"""NumPy float64 references of the model's layers, written from their definitions (SPEC 2).

Each reference reads the weights of a built Keras layer and recomputes its output with loops and
``einsum`` only: "same" padding conventions, Conv2DTranspose cropping and BatchNorm inference are
spelled out, so a test comparing a layer with its reference compares values, not shapes. The
per-instance crops come from the NumPy oracle (``oracle.gather_patches``, ``location_tensor``).
Every map here is channels-last ``(B, H, W, C)``, whatever the layer's ``data_format`` (the
weights do not depend on it). No Keras import: the layers are read through their attributes.

Used by the model tests and by the conformance suite's model rows (``conformance/test_model.py``).
"""

from __future__ import annotations

import math

import numpy as np

from lacss_core import oracle


def weights(variable) -> np.ndarray:
    """A Keras variable as a float64 NumPy array."""
    return np.asarray(variable.numpy(), np.float64)


def _is_relu(activation) -> bool:
    return getattr(activation, "__name__", "") == "relu"


def relu(x):
    """``max(x, 0)``."""
    return np.maximum(x, 0.0)


def sigmoid(x):
    """``1 / (1 + exp(-x))``."""
    return 1.0 / (1.0 + np.exp(-x))


def conv2d_same(x, kernel, bias, stride=1):
    """Correlation with "same" padding: output ``ceil(H/stride)``, total padding
    ``max((out-1)*stride + k - H, 0)`` of which ``total // 2`` goes on top/left."""
    _, height, width, _ = x.shape
    kh, kw = kernel.shape[:2]
    out_h, out_w = math.ceil(height / stride), math.ceil(width / stride)
    pad_h = max((out_h - 1) * stride + kh - height, 0)
    pad_w = max((out_w - 1) * stride + kw - width, 0)
    xp = np.pad(
        x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0))
    )
    out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[-1]))
    for a in range(kh):
        for b in range(kw):
            window = xp[:, a : a + stride * out_h : stride, b : b + stride * out_w : stride]
            out += np.einsum("nhwc,cf->nhwf", window, kernel[a, b])
    return out + bias


def conv2d_transpose_same(x, kernel, bias, stride):
    """Adjoint of the "same" strided correlation, output ``stride * H``: input pixel ``i`` adds
    ``x[i] * kernel[a]`` at full-output row ``i*stride + a``; the full output is then cropped by
    ``(k - stride) // 2`` on top/left. ``kernel`` is ``(kh, kw, out, in)`` as Keras stores it."""
    batch, height, width, _ = x.shape
    kh, kw, filters, _ = kernel.shape
    full = np.zeros((batch, (height - 1) * stride + kh, (width - 1) * stride + kw, filters))
    for a in range(kh):
        for b in range(kw):
            contribution = np.einsum("nhwc,fc->nhwf", x, kernel[a, b])
            full[:, a : a + stride * height : stride, b : b + stride * width : stride] += (
                contribution
            )
    top, left = max(kh - stride, 0) // 2, max(kw - stride, 0) // 2
    return full[:, top : top + stride * height, left : left + stride * width] + bias


def conv(layer, x):
    """A Keras ``Conv2D`` layer (its kernel, bias, stride and activation) on ``x``."""
    bias = weights(layer.bias) if layer.use_bias else 0.0
    out = conv2d_same(x, weights(layer.kernel), bias, layer.strides[0])
    return relu(out) if _is_relu(layer.activation) else out


def batch_norm_inference(layer, x):
    """BatchNormalization with ``training=False``: the moving statistics."""
    mean, var = weights(layer.moving_mean), weights(layer.moving_variance)
    scale = weights(layer.gamma) / np.sqrt(var + layer.epsilon)
    return (x - mean) * scale + weights(layer.beta)


def upsample2x(x):
    """Nearest-neighbour 2x upsampling of ``(B, H, W, C)``."""
    return x.repeat(2, axis=1).repeat(2, axis=2)


def channel_attention(layer, x):
    """CBAM channel branch: ``x * sigmoid(MLP(max) + MLP(mean))``, one shared MLP."""
    w1, b1 = weights(layer.squeeze.kernel), weights(layer.squeeze.bias)
    w2, b2 = weights(layer.excite.kernel), weights(layer.excite.bias)

    def mlp(v):
        return relu(v @ w1 + b1) @ w2 + b2

    logits = mlp(x.max(axis=(1, 2))) + mlp(x.mean(axis=(1, 2)))
    return x * sigmoid(logits)[:, None, None, :]


def bottleneck(layer, x):
    """A ``Bottleneck`` with batch norm in inference mode (SPEC 2)."""
    y = relu(batch_norm_inference(layer.norm1, conv(layer.conv1, x)))
    y = relu(batch_norm_inference(layer.norm2, conv(layer.conv2, y)))
    y = channel_attention(layer.attention, batch_norm_inference(layer.norm3, conv(layer.conv3, y)))
    shortcut = x
    if layer.projects:
        shortcut = batch_norm_inference(layer.shortcut_norm, conv(layer.shortcut_conv, x))
    return relu(y + shortcut)


def fpn(layer, features):
    """The ``FPN``: ``P_L = lat_L``; ``P_k = relu(conv3x3(lat_k + up2(P_{k+1})))`` (SPEC 2), with
    ``lat_k = conv1x1(C_k)``, or ``relu(conv1x1(C_k))`` if ``layer.lateral_relu``."""
    laterals = [conv(lateral, c) for lateral, c in zip(layer.laterals, features, strict=True)]
    if layer.lateral_relu:
        laterals = [relu(lateral) for lateral in laterals]
    outputs = [laterals[-1]]
    for k in range(len(laterals) - 2, -1, -1):
        outputs.insert(0, conv(layer.smooths[k], laterals[k] + upsample2x(outputs[0])))
    return outputs


def lpn_head(layer, x):
    """The ``LPNHead`` with batch norm in inference mode: ``(scores, offsets)``."""
    x = relu(batch_norm_inference(layer.norm1, conv(layer.conv1, x)))
    x = relu(batch_norm_inference(layer.norm2, conv(layer.conv2, x)))
    return sigmoid(conv(layer.score, x))[..., 0], conv(layer.offset, x)


def segmentor_head(layer, feature_patches, location_patches):
    """The per-instance head on cropped inputs: ``(B, M, k, k, F)`` and ``(B, M, k, k, 2)`` ->
    ``(B, M, c, c)`` probabilities, the centre prior (if any) added to the logits."""
    batch, slots, k = feature_patches.shape[:3]
    x = np.concatenate([feature_patches, location_patches], axis=-1)
    x = x.reshape(batch * slots, k, k, -1)
    x = conv(layer.head_conv, x)
    up = layer.head_upsample
    logits = conv2d_transpose_same(x, weights(up.kernel), weights(up.bias), 2)
    logits = logits.reshape(batch, slots, 2 * k, 2 * k)
    if layer.centre_prior_sigma is not None:
        logits = logits + centre_prior(layer, location_patches)
    return sigmoid(logits)


def centre_prior(layer, location_patches):
    """``scale * exp(-d^2 / (2 sigma^2))``, ``d`` the distance in pixels of each patch pixel
    from its instance location, read back from the location tensor (SPEC 7): cell ``u`` holds
    ``(Y0 + 2u + 0.5 - y) / c``, so patch pixel ``a`` lies ``Y0 + a - y`` from the location."""
    c = layer.crop_size
    cell_dy = location_patches[:, :, :, 0, 0] * c  # (B, M, k): Y0 + 2u + 0.5 - y
    cell_dx = location_patches[:, :, 0, :, 1] * c
    dy = np.stack([cell_dy - 0.5, cell_dy + 0.5], axis=-1).reshape(*cell_dy.shape[:2], c)
    dx = np.stack([cell_dx - 0.5, cell_dx + 0.5], axis=-1).reshape(*cell_dx.shape[:2], c)
    squared = dy[:, :, :, None] ** 2 + dx[:, :, None, :] ** 2
    return layer.centre_prior_scale * np.exp(-squared / (2 * layer.centre_prior_sigma**2))


def segmentor(layer, features, locations):
    """The ``Segmentor``: trunk on ``features``, oracle crops, the head (SPEC 2, 7)."""
    shared = features
    for trunk_conv in layer.trunk:
        shared = conv(trunk_conv, shared)
    c = layer.crop_size
    feature_patches = oracle.gather_patches(shared.astype(np.float32), locations, c)
    location_patches = oracle.location_tensor(locations, c)
    return segmentor_head(layer, feature_patches.astype(np.float64), location_patches)


def backbone(layer, x):
    """The ``ResNetBackbone`` (batch norm in inference mode): the stage outputs ``[C1, ...]``."""
    for stem_conv in layer.stem_convs:
        x = conv(stem_conv, x)
    x = batch_norm_inference(layer.stem_norm, x)
    ends = set(np.cumsum(layer.stage_blocks).tolist())
    outputs = []
    for i, block in enumerate(layer.blocks, start=1):
        x = bottleneck(block, x)
        if i in ends:
            outputs.append(x)
    return outputs


def auxnet(layer, images):
    """The ``AuxNet``: ReLU convs, then the sigmoid boundary map ``(B, H, W)``."""
    x = images
    for hidden in layer.hidden:
        x = conv(hidden, x)
    return sigmoid(conv(layer.out, x))[..., 0]


def lacss(model, images, locations):
    """The ``Lacss`` network (batch norm in inference mode) at fixed instance ``locations``.

    Args:
        model: a built ``Lacss`` with batch normalization.
        images: ``(B, H, W, C)`` with ``H, W`` multiples of 32 (no padding to spell out).
        locations: ``(B, M, 2)`` float32 pixels, ``-1`` padded.
    Returns:
        dict of float64 arrays: ``lpn_scores (B, H/s, W/s)``, ``lpn_offsets (B, H/s, W/s, 2)``,
        ``patches (B, M, c, c)`` (zero on invalid rows) and with the auxnet ``boundary (B, H, W)``.
    """
    if model.normalization != "batch":
        raise ValueError(f"the reference has batch normalization only, not {model.normalization}")
    if images.shape[1] % 32 or images.shape[2] % 32:
        raise ValueError(f"image size {images.shape[1:3]} must be a multiple of 32 here")
    x = np.asarray(images, np.float64)
    pyramid = fpn(model.fpn, backbone(model.backbone, x))
    scores, offsets = lpn_head(model.lpn, pyramid[model.lpn_level - 1])
    valid = np.all(np.asarray(locations) >= 0, axis=-1)
    patches = segmentor(model.segmentor, pyramid[0], locations) * valid[:, :, None, None]
    outputs = {"lpn_scores": scores, "lpn_offsets": offsets, "patches": patches}
    if model.auxnet is not None:
        outputs["boundary"] = auxnet(model.auxnet, x)
    return outputs


def randomise(layer, seed: int = 0) -> None:
    """Non-trivial weights for a value test: random biases, BatchNorm scales, shifts and moving
    statistics (kernels keep their random initialisation)."""
    rng = np.random.default_rng(seed)
    for variable in layer.weights:
        name, shape = variable.path.split("/")[-1], tuple(variable.shape)
        if name in ("moving_mean", "beta", "bias"):
            value = rng.normal(0.0, 0.2, shape)
        elif name in ("moving_variance", "gamma"):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            continue
        variable.assign(value.astype("float32"))
