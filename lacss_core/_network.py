"""The model as two compiled stages for prediction: propose (dense part + NMS) and segment
(per-instance layers on as many slots as there are proposals). Used by ``lacss_core.predict``.

Size buckets: every image (or tile) is zero padded bottom/right to a *bucket* shape before it
reaches a compiled stage, and its true size travels as a tensor, so one compiled program serves
every image of a bucket (JAX compiles one XLA program per input shape, ``torch.compile`` with
static shapes one graph). A side goes to the next multiple of 32 (the model's own padding, SPEC
1) up to 512, then to the next multiple of 64 up to 1024, of 128 up to 2048, and so on (8 sides
per octave; :func:`bucket_side`): 24 sides up to 1024, so at most 576 shapes there, and at most
12.5% more pixels per side (27% area) than the model's own padding, none up to 512.

Up to 512 per side the network sees exactly the tensor it would pad itself, so labels are
identical to an unpadded run. Above, the extra zero rows/columns are context the network sees
near the bottom/right border (its receptive field and the backbone's global pooling reach them),
so border cells can differ slightly from an unpadded run; ``docs/performance.md`` measures it.
Proposals from grid cells outside the image are dropped and locations clipped to it, and labels
are painted on the bucket canvas and cropped, so nothing outside the image is reported.
"""

from __future__ import annotations

import collections
import dataclasses
import weakref
from dataclasses import dataclass

import numpy as np

# The per-instance layers run on at least this many slots, and on a multiple of it when the
# stages run eagerly (few distinct compiled shapes when they compile: powers of two then).
MIN_SLOTS = 16
# Bucket sides are multiples of this (lacss_core.models.lacss.PAD_MULTIPLE, SPEC 1), and of
# 2**(k - 4) for sides in (2**(k-1), 2**k]: 8 sides per octave above 256.
BUCKET_ALIGN = 32


def bucket_side(n: int) -> int:
    """The padded side of an image side of ``n >= 1`` pixels: the next multiple of 32 up to 512
    (the model's own padding), then of ``2**(k - 4)`` for ``n`` in ``(2**(k-1), 2**k]`` (64 up
    to 1024, 128 up to 2048, ...).

    >>> [bucket_side(n) for n in (1, 100, 300, 512, 513, 1000, 1025, 2000)]
    [32, 128, 320, 512, 576, 1024, 1152, 2048]
    """
    n = int(n)
    step = max(BUCKET_ALIGN, 1 << max(0, (n - 1).bit_length() - 4))
    return -(-n // step) * step


def bucket_shape(shape) -> tuple[int, int]:
    """``(bucket_side(H), bucket_side(W))`` of an ``(H, W, ...)`` shape."""
    return bucket_side(shape[0]), bucket_side(shape[1])


@dataclass(frozen=True)
class Settings:
    """Post-processing settings resolved against the model's config (Python scalars)."""

    min_score: float
    nms_distance: float
    threshold: float
    max_output: int
    pre_nms_topk: int
    augment: bool = False  # flip test-time augmentation (lacss_core.augment)


class Network:
    """The model as two compiled stages: propose (dense part + NMS) and segment (per instance).

    Uses ``model.dense_forward`` (LPN maps, NMS candidates and the segmentor's shared features) and
    ``model.segment_locations``; NMS is called here so ``min_score`` and ``nms_distance`` can be
    overridden per call. Each stage is compiled by the backend seam
    (``lacss_core._backend.current().compile_with_variables``) with ``compile_options``: by
    default ``jax.jit`` on JAX (a pure function of the model's variable values, re-traced per
    input shape) and eager, without autodiff, on torch; ``CompileOptions(enabled=True)`` asks
    for ``torch.compile`` (static shapes: one graph per bucket). Compiled functions are cached
    per settings and bucket shape.

    ``buckets=False`` feeds images at their own size (one compiled program per image shape; the
    reference the bucketed path is tested against). ``traces`` counts, per stage name, how often
    a stage's Python function ran: on JAX that is once per compilation (``jax.jit`` runs it only
    to trace), eagerly once per call.
    """

    def __init__(self, model, compile_options=None, *, buckets=True):
        from lacss_core import _backend
        from lacss_core._backend import CompileOptions

        self._model = weakref.ref(model)  # weak: this adapter is cached per model in NETWORKS
        self.crop_size = int(model.crop_size)
        self.channels = model_channels(model)
        self.compile_options = CompileOptions() if compile_options is None else compile_options
        self.buckets = bool(buckets)
        self.traces = collections.Counter()
        self._compiled = {}
        # eager stages pay per slot, compiled ones per slot count (see _slot_count)
        self._compiles = _backend.current().compiles(self.compile_options)

    @classmethod
    def of(cls, model, compile_options=None) -> Network:
        """The cached adapter of ``model`` for ``compile_options`` (default: the backend's
        default); compiled functions live as long as the model."""
        from lacss_core._backend import CompileOptions

        options = CompileOptions() if compile_options is None else compile_options
        networks = NETWORKS.setdefault(model, {})
        if options not in networks:
            networks[options] = cls(model, options)
        return networks[options]

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
        (H, W)`` int32 (SPEC 9 over the valid rows), ``own_areas (S,)`` int32 each slot's
        mask pixels inside the image and ``visible_areas (S,)`` int64 the pixels of rank ``r``
        (row ``r - 1``), else ``masks (S, c, c)`` bool (patch ``>``
        threshold) and ``origins (S, 2)`` int32 image pixels of each mask's ``(0, 0)``; and
        ``saturated`` (Python bool): the capacity was reached, so proposals may be missing: NMS
        kept ``max_output`` of them, or more than ``pre_nms_topk`` candidates scored
        ``>= min_score`` (the lowest were never looked at).
        """
        import keras

        self.ensure_built(image.shape[-1])
        images, size = self._padded(image)
        locations, scores, shared, active = self._stage("propose", settings)(images, size)
        valid_count = int(keras.ops.convert_to_numpy(keras.ops.sum(locations[0, :, 0] >= 0)))
        slots = _slot_count(settings, valid_count, self._compiles)
        stage = self._stage("render" if render else "masks", settings, tuple(images.shape[1:3]))
        outputs = stage(shared, locations[:, :slots], scores[:, :slots], size)
        result = {key: keras.ops.convert_to_numpy(value)[0] for key, value in outputs.items()}
        if render:  # painted on the bucket canvas: the image is its top-left corner
            ranks = result["ranks"][: image.shape[0], : image.shape[1]]
            count = len(result["scores"])
            result["visible_areas"] = np.bincount(ranks.ravel(), minlength=count + 1)[1:]
            result["ranks"] = ranks
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
        images, size = self._padded(image)
        dense = self._stage("dense", settings_list[0])
        candidates, candidate_scores, shared = dense(images, size)
        for settings in settings_list:
            locations, scores, active = self._stage("nms", settings)(candidates, candidate_scores)
            valid_count = int(keras.ops.convert_to_numpy(keras.ops.sum(locations[0, :, 0] >= 0)))
            slots = _slot_count(settings, valid_count, self._compiles)
            stage = self._stage("patches", settings)
            outputs = stage(shared, locations[:, :slots], scores[:, :slots])
            result = {key: keras.ops.convert_to_numpy(value)[0] for key, value in outputs.items()}
            result["saturated"] = valid_count >= settings.max_output or (
                int(keras.ops.convert_to_numpy(active)) > settings.pre_nms_topk
            )
            yield result

    def _padded(self, image):
        """``(images, size)``: ``image`` as a ``(1, Hb, Wb, C)`` float32 tensor zero padded to
        its bucket (or as it is, without buckets) and its ``(H, W)`` as an int32 tensor (a
        traced value, so every image of a bucket runs the same compiled program)."""
        import keras

        height, width = image.shape[:2]
        if self.buckets:
            padded = np.zeros((1, *bucket_shape(image.shape), image.shape[-1]), np.float32)
            padded[0, :height, :width] = image
        else:
            padded = np.asarray(image, np.float32)[None]
        size = np.array([height, width], np.int32)
        return keras.ops.convert_to_tensor(padded), keras.ops.convert_to_tensor(size)

    def _stage(self, name, settings, image_shape=None):
        # Settings a stage does not read are left out of its key: no compiling again for them.
        if name in ("propose", "nms"):
            settings = dataclasses.replace(settings, threshold=0.0)
        elif name in ("dense", "patches"):
            settings = dataclasses.replace(settings, threshold=0.0, min_score=0.0, nms_distance=0.0)
        key = (name, settings, image_shape)
        if key not in self._compiled:
            from lacss_core import _backend

            function = getattr(self, f"_{name}")
            # Outside torch.compile's graph: a counter read in the graph is a guard that fails
            # (and compiles again) on every call. jax.jit still runs it once per trace.
            count = _backend.current().outside_compiler(self._count_trace)

            def stage(*args):
                count(name)
                return function(*args, settings=settings, image_shape=image_shape)

            self._compiled[key] = self._compile(stage)
        return self._compiled[key]

    def _count_trace(self, name):
        self.traces[name] += 1

    def _compile(self, function):
        from lacss_core import _backend

        return _backend.current().compile_with_variables(
            function, self.model.variables, self.compile_options
        )

    def _inside(self, images, size, augment=False):
        """``(candidates, candidate_scores, shared_features)`` of the bucket-padded ``images``
        as the ``size``-pixel image would give them: candidates of LPN grid cells outside the
        image's ``ceil(H/s) x ceil(W/s)`` grid get score -1 (below any ``min_score``; their
        relative order, which NMS breaks ties by, is the image grid's) and locations are clipped
        to ``[0, H-1] x [0, W-1]`` (SPEC 5).

        ``dense_forward`` must return ``lpn_scores (B, gh, gw)`` whose row-major grid the
        candidates are flattened from; on a bucket (a multiple of 32) the grid stride is
        ``Hb / gh`` exactly. With ``augment``, the four flips' dense part
        (``lacss_core.augment.dense_forward``): merged LPN maps, one shared map per flip.
        """
        from keras import ops

        side_h, side_w = int(images.shape[1]), int(images.shape[2])
        if augment:
            from lacss_core import augment as flips

            dense = flips.dense_forward(self.model, images)
            side_h, side_w = flips.canvas_shape(images)  # the grid covers the padded canvas
        else:
            dense = self.model.dense_forward(images, training=False)
        candidates, scores = dense["candidates"], dense["candidate_scores"]
        grid_h, grid_w = (int(n) for n in dense["lpn_scores"].shape[1:3])
        stride_h, stride_w = side_h // grid_h, side_w // grid_w
        cells = ops.arange(grid_h * grid_w, dtype="int32")
        inside = ops.logical_and(
            (cells // grid_w) * stride_h < size[0], (cells % grid_w) * stride_w < size[1]
        )
        scores = ops.where(inside[None], scores, ops.cast(-1.0, scores.dtype))
        upper = ops.cast(size - 1, candidates.dtype)
        candidates = ops.minimum(candidates, upper[None, None])
        return candidates, scores, dense["shared_features"]

    def _propose(self, images, size, *, settings, image_shape):
        candidates, candidate_scores, shared = self._inside(images, size, settings.augment)
        locations, scores, active = self._nms(
            candidates, candidate_scores, settings=settings, image_shape=image_shape
        )
        return locations, scores, shared, active

    def _dense(self, images, size, *, settings, image_shape):
        return self._inside(images, size, settings.augment)

    def _nms(self, candidates, candidate_scores, *, settings, image_shape):
        from keras import ops

        from lacss_core import _backend
        from lacss_core import ops as lops

        # Eager inside torch.compile: its while_loop is data-dependent (see outside_compiler).
        nms = _backend.current().outside_compiler(lops.nms)
        locations, scores, _ = nms(
            candidates,
            candidate_scores,
            max_output=settings.max_output,
            nms_distance=settings.nms_distance,
            min_score=settings.min_score,
            pre_nms_topk=settings.pre_nms_topk,
        )
        # candidates NMS would keep but for pre_nms_topk: more than pre_nms_topk means some were cut
        active = ops.sum(ops.cast(candidate_scores[0] >= settings.min_score, "int32"))
        return locations, scores, active

    def _patches(self, shared, locations, scores, *, settings, image_shape):
        instances, locations = self._instances(shared, locations, settings.augment)
        return {
            "locations": locations,
            "scores": scores,
            "patches": instances["patches"],
            "origins": instances["origins"],
        }

    def _instances(self, shared, locations, augment):
        from keras import ops

        if not augment:
            instances = self.model.segment_locations(shared, locations)
        else:  # one shared map per flip
            from lacss_core import augment as flips

            canvas = (2 * int(shared.shape[1]), 2 * int(shared.shape[2]))
            instances = flips.merge_patches(
                self.model.segment_locations, shared, locations, self.crop_size, canvas
            )
        valid = instances["valid"]
        return instances, ops.where(valid[..., None], locations, -ops.ones_like(locations))

    def _render(self, shared, locations, scores, size, *, settings, image_shape):
        from keras import ops

        from lacss_core import ops as lops
        from lacss_core.ops.patches import paste_indices

        instances, locations = self._instances(shared, locations, settings.augment)
        patches = instances["patches"]
        ranks = lops.render_label(
            patches, locations, scores, image_shape, threshold=settings.threshold
        )
        # each mask's pixels inside the image (the bucket's top-left ``size``), for the host's
        # occlusion rule (drop_occluded), which counts as painting on the image does; one image
        # per call (B = 1), so a flat id is row * width + column
        ids, segments = paste_indices(locations, int(patches.shape[-1]), image_shape, 0)
        width = image_shape[1]
        inside = (ids < segments - 1) & (ids // width < size[0]) & (ids % width < size[1])
        covered = (patches > ops.cast(settings.threshold, "float32")) & inside
        own_areas = ops.sum(ops.cast(covered, "int32"), axis=(2, 3))
        return {"locations": locations, "scores": scores, "ranks": ranks, "own_areas": own_areas}

    def _masks(self, shared, locations, scores, size, *, settings, image_shape):
        from keras import ops

        instances, locations = self._instances(shared, locations, settings.augment)
        return {
            "locations": locations,
            "scores": scores,
            "masks": instances["patches"] > ops.cast(settings.threshold, "float32"),
            "origins": instances["origins"],
        }


def _slot_count(settings: Settings, valid_count: int, compiled: bool = True) -> int:
    """Slots the per-instance layers run on, covering the valid proposals: a power of two when
    the stages compile (one program per slot count, so few counts), else the next multiple of
    ``MIN_SLOTS`` (eager torch pays per slot, not per shape: 263 proposals run 272 slots, not
    512, which cost the instance branch 2x)."""
    if compiled:
        slots = 1 << max(0, valid_count - 1).bit_length()
    else:
        slots = -(-valid_count // MIN_SLOTS) * MIN_SLOTS
    return min(settings.max_output, max(MIN_SLOTS, slots))


# model -> {CompileOptions: its Network}; weak, so the compiled functions go when the model does.
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
