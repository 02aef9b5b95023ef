"""The LACSS task model: backbone, FPN, LPN, segmentor, optional auxnet, and its losses."""

from __future__ import annotations

import inspect
import math

import keras
from keras import ops

from lacss_core import _backend, _validation
from lacss_core import ops as lops
from lacss_core.models import layout
from lacss_core.models.auxnet import AuxNet
from lacss_core.models.backbone import ResNetBackbone
from lacss_core.models.fpn import FPN
from lacss_core.models.initializers import host_zeros
from lacss_core.models.lpn import LPNHead
from lacss_core.models.normalization import check_foldable, check_normalization
from lacss_core.models.presets import preset_config, preset_names
from lacss_core.models.segmentor import Segmentor
from lacss_core.ops._common import valid_rows

# SPEC 1: inputs are zero padded bottom/right to a multiple of 32 (>= the coarsest stride, 16).
PAD_MULTIPLE = 32


def _portable_optimizer(compile_config: dict) -> dict:
    """``compile_config`` with an optimizer that names a backend-specific module
    (``keras.src.backend.<backend>...``) pointed at ``keras.optimizers`` instead."""
    optimizer = compile_config.get("optimizer")
    if isinstance(optimizer, dict) and str(optimizer.get("module", "")).startswith(
        "keras.src.backend."
    ):
        optimizer = {**optimizer, "module": "keras.optimizers"}
        return {**compile_config, "optimizer": optimizer}
    return compile_config


def _check_unit_interval(value, name: str) -> float:
    if not _validation.is_number(value) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def _check_image_normalization(value) -> str | None:
    from lacss_core.data.normalize import METHODS

    if value is not None and value not in METHODS:
        raise ValueError(f"image_normalization must be one of {METHODS} or None, got {value!r}")
    return value


def _check_diameter(value) -> float | None:
    return None if value is None else _validation.positive_number(value, "train_diameter")


@keras.saving.register_keras_serializable(package="lacss")
class Lacss(keras.Model):
    """LACSS: location proposals plus per-location instance patches (SPEC 2, 5-9).

    Every argument is a plain Python value (the config). Architecture: see the layer classes;
    ``lpn_level`` picks the FPN level (2..number of stages) the LPN reads, stride ``2**lpn_level``.
    Proposals: ``pre_nms_topk`` candidates, greedy NMS at ``nms_distance`` pixels (default: the
    LPN stride); inference keeps up to ``max_output`` with score ``>= min_score``; training (for
    location mixing) up to ``train_max_output`` with score ``>= train_min_score``, then GT LOIs
    take a proposal within ``mix_distance`` pixels (SPEC 6). Loss weights ``lpn_loss_weight``,
    ``seg_loss_weight``, ``boundary_loss_weight`` are the paper's ``w0, w1, w2``.
    ``segmentor_head_bias_init``, ``centre_prior_sigma`` and ``centre_prior_scale`` are opt-in
    additions to SPEC 2 that let weakly supervised training start from random weights (see
    ``Segmentor``; e.g. ``-4``, ``3`` px and ``12`` for the tiny model at crop 24); their
    defaults give the SPEC model. ``fpn_lateral_relu=True`` puts a ReLU after the FPN's 1x1
    laterals, as the original LACSS code does (``FPN``; docs/spec.md, "The FPN"); default off.

    Prediction defaults (``predict_instances`` uses them unless told otherwise; ``lacss
    calibrate`` and training with validation data choose them, see ``lacss_core.calibrate``):
    ``min_score``, ``predict_nms_distance`` (the NMS distance of prediction; None: the training
    ``nms_distance``; calibration sets this one so that training stays as it was),
    ``segmentation_threshold`` (a patch pixel is in the cell where
    its probability is ``>`` this), ``image_normalization`` (the per-image intensity normalisation
    the model was trained with, ``lacss_core.data.normalize_image``; None: images used as given),
    ``train_diameter`` (the
    median cell diameter in pixels of the training images as the network saw them, ``None`` if
    unknown; ``predict_instances(diameter=...)`` rescales images by ``train_diameter / diameter``)
    and ``calibration`` (a record of the last calibration: data, metric, scores; or ``None``).

    ``data_format``: the layout the layers run in, ``"channels_last"`` or ``"channels_first"``;
    ``None`` (the default) means the backend's choice, ``lacss_core._backend``'s
    ``default_data_format()``: channels-first on torch (Keras 3.15's torch convolution copies
    every channels-last input twice), ``keras.config.image_data_format()`` elsewhere. The model's
    interface is channels-last in every layout (images ``(B, H, W, C)`` in, the outputs below
    out; one transpose at the boundary), the outputs agree to float rounding, and the weights are
    the same: a model saved in one layout loads in the other. The config keeps the argument as
    given, so a model saved with ``None`` runs in the loading backend's default layout.
    ``model.data_format`` is the layout in use.

    ``fold_batch_norm``: every BatchNorm is folded into a convolution (an inference model, made
    by :meth:`fused`; it cannot be trained).

    ``dtype`` (Keras' layer argument; default the global ``keras.config.dtype_policy()``): the
    dtype policy, passed to every sub-layer. Under ``"mixed_bfloat16"`` (or ``"mixed_float16"``
    on a GPU) the layers compute in the 16-bit dtype and keep float32 variables; the output
    heads (LPN score and offset, the segmentor's and auxnet's last layers) compute in float32,
    so every output above is float32, as are the GT locations of an input, NMS, the losses and
    the label painting. A model saved under one policy loads under another (the weights are
    float32 either way). Accuracy and speed: docs/performance.md, "Mixed precision".

    Use ``Lacss.from_preset("lacss_resnet50")`` (the paper) or ``"lacss_tiny"`` (tests, CPU demos).
    """

    #: Config entries that only prediction reads (set from the training data or by calibration):
    #: a training run is the same run whatever they hold.
    PREDICTION_SETTINGS = (
        "min_score",
        "predict_nms_distance",
        "segmentation_threshold",
        "image_normalization",
        "train_diameter",
        "calibration",
    )
    #: Config entries that change how the network is computed, not what it computes (the same
    #: weights, outputs equal to float rounding): a training run is the same run whatever they
    #: hold, so a run started channels-last resumes channels-first (e.g. on torch).
    EXECUTION_SETTINGS = ("data_format",)

    def __init__(
        self,
        stem_filters=(24, 64),
        stage_blocks=(3, 4, 6, 3),
        stage_widths=(64, 128, 256, 512),
        expansion: int = 4,
        attention_reduction: int = 16,
        normalization: str = "batch",
        fpn_channels: int = 256,
        fpn_lateral_relu: bool = False,
        lpn_level: int = 3,
        lpn_filters: int = 1024,
        segmentor_filters: int = 64,
        segmentor_trunk_layers: int = 3,
        crop_size: int = 96,
        segmentor_head_bias_init: float = 0.0,
        centre_prior_sigma: float | None = None,
        centre_prior_scale: float = 12.0,
        use_auxnet: bool = False,
        auxnet_filters: int = 32,
        auxnet_layers: int = 4,
        pre_nms_topk: int = 4096,
        max_output: int = 1024,
        min_score: float = 0.2,
        segmentation_threshold: float = 0.5,
        train_max_output: int = 512,
        train_min_score: float = 0.0,
        nms_distance: float | None = None,
        predict_nms_distance: float | None = None,
        mix_distance: float = 16.0,
        lpn_loss_weight: float = 1.0,
        seg_loss_weight: float = 1.0,
        boundary_loss_weight: float = 1.0,
        image_normalization: str = "percentile",
        train_diameter: float | None = None,
        calibration: dict | None = None,
        data_format: str | None = None,
        fold_batch_norm: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.fold_batch_norm = check_foldable(fold_batch_norm, normalization)
        self._data_format_argument = data_format
        self.data_format = fmt = layout.model_data_format(data_format)
        num_levels = len(list(stage_blocks))
        lpn_level = _validation.check_int(lpn_level, "lpn_level")
        if not 2 <= lpn_level <= num_levels:
            raise ValueError(f"lpn_level must be in [2, {num_levels}], got {lpn_level}")
        self.normalization = check_normalization(normalization)
        self.lpn_level = lpn_level
        self.use_auxnet = bool(use_auxnet)
        self.auxnet_filters = auxnet_filters
        self.auxnet_layers = auxnet_layers
        self._set_proposal_settings(
            pre_nms_topk=pre_nms_topk,
            max_output=max_output,
            min_score=min_score,
            train_max_output=train_max_output,
            train_min_score=train_min_score,
            nms_distance=nms_distance,
            predict_nms_distance=predict_nms_distance,
            mix_distance=mix_distance,
        )
        self.lpn_loss_weight = _validation.non_negative(lpn_loss_weight, "lpn_loss_weight")
        self.seg_loss_weight = _validation.non_negative(seg_loss_weight, "seg_loss_weight")
        self.boundary_loss_weight = _validation.non_negative(
            boundary_loss_weight, "boundary_loss_weight"
        )
        self._set_prediction_data(
            segmentation_threshold, image_normalization, train_diameter, calibration
        )

        dtype = self.dtype_policy
        self.backbone = ResNetBackbone(
            stem_filters=stem_filters,
            stage_blocks=stage_blocks,
            stage_widths=stage_widths,
            expansion=expansion,
            normalization=normalization,
            attention_reduction=attention_reduction,
            data_format=fmt,
            fold_batch_norm=self.fold_batch_norm,
            name="backbone",
            dtype=dtype,
        )
        self.fpn = FPN(
            fpn_channels, lateral_relu=fpn_lateral_relu, data_format=fmt, name="fpn", dtype=dtype
        )
        self.lpn = LPNHead(
            lpn_filters,
            normalization=normalization,
            data_format=fmt,
            fold_batch_norm=self.fold_batch_norm,
            name="lpn",
            dtype=dtype,
        )
        self.segmentor = Segmentor(
            segmentor_filters,
            segmentor_trunk_layers,
            crop_size,
            head_bias_init=segmentor_head_bias_init,
            centre_prior_sigma=centre_prior_sigma,
            centre_prior_scale=centre_prior_scale,
            data_format=fmt,
            name="segmentor",
            dtype=dtype,
        )
        self.auxnet = None
        if use_auxnet:
            self.auxnet = AuxNet(
                auxnet_filters, auxnet_layers, data_format=fmt, name="auxnet", dtype=dtype
            )

        self.lpn_loss_tracker = keras.metrics.Mean(name="lpn_loss")
        self.seg_loss_tracker = keras.metrics.Mean(name="seg_loss")
        self.boundary_loss_tracker = (
            keras.metrics.Mean(name="boundary_loss") if use_auxnet else None
        )

    def _set_proposal_settings(
        self,
        *,
        pre_nms_topk,
        max_output,
        min_score,
        train_max_output,
        train_min_score,
        nms_distance,
        predict_nms_distance,
        mix_distance,
    ) -> None:
        """Check and keep the proposal, NMS and mixing settings (see the class docstring)."""
        self.pre_nms_topk = _validation.positive_int(pre_nms_topk, "pre_nms_topk")
        self.max_output = _validation.positive_int(max_output, "max_output")
        self.train_max_output = _validation.positive_int(train_max_output, "train_max_output")
        self.min_score = _validation.non_negative(min_score, "min_score")
        self.train_min_score = _validation.non_negative(train_min_score, "train_min_score")
        if nms_distance is not None:
            _validation.non_negative(nms_distance, "nms_distance")
        self.nms_distance = nms_distance
        if predict_nms_distance is not None:
            predict_nms_distance = _validation.non_negative(
                predict_nms_distance, "predict_nms_distance"
            )
        self.predict_nms_distance = predict_nms_distance
        self.mix_distance = _validation.non_negative(mix_distance, "mix_distance")

    def _set_prediction_data(
        self, segmentation_threshold, image_normalization, train_diameter, calibration
    ) -> None:
        """Check and keep the prediction defaults that come from the data or a calibration."""
        self.segmentation_threshold = _check_unit_interval(
            segmentation_threshold, "segmentation_threshold"
        )
        self.image_normalization = _check_image_normalization(image_normalization)
        self.train_diameter = _check_diameter(train_diameter)
        if calibration is not None and not isinstance(calibration, dict):
            raise ValueError(f"calibration must be a dict or None, got {calibration!r}")
        self.calibration = calibration

    # ------------------------------------------------------------------ config and presets
    def get_config(self):
        """Every constructor argument (Keras serialisation; presets and runs compare it)."""
        backbone = self.backbone
        return {
            **super().get_config(),
            "stem_filters": list(backbone.stem_filters),
            "stage_blocks": list(backbone.stage_blocks),
            "stage_widths": list(backbone.stage_widths),
            "expansion": backbone.expansion,
            "attention_reduction": backbone.attention_reduction,
            "normalization": self.normalization,
            "fpn_channels": self.fpn.channels,
            "fpn_lateral_relu": self.fpn.lateral_relu,
            "lpn_level": self.lpn_level,
            "lpn_filters": self.lpn.filters,
            "segmentor_filters": self.segmentor.filters,
            "segmentor_trunk_layers": self.segmentor.trunk_layers,
            "crop_size": self.segmentor.crop_size,
            "segmentor_head_bias_init": self.segmentor.head_bias_init,
            "centre_prior_sigma": self.segmentor.centre_prior_sigma,
            "centre_prior_scale": self.segmentor.centre_prior_scale,
            "use_auxnet": self.use_auxnet,
            "auxnet_filters": self.auxnet_filters,
            "auxnet_layers": self.auxnet_layers,
            "pre_nms_topk": self.pre_nms_topk,
            "max_output": self.max_output,
            "min_score": self.min_score,
            "train_max_output": self.train_max_output,
            "train_min_score": self.train_min_score,
            "nms_distance": self.nms_distance,
            "predict_nms_distance": self.predict_nms_distance,
            "mix_distance": self.mix_distance,
            "lpn_loss_weight": self.lpn_loss_weight,
            "seg_loss_weight": self.seg_loss_weight,
            "boundary_loss_weight": self.boundary_loss_weight,
            "segmentation_threshold": self.segmentation_threshold,
            "image_normalization": self.image_normalization,
            "train_diameter": self.train_diameter,
            "calibration": self.calibration,
            "data_format": self._data_format_argument,
            "fold_batch_norm": self.fold_batch_norm,
        }

    @classmethod
    def from_config(cls, config):
        """A new ``Lacss`` from ``get_config()``'s dict."""
        return cls(**config)

    def compile_from_config(self, config):
        """Compile a loaded model from its saved compile config (``keras.saving.load_model``).

        As Keras' own, with two changes. An optimizer saved under another backend names that
        backend's class (e.g. ``keras.src.backend.torch.optimizers.torch_adam``): Keras would
        import torch under JAX and train with the torch optimizer, so the portable
        ``keras.optimizers`` class of the same name is used instead. The optimizer's slots are
        created on the host (``host_zeros``), not with one compiled program per weight shape.
        """
        config = _portable_optimizer(config)
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            with host_zeros():
                self.optimizer.build(self.trainable_variables)

    @classmethod
    def presets(cls) -> list[str]:
        """Names accepted by ``from_preset``."""
        return preset_names()

    @classmethod
    def from_preset(cls, name: str, weights: str | None = None, **overrides) -> Lacss:
        """A new model from a named config, with keyword overrides: randomly initialised, or
        with ``weights``, the name of a shipped pretrained model (``lacss_core.pretrained``,
        e.g. ``Lacss.from_preset("lacss_small", weights="generalist")``), built and loaded with
        the inference settings stored with it (``overrides`` win).

        Raises ``ValueError`` for an unknown preset (listing the names), an unknown override,
        or weights that are unknown, of another preset or do not fit the overridden model.
        """
        if weights is not None:
            from lacss_core import pretrained

            overrides = {**pretrained.info(weights).get("config", {}), **overrides}
        config = preset_config(name)
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
        unknown = sorted(set(overrides) - accepted - {"name", "dtype", "trainable"})
        if unknown:
            raise ValueError(f"unknown Lacss arguments in overrides: {unknown}")
        config.update(overrides)
        config.setdefault("name", name)
        model = cls(**config)
        if weights is not None:
            pretrained.load_into(model, name, weights)
        return model

    def fused(self) -> Lacss:
        """An inference copy of this built model with every BatchNorm folded into a convolution
        (``lacss_core.models.fusion``): the same outputs up to float rounding
        (labels identical in practice), fewer passes over the feature maps on torch.

        The copy has ``fold_batch_norm=True`` (its config says so; it saves and loads like any
        model) and cannot be trained. Raises ``ValueError`` for an unbuilt model or another
        normalization than ``"batch"``.
        """
        from lacss_core.models import fusion

        if not self.built:
            raise ValueError("fused() needs a built model (call model.build or the model first)")
        if self.normalization != "batch" or self.fold_batch_norm:
            raise ValueError(
                "fused() folds BatchNorm: the model must have normalization='batch' and not be "
                f"fused already (normalization={self.normalization!r}, "
                f"fold_batch_norm={self.fold_batch_norm})"
            )
        copy = type(self).from_config({**self.get_config(), "fold_batch_norm": True})
        channels = int(self.backbone.stem_convs[0].kernel.shape[2])
        copy.build((None, None, None, channels))
        fusion.copy_folded(self, copy)
        return copy

    # ------------------------------------------------------------------ geometry
    @property
    def input_dtype(self) -> str:
        """``"float32"`` under any dtype policy: what Keras casts float inputs to. The GT
        locations of a training input are pixel coordinates, which the compute dtype of a mixed
        policy would round (bfloat16 holds 8 significant bits: +-1 px at 300 px); every layer
        casts the image to its own compute dtype."""
        return "float32"

    @property
    def lpn_stride(self) -> int:
        """Stride in pixels of the LPN grid: ``2**lpn_level``."""
        return 2**self.lpn_level

    @property
    def crop_size(self) -> int:
        """The segmentation crop (patch side) in pixels."""
        return self.segmentor.crop_size

    def _nms_distance(self) -> float:
        return float(self.lpn_stride if self.nms_distance is None else self.nms_distance)

    # ------------------------------------------------------------------ build
    def build(self, input_shape):
        """Build every sub-layer from the image shape ``(B, H, W, C)`` (or a dict holding it
        under ``"image"``); only ``C`` matters, so any image size runs afterwards."""
        if isinstance(input_shape, dict):
            input_shape = input_shape["image"]
        channels = input_shape[-1]
        if channels is None:
            raise ValueError("the image channel count must be known to build Lacss")
        image_shape = layout.feature_shape(channels, self.data_format)
        self.backbone.build(image_shape)
        level_shapes = [
            layout.feature_shape(c, self.data_format) for c in self.backbone.output_channels
        ]
        self.fpn.build(level_shapes)
        pyramid_shape = layout.feature_shape(self.fpn.channels, self.data_format)
        self.lpn.build(pyramid_shape)
        self.segmentor.build(pyramid_shape)
        if self.auxnet is not None:
            self.auxnet.build(image_shape)
        self.built = True

    # ------------------------------------------------------------------ forward
    @staticmethod
    def _unpack(inputs):
        """``(images, gt_locations or None)`` from an image tensor or ``{"image", "locations"}``."""
        if isinstance(inputs, dict):
            if "image" not in inputs:
                raise ValueError(f"inputs dict needs an 'image' entry, got keys {sorted(inputs)}")
            return inputs["image"], inputs.get("locations")
        return inputs, None

    def dense_forward(self, images, training=False):
        """Everything computed once per image (no per-instance work).

        Returns the LPN maps cropped to the ``ceil(H/s) x ceil(W/s)`` grid, the proposal
        candidates (``decode_proposals``), the segmentor's shared features on the padded image
        ``(B, Hp/2, Wp/2, F)``, and the boundary map ``(B, H, W)`` when the auxnet is on; images
        and every output are channels-last whatever ``data_format`` (the layers see the padded
        image transposed once).
        """
        if len(images.shape) != 4:
            raise ValueError(f"images must have shape (B, H, W, C), got {tuple(images.shape)}")
        height, width = int(images.shape[1]), int(images.shape[2])
        padded = _backend.current().pad_zeros(
            images,
            [
                [0, 0],
                [0, -height % PAD_MULTIPLE],
                [0, -width % PAD_MULTIPLE],
                [0, 0],
            ],
        )
        padded = layout.from_channels_last(padded, self.data_format)
        pyramid = self.fpn(self.backbone(padded, training=training))
        scores, offsets = self.lpn(pyramid[self.lpn_level - 1], training=training)
        stride = self.lpn_stride
        grid_h, grid_w = math.ceil(height / stride), math.ceil(width / stride)
        scores, offsets = scores[:, :grid_h, :grid_w], offsets[:, :grid_h, :grid_w]
        candidates, candidate_scores = lops.decode_proposals(
            scores, offsets, (height, width), stride
        )
        dense = {
            "lpn_scores": scores,
            "lpn_offsets": offsets,
            "candidates": candidates,
            "candidate_scores": candidate_scores,
            "shared_features": self.segmentor.shared_features(pyramid[0]),
        }
        if self.auxnet is not None:
            # On the unpadded image: the auxnet is stride 1, so the boundary map then does not
            # depend on how much padding the backbone needed.
            # The unpadded corner of the (transposed) padded image: no second transpose.
            rows, cols = layout.spatial_axes(self.data_format)
            unpadded = padded[:, :height, :width] if rows == 1 else padded[:, :, :height, :width]
            dense["boundary"] = self.auxnet(unpadded)
        return dense

    def segment_locations(self, shared_features, locations):
        """The per-instance layers for a fixed set of locations.

        Args:
            shared_features: ``(B, Hp/2, Wp/2, F)`` from the segmentor trunk.
            locations: ``(B, M, 2)`` float32 pixels, ``-1`` padded.
        Returns:
            dict: ``patches (B, M, c, c)`` float32 probabilities (zeros on invalid rows),
            ``origins (B, M, 2)`` int32 image pixel of patch pixel ``(0, 0)``,
            ``valid (B, M)`` bool.
        """
        crop = self.crop_size
        valid = valid_rows(locations)
        patches = self.segmentor.decode_patches(
            lops.gather_patches(shared_features, locations, crop),
            lops.location_tensor(locations, crop),
        )
        patches = patches * ops.cast(valid, patches.dtype)[:, :, None, None]
        return {
            "patches": patches,
            "origins": lops.patch_origins(locations, crop),
            "valid": valid,
        }

    def _proposals(self, dense, *, max_output, min_score):
        locations, scores, _ = lops.nms(
            dense["candidates"],
            dense["candidate_scores"],
            max_output=max_output,
            nms_distance=self._nms_distance(),
            min_score=float(min_score),
            pre_nms_topk=self.pre_nms_topk,
        )
        # Proposals are selections, not a differentiable path: the LPN learns from its own loss
        # only, and the segmentation losses must not push the offsets through the location
        # tensor (nor through the masked distance tables of NMS and mixing).
        return ops.stop_gradient(locations), ops.stop_gradient(scores)

    def _dense_outputs(self, dense):
        keys = ("lpn_scores", "lpn_offsets", "boundary")
        return {key: dense[key] for key in keys if key in dense}

    def call(self, inputs, training=False):
        """Forward pass with fixed-size outputs.

        Args:
            inputs: images ``(B, H, W, C)`` float32 (any ``H, W``), or a dict ``{"image": ...,
                "locations": (B, N, 2) GT LOIs, -1 padded}``.
            training: BatchNorm mode (batch statistics and moving-average updates when True).
        Returns:
            dict. Always ``lpn_scores (B, h, w)`` post-sigmoid and ``lpn_offsets (B, h, w, 2)``
            grid units on the ``h, w = ceil(H/s), ceil(W/s)`` grid, and ``boundary (B, H, W)``
            when the auxnet is on. Without GT locations (inference): ``locations (B, M, 2)``,
            ``scores (B, M)`` (NMS output, ``M = max_output``, score-ordered, ``-1`` padded),
            ``patches (B, M, c, c)``, ``origins (B, M, 2)`` int32, ``valid (B, M)`` bool.
            With GT locations (training, and evaluation of the training loss): proposals from the
            training NMS settings are mixed into the GT (SPEC 6) and ``locations``, ``patches``,
            ``origins``, ``valid`` are those of the ``N`` mixed locations in GT order (row ``n``
            belongs to label ``n + 1``); the proposals are returned as ``proposals (B, M', 2)``
            and ``proposal_scores (B, M')`` with ``M' = train_max_output``; there is no
            ``scores`` entry, since GT rows have none.
        """
        images, gt_locations = self._unpack(inputs)
        dense = self.dense_forward(images, training)
        outputs = self._dense_outputs(dense)
        if gt_locations is None:
            locations, scores = self._proposals(
                dense, max_output=self.max_output, min_score=self.min_score
            )
            outputs.update(locations=locations, scores=scores)
        else:
            proposals, proposal_scores = self._proposals(
                dense, max_output=self.train_max_output, min_score=self.train_min_score
            )
            locations = lops.mix_locations(
                gt_locations, proposals, mix_distance=float(self.mix_distance)
            )
            outputs.update(
                locations=locations, proposals=proposals, proposal_scores=proposal_scores
            )
        outputs.update(self.segment_locations(dense["shared_features"], locations))
        return outputs

    def predict_instances(self, image, **options):
        """Segment one image (or a list): ``(label, details)``; see
        :func:`lacss_core.predict.predict_instances` for the options (thresholds, scale, tiling).

        Runs the per-instance layers only on as many slots as there are valid proposals (SPEC 2),
        so it is much cheaper than ``call`` at a large ``max_output``.
        """
        from lacss_core.predict import predict_instances  # predict builds on this module

        return predict_instances(self, image, **options)

    # ------------------------------------------------------------------ losses
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The training objective from ``lacss_core.ops`` only, so ``fit()`` runs on any backend.

        Args:
            x: ``{"image": (B, H, W, C), "locations": (B, N, 2) GT LOIs, -1 padded}``.
            y: ``{"label": (B, H, W) int32}`` (fully supervised, LOI row ``n`` <-> label
                ``n + 1``) or ``{"mask": (B, H, W) float32}`` (weakly supervised foreground).
            y_pred: ``call(x)`` outputs (mixed locations, since ``x`` holds GT locations).
            sample_weight: not supported (must be None).
        Returns:
            Scalar float32: fully supervised ``w0 L_LPN + w1 L_FS``; weakly supervised
            ``w0 L_LPN + w1 L_WS (+ w2 L_CB with the auxnet)`` (SPEC 8), plus any layer losses.
            ``lpn_loss``, ``seg_loss`` (and ``boundary_loss``) are tracked as metrics, unweighted.
        """
        if sample_weight is not None:
            raise ValueError("sample_weight is not supported by Lacss.compute_loss")
        if self.fold_batch_norm:
            raise ValueError(
                "a fused model (fold_batch_norm=True) is for inference only; train the model "
                "it was made from"
            )
        images, gt_locations = self._unpack(x)
        if gt_locations is None:
            raise ValueError("x must be a dict with the GT 'locations' to compute the loss")
        if not isinstance(y, dict) or not ({"label", "mask"} & set(y)):
            raise ValueError("y must be a dict with a 'label' (supervised) or 'mask' entry")
        image_shape = (int(images.shape[1]), int(images.shape[2]))
        score_target, offset_target = lops.lpn_targets(gt_locations, image_shape, self.lpn_stride)
        lpn_loss = lops.lpn_loss(
            y_pred["lpn_scores"], y_pred["lpn_offsets"], score_target, offset_target
        )
        patches, locations = y_pred["patches"], y_pred["locations"]
        if "label" in y:
            seg_loss = lops.fs_seg_loss(patches, locations, y["label"])
        else:
            seg_loss = lops.ws_seg_loss(patches, locations, y["mask"])
        total = self.lpn_loss_weight * lpn_loss + self.seg_loss_weight * seg_loss
        self.lpn_loss_tracker.update_state(lpn_loss)
        self.seg_loss_tracker.update_state(seg_loss)
        if "label" not in y and self.auxnet is not None:  # SPEC 8: no auxnet, no L_CB
            boundary_loss = lops.boundary_loss(patches, locations, y_pred["boundary"])
            total = total + self.boundary_loss_weight * boundary_loss
            self.boundary_loss_tracker.update_state(boundary_loss)
        if self.losses:
            total = total + ops.sum(ops.stack(self.losses))
        return total
