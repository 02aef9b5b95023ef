"""Training samples (SPEC 11), label-image converters and batching into the fit() format.

A fully supervised sample is an image plus a label image (0 = background); a weakly supervised
sample is an image plus LOIs and a binary foreground mask. Both are held by :class:`Sample`.

Batching (:func:`batch_samples`) produces exactly the training batch format of the contract:
``x = {"image": (B, H, W, C) float32, "locations": (B, N, 2) float32}`` with ``-1`` padded LOIs and
``y = {"label": (B, H, W) int32}`` (LOI row ``n`` <-> label ``n + 1``) or
``y = {"mask": (B, H, W) float32}``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from lacss_core import _validation

SUPERVISIONS = ("full", "weak")

#: Fewest LOI rows of a bucketed batch (see :func:`instance_rows`): a floor, so batches with a
#: handful of cells share one compiled shape.
MIN_INSTANCE_ROWS = 16


@dataclasses.dataclass(frozen=True, eq=False)
class Sample:
    """One image with its annotation. Arrays are converted and checked on construction.

    Attributes:
        image: ``(H, W, C) float32`` (a ``(H, W)`` input gets a channel axis).
        label: ``(H, W) int32`` label image, 0 = background, or ``None`` (fully supervised).
        locations: ``(N, 2) float32`` LOIs ``(y, x)`` in pixel index coordinates; a row with a
            negative coordinate is invalid (``-1`` padding); valid rows lie in
            ``[0, H-1] x [0, W-1]``. ``None`` if absent.
        mask: ``(H, W) float32`` binary foreground (any nonzero input counts as 1), or ``None``.
        name: where the sample came from (a file path), used in error messages.

    A sample needs a label, or both locations and a mask.
    """

    image: np.ndarray
    label: np.ndarray | None = None
    locations: np.ndarray | None = None
    mask: np.ndarray | None = None
    name: str = ""

    def __post_init__(self):
        image = _as_image(self.image, self.describe("image"))
        shape = image.shape[:2]
        object.__setattr__(self, "image", image)
        if self.label is not None:
            object.__setattr__(self, "label", _as_label(self.label, shape, self.describe("label")))
        if self.mask is not None:
            object.__setattr__(self, "mask", _as_mask(self.mask, shape, self.describe("mask")))
        if self.locations is not None:
            locations = _as_locations(self.locations, shape, self.describe("locations"))
            object.__setattr__(self, "locations", locations)
        if self.label is None and (self.locations is None or self.mask is None):
            raise ValueError(
                f"{self.describe('sample')} needs a label image (fully supervised) or both "
                "locations and a mask (weakly supervised)"
            )

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` in pixels."""
        return self.image.shape[:2]

    def describe(self, what: str) -> str:
        """``what`` followed by the sample's name, for error messages."""
        return f"{what} of {self.name}" if self.name else what

    def replace(self, **changes) -> Sample:
        """A copy with some fields replaced (checked again)."""
        return dataclasses.replace(self, **changes)

    def to_weak(self) -> Sample:
        """The weakly supervised view: LOIs (label centroids) and foreground mask, no label."""
        if self.label is None:
            return self
        return Sample(
            self.image,
            locations=label_to_locations(self.label),
            mask=label_to_mask(self.label),
            name=self.name,
        )


def relabel_sequential(label) -> np.ndarray:
    """Renumber a label image to ``1..K`` keeping the order of the original values.

    Args:
        label: ``(H, W)`` non-negative integer label image, 0 = background.
    Returns:
        ``(H, W) int32``; the smallest nonzero label becomes 1, the next 2, and so on.
    """
    label = np.asarray(label)
    values, inverse = np.unique(label, return_inverse=True)
    if values.size and values[0] != 0:  # no background pixel: the first label must become 1
        inverse = inverse + 1
    return inverse.reshape(label.shape).astype(np.int32)


def label_to_locations(label) -> np.ndarray:
    """LOIs of a label image: centroid of each cell after sequential relabelling.

    Args:
        label: ``(H, W)`` non-negative integer label image, 0 = background.
    Returns:
        ``(K, 2) float32``; row ``n`` is the ``(y, x)`` centroid, in pixel index coordinates, of
        label ``n + 1`` of :func:`relabel_sequential` (i.e. of the ``n``-th smallest label value).
    """
    seq = relabel_sequential(label).ravel()
    count = int(seq.max(initial=0))
    rows, cols = np.indices(np.shape(label)).reshape(2, -1)
    area = np.bincount(seq, minlength=count + 1)[1:]
    sum_y = np.bincount(seq, weights=rows, minlength=count + 1)[1:]
    sum_x = np.bincount(seq, weights=cols, minlength=count + 1)[1:]
    return np.stack([sum_y / area, sum_x / area], axis=-1).astype(np.float32).reshape(count, 2)


def label_to_mask(label) -> np.ndarray:
    """Binary foreground of a label image: ``(H, W) float32``, 1 where ``label > 0``."""
    return (np.asarray(label) > 0).astype(np.float32)


def valid_rows(locations) -> np.ndarray:
    """``(N,) bool``: rows whose coordinates are both ``>= 0`` (SPEC 1)."""
    return np.all(np.asarray(locations) >= 0, axis=-1)


def pad_locations(locations, max_instances: int, *, subsample: bool = False, where: str = "sample"):
    """Fixed-size LOIs: the valid rows, in order, padded with ``-1`` to ``max_instances`` rows.

    Args:
        locations: ``(N, 2)`` float pixels, invalid rows allowed (they are dropped).
        max_instances: Python int capacity.
        subsample: keep the first ``max_instances`` valid rows instead of raising.
        where: names the sample in the error message.
    Returns:
        ``(max_instances, 2) float32``.
    Raises:
        ValueError: more valid rows than ``max_instances`` and ``subsample`` is false.
    """
    kept = np.asarray(locations, np.float32).reshape(-1, 2)
    kept = kept[valid_rows(kept)]
    _check_capacity(len(kept), max_instances, subsample, where)
    kept = kept[:max_instances]
    out = np.full((max_instances, 2), -1.0, np.float32)
    out[: len(kept)] = kept
    return out


def drop_excess_labels(label, max_instances: int, *, subsample=False, where: str = "sample"):
    """Sequentially relabel and enforce the instance capacity (SPEC 11).

    Args:
        label: ``(H, W)`` label image; max_instances: Python int capacity.
        subsample: set labels beyond ``max_instances`` to background instead of raising.
    Returns:
        ``(H, W) int32`` with labels ``1..min(K, max_instances)``.
    """
    label = relabel_sequential(label)
    _check_capacity(int(label.max(initial=0)), max_instances, subsample, where)
    label[label > max_instances] = 0
    return label


def _check_capacity(count, max_instances, subsample, where):
    """Raise unless ``count`` instances fit ``max_instances`` or the caller may drop the rest."""
    if count > max_instances and not subsample:
        raise ValueError(
            f"{where} has {count} instances but max_instances={max_instances}; raise "
            f"max_instances (lacss train --max-instances) to at least {count}, or pass "
            f"subsample=True (lacss train --subsample) to keep only the first {max_instances}"
        )


def instance_rows(count: int, max_instances: int, floor: int = MIN_INSTANCE_ROWS) -> int:
    """LOI rows of a bucketed batch whose fullest image holds ``count`` instances.

    The next power of two ``>= count``, at least ``floor``, at most ``max_instances``: the
    per-instance layers and the segmentation losses then cost what the cells need, and a run
    compiles its training step once per bucket (at most ``log2(max_instances / floor) + 1``
    shapes), not once per cell count.
    """
    rows = max(int(floor), 1 << max(int(count) - 1, 0).bit_length())
    return min(rows, int(max_instances))


def batch_samples(
    samples: Sequence[Sample],
    *,
    max_instances: int,
    supervision: str = "full",
    subsample: bool = False,
    bucket: bool = False,
):
    """Stack samples of one shape into a training batch ``(x, y)`` (contract format).

    Args:
        samples: samples with identical ``(H, W, C)``; for ``supervision="full"`` each needs a
            label (relabelled sequentially here, LOIs recomputed as its centroids); for
            ``"weak"`` a label is converted to LOIs + mask, otherwise locations and mask are used.
        max_instances: Python int, the most instances an image may hold (see ``subsample``).
        supervision: ``"full"`` or ``"weak"``.
        subsample: drop instances beyond ``max_instances`` instead of raising.
        bucket: ``x["locations"]`` gets only :func:`instance_rows` rows (the next power of two
            covering the fullest image, at least ``MIN_INSTANCE_ROWS``) instead of
            ``max_instances``. Valid rows come first in every image, so only padding is cut, and
            padding rows contribute nothing to any loss (SPEC 8): the loss is the same, the cost
            follows the cells.
    Returns:
        ``x = {"image": (B, H, W, C) float32, "locations": (B, N, 2) float32}`` and
        ``y = {"label": (B, H, W) int32}`` (full) or ``{"mask": (B, H, W) float32}`` (weak);
        ``N = max_instances``, or the bucket's rows with ``bucket=True``.
    """
    if supervision not in SUPERVISIONS:
        raise ValueError(f"supervision must be one of {SUPERVISIONS}, got {supervision!r}")
    _validation.positive_int(max_instances, "max_instances")
    if len(samples) == 0:
        raise ValueError("samples is empty")
    _check_same_shape(samples)
    if supervision == "full":
        x, y = _batch_full(samples, max_instances, subsample)
    else:
        x, y = _batch_weak(samples, max_instances, subsample)
    if bucket:
        count = int(valid_rows(x["locations"]).sum(axis=1).max())
        rows = instance_rows(count, max_instances)
        x["locations"] = np.ascontiguousarray(x["locations"][:, :rows])
    return x, y


def _batch_full(samples, max_instances, subsample):
    labels, locations = [], []
    for i, s in enumerate(samples):
        where = s.describe(f"sample {i}")
        if s.label is None:
            raise ValueError(
                f"{where} has no label image; pass supervision='weak' for point-annotated samples"
            )
        label = drop_excess_labels(s.label, max_instances, subsample=subsample, where=where)
        labels.append(label)
        locations.append(pad_locations(label_to_locations(label), max_instances))
    x = {"image": np.stack([s.image for s in samples]), "locations": np.stack(locations)}
    return x, {"label": np.stack(labels)}


def _batch_weak(samples, max_instances, subsample):
    masks, locations = [], []
    for i, s in enumerate(samples):
        s = s.to_weak()
        where = s.describe(f"sample {i}")
        padded = pad_locations(s.locations, max_instances, subsample=subsample, where=where)
        locations.append(padded)
        masks.append(s.mask)
    x = {"image": np.stack([s.image for s in samples]), "locations": np.stack(locations)}
    return x, {"mask": np.stack(masks)}


def _check_same_shape(samples):
    first = samples[0].image.shape
    for i, s in enumerate(samples):
        if s.image.shape != first:
            raise ValueError(
                f"{s.describe(f'sample {i}')} has image shape {s.image.shape} but sample 0 has "
                f"{first}; samples in one batch must share (H, W, C) (crop them to one training "
                "size)"
            )


def _as_image(image, what):
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or min(a.shape) < 1:
        raise ValueError(f"{what} must have shape (H, W) or (H, W, C), got {a.shape}")
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{what} must be numeric, got dtype {a.dtype}")
    a = a.astype(np.float32)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what} contains non-finite values")
    return a


def _as_label(label, shape, what):
    a = np.asarray(label)
    if a.shape != shape:
        raise ValueError(f"{what} must have the image's shape {shape}, got {a.shape}")
    if a.dtype.kind not in "biu":
        raise ValueError(f"{what} must be an integer image, got dtype {a.dtype}")
    if a.size and a.min() < 0:
        raise ValueError(f"{what} has negative values; labels are 0 (background) or positive")
    if a.size and a.max() > np.iinfo(np.int32).max:
        raise ValueError(f"{what} has values beyond int32; relabel it sequentially first")
    return a.astype(np.int32)


def _as_mask(mask, shape, what):
    a = np.asarray(mask)
    if a.shape != shape:
        raise ValueError(f"{what} must have the image's shape {shape}, got {a.shape}")
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{what} must be numeric, got dtype {a.dtype}")
    return (a != 0).astype(np.float32)


def _as_locations(locations, shape, what):
    a = np.asarray(locations, np.float32)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{what} must have shape (N, 2), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what} contains non-finite values")
    ok = valid_rows(a)
    outside = ok & ((a[:, 0] > shape[0] - 1) | (a[:, 1] > shape[1] - 1))
    if np.any(outside):
        row = int(np.argmax(outside))
        raise ValueError(
            f"{what} row {row} = {tuple(a[row].tolist())} lies outside the image "
            f"[0, {shape[0] - 1}] x [0, {shape[1] - 1}]"
        )
    a[~ok] = -1.0
    return a
