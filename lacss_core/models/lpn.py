"""Location proposal network head (SPEC 2)."""

from __future__ import annotations

import math

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

# Focal-loss prior (Lin et al. 2017): start every cell at score ~0.01 so the many negatives do
# not swamp the first training steps.
SCORE_PRIOR = 0.01


@keras.saving.register_keras_serializable(package="lacss")
class LPNHead(keras.layers.Layer):
    """``conv3x3(F)+norm+ReLU -> conv1x1(F)+norm+ReLU ->`` score and offset heads (SPEC 2).

    Input: ``(B, h, w, C)`` feature map of one FPN level (stride ``s``), ``(B, C, h, w)``
    with ``data_format="channels_first"`` (``None``: ``keras.config.image_data_format()``).
    Output, channels-last in both layouts (what ``lacss_core.ops`` takes) and float32 under any
    dtype policy (the two heads compute in float32: ``factory.head_dtype``):
    ``(scores (B, h, w), offsets (B, h, w, 2))``: scores are post-sigmoid probabilities;
    offsets ``(dy, dx)`` are linear, in grid units (multiply by ``s`` for pixels).
    ``fold_batch_norm``: both norms folded into their convolutions (``Lacss.fused``).
    """

    def __init__(
        self,
        filters: int = 1024,
        normalization: str = "batch",
        data_format: str | None = None,
        fold_batch_norm: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = _validation.positive_int(filters, "filters")
        self.normalization = check_normalization(normalization)
        self.fold_batch_norm = folded = check_foldable(fold_batch_norm, normalization)
        self.data_format = fmt = layout.check_data_format(data_format)
        dtype = self.dtype_policy
        layer = {"data_format": fmt, "dtype": dtype}
        self.conv1 = factory.conv2d(filters, 3, "conv1", use_bias=folded, **layer)
        self.norm1 = None if folded else make_norm(normalization, filters, "norm1", fmt, dtype)
        self.conv2 = factory.conv2d(filters, 1, "conv2", use_bias=folded, **layer)
        self.norm2 = None if folded else make_norm(normalization, filters, "norm2", fmt, dtype)
        prior_logit = -math.log((1 - SCORE_PRIOR) / SCORE_PRIOR)
        head = {"data_format": fmt, "dtype": factory.head_dtype(dtype)}
        self.score = factory.conv2d(1, 1, "score", bias_initializer=prior_logit, **head)
        self.offset = factory.conv2d(2, 1, "offset", **head)

    def build(self, input_shape):
        """Create the head's weights for features of ``input_shape``."""
        hidden = layout.feature_shape(self.filters, self.data_format, batch=input_shape[0])
        self.conv1.build(tuple(input_shape))
        build_norm(self.norm1, hidden)
        self.conv2.build(hidden)
        build_norm(self.norm2, hidden)
        self.score.build(hidden)
        self.offset.build(hidden)
        self.built = True

    def call(self, x, training=False):
        """Features ``(B, h, w, C)`` -> ``(scores (B, h, w), offsets (B, h, w, 2))``."""
        x = ops.relu(apply_norm(self.norm1, self.conv1(x), training))
        x = ops.relu(apply_norm(self.norm2, self.conv2(x), training))
        # The heads compute in float32 under any policy (factory.head_dtype): the scores meet
        # thresholds, NMS and the focal loss, the offsets become proposal coordinates.
        scores = layout.single_channel(ops.sigmoid(self.score(x)), self.data_format)
        return scores, layout.to_channels_last(self.offset(x), self.data_format)

    def get_config(self):
        """The constructor arguments (Keras serialisation)."""
        return {
            **super().get_config(),
            "filters": self.filters,
            "normalization": self.normalization,
            "data_format": self.data_format,
            "fold_batch_norm": self.fold_batch_norm,
        }
