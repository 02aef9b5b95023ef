"""Instance segmentor: a shared trunk on P1 and a per-instance location-aware head (SPEC 2, 7)."""

from __future__ import annotations

import keras
from keras import ops

from lacss_core import ops as lops


def check_crop_size(crop_size) -> int:
    """``crop_size`` if it is a positive multiple of 4 (SPEC 2), else ``ValueError``."""
    if isinstance(crop_size, bool) or not isinstance(crop_size, int) or crop_size < 4:
        raise ValueError(f"crop_size must be a positive multiple of 4, got {crop_size!r}")
    if crop_size % 4:
        raise ValueError(f"crop_size must be a positive multiple of 4, got {crop_size}")
    return crop_size


@keras.saving.register_keras_serializable(package="lacss")
class Segmentor(keras.layers.Layer):
    """Shared trunk + per-instance head producing ``c x c`` probability patches (SPEC 2, 7).

    Trunk: ``trunk_layers`` conv3x3(filters)+ReLU on P1 (stride 2, computed once per image).
    Head, per instance: its ``k x k`` feature patch (``k = crop_size // 2``) concatenated with the
    2-channel location tensor, conv3x3(filters)+ReLU (zero padded at the patch edge), then
    Conv2DTranspose(1, 3, strides=2, "same") + sigmoid -> ``(c, c)`` at full resolution.

    ``call(features, locations)``: features ``(B, Hf, Wf, C)`` is P1 of the padded image;
    locations ``(B, M, 2)`` float pixels, ``-1`` padded. Returns ``(B, M, c, c)`` float32
    probabilities; rows of invalid locations are computed on zero inputs and should be masked by
    the caller (``Lacss`` zeroes them).
    """

    def __init__(self, filters: int = 64, trunk_layers: int = 3, crop_size: int = 96, **kwargs):
        super().__init__(**kwargs)
        if isinstance(filters, bool) or not isinstance(filters, int) or filters < 1:
            raise ValueError(f"filters must be a positive int, got {filters!r}")
        if isinstance(trunk_layers, bool) or not isinstance(trunk_layers, int) or trunk_layers < 0:
            raise ValueError(f"trunk_layers must be a non-negative int, got {trunk_layers!r}")
        self.filters = filters
        self.trunk_layers = trunk_layers
        self.crop_size = check_crop_size(crop_size)
        self.trunk = [
            keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"trunk{i}")
            for i in range(trunk_layers)
        ]
        self.head_conv = keras.layers.Conv2D(
            filters, 3, padding="same", activation="relu", name="head_conv"
        )
        self.head_upsample = keras.layers.Conv2DTranspose(
            1, 3, strides=2, padding="same", name="head_upsample"
        )

    @property
    def patch_cells(self) -> int:
        """``k = crop_size // 2``: the patch side in stride-2 feature cells."""
        return self.crop_size // 2

    def build(self, features_shape, locations_shape=None):
        shape = tuple(features_shape)
        for conv in self.trunk:
            conv.build(shape)
            shape = (shape[0], None, None, self.filters)
        k = self.patch_cells
        self.head_conv.build((None, k, k, shape[-1] + 2))
        self.head_upsample.build((None, k, k, self.filters))
        self.built = True

    def shared_features(self, features):
        """The trunk: ``(B, Hf, Wf, C) -> (B, Hf, Wf, filters)``, shared by all instances."""
        for conv in self.trunk:
            features = conv(features)
        return features

    def decode_patches(self, feature_patches, location_patches):
        """The head on already cropped inputs.

        Args:
            feature_patches: ``(B, M, k, k, F)`` float32 crops of ``shared_features``.
            location_patches: ``(B, M, k, k, 2)`` float32 location tensors.
        Returns:
            ``(B, M, c, c)`` float32 probabilities, ``c = 2k``.
        """
        batch, slots = ops.shape(feature_patches)[:2]
        k = self.patch_cells
        x = ops.concatenate([feature_patches, location_patches], axis=-1)
        x = ops.reshape(x, (-1, k, k, ops.shape(x)[-1]))
        x = self.head_upsample(self.head_conv(x))
        return ops.reshape(ops.sigmoid(x), (batch, slots, self.crop_size, self.crop_size))

    def call(self, features, locations):
        shared = self.shared_features(features)
        feature_patches = lops.gather_patches(shared, locations, self.crop_size)
        location_patches = lops.location_tensor(locations, self.crop_size)
        return self.decode_patches(feature_patches, location_patches)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "trunk_layers": self.trunk_layers,
            "crop_size": self.crop_size,
        }
