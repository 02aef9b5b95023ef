"""The model as two compiled stages for prediction: propose (dense part + NMS) and segment
(per-instance layers on as many slots as there are proposals). Used by ``lacss_core.predict``."""

from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass

# The per-instance layers run on at least this many slots (few distinct compiled shapes).
MIN_SLOTS = 16


@dataclass(frozen=True)
class Settings:
    """Post-processing settings resolved against the model's config (Python scalars)."""

    min_score: float
    nms_distance: float
    threshold: float
    max_output: int
    pre_nms_topk: int


class Network:
    """The model as two compiled stages: propose (dense part + NMS) and segment (per instance).

    Uses ``model.dense_forward`` (LPN maps, NMS candidates and the segmentor's shared features) and
    ``model.segment_locations``; NMS is called here so ``min_score`` and ``nms_distance`` can be
    overridden per call. Each stage is compiled by the backend seam
    (``lacss_core._backend.current().compile_with_variables``) with ``compile_options``: by
    default ``jax.jit`` on JAX (a pure function of the model's variable values, re-traced per
    input shape) and eager, without autodiff, on torch. Compiled functions are cached per
    settings.
    """

    def __init__(self, model, compile_options=None):
        from lacss_core._backend import CompileOptions

        self._model = weakref.ref(model)  # weak: this adapter is cached per model in NETWORKS
        self.crop_size = int(model.crop_size)
        self.channels = model_channels(model)
        self.compile_options = CompileOptions() if compile_options is None else compile_options
        self._compiled = {}

    @classmethod
    def of(cls, model) -> Network:
        """The cached adapter of ``model`` (compiled functions live as long as the model)."""
        network = NETWORKS.get(model)
        if network is None:
            network = NETWORKS[model] = cls(model)
        return network

    @property
    def model(self):
        """The ``Lacss`` model this network runs."""
        return self._model()

    def default_nms_distance(self) -> float:
        """The model's prediction NMS distance: ``predict_nms_distance`` (calibrated), else the
        training ``nms_distance``, else the LPN stride."""
        distance = getattr(self.model, "predict_nms_distance", None)
        if distance is None:
            distance = self.model.nms_distance
        return float(self.model.lpn_stride if distance is None else distance)

    def ensure_built(self, channels: int) -> None:
        """Build the model for ``channels`` input channels if it has no weights yet."""
        if not self.model.built:
            self.model.build((None, None, None, channels))
            self.channels = channels

    def run(self, image, settings: Settings, *, render: bool) -> dict:
        """Run on one ``(H, W, C)`` float32 image.

        Returns NumPy arrays: ``locations (S, 2)`` float32, ``scores (S,)`` float32 (NMS order,
        ``-1`` padded; ``S`` slots cover every valid proposal) and, with ``render``, ``ranks
        (H, W)`` int32 (SPEC 9 over the valid rows), else ``masks (S, c, c)`` bool (patch ``>``
        threshold) and ``origins (S, 2)`` int32 image pixels of each mask's ``(0, 0)``; and
        ``saturated`` (Python bool): the capacity was reached, so proposals may be missing: NMS
        kept ``max_output`` of them, or more than ``pre_nms_topk`` candidates scored
        ``>= min_score`` (the lowest were never looked at).
        """
        import keras

        self.ensure_built(image.shape[-1])
        images = keras.ops.convert_to_tensor(image[None])
        locations, scores, shared, active = self._stage("propose", settings)(images)
        valid_count = int(keras.ops.convert_to_numpy(keras.ops.sum(locations[0, :, 0] >= 0)))
        slots = _slot_count(settings, valid_count)
        stage = self._stage("render" if render else "masks", settings, image.shape[:2])
        outputs = stage(shared, locations[:, :slots], scores[:, :slots])
        result = {key: keras.ops.convert_to_numpy(value)[0] for key, value in outputs.items()}
        result["saturated"] = valid_count >= settings.max_output or (
            int(keras.ops.convert_to_numpy(active)) > settings.pre_nms_topk
        )
        return result

    def run_patches(self, image, settings_list):
        """Patch probabilities for several post-processing settings of one image, the dense part
        (backbone, FPN, LPN, segmentor trunk) computed once (``lacss_core.calibrate``).

        Args:
            image: ``(H, W, C)`` float32, normalised.
            settings_list: ``Settings`` that may differ in ``min_score`` and ``nms_distance``
                (their ``threshold`` plays no part).
        Yields:
            per settings, in order, a dict of NumPy arrays as ``run(render=False)`` gives, but
            with ``patches (S, c, c)`` float32 probabilities instead of thresholded masks (so
            any segmentation threshold can be applied afterwards), and ``saturated``.
        """
        import keras

        self.ensure_built(image.shape[-1])
        images = keras.ops.convert_to_tensor(image[None])
        candidates, candidate_scores, shared = self._stage("dense", settings_list[0])(images)
        for settings in settings_list:
            locations, scores, active = self._stage("nms", settings)(candidates, candidate_scores)
            valid_count = int(keras.ops.convert_to_numpy(keras.ops.sum(locations[0, :, 0] >= 0)))
            slots = _slot_count(settings, valid_count)
            stage = self._stage("patches", settings)
            outputs = stage(shared, locations[:, :slots], scores[:, :slots])
            result = {key: keras.ops.convert_to_numpy(value)[0] for key, value in outputs.items()}
            result["saturated"] = valid_count >= settings.max_output or (
                int(keras.ops.convert_to_numpy(active)) > settings.pre_nms_topk
            )
            yield result

    def _stage(self, name, settings, image_shape=None):
        # Settings a stage does not read are left out of its key: no compiling again for them.
        if name in ("propose", "nms"):
            settings = dataclasses.replace(settings, threshold=0.0)
        elif name in ("dense", "patches"):
            settings = dataclasses.replace(settings, threshold=0.0, min_score=0.0, nms_distance=0.0)
        key = (name, settings, image_shape)
        if key not in self._compiled:
            function = getattr(self, f"_{name}")
            self._compiled[key] = self._compile(
                lambda *args: function(*args, settings=settings, image_shape=image_shape)
            )
        return self._compiled[key]

    def _compile(self, function):
        from lacss_core import _backend

        return _backend.current().compile_with_variables(
            function, self.model.variables, self.compile_options
        )

    def _propose(self, images, *, settings, image_shape):
        from keras import ops

        from lacss_core import ops as lops

        dense = self.model.dense_forward(images, training=False)
        locations, scores, _ = lops.nms(
            dense["candidates"],
            dense["candidate_scores"],
            max_output=settings.max_output,
            nms_distance=settings.nms_distance,
            min_score=settings.min_score,
            pre_nms_topk=settings.pre_nms_topk,
        )
        # candidates NMS would keep but for pre_nms_topk: more than pre_nms_topk means some were cut
        active = ops.sum(ops.cast(dense["candidate_scores"][0] >= settings.min_score, "int32"))
        return locations, scores, dense["shared_features"], active

    def _dense(self, images, *, settings, image_shape):
        dense = self.model.dense_forward(images, training=False)
        return dense["candidates"], dense["candidate_scores"], dense["shared_features"]

    def _nms(self, candidates, candidate_scores, *, settings, image_shape):
        from keras import ops

        from lacss_core import ops as lops

        locations, scores, _ = lops.nms(
            candidates,
            candidate_scores,
            max_output=settings.max_output,
            nms_distance=settings.nms_distance,
            min_score=settings.min_score,
            pre_nms_topk=settings.pre_nms_topk,
        )
        active = ops.sum(ops.cast(candidate_scores[0] >= settings.min_score, "int32"))
        return locations, scores, active

    def _patches(self, shared, locations, scores, *, settings, image_shape):
        instances, locations = self._instances(shared, locations)
        return {
            "locations": locations,
            "scores": scores,
            "patches": instances["patches"],
            "origins": instances["origins"],
        }

    def _instances(self, shared, locations):
        from keras import ops

        instances = self.model.segment_locations(shared, locations)
        valid = instances["valid"]
        return instances, ops.where(valid[..., None], locations, -ops.ones_like(locations))

    def _render(self, shared, locations, scores, *, settings, image_shape):
        from lacss_core import ops as lops

        instances, locations = self._instances(shared, locations)
        ranks = lops.render_label(
            instances["patches"], locations, scores, image_shape, threshold=settings.threshold
        )
        return {"locations": locations, "scores": scores, "ranks": ranks}

    def _masks(self, shared, locations, scores, *, settings, image_shape):
        from keras import ops

        instances, locations = self._instances(shared, locations)
        return {
            "locations": locations,
            "scores": scores,
            "masks": instances["patches"] > ops.cast(settings.threshold, "float32"),
            "origins": instances["origins"],
        }


def _slot_count(settings: Settings, valid_count: int) -> int:
    """Slots the per-instance layers run on: a power of two covering the valid proposals."""
    return min(settings.max_output, max(MIN_SLOTS, 1 << max(0, valid_count - 1).bit_length()))


# model -> its Network; weak, so the compiled functions go when the model does.
NETWORKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def model_channels(model):
    """The model's image channel count, or None while it is unbuilt (any count then works)."""
    channels = getattr(model, "input_channels", None)
    if channels is not None:
        return int(channels)
    try:
        return int(model.backbone.stem_convs[0].kernel.shape[2])
    except (AttributeError, IndexError, ValueError):
        return None
