"""Built-in synthetic cells: the default data for the demo and the tests.

Each image holds blobby, elliptical cells of varied size, elongation, orientation and brightness
that touch and partly overlap, on a background gradient, blurred and with Gaussian noise. Two
looks: ``"fluorescence"`` (bright cells, brighter where they overlap, on a dark background) and
``"phase"`` (phase-contrast-like: dark cells with a bright halo around their edge on a grey
background). Extra channels (``channels > 1``) are fluorescent nuclei, as with a nuclear stain.

Where cells overlap, the one drawn later lies on top and owns the pixels in the label image; cells
with less than half of their in-image area visible are left out of both image and label. Everything
is drawn from one seeded ``numpy.random.Generator``: the same arguments give identical arrays.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from lacss_core import _validation
from lacss_core.data.samples import Sample, label_to_locations, label_to_mask, relabel_sequential

MODES = ("fluorescence", "phase")
_SPACING = 0.8  # centre distance >= 0.8 * (r_i + r_j): cells touch and overlap, rarely hide
_MIN_VISIBLE = 0.5  # fraction of a cell's in-image area that must stay visible
_MIN_PIXELS = 6
_NUCLEUS = 0.45  # nucleus radius relative to its cell
_HALO_GAIN = 5.0  # phase mode: brightness of the halo relative to the cell's darkness


@dataclasses.dataclass(frozen=True)
class _Cell:
    center: tuple[float, float]  # (y, x) pixels
    radius: float  # mean radius, pixels
    axes: tuple[float, float]  # semi-axes (along the angle, across it), pixels
    angle: float  # radians
    wobble: tuple[float, float, float, float]  # amplitudes and phases of the 2nd/3rd harmonics


def synthetic_cells(
    seed=0,
    *,
    size=(128, 128),
    n_cells: int = 12,
    radius=(5.0, 10.0),
    channels: int = 1,
    mode: str = "fluorescence",
    noise: float = 0.03,
    blur: float = 1.0,
) -> Sample:
    """One synthetic image with its annotation.

    Args:
        seed: int or sequence of ints for ``numpy.random.default_rng``.
        size: ``(H, W)`` pixels (or one int for a square).
        n_cells: cells to place; fewer appear when they do not fit or are mostly hidden.
        radius: ``(low, high)`` range of the cells' mean radius, pixels.
        channels: ``C``; channel 0 shows the cells in ``mode``, the others their nuclei.
        mode: ``"fluorescence"`` or ``"phase"``.
        noise: standard deviation of the additive Gaussian noise (image range about ``[0, 1]``).
        blur: Gaussian blur sigma, pixels.
    Returns:
        :class:`Sample` with ``image (H, W, C) float32`` in ``[0, 1]``, sequential ``label (H, W)
        int32``, ``locations (K, 2) float32`` (label centroids) and ``mask (H, W) float32``.
    """
    shape, low, high = _check_args(size, n_cells, radius, channels, mode, noise, blur)
    rng = np.random.default_rng(seed)
    cells = _place_cells(rng, shape, n_cells, low, high)
    radii = [_normalised_radius(c, shape) for c in cells]
    keep = _visible_cells(radii, shape)
    cells = [c for c, k in zip(cells, keep, strict=True) if k]
    radii = [r for r, k in zip(radii, keep, strict=True) if k]
    label = relabel_sequential(_paint_label(radii, shape))
    planes = [_cell_plane(rng, cells, radii, shape, mode, blur)]
    planes += [_nucleus_plane(rng, radii, shape, blur) for _ in range(channels - 1)]
    image = np.stack([_finish(rng, p, shape, noise) for p in planes], axis=-1)
    return Sample(
        image.astype(np.float32),
        label=label,
        locations=label_to_locations(label),
        mask=label_to_mask(label),
        name=f"synthetic cells (seed {seed})",
    )


class SyntheticCells(Sequence):
    """A lazily generated list of ``n`` synthetic samples: item ``i`` uses seed ``(seed, i)``.

    Keyword arguments are passed to :func:`synthetic_cells`. Use it as the ``samples`` of
    :class:`lacss_core.data.LacssDataset`.
    """

    def __init__(self, n: int, seed: int = 0, **kwargs):
        self.n = _validation.positive_int(n, "n")
        self.seed = _validation.non_negative_int(seed, "seed")
        self.kwargs = kwargs
        _check_args(**{**_DEFAULTS, **kwargs})  # fail now, not at the first batch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} synthetic samples")
        return synthetic_cells((self.seed, i % self.n), **self.kwargs)

    def fingerprint(self) -> dict:
        """What the samples depend on (they are generated, so no content hash is needed)."""
        return {"type": "SyntheticCells", "n": self.n, "seed": self.seed, **self.kwargs}


_DEFAULTS = dict(
    size=(128, 128), n_cells=12, radius=(5.0, 10.0), channels=1, mode="fluorescence", noise=0.03,
    blur=1.0,
)  # fmt: skip


def _check_args(size, n_cells, radius, channels, mode, noise, blur):
    shape = tuple(size) if np.ndim(size) else (size, size)
    if len(shape) != 2 or not all(isinstance(s, (int, np.integer)) and s >= 1 for s in shape):
        raise ValueError(f"size must be a positive int or (H, W) of positive ints, got {size!r}")
    _validation.non_negative_int(n_cells, "n_cells")
    low, high = (float(r) for r in radius)
    if not 1.0 <= low <= high:
        raise ValueError(f"radius must be (low, high) with 1 <= low <= high pixels, got {radius}")
    _validation.positive_int(channels, "channels")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    if not blur >= 0:
        raise ValueError(f"blur must be >= 0, got {blur!r}")
    return tuple(int(s) for s in shape), low, high


def _place_cells(rng, shape, n_cells, low, high):
    """Rejection-sample cell centres so that cells touch or overlap but rarely hide each other."""
    cells: list[_Cell] = []
    for _ in range(50 * n_cells):
        if len(cells) == n_cells:
            break
        r = rng.uniform(low, high)
        center = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        if all(_far_enough(center, r, c) for c in cells):
            elongation = np.sqrt(rng.uniform(1.0, 1.6))
            wobble = (*rng.uniform(-0.08, 0.08, 2), *rng.uniform(0, 2 * np.pi, 2))
            angle = rng.uniform(0, np.pi)
            cells.append(_Cell(center, r, (r * elongation, r / elongation), angle, wobble))
    return cells


def _far_enough(center, r, other: _Cell) -> bool:
    dy, dx = center[0] - other.center[0], center[1] - other.center[1]
    return dy * dy + dx * dx >= (_SPACING * (r + other.radius)) ** 2


def _normalised_radius(cell: _Cell, shape):
    """Bounding box and, inside it, the pixel's radius relative to the cell edge (<= 1: inside).

    Returns ``((y0, y1, x0, x1), rho)`` with ``rho`` of shape ``(y1 - y0, x1 - x0)``.
    """
    reach = max(cell.axes) * 1.2 + 1
    cy, cx = cell.center
    y0, y1 = max(0, int(cy - reach)), min(shape[0], int(cy + reach) + 2)
    x0, x1 = max(0, int(cx - reach)), min(shape[1], int(cx + reach) + 2)
    dy = np.arange(y0, y1)[:, None] - cy
    dx = np.arange(x0, x1)[None, :] - cx
    cos, sin = np.cos(cell.angle), np.sin(cell.angle)
    u = (dy * cos + dx * sin) / cell.axes[0]
    v = (dx * cos - dy * sin) / cell.axes[1]
    phi = np.arctan2(v, u)
    e2, e3, p2, p3 = cell.wobble
    edge = 1 + e2 * np.cos(2 * phi + p2) + e3 * np.cos(3 * phi + p3)
    return (y0, y1, x0, x1), np.sqrt(u * u + v * v) / edge


def _paint_label(radii, shape):
    """Label ``k + 1`` for cell ``k``; later cells are painted on top."""
    label = np.zeros(shape, np.int32)
    for k, ((y0, y1, x0, x1), rho) in enumerate(radii):
        label[y0:y1, x0:x1][rho <= 1] = k + 1
    return label


def _visible_cells(radii, shape):
    """``bool`` per cell: enough of its in-image area survives the cells drawn over it."""
    visible = np.bincount(_paint_label(radii, shape).ravel(), minlength=len(radii) + 1)[1:]
    area = np.array([np.count_nonzero(rho <= 1) for _, rho in radii])
    return (visible >= _MIN_VISIBLE * area) & (visible >= _MIN_PIXELS)


def _sum_of_cells(weights, radii, shape, inside):
    """Sum over cells of ``weight * inside(rho)``: ``(H, W) float64``."""
    total = np.zeros(shape)
    for w, ((y0, y1, x0, x1), rho) in zip(weights, radii, strict=True):
        total[y0:y1, x0:x1] += w * inside(rho)
    return total


def _cell_plane(rng, cells, radii, shape, mode, blur):
    if mode == "fluorescence":
        brightness = rng.uniform(0.35, 1.0, len(radii))
        # a little brighter in the middle, as a thicker cell would be
        signal = _sum_of_cells(brightness, radii, shape, lambda r: (r <= 1) * (1 - 0.3 * r * r))
        return 0.08 + ndimage.gaussian_filter(signal, blur)
    darkness = rng.uniform(0.2, 0.45, len(radii))
    thickness = _sum_of_cells(darkness, radii, shape, lambda r: r <= 1)
    sharp = ndimage.gaussian_filter(thickness, blur)
    halo_width = 0.3 * np.mean([c.radius for c in cells]) if cells else 1.0
    wide = ndimage.gaussian_filter(thickness, max(blur, halo_width))
    # phase contrast: the cell body is dark and the light it diverts forms a bright halo outside
    return 0.5 - sharp + _HALO_GAIN * np.maximum(wide - sharp, 0)


def _nucleus_plane(rng, radii, shape, blur):
    brightness = rng.uniform(0.4, 1.0, len(radii))
    signal = _sum_of_cells(brightness, radii, shape, lambda r: r <= _NUCLEUS)
    return 0.05 + ndimage.gaussian_filter(signal, blur)


def _finish(rng, plane, shape, noise):
    """Add a random linear background gradient and Gaussian noise, clip to ``[0, 1]``."""
    amplitude, angle = rng.uniform(0.05, 0.15), rng.uniform(0, 2 * np.pi)
    y = np.linspace(-0.5, 0.5, shape[0])[:, None]
    x = np.linspace(-0.5, 0.5, shape[1])[None, :]
    gradient = amplitude * (y * np.cos(angle) + x * np.sin(angle))
    return np.clip(plane + gradient + rng.normal(0, noise, shape), 0, 1)
