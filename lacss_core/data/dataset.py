"""``LacssDataset``: feeds samples to ``Model.fit`` as a ``keras.utils.PyDataset`` (any backend).

Batches are NumPy arrays in the contract's training format (see :func:`batch_samples`); Keras
converts them to JAX arrays or torch tensors. Item ``i`` of epoch ``e`` is a pure function of
``(seed, e, i)``: the sample order is a permutation drawn from ``(seed, e)`` and sample ``j`` is
augmented with ``numpy.random.default_rng((seed, e, j))``, so runs repeat exactly and workers may
fetch batches in any order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np

from lacss_core import _validation
from lacss_core.data.augment import _scale_range, _size, augment, fit_to_size
from lacss_core.data.normalize import DEFAULT_METHOD, METHODS, normalize_image
from lacss_core.data.samples import SUPERVISIONS, Sample, batch_samples

#: ``random_crops`` keeps the normalised samples of a dataset of at most this many.
CACHED_SAMPLES = 64


class LacssDataset(keras.utils.PyDataset):
    """Batches of (optionally augmented) samples for fully or weakly supervised training.

    Args:
        samples: a sequence of :class:`Sample` (a list, or a lazy
            :class:`~lacss_core.data.SyntheticCells`).
        batch_size: images per batch ``B``.
        max_instances: Python int, the most instances one training image may hold.
        supervision: ``"full"`` (``y = {"label"}``, samples need a label) or ``"weak"``
            (``y = {"mask"}``; labelled samples are converted to LOIs + mask).
        size: training size ``(Ht, Wt)`` (or one int) that every sample is cropped or zero-padded
            to; ``None`` keeps the samples' size, which must then be the same for all.
        augment: random flips, resize in ``scale_range`` and random crop, new every epoch.
        random_crops: each batch is ``batch_size`` random crops of ``size`` drawn with
            replacement: the image is chosen with probability proportional to its area ``H * W``
            (:meth:`image_probabilities`), the crop's centre uniformly (clamped so the crop stays
            in the image; with the flips and scale of ``augment``, if on). Any number and size
            of images then trains with any batch size (one large image gives many crops;
            smaller ones are zero-padded). Batch ``index`` of ``epoch`` is step
            ``t = epoch * len(self) + index`` and its crops are a pure function of
            ``(seed, t)``; ``len`` is the number of batches whose crops add up to the images'
            area (at least 1). Reads every sample's shape once.
        normalize: ``"percentile"`` (default: 1st-99.8th percentile to [0, 1]), ``"range"``,
            ``"standard"`` (see :func:`~lacss_core.data.normalize_image`) or ``None`` (images
            used as given). ``lacss_core.train.train`` records it in the model
            (``image_normalization``), so prediction normalises the same way.
        subsample: drop instances beyond ``max_instances`` instead of raising.
        bucket_instances: ``x["locations"]`` of each batch has just enough rows for its fullest
            image, rounded up to a power of two (at least 16, at most ``max_instances``; see
            :func:`lacss_core.data.samples.instance_rows`), so the per-instance work of a
            training step follows the cells, not ``max_instances``. The loss is unchanged (only
            padding rows are cut); a compiled train step compiles once per bucket. ``False``:
            always ``max_instances`` rows.
        shuffle: reorder the samples every epoch.
        drop_remainder: skip the last partial batch (keeps shapes static for compiled steps).
        seed: int seed of the order and the augmentation.
        flip, scale_range: augmentation settings, see :func:`lacss_core.data.augment`.
        **kwargs: ``workers``, ``use_multiprocessing``, ``max_queue_size`` of ``PyDataset``.

    Attributes:
        epoch: the epoch whose order and augmentation ``__getitem__`` serves. ``on_epoch_end``
            adds 1 (Keras also calls it once when ``fit`` starts). To resume training, save it
            with the checkpoint and set it back before calling ``fit`` again.

    Pass ``shuffle=False`` to ``Model.fit``: Keras would otherwise shuffle the batch order with
    Python's global ``random``, outside this seed.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        *,
        batch_size: int,
        max_instances: int,
        supervision: str = "full",
        size=None,
        augment: bool = False,
        normalize: str | None = DEFAULT_METHOD,
        subsample: bool = False,
        bucket_instances: bool = True,
        random_crops: bool = False,
        shuffle: bool = True,
        drop_remainder: bool = True,
        seed: int = 0,
        flip: bool = True,
        scale_range=(0.9, 1.1),
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_settings(samples, batch_size, max_instances, supervision, normalize, seed)
        if augment and size is None:
            raise ValueError("augment=True needs size=(Ht, Wt), the training crop size")
        if random_crops and size is None:
            raise ValueError("random_crops=True needs size=(Ht, Wt), the training crop size")
        if drop_remainder and not random_crops and len(samples) < batch_size:
            raise ValueError(
                f"batch_size={batch_size} is larger than the {len(samples)} samples; lower it "
                "(lacss train --batch-size) or pass drop_remainder=False"
            )
        self.samples = samples
        self.batch_size = int(batch_size)
        self.max_instances = int(max_instances)
        self.supervision = supervision
        self.size = size
        self.augment = augment
        self.normalize = normalize
        self.subsample = subsample
        self.bucket_instances = bool(bucket_instances)
        self.random_crops = bool(random_crops)
        self._areas = None  # (len(samples),) image areas, read on first use (random_crops)
        self._cache = {}  # j -> normalised sample (random_crops on a few images)
        self.shuffle = shuffle
        self.drop_remainder = drop_remainder
        self.seed = int(seed)
        self.flip = flip
        _scale_range(scale_range)  # checked now, not at the first batch; kept as given
        self.scale_range = scale_range
        self.epoch = 0

    def __len__(self) -> int:
        if self.random_crops:
            crop_area = self.batch_size * int(np.prod(_size(self.size)))
            return max(1, round(float(self.image_areas().sum()) / crop_area))
        count = len(self.samples) / self.batch_size
        return math.floor(count) if self.drop_remainder else math.ceil(count)

    def __getitem__(self, index: int):
        """Batch ``index`` of the current epoch as ``(x, y)`` dicts of NumPy arrays."""
        if not 0 <= index < len(self):
            raise IndexError(f"batch index {index} out of range for {len(self)} batches")
        if self.random_crops:
            batch = self.crops_for_step(self.epoch * len(self) + index)
        else:
            order = self.sample_order(self.epoch)
            chosen = order[index * self.batch_size : (index + 1) * self.batch_size]
            batch = [self.prepare(int(j), self.epoch) for j in chosen]
        return batch_samples(
            batch,
            max_instances=self.max_instances,
            supervision=self.supervision,
            subsample=self.subsample,
            bucket=self.bucket_instances,
        )

    def on_epoch_end(self):
        """Count the pass: the next pass's order and augmentation follow from ``epoch``."""
        self.epoch += 1

    def fingerprint(self) -> dict:
        """What the batches depend on: the settings and the samples (names, count, a SHA-256 of
        their arrays). ``train`` stores it with each checkpoint and resumes only when it matches."""
        from lacss_core._run_record import samples_fingerprint

        settings = ("batch_size", "max_instances", "supervision", "size", "augment", "normalize")
        settings += ("subsample", "shuffle", "drop_remainder", "seed", "flip", "scale_range")
        if self.random_crops:  # only then, so earlier runs' records still match
            settings += ("random_crops",)
        return {
            "type": "LacssDataset",
            **{name: getattr(self, name) for name in settings},
            "samples": samples_fingerprint(self.samples),
        }

    def sample_order(self, epoch: int) -> np.ndarray:
        """``(len(samples),) int`` sample indices in the order served in ``epoch``."""
        if not self.shuffle:
            return np.arange(len(self.samples))
        return np.random.default_rng((self.seed, epoch)).permutation(len(self.samples))

    def image_areas(self) -> np.ndarray:
        """``(len(samples),) int64`` pixel count ``H * W`` of every sample (read once)."""
        if self._areas is None:
            self._areas = np.array([np.prod(s.shape) for s in self.samples], np.int64)
        return self._areas

    def image_probabilities(self) -> np.ndarray:
        """``(len(samples),) float64``: the chance that a random crop comes from each image."""
        areas = self.image_areas().astype(np.float64)
        return areas / areas.sum()

    def crop_sources(self, step: int) -> np.ndarray:
        """``(batch_size,) int``: the samples the crops of global ``step`` come from."""
        return self._draw_sources(np.random.default_rng((self.seed, step)))

    def crops_for_step(self, step: int) -> list[Sample]:
        """``random_crops``: the ``batch_size`` crops of global ``step``, drawn from one
        generator seeded by ``(seed, step)`` (sources first, then each crop in turn)."""
        rng = np.random.default_rng((self.seed, step))
        return [self.prepare(int(j), step, rng=rng) for j in self._draw_sources(rng)]

    def _draw_sources(self, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(len(self.samples), self.batch_size, p=self.image_probabilities())

    def prepare(self, j: int, epoch: int, rng: np.random.Generator | None = None) -> Sample:
        """Sample ``j`` as served in ``epoch``: weak view if needed, normalised, augmented.

        ``rng``: the generator of the augmentation (default: one seeded by ``(seed, epoch, j)``).
        With ``random_crops`` and no ``augment`` the crop position is still random.
        """
        sample = self._normalized(j)
        if rng is None and (self.augment or self.random_crops):
            rng = np.random.default_rng((self.seed, epoch, j))
        if self.augment or self.random_crops:
            flip, scale_range = (self.flip, self.scale_range) if self.augment else (False, (1, 1))
            return augment(
                sample,
                rng,
                self.size,
                flip=flip,
                scale_range=scale_range,
                centred=self.random_crops,
            )
        if self.size is not None:
            return fit_to_size(sample, self.size)
        return sample

    def _normalized(self, j: int) -> Sample:
        """Sample ``j``, weak view if needed, normalised. With ``random_crops`` and at most
        ``CACHED_SAMPLES`` samples it is kept: crops of a few large images would otherwise
        normalise the whole image for every crop (0.2 s for 2048 x 2048)."""
        cached = self._cache.get(j)
        if cached is not None:
            return cached
        sample = self.samples[j]
        if self.supervision == "weak":
            sample = sample.to_weak()
        if self.normalize is not None:
            sample = sample.replace(image=normalize_image(sample.image, self.normalize))
        if self.random_crops and len(self.samples) <= CACHED_SAMPLES:
            self._cache[j] = sample
        return sample


def _check_settings(samples, batch_size, max_instances, supervision, normalize, seed):
    _validation.positive_int(batch_size, "batch_size")
    _validation.positive_int(max_instances, "max_instances")
    _validation.non_negative_int(seed, "seed")
    if supervision not in SUPERVISIONS:
        raise ValueError(f"supervision must be one of {SUPERVISIONS}, got {supervision!r}")
    if normalize is not None and normalize not in METHODS:
        raise ValueError(f"normalize must be one of {METHODS} or None, got {normalize!r}")
    if len(samples) == 0:
        raise ValueError("samples is empty")
