"""ResNet encoder with a no-downsample stem and CBAM channel attention (SPEC 2)."""

from __future__ import annotations

import itertools

import keras
from keras import ops

from lacss_core import _validation
from lacss_core.models import factory, layout
from lacss_core.models.normalization import (
    apply_norm,
    build_norm,
    check_foldable,
    check_normalization,
    make_norm,
)

CONV_INIT = "he_normal"


def _conv(filters: int, size: int, name: str, strides: int = 1, **kwargs) -> keras.layers.Conv2D:
    return factory.conv2d(
        filters, size, name, strides=strides, kernel_initializer=CONV_INIT, **kwargs
    )


def _with_channels(shape, channels: int, data_format: str) -> tuple:
    """4-D ``shape`` with its channel count replaced; spatial sizes are left ``None``
    because every layer here is size-agnostic."""
    return layout.feature_shape(channels, data_format, batch=shape[0])


def _positive_ints(values, name: str) -> list[int]:
    return list(_validation.positive_ints(values, name))


@keras.saving.register_keras_serializable(package="lacss")
class ChannelAttention(keras.layers.Layer):
    """CBAM channel attention: ``x * sigmoid(MLP(maxpool(x)) + MLP(avgpool(x)))``.

    One MLP ``Dense(max(1, C // reduction)) + ReLU -> Dense(C)`` is shared by both pooled vectors.
    Input and output ``(B, H, W, C)`` in the compute dtype, or ``(B, C, H, W)`` with
    ``data_format="channels_first"`` (``None``: ``keras.config.image_data_format()``).
    """

    def __init__(self, reduction: int = 16, data_format: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.reduction = _validation.positive_int(reduction, "reduction")
        self.data_format = layout.check_data_format(data_format)

    def build(self, input_shape):
        """Create the shared MLP for ``input_shape``'s channel count."""
        channels = layout.channels(input_shape, self.data_format)
        hidden = max(1, channels // self.reduction)
        dtype = self.dtype_policy
        self.squeeze = factory.dense(hidden, "squeeze", activation="relu", dtype=dtype)
        self.excite = factory.dense(channels, "excite", dtype=dtype)
        self.squeeze.build((None, channels))
        self.excite.build((None, hidden))
        self.built = True

    def call(self, x):
        """``x`` reweighted per channel; same shape as ``x``."""
        spatial = layout.spatial_axes(self.data_format)
        pooled_max = ops.amax(x, axis=spatial)  # ops.max breaks torch.compile's graph
        pooled_avg = ops.mean(x, axis=spatial)
        logits = self.excite(self.squeeze(pooled_max)) + self.excite(self.squeeze(pooled_avg))
        weights = ops.expand_dims(ops.sigmoid(logits), spatial)  # (B, 1, 1, C) or (B, C, 1, 1)
        return x * weights

    def get_config(self):
        """The constructor arguments (Keras serialisation)."""
        config = {**super().get_config(), "reduction": self.reduction}
        return {**config, "data_format": self.data_format}


@keras.saving.register_keras_serializable(package="lacss")
class Bottleneck(keras.layers.Layer):
    """ResNet bottleneck with channel attention before the residual add (SPEC 2).

    ``conv1x1(n)+norm+ReLU -> conv3x3(n, stride)+norm+ReLU -> conv1x1(expansion*n)+norm ->
    channel attention -> + shortcut -> ReLU``. The shortcut is ``conv1x1(expansion*n, stride)+norm``
    when the stride or channel count changes, else the identity. With ``fold_batch_norm`` (an
    inference copy, ``Lacss.fused``) every such norm is folded into its convolution (which then
    has a bias) and not applied.
    Input ``(B, H, W, C)``; output ``(B, ceil(H/stride), ceil(W/stride), expansion*n)`` (both
    channels-first with ``data_format="channels_first"``).
    """

    def __init__(
        self,
        filters: int,
        strides: int = 1,
        expansion: int = 4,
        normalization: str = "batch",
        attention_reduction: int = 16,
        data_format: str | None = None,
        fold_batch_norm: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.fold_batch_norm = folded = check_foldable(fold_batch_norm, normalization)
        self.filters = filters
        self.strides = strides
        self.expansion = expansion
        self.normalization = check_normalization(normalization)
        self.attention_reduction = attention_reduction
        self.data_format = fmt = layout.check_data_format(data_format)
        out = filters * expansion
        layer = {"use_bias": folded, "data_format": fmt, "dtype": self.dtype_policy}
        self.conv1 = _conv(filters, 1, "conv1", **layer)
        self.norm1 = None if folded else self._norm(filters, "norm1")
        self.conv2 = _conv(filters, 3, "conv2", strides=strides, **layer)
        self.norm2 = None if folded else self._norm(filters, "norm2")
        self.conv3 = _conv(out, 1, "conv3", **layer)
        self.norm3 = None if folded else self._norm(out, "norm3")
        self.attention = ChannelAttention(
            attention_reduction, data_format=fmt, name="attention", dtype=self.dtype_policy
        )

    def _norm(self, channels: int, name: str):
        return make_norm(self.normalization, channels, name, self.data_format, self.dtype_policy)

    def build(self, input_shape):
        """Create the block's weights for ``input_shape``."""
        fmt = self.data_format
        out = self.filters * self.expansion
        self.projects = self.strides != 1 or layout.channels(input_shape, fmt) != out
        if self.projects:
            folded = self.fold_batch_norm
            self.shortcut_conv = _conv(
                out,
                1,
                "shortcut_conv",
                strides=self.strides,
                use_bias=folded,
                data_format=fmt,
                dtype=self.dtype_policy,
            )
            self.shortcut_norm = None if folded else self._norm(out, "shortcut_norm")
            self.shortcut_conv.build(input_shape)
            build_norm(self.shortcut_norm, _with_channels(input_shape, out, fmt))
        narrow = _with_channels(input_shape, self.filters, fmt)
        self.conv1.build(input_shape)
        build_norm(self.norm1, narrow)
        self.conv2.build(narrow)
        build_norm(self.norm2, narrow)
        self.conv3.build(narrow)
        build_norm(self.norm3, _with_channels(input_shape, out, fmt))
        self.attention.build(_with_channels(input_shape, out, fmt))
        self.built = True

    def call(self, x, training=False):
        """``(B, H, W, C_in)`` -> ``(B, H/s, W/s, filters * expansion)``, ``s = strides``."""
        y = ops.relu(apply_norm(self.norm1, self.conv1(x), training))
        y = ops.relu(apply_norm(self.norm2, self.conv2(y), training))
        y = self.attention(apply_norm(self.norm3, self.conv3(y), training))
        shortcut = x
        if self.projects:
            shortcut = apply_norm(self.shortcut_norm, self.shortcut_conv(x), training)
        return ops.relu(y + shortcut)

    def get_config(self):
        """The constructor arguments (Keras serialisation)."""
        return {
            **super().get_config(),
            "filters": self.filters,
            "strides": self.strides,
            "expansion": self.expansion,
            "normalization": self.normalization,
            "attention_reduction": self.attention_reduction,
            "data_format": self.data_format,
            "fold_batch_norm": self.fold_batch_norm,
        }


@keras.saving.register_keras_serializable(package="lacss")
class ResNetBackbone(keras.layers.Layer):
    """No-downsample stem plus ResNet bottleneck stages (SPEC 2).

    Stem: ``conv3x3(stem_filters[0])+ReLU, conv3x3(stem_filters[1])+ReLU, norm`` at stride 1.
    Stage ``i`` has ``stage_blocks[i]`` bottlenecks of width ``stage_widths[i]``; its first block
    has stride 2. Input ``(B, H, W, C)`` float (cast to the compute dtype of the layer's dtype
    policy, as every layer here) with ``H, W`` multiples of ``2**len(stages)``;
    output: list of stage outputs ``[C1, C2, ...]``, ``C_i`` of shape
    ``(B, H/2**i, W/2**i, expansion*stage_widths[i-1])`` (input and outputs channels-first with
    ``data_format="channels_first"``; ``None``: ``keras.config.image_data_format()``).
    ``fold_batch_norm``: every norm folded into a convolution: the blocks' into the convolution
    before them (``Bottleneck``), the stem's (which follows a ReLU) into the two 1x1 convolutions
    of the first block that read the stem (``lacss_core.models.fusion``).
    """

    def __init__(
        self,
        stem_filters=(24, 64),
        stage_blocks=(3, 4, 6, 3),
        stage_widths=(64, 128, 256, 512),
        expansion: int = 4,
        normalization: str = "batch",
        attention_reduction: int = 16,
        data_format: str | None = None,
        fold_batch_norm: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.data_format = fmt = layout.check_data_format(data_format)
        self.fold_batch_norm = check_foldable(fold_batch_norm, normalization)
        self.stem_filters = _positive_ints(stem_filters, "stem_filters")
        self.stage_blocks = _positive_ints(stage_blocks, "stage_blocks")
        self.stage_widths = _positive_ints(stage_widths, "stage_widths")
        if len(self.stage_blocks) != len(self.stage_widths):
            raise ValueError(
                f"stage_blocks {self.stage_blocks} and stage_widths {self.stage_widths} must have "
                "the same length"
            )
        self.expansion = expansion
        self.normalization = check_normalization(normalization)
        self.attention_reduction = attention_reduction
        dtype = self.dtype_policy
        self.stem_convs = [
            _conv(f, 3, f"stem_conv{i}", activation="relu", data_format=fmt, dtype=dtype)
            for i, f in enumerate(self.stem_filters)
        ]
        self.stem_norm = None
        if not self.fold_batch_norm:
            self.stem_norm = make_norm(
                normalization, self.stem_filters[-1], "stem_norm", fmt, dtype=dtype
            )
        # One flat list (Keras tracks flat lists of layers reliably), stage after stage.
        self.blocks = [
            Bottleneck(
                width,
                strides=2 if b == 0 else 1,
                expansion=expansion,
                normalization=normalization,
                attention_reduction=attention_reduction,
                data_format=fmt,
                fold_batch_norm=self.fold_batch_norm,
                name=f"stage{s + 1}_block{b}",
                dtype=dtype,
            )
            for s, width in enumerate(self.stage_widths)
            for b in range(self.stage_blocks[s])
        ]

    @property
    def output_channels(self) -> list[int]:
        """Channel counts of ``[C1, C2, ...]``."""
        return [w * self.expansion for w in self.stage_widths]

    def build(self, input_shape):
        """Create the stem's and every block's weights for images of ``input_shape``."""
        shape = tuple(input_shape)
        for conv in self.stem_convs:
            conv.build(shape)
            shape = _with_channels(shape, conv.filters, self.data_format)
        build_norm(self.stem_norm, shape)
        for block in self.blocks:
            block.build(shape)
            shape = _with_channels(shape, block.filters * block.expansion, self.data_format)
        self.built = True

    def call(self, x, training=False):
        """Images ``(B, H, W, C)`` -> the stage outputs ``[C1, ..., C_L]`` (strides 2 .. 2**L)."""
        for conv in self.stem_convs:
            x = conv(x)
        x = apply_norm(self.stem_norm, x, training)
        stage_ends = set(itertools.accumulate(self.stage_blocks))
        outputs = []
        for i, block in enumerate(self.blocks, start=1):
            x = block(x, training=training)
            if i in stage_ends:
                outputs.append(x)
        return outputs

    def get_config(self):
        """The constructor arguments (Keras serialisation)."""
        return {
            **super().get_config(),
            "stem_filters": list(self.stem_filters),
            "stage_blocks": list(self.stage_blocks),
            "stage_widths": list(self.stage_widths),
            "expansion": self.expansion,
            "normalization": self.normalization,
            "attention_reduction": self.attention_reduction,
            "data_format": self.data_format,
            "fold_batch_norm": self.fold_batch_norm,
        }
