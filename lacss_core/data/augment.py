"""Geometric augmentation of samples (SPEC 11): flips, isotropic resize, crop or zero-pad.

Every step moves the image, label, mask and LOIs together. Point maps, in pixel index coordinates:

- vertical flip ``y' = H - 1 - y`` (horizontal: ``x' = W - 1 - x``);
- resize by ``f``: ``y' = (y + 0.5) * f - 0.5`` (pixel centres scale about the image corner); the
  resized canvas has ``round(H * f)`` rows and the image is bilinear, label and mask nearest
  neighbour, all sampled at exactly that map, so the content scales by exactly ``f``;
- crop/pad to the training size ``(Ht, Wt)``: ``y' = y - oy`` where ``oy`` is the crop origin in
  the resized image (random when it is larger than ``Ht``, else 0); missing rows and columns are
  zero-padded at the bottom and right, like the model's own padding (SPEC 1).

An LOI that leaves the image content becomes ``-1`` (weak supervision). With a label image the
label is relabelled sequentially afterwards and the LOIs are recomputed as its centroids (full
supervision), so LOI row ``n`` is label ``n + 1``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from lacss_core.data.samples import Sample, label_to_locations, relabel_sequential, valid_rows


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    """One draw of augmentation parameters.

    Attributes:
        flip_y, flip_x: flip vertically (rows) / horizontally (columns).
        scale: isotropic resize factor ``f``.
        origin: ``(oy, ox)`` crop origin in the resized image, pixels (``>= 0``).
    """

    flip_y: bool = False
    flip_x: bool = False
    scale: float = 1.0
    origin: tuple[int, int] = (0, 0)


def resized_shape(shape, scale: float) -> tuple[int, int]:
    """``(round(H * f), round(W * f))``, at least 1: the canvas of the resized image."""
    return tuple(max(1, int(np.floor(s * scale + 0.5))) for s in shape)


def draw_params(
    rng: np.random.Generator, shape, size, *, flip=True, scale_range=(0.9, 1.1), centred=False
):
    """Draw random :class:`AugmentParams` for an image of ``shape = (H, W)``.

    Args:
        rng: NumPy generator; the draw order (flips, scale, origin) is fixed for reproducibility.
        size: training size ``(Ht, Wt)``.
        flip: allow random flips (each with probability 1/2).
        scale_range: ``(low, high)`` for ``f ~ U(low, high)``; ``(1, 1)`` disables resizing.
        centred: draw the crop's centre uniformly over the resized image and clamp the crop
            into it, instead of a uniform origin. A uniform origin puts a border pixel in
            ``1 / (H - Ht + 1)`` of the crops, rarely on a large image; a clamped centre covers
            every pixel at least half as often as the middle ones.
    """
    low, high = _scale_range(scale_range)
    flip_y, flip_x = (bool(v) for v in rng.integers(0, 2, size=2)) if flip else (False, False)
    scale = float(rng.uniform(low, high)) if high > low else low
    resized = resized_shape(shape, scale)
    spare = [max(r - t, 0) for r, t in zip(resized, size, strict=True)]  # croppable rows, cols
    if centred:
        centre = [int(rng.integers(0, r)) for r in resized]
        pairs = zip(centre, size, spare, strict=True)
        origin = tuple(int(np.clip(c - t // 2, 0, s)) for c, t, s in pairs)
    else:
        origin = tuple(int(rng.integers(0, s + 1)) for s in spare)
    return AugmentParams(flip_y, flip_x, scale, origin)


def augment(
    sample: Sample,
    rng: np.random.Generator,
    size,
    *,
    flip=True,
    scale_range=(0.9, 1.1),
    centred=False,
):
    """Randomly flip, resize and crop/pad a sample to the training ``size = (Ht, Wt)``.

    Returns a new :class:`Sample` of shape ``(Ht, Wt)``; see the module docstring for the maps
    and :func:`draw_params` for the arguments.
    """
    size = _size(size)
    params = draw_params(
        rng, sample.shape, size, flip=flip, scale_range=scale_range, centred=centred
    )
    return apply_augmentation(sample, params, size)


def fit_to_size(sample: Sample, size) -> Sample:
    """Crop (top-left) or zero-pad (bottom/right) a sample to ``size`` without other changes."""
    return apply_augmentation(sample, AugmentParams(), _size(size))


def apply_augmentation(sample: Sample, params: AugmentParams, size) -> Sample:
    """Apply fixed :class:`AugmentParams` to every field of a sample; output shape ``size``."""
    size = _size(size)
    arrays = {"image": sample.image, "label": sample.label, "mask": sample.mask}
    arrays = {k: v for k, v in arrays.items() if v is not None}
    arrays = {k: flip_array(v, params.flip_y, params.flip_x) for k, v in arrays.items()}
    resized = resized_shape(sample.shape, params.scale)
    arrays = {k: resize_array(v, params.scale, resized) for k, v in arrays.items()}
    arrays = {k: crop_or_pad_array(v, params.origin, size) for k, v in arrays.items()}
    if "label" in arrays:
        arrays["label"] = relabel_sequential(arrays["label"])
        arrays["locations"] = label_to_locations(arrays["label"])
    elif sample.locations is not None:
        arrays["locations"] = transform_points(sample.locations, sample.shape, params, size)
    return Sample(name=sample.name, **arrays)


def transform_points(points, shape, params: AugmentParams, size) -> np.ndarray:
    """Move LOIs with the image: flip, resize, crop; rows leaving the content become ``-1``.

    Args:
        points: ``(N, 2)`` float pixels ``(y, x)``, ``-1`` rows allowed; shape: input ``(H, W)``.
    Returns:
        ``(N, 2) float32`` in the ``size`` canvas.
    """
    p = np.asarray(points, np.float64).reshape(-1, 2)
    valid = valid_rows(p)
    shape = np.asarray(shape, np.float64)
    flips = np.array([params.flip_y, params.flip_x])
    p = np.where(flips, shape - 1 - p, p)
    p = (p + 0.5) * params.scale - 0.5
    resized = np.asarray(resized_shape(shape.astype(int), params.scale))
    origin = np.asarray(params.origin)
    p = p - origin
    # content of the output canvas: the resized image from `origin`, cut at the training size
    extent = np.minimum(resized - origin, np.asarray(size)) - 1
    valid &= np.all((p >= 0) & (p <= extent), axis=-1)
    return np.where(valid[:, None], p, -1.0).astype(np.float32)


def flip_array(a: np.ndarray, flip_y: bool, flip_x: bool) -> np.ndarray:
    """Flip the first two (spatial) axes of ``(H, W, ...)``."""
    if flip_y:
        a = a[::-1]
    if flip_x:
        a = a[:, ::-1]
    return np.ascontiguousarray(a)


def resize_array(a: np.ndarray, scale: float, out_shape) -> np.ndarray:
    """Sample ``(H, W, ...)`` onto ``out_shape`` at ``y = (y' + 0.5) / f - 0.5``.

    ``(H, W)`` planes (labels, masks) are nearest neighbour, ``(H, W, C)`` images bilinear.
    Edges replicate the border pixel (the canvas can reach up to half a pixel past the content).
    """
    if scale == 1.0 and tuple(out_shape) == a.shape[:2]:
        return a
    order = 0 if a.ndim == 2 else 1
    inverse = 1.0 / scale
    offset = 0.5 * inverse - 0.5

    def one_plane(plane):
        return ndimage.affine_transform(
            plane,
            [inverse, inverse],
            offset=offset,
            output_shape=tuple(out_shape),
            order=order,
            mode="nearest",
        )

    if a.ndim == 2:
        return one_plane(a)
    return np.stack([one_plane(a[..., c]) for c in range(a.shape[-1])], axis=-1)


def crop_or_pad_array(a: np.ndarray, origin, size) -> np.ndarray:
    """Take ``size`` rows/cols of ``(H, W, ...)`` from ``origin``; zero-fill what lies beyond."""
    oy, ox = origin
    ht, wt = size
    out = np.zeros((ht, wt) + a.shape[2:], a.dtype)
    part = a[oy : oy + ht, ox : ox + wt]
    out[: part.shape[0], : part.shape[1]] = part
    return out


def _size(size) -> tuple[int, int]:
    size = tuple(size) if np.ndim(size) else (size, size)
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s >= 1 for s in size):
        raise ValueError(f"size must be a positive int or (Ht, Wt) of positive ints, got {size!r}")
    return tuple(int(s) for s in size)


def _scale_range(scale_range) -> tuple[float, float]:
    low, high = (float(v) for v in scale_range)
    if not 0 < low <= high:
        raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range}")
    return low, high
