"""Instance segmentor: a shared trunk on P1 and a per-instance location-aware head (SPEC 2, 7)."""

from __future__ import annotations

import keras
from keras import ops

from lacss_core import _validation
from lacss_core import ops as lops
from lacss_core.models import factory, layout


@keras.saving.register_keras_serializable(package="lacss")
class Segmentor(keras.layers.Layer):
    """Shared trunk + per-instance head producing ``c x c`` probability patches (SPEC 2, 7).

    Trunk: ``trunk_layers`` conv3x3(filters)+ReLU on P1 (stride 2, computed once per image).
    Head, per instance: its ``k x k`` feature patch (``k = crop_size // 2``) concatenated with the
    2-channel location tensor, conv3x3(filters)+ReLU (zero padded at the patch edge), then
    Conv2DTranspose(1, 3, strides=2, "same") + sigmoid -> ``(c, c)`` at full resolution.

    ``call(features, locations)``: features ``(B, Hf, Wf, C)`` is P1 of the padded image
    (``(B, C, Hf, Wf)`` with ``data_format="channels_first"``; ``None``:
    ``keras.config.image_data_format()``); locations ``(B, M, 2)`` float pixels, ``-1`` padded.
    The convolutions run in ``data_format``; the trunk's output is made channels-last once, for
    the patch ops of ``lacss_core.ops``. Returns ``(B, M, c, c)`` float32
    probabilities under any dtype policy (the last layer computes in float32,
    ``factory.head_dtype``); rows of invalid locations are computed on zero inputs and should be
    masked by the caller (``Lacss`` zeroes them).

    Options for weakly supervised training from random weights (additions to SPEC 2; the
    defaults give exactly the SPEC model). Without them that training collapses: the overlap term
    of ``L_WS`` pushes every patch of a still location-blind head towards 0 until the sigmoid
    saturates (docs/results.md).

    - ``head_bias_init``: initial bias of the last layer, a logit. ``-4`` starts every patch
      pixel at ``sigmoid(-4) = 0.018``, where the overlap term is negligible and the mask term
      raises foreground and lowers background, instead of at 0.5, where the overlap term
      dominates and pushes all patches down together (the prior-probability initialisation of
      focal-loss detectors). Default 0 (Keras' zeros). ``lacss train --weak`` uses ``-6``:
      with ``-4`` the background pixels of every patch still pull the shared head down about as
      hard as the cells push it up, and some runs collapse (docs/results.md, seed spread).
    - ``centre_prior_sigma`` (pixels, ``> 0``) and ``centre_prior_scale`` (a logit): a fixed
      Gaussian ``scale * exp(-d^2 / (2 sigma^2))`` added to the logits at training and inference,
      ``d`` the distance of the patch pixel from the instance location, so each instance starts
      as a blob at its own location and neighbours start apart. From the original LACSS code
      (there ``sigma = 10``, ``scale = 2`` at crop 96); on the tiny model at crop 24 with
      ``head_bias_init = -4``, ``sigma = 3`` learned and ``scale = 12`` (the default) was needed
      for the blob to survive the first steps in every run we tried. Default ``None``: no prior.
    """

    def __init__(
        self,
        filters: int = 64,
        trunk_layers: int = 3,
        crop_size: int = 96,
        head_bias_init: float = 0.0,
        centre_prior_sigma: float | None = None,
        centre_prior_scale: float = 12.0,
        data_format: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.data_format = fmt = layout.check_data_format(data_format)
        self.filters = _validation.positive_int(filters, "filters")
        self.trunk_layers = _validation.non_negative_int(trunk_layers, "trunk_layers")
        self.crop_size = _validation.crop_size(crop_size)
        self.head_bias_init = _validation.finite_number(head_bias_init, "head_bias_init")
        self.centre_prior_scale = _validation.finite_number(
            centre_prior_scale, "centre_prior_scale"
        )
        self.centre_prior_sigma = None
        if centre_prior_sigma is not None:
            self.centre_prior_sigma = _validation.finite_number(
                centre_prior_sigma, "centre_prior_sigma"
            )
            if self.centre_prior_sigma <= 0:
                raise ValueError(
                    f"centre_prior_sigma must be > 0 or None, got {centre_prior_sigma}"
                )
        layer = {"data_format": fmt, "dtype": self.dtype_policy}
        self.trunk = [
            factory.conv2d(filters, 3, f"trunk{i}", activation="relu", **layer)
            for i in range(trunk_layers)
        ]
        self.head_conv = factory.conv2d(filters, 3, "head_conv", activation="relu", **layer)
        self.head_upsample = factory.conv2d_transpose(
            1,
            3,
            "head_upsample",
            strides=2,
            bias_initializer=self.head_bias_init,
            data_format=fmt,
            dtype=factory.head_dtype(self.dtype_policy),
        )

    @property
    def input_dtype(self) -> str:
        """``"float32"`` under any dtype policy (``Lacss.input_dtype``): ``call``'s locations are
        pixel coordinates; the convolutions cast the features to their compute dtype."""
        return "float32"

    @property
    def patch_cells(self) -> int:
        """``k = crop_size // 2``: the patch side in stride-2 feature cells."""
        return self.crop_size // 2

    def build(self, features_shape, locations_shape=None):
        """Create the trunk's and the head's weights for P1 features of ``features_shape``."""
        fmt = self.data_format
        shape = tuple(features_shape)
        for conv in self.trunk:
            conv.build(shape)
            shape = layout.feature_shape(self.filters, fmt, batch=shape[0])
        self.head_conv.build(self._patch_shape(layout.channels(shape, fmt) + 2))
        self.head_upsample.build(self._patch_shape(self.filters))
        self.built = True

    def _patch_shape(self, channels: int) -> tuple:
        k = self.patch_cells
        if self.data_format == "channels_last":
            return (None, k, k, channels)
        return (None, channels, k, k)

    def shared_features(self, features):
        """The trunk, shared by all instances: ``(B, Hf, Wf, C)`` (or ``(B, C, Hf, Wf)`` in
        channels-first) ``-> (B, Hf, Wf, filters)`` in the compute dtype, channels-last in both
        layouts (one transpose here, so the patch ops get the layout they take)."""
        for conv in self.trunk:
            features = conv(features)
        return layout.to_channels_last(features, self.data_format)

    def decode_patches(self, feature_patches, location_patches):
        """The head on already cropped inputs.

        Args:
            feature_patches: ``(B, M, k, k, F)`` crops of ``shared_features`` (channels-last in
                both layouts, in their dtype).
            location_patches: ``(B, M, k, k, 2)`` float32 location tensors.
        Returns:
            ``(B, M, c, c)`` float32 probabilities, ``c = 2k``.
        """
        batch, slots = ops.shape(feature_patches)[:2]
        k = self.patch_cells
        # The location tensor is a network input (offsets of at most half a crop, in crop
        # units): it joins the features in their dtype, as concatenate would otherwise promote
        # both to float32. The prior below reads it in float32.
        locations = ops.cast(location_patches, feature_patches.dtype)
        x = ops.concatenate([feature_patches, locations], axis=-1)
        x = ops.reshape(x, (-1, k, k, ops.shape(x)[-1]))
        x = layout.from_channels_last(x, self.data_format)
        # One output channel: (N, c, c, 1) and (N, 1, c, c) reshape alike.
        x = self.head_upsample(self.head_conv(x))
        logits = ops.reshape(x, (batch, slots, self.crop_size, self.crop_size))
        if self.centre_prior_sigma is not None:
            logits = logits + self.centre_prior(location_patches)
        return ops.sigmoid(logits)

    def centre_prior(self, location_patches):
        """The fixed Gaussian logit prior of each patch, centred on its instance location.

        Args:
            location_patches: ``(B, M, k, k, 2)`` float32 location tensors (SPEC 7).
        Returns:
            ``(B, M, c, c)`` float32 ``scale * exp(-d^2 / (2 sigma^2))``, ``d`` in pixels.
        """
        c = self.crop_size
        # Cell u of the location tensor holds (Y0 + 2u + 0.5 - y) / c; its two output pixels
        # a = 2u, 2u + 1 lie 0.5 px before and after that cell centre: offsets Y0 + a - y.
        half_pixel = ops.convert_to_tensor([-0.5, 0.5], dtype="float32")

        def pixel_offsets(cell_offsets):  # (B, M, k) -> (B, M, c) pixels from the location
            offsets = cell_offsets[..., None] * float(c) + half_pixel
            return ops.reshape(offsets, tuple(ops.shape(cell_offsets)[:2]) + (c,))

        dy = pixel_offsets(location_patches[:, :, :, 0, 0])
        dx = pixel_offsets(location_patches[:, :, 0, :, 1])
        squared = dy[:, :, :, None] ** 2 + dx[:, :, None, :] ** 2
        return self.centre_prior_scale * ops.exp(-squared / (2.0 * self.centre_prior_sigma**2))

    def call(self, features, locations):
        """P1 features and locations ``(B, M, 2)`` -> patch probabilities ``(B, M, c, c)``."""
        shared = self.shared_features(features)
        feature_patches = lops.gather_patches(shared, locations, self.crop_size)
        location_patches = lops.location_tensor(locations, self.crop_size)
        return self.decode_patches(feature_patches, location_patches)

    def get_config(self):
        """The constructor arguments (Keras serialisation)."""
        return {
            **super().get_config(),
            "filters": self.filters,
            "trunk_layers": self.trunk_layers,
            "crop_size": self.crop_size,
            "head_bias_init": self.head_bias_init,
            "centre_prior_sigma": self.centre_prior_sigma,
            "centre_prior_scale": self.centre_prior_scale,
            "data_format": self.data_format,
        }
