"""Synthetic slides: arbitrarily large images of densely packed cells, generated block by block.

:func:`lacss_core.data.synthetic_cells` places cells by rejection sampling over the whole image,
which is fine for training crops but quadratic in the cell count. A :class:`SyntheticSlide` puts one
cell on each site of a jittered square lattice (pitch ``pitch`` pixels), and every random number a
pixel depends on is drawn from a generator seeded by the site row (cell shapes) or by the
``NOISE_TILE`` square it lies in (sensor noise), so any region can be rendered alone, in memory
proportional to the region, with the same values as in the whole image. That makes 16k x 16k test
images (``write_zarr``) and dense 2048 x 2048 ones (thousands of cells) cheap.

The look is the fluorescence mode of ``synthetic_cells``: bright elliptical cells, a little brighter
in the middle, on a dark background, blurred, with Gaussian noise. The jitter is small enough that
cells never overlap, so the label image is exact; cell ``i * columns + j + 1`` sits on site
``(i, j)``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

NOISE_TILE = 256  # pixels; sensor noise is drawn per square of this side
_BACKGROUND = 0.08
_ELONGATION = 1.6  # largest axis ratio squared (as in synthetic_cells)


class SyntheticSlide:
    """A ``size`` image of cells on a jittered lattice, rendered on demand.

    Args:
        size: ``(H, W)`` pixels, or one int for a square.
        seed: int; the same arguments give identical pixels.
        pitch: lattice spacing in pixels (one cell per ``pitch**2`` pixels).
        radius: ``(low, high)`` mean cell radius in pixels; ``high`` must leave room for the
            jitter: ``2 * high * sqrt(sqrt(1.6)) + 2 * jitter < pitch``.
        jitter: largest displacement of a cell from its site, pixels (default: what fits).
        noise: standard deviation of the Gaussian noise (intensities about ``[0, 1]``).
        blur: Gaussian blur sigma, pixels.

    Attributes:
        shape: ``(H, W)``; ``rows, columns``: lattice sites along each axis.
    """

    def __init__(self, size, *, seed=0, pitch=32, radius=(5.0, 8.0), jitter=None, noise=0.02,
                 blur=1.0):  # fmt: skip
        shape = tuple(size) if np.ndim(size) else (size, size)
        if len(shape) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in shape):
            raise ValueError(
                f"size must be a positive int or (H, W) of positive ints, got {size!r}"
            )
        low, high = (float(r) for r in radius)
        reach = high * _ELONGATION**0.25  # largest semi-axis
        room = (pitch - 2 * reach) / 2 - 1
        if not 1 <= low <= high or room < 0:
            raise ValueError(
                f"radius {radius} must satisfy 1 <= low <= high and fit the pitch {pitch} "
                f"(2 * high * 1.6**0.25 + 2 < pitch)"
            )
        jitter = room if jitter is None else float(jitter)
        if not 0 <= jitter <= room:
            raise ValueError(f"jitter must be in [0, {room:.1f}] for this pitch and radius")
        self.shape = (int(shape[0]), int(shape[1]))
        self.seed, self.pitch, self.radius, self.jitter = int(seed), int(pitch), (low, high), jitter
        self.noise, self.blur = float(noise), float(blur)
        self.rows = -(-self.shape[0] // self.pitch)
        self.columns = -(-self.shape[1] // self.pitch)
        self._reach = reach

    # ------------------------------------------------------------------ cells
    def _site_row(self, i: int) -> dict:
        """Cell parameters of lattice row ``i`` (arrays over its columns)."""
        rng = np.random.default_rng((self.seed, 0, i))
        n = self.columns
        jy, jx = rng.uniform(-self.jitter, self.jitter, (2, n))
        radius = rng.uniform(*self.radius, n)
        elongation = np.sqrt(rng.uniform(1.0, _ELONGATION, n))
        return {
            "y": (i + 0.5) * self.pitch + jy,
            "x": (np.arange(n) + 0.5) * self.pitch + jx,
            "a": radius * elongation,
            "b": radius / elongation,
            "angle": rng.uniform(0, np.pi, n),
            "brightness": rng.uniform(0.35, 1.0, n),
        }

    def _inside(self, y, x) -> np.ndarray:
        return (y >= 0) & (y <= self.shape[0] - 1) & (x >= 0) & (x <= self.shape[1] - 1)

    def locations(self) -> np.ndarray:
        """``(K, 2) float32`` centres ``(y, x)`` of the cells whose centre lies in the image."""
        rows = []
        for i in range(self.rows):
            site = self._site_row(i)
            inside = self._inside(site["y"], site["x"])
            rows.append(np.stack([site["y"][inside], site["x"][inside]], -1))
        return np.concatenate(rows).astype(np.float32).reshape(-1, 2)

    # ------------------------------------------------------------------ rendering
    def region(self, y0, y1, x0, x1) -> tuple[np.ndarray, np.ndarray]:
        """Pixels ``[y0, y1) x [x0, x1)``: ``(image (h, w) float32, label (h, w) int32)``.

        Labels are the lattice ids ``i * columns + j + 1`` (0 = background), the same in every
        region; a cell whose centre lies outside the image is still drawn where it reaches in.
        """
        if not (0 <= y0 < y1 <= self.shape[0] and 0 <= x0 < x1 <= self.shape[1]):
            raise ValueError(f"region {(y0, y1, x0, x1)} is not inside the image {self.shape}")
        halo = int(np.ceil(4 * self.blur)) + 1  # the blur reaches this far
        top, left = y0 - halo, x0 - halo
        height, width = y1 - y0 + 2 * halo, x1 - x0 + 2 * halo
        signal = np.zeros((height, width))
        label = np.zeros((height, width), np.int32)
        reach = self._reach + self.jitter + 2
        first = max(0, int((top - reach) // self.pitch))
        last = min(self.rows - 1, int((top + height + reach) // self.pitch))
        for i in range(first, last + 1):
            self._draw_row(i, self._site_row(i), top, left, signal, label)
        image = _BACKGROUND + ndimage.gaussian_filter(signal, self.blur, mode="constant")
        image = image[halo:-halo, halo:-halo] + self._noise(y0, y1, x0, x1)
        return np.clip(image, 0, 1).astype(np.float32), label[halo:-halo, halo:-halo]

    def _draw_row(self, i, site, top, left, signal, label):
        height, width = signal.shape
        span = int(np.ceil(self._reach)) + 1
        reach = span + self.jitter + 2
        first = max(0, int((left - reach) // self.pitch))
        last = min(self.columns - 1, int((left + width + reach) // self.pitch))
        for j in range(first, last + 1):
            cy, cx = site["y"][j] - top, site["x"][j] - left
            ya, yb = max(0, int(cy) - span), min(height, int(cy) + span + 2)
            xa, xb = max(0, int(cx) - span), min(width, int(cx) + span + 2)
            if ya >= yb or xa >= xb:
                continue
            dy = np.arange(ya, yb)[:, None] - cy
            dx = np.arange(xa, xb)[None, :] - cx
            cos, sin = np.cos(site["angle"][j]), np.sin(site["angle"][j])
            u = (dy * cos + dx * sin) / site["a"][j]
            v = (dx * cos - dy * sin) / site["b"][j]
            rho2 = u * u + v * v
            inside = rho2 <= 1
            signal[ya:yb, xa:xb] += site["brightness"][j] * inside * (1 - 0.3 * rho2)
            label[ya:yb, xa:xb][inside] = i * self.columns + j + 1

    def _noise(self, y0, y1, x0, x1) -> np.ndarray:
        """Gaussian noise of ``[y0, y1) x [x0, x1)``, drawn per ``NOISE_TILE`` square."""
        out = np.empty((y1 - y0, x1 - x0))
        for ty in range(y0 // NOISE_TILE, (y1 - 1) // NOISE_TILE + 1):
            for tx in range(x0 // NOISE_TILE, (x1 - 1) // NOISE_TILE + 1):
                rng = np.random.default_rng((self.seed, 1, ty, tx))
                tile = rng.normal(0, self.noise, (NOISE_TILE, NOISE_TILE))
                ya, yb = max(y0, ty * NOISE_TILE), min(y1, (ty + 1) * NOISE_TILE)
                xa, xb = max(x0, tx * NOISE_TILE), min(x1, (tx + 1) * NOISE_TILE)
                out[ya - y0 : yb - y0, xa - x0 : xb - x0] = tile[
                    ya - ty * NOISE_TILE : yb - ty * NOISE_TILE,
                    xa - tx * NOISE_TILE : xb - tx * NOISE_TILE,
                ]
        return out

    def image(self) -> np.ndarray:
        """The whole image, ``(H, W) float32`` (in memory: for sizes that fit)."""
        return self.region(0, self.shape[0], 0, self.shape[1])[0]

    def label(self) -> np.ndarray:
        """The whole label image, ``(H, W) int32`` (lattice ids, see ``region``)."""
        return self.region(0, self.shape[0], 0, self.shape[1])[1]

    def write_zarr(self, path, *, chunk=1024, dtype="uint16", label_path=None) -> None:
        """Write the image (and, with ``label_path``, its label image) as zarr arrays, one
        ``chunk x chunk`` block at a time (memory: a few blocks, whatever the size).

        ``dtype`` uint16 scales ``[0, 1]`` to ``[0, 65535]``; float32 writes the values as they are.
        """
        import zarr

        if dtype not in ("uint16", "float32"):
            raise ValueError(f"dtype must be 'uint16' or 'float32', got {dtype!r}")
        chunks = (chunk, chunk)
        image = zarr.open_array(str(path), mode="w", shape=self.shape, chunks=chunks, dtype=dtype)
        labels = None
        if label_path is not None:
            labels = zarr.open_array(
                str(label_path), mode="w", shape=self.shape, chunks=chunks, dtype="int32"
            )
        for y0 in range(0, self.shape[0], chunk):
            for x0 in range(0, self.shape[1], chunk):
                y1, x1 = min(y0 + chunk, self.shape[0]), min(x0 + chunk, self.shape[1])
                block, label = self.region(y0, y1, x0, x1)
                if dtype == "uint16":
                    block = np.round(block * 65535).astype(np.uint16)
                image[y0:y1, x0:x1] = block
                if labels is not None:
                    labels[y0:y1, x0:x1] = label
