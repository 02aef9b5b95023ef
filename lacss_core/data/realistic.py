"""Realistic synthetic microscopy: labelled images that look like real fluorescence nuclei,
fluorescence cytoplasm/membrane, brightfield (and DIC) and phase-contrast data.

The simple generator in :mod:`lacss_core.data.synthetic` draws clean blobs for the tests and the
demo; this one is for training a model that has to work on real images it never saw, so every
image draws its own biology, optics and camera from wide ranges (domain randomisation), and each
step follows how such images are formed:

* **Biology** (geometry, exact labels). A typical cell diameter per image (log-uniform in
  ``diameter``, 8-80 px by default) with a per-cell spread; star-convex shapes with elongation,
  low-order harmonics (bean, kidney, lobed nuclei) and, for whole cells, high-order wobble,
  protrusions and a smooth boundary noise; layouts ``"scattered"``, ``"clustered"`` (groups of
  cells) and ``"confluent"`` (touching cells filling the field, a monolayer). Nuclei are drawn one
  over the other (later on top, slight overlaps); whole cells share the space they compete for
  (each pixel goes to the cell whose shape it lies deepest in), so neighbours touch along curved
  borders. Dividing pairs (two small daughters side by side), mitotic (condensed, bright, rod-like)
  and pyknotic (small, bright) nuclei; debris that is not a cell (bright or dark specks, fibres,
  ghost nuclei from other focal planes, dust rings in transmitted light) is drawn but never
  labelled.
* **Appearance.** Fluorescence nuclei: a dome-shaped profile with chromatin texture (band-pass
  noise), nucleoli (dark spots) and chromocentres (bright spots). Cytoplasm: thickness from the
  distance to the cell edge (so touching cells meet at a darker seam), a perinuclear bulge,
  granular texture, a brighter or darker nucleus, or a membrane stain (bright edges). Transmitted
  light: the cells are phase objects with an optical path from the same thickness plus granules;
  phase contrast shows ``phase - wide_blur(phase)`` (dark cells, bright halo; phase-bright round
  cells; negative contrast now and then), brightfield the defocus contrast of the transport of
  intensity equation (``laplacian(phase)``, either sign) plus weak absorption, or a DIC-like
  shear derivative.
* **Optics and sensor.** Widefield glow (a wide weak PSF tail), Gaussian PSF, labelled cells
  out of focus (extra blur), illumination gradients and vignetting (multiplying the signal),
  autofluorescence background, Poisson photon noise at a drawn photon budget, Gaussian read noise,
  a camera offset, gain, saturation, quantisation to 8, 12 (stored in uint16) or 16 bits, and hot
  pixels.

Every draw comes from one ``numpy.random.Generator`` seeded by ``seed``, in a fixed order, so the
same seed and config give identical arrays. Labels are exact: a pixel belongs to at most one cell
(every label is one 4-connected piece, numbered ``1..n``), and debris, halos and ghosts are
background.

Use :func:`realistic_cells` for one :class:`~lacss_core.data.Sample` (image as float32 holding the
raw camera values; normalise as for real data), :func:`render_scene` for the raw integer image
and the drawn parameters, and :class:`RealisticCells` as a lazy, seeded list of samples for
:class:`~lacss_core.data.LacssDataset`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import fft, ndimage, spatial

from lacss_core.data.samples import Sample, label_to_locations, label_to_mask, relabel_sequential

MODALITIES = ("nuclei", "cytoplasm", "brightfield", "phase")
LAYOUTS = ("scattered", "clustered", "confluent")
BIT_DEPTHS = (8, 12, 16)
# Fraction of the image covered by cells, by modality family and layout (see RealisticConfig).
_COVERAGE = {
    "nuclei": {"scattered": (0.03, 0.25), "clustered": (0.08, 0.35), "confluent": (0.3, 0.55)},
    "cells": {"scattered": (0.08, 0.3), "clustered": (0.2, 0.5), "confluent": (0.55, 0.95)},
}
_LAYOUT_WEIGHTS = {"nuclei": (0.4, 0.35, 0.25), "cells": (0.25, 0.35, 0.4)}
_STYLES = {
    "nuclei": ("nuclei",),
    "cytoplasm": ("cytoplasm", "cytoplasm", "membrane"),
    "brightfield": ("defocus", "defocus", "dic"),
    "phase": ("positive", "positive", "positive", "negative"),
}
_MIN_PIXELS = 12  # smaller remnants of a cell are not labelled (nor drawn)
_MIN_VISIBLE = 0.4  # a cell whose visible part is below this fraction of its shape is dropped
_FAST_BLUR_SIGMA = 4.0  # wider Gaussian blurs run as an FFT on a reflect-padded canvas


@dataclasses.dataclass(frozen=True)
class RealisticConfig:
    """Parameters of :func:`render_scene`. A ``(low, high)`` pair is a range drawn per image
    (uniformly, or log-uniformly where noted); a single number fixes the value.

    Attributes:
        size: ``(H, W)`` pixels, or one int for a square.
        modality: ``"nuclei"``, ``"cytoplasm"``, ``"brightfield"`` or ``"phase"``; a sequence of
            names (drawn uniformly) or a ``{name: weight}`` mapping to mix them.
        diameter: typical cell (or nucleus) diameter of an image in pixels, log-uniform.
        diameter_bias: tilts the draw of ``diameter`` towards large cells: its density in
            ``log(diameter)`` grows as ``diameter ** diameter_bias`` (0: log-uniform; an image
            holds about ``1 / diameter**2`` as many cells, so 2 would show every cell size about
            equally often counted per cell). Training uses it to see large cells more often.
        size_spread: standard deviation of ``log(diameter)`` among the cells of one image.
        style: the look within the modality, or None to draw one: ``"cytoplasm"`` or
            ``"membrane"`` (cytoplasm), ``"defocus"`` or ``"dic"`` (brightfield), ``"positive"``
            or ``"negative"`` (phase).
        layout: ``"scattered"``, ``"clustered"``, ``"confluent"``, or None to draw one
            (nuclei 40/35/25 %, whole cells 25/35/40 %).
        coverage: fraction of the image area the cells are meant to cover; None uses the
            layout's range (nuclei: 3-25 %, 8-35 %, 30-55 %; cells 8-30 %, 20-50 %, 55-95 %).
        max_cells: at most this many cells per image (None: no cap), e.g. the training
            ``max_instances``; small cells then cover less of the image.
        elongation: largest axis ratio of an image's cells (each cell draws up to it).
        irregularity: amplitude of the shape harmonics (0: ellipses).
        dividing: fraction of nuclei drawn as dividing pairs, mitotic or pyknotic nuclei.
        nucleus_channel: add a fluorescent nuclei channel (``C = 2``) to the cytoplasm,
            brightfield and phase modalities, as a DAPI/Hoechst counterstain.
        out_of_focus: fraction of the labelled cells blurred as if out of focus.
        ghosts: unlabelled, strongly defocused cells from other planes, per 256 x 256 px.
        debris: unlabelled specks and fibres per 256 x 256 px.
        blur: Gaussian PSF sigma in pixels.
        photons: expected photons at a typical bright cell pixel (fluorescence) or at the
            background (transmitted light), log-uniform; sets the Poisson noise.
        read_noise: camera read noise, electrons (Gaussian).
        background: fluorescence background (autofluorescence, out-of-focus light) relative to
            the mean cell brightness.
        illumination: strength of the illumination gradient and vignetting (0: flat).
        bit_depth: 8, 12 or 16, or None to draw one (8-bit 40 %, 12-bit 30 %, 16-bit 30 %).
        saturation: fraction of images whose brightest pixels clip at the top of the range.
        hot_pixels: fraction of images with hot pixels.
    """

    size: int | tuple[int, int] = (256, 256)
    modality: str | Sequence[str] | Mapping[str, float] = "nuclei"
    diameter: float | tuple[float, float] = (8.0, 80.0)
    diameter_bias: float = 0.0
    size_spread: float | tuple[float, float] = (0.08, 0.25)
    style: str | None = None
    layout: str | None = None
    coverage: float | tuple[float, float] | None = None
    max_cells: int | None = None
    elongation: float | tuple[float, float] = (1.1, 2.5)
    irregularity: float | tuple[float, float] = (0.02, 0.12)
    dividing: float | tuple[float, float] = (0.0, 0.12)
    nucleus_channel: bool = False
    out_of_focus: float | tuple[float, float] = (0.0, 0.25)
    ghosts: float | tuple[float, float] = (0.0, 4.0)
    debris: float | tuple[float, float] = (0.0, 10.0)
    blur: float | tuple[float, float] = (0.6, 2.0)
    photons: float | tuple[float, float] = (15.0, 3000.0)
    read_noise: float | tuple[float, float] = (0.5, 6.0)
    background: float | tuple[float, float] = (0.0, 0.3)
    illumination: float | tuple[float, float] = (0.0, 0.5)
    bit_depth: int | None = None
    saturation: float = 0.15
    hot_pixels: float = 0.3

    def __post_init__(self):
        _check_config(self)


@dataclasses.dataclass(frozen=True, eq=False)
class Scene:
    """One rendered image with its exact annotation.

    Attributes:
        image: ``(H, W, C)`` raw camera values, ``uint8`` (8-bit) or ``uint16`` (12-bit values
            ``<= 4095``, or 16-bit).
        label: ``(H, W) int32``, 0 = background, cells ``1..n`` (each one 4-connected piece).
        modality: the modality drawn.
        params: the per-image values drawn (diameter, layout, bit depth, photons, ...).
    """

    image: np.ndarray
    label: np.ndarray
    modality: str
    params: dict

    def to_sample(self, name: str = "") -> Sample:
        """The :class:`Sample` (image as float32 of the raw values, label, LOIs, mask)."""
        return Sample(
            self.image,
            label=self.label,
            locations=label_to_locations(self.label),
            mask=label_to_mask(self.label),
            name=name or f"realistic {self.modality}",
        )


def render_scene(seed=0, config: RealisticConfig | None = None, **overrides) -> Scene:
    """Draw and render one image.

    Args:
        seed: int or sequence of ints for ``numpy.random.default_rng``.
        config: a :class:`RealisticConfig` (default: its defaults).
        **overrides: fields of :class:`RealisticConfig` to replace, e.g. ``modality="phase"``.
    Returns:
        a :class:`Scene`.
    """
    config = dataclasses.replace(config or RealisticConfig(), **overrides)
    rng = np.random.default_rng(seed)
    shape = _shape(config.size)
    modality = _draw_modality(rng, config.modality)
    world = _draw_world(rng, config, shape, modality)
    cells = _place_cells(rng, world, shape)
    if world.family == "nuclei":
        label, cells = _stack_label(cells, shape)
    else:
        label, cells = _tessellate_label(rng, cells, shape, world)
    planes = [_render_primary(rng, world, cells, label, shape)]
    if world.nucleus_channel:
        planes.append(_render_counterstain(rng, world, cells, label, shape))
    image = np.stack([_camera(rng, world, p, shape, k) for k, p in enumerate(planes)], axis=-1)
    return Scene(image, label, modality, world.summary(len(cells)))


def realistic_cells(seed=0, config: RealisticConfig | None = None, **overrides) -> Sample:
    """One realistic synthetic :class:`Sample`; arguments as :func:`render_scene`.

    The image holds the raw camera values (e.g. 0-4095 for 12 bits) as float32, like a TIFF
    read from disk; normalise it as for real data (``LacssDataset`` does).
    """
    scene = render_scene(seed, config, **overrides)
    return scene.to_sample(f"realistic {scene.modality} (seed {seed})")


class RealisticCells(Sequence):
    """A lazily generated list of ``n`` realistic samples: item ``i`` uses seed ``(seed, i)``.

    Keyword arguments are fields of :class:`RealisticConfig` (checked now). Use it as the
    ``samples`` of :class:`lacss_core.data.LacssDataset`; nothing is stored, so ``n`` can be
    large (a fresh image per step).
    """

    def __init__(self, n: int, seed: int = 0, **config):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.n, self.seed = int(n), int(seed)
        self.config = RealisticConfig(**config)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} realistic samples")
        return realistic_cells((self.seed, int(i) % self.n), self.config)

    def fingerprint(self) -> dict:
        """What the samples depend on, for the resume record of ``lacss_core.train.train``: the
        images are generated, so a content hash is not needed (it would draw every image)."""
        config = dataclasses.asdict(self.config)
        if config["diameter_bias"] == 0:  # added later: runs recorded before it still resume
            del config["diameter_bias"]
        return {"type": "RealisticCells", "n": self.n, "seed": self.seed, "config": config}


# ============================================================================ config checks
def _shape(size) -> tuple[int, int]:
    return tuple(int(s) for s in size) if np.ndim(size) else (int(size), int(size))


def _check_config(c: RealisticConfig) -> None:
    shape = tuple(c.size) if np.ndim(c.size) else (c.size, c.size)
    if len(shape) != 2 or not all(_is_int(s) and s >= 16 for s in shape):
        raise ValueError(f"size must be an int >= 16 or (H, W) of such ints, got {c.size!r}")
    _modality_weights(c.modality)  # raises on a bad name
    if c.style is not None:
        allowed = {m: _STYLES[m] for m in _modality_weights(c.modality)}
        if any(c.style not in styles for styles in allowed.values()):
            raise ValueError(
                f"style {c.style!r} is not a look of every modality drawn; styles: {allowed}"
            )
    if c.layout is not None and c.layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS} or None, got {c.layout!r}")
    if c.bit_depth is not None and c.bit_depth not in BIT_DEPTHS:
        raise ValueError(f"bit_depth must be one of {BIT_DEPTHS} or None, got {c.bit_depth!r}")
    if c.max_cells is not None and not (_is_int(c.max_cells) and c.max_cells >= 1):
        raise ValueError(f"max_cells must be a positive int or None, got {c.max_cells!r}")
    if c.nucleus_channel and _modality_weights(c.modality).get("nuclei"):
        raise ValueError("nucleus_channel needs a cytoplasm, brightfield or phase modality")
    bias = c.diameter_bias
    if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not -4 <= bias <= 4:
        raise ValueError(f"diameter_bias must be a number in [-4, 4], got {bias!r}")
    limits = {
        "diameter": (4.0, 400.0),
        "size_spread": (0.0, 1.0),
        "coverage": (0.0, 1.0),
        "elongation": (1.0, 6.0),
        "irregularity": (0.0, 0.3),
        "dividing": (0.0, 1.0),
        "out_of_focus": (0.0, 1.0),
        "ghosts": (0.0, 1000.0),
        "debris": (0.0, 1000.0),
        "blur": (0.0, 10.0),
        "photons": (1.0, 1e7),
        "read_noise": (0.0, 1000.0),
        "background": (0.0, 10.0),
        "illumination": (0.0, 0.9),
        "saturation": (0.0, 1.0),
        "hot_pixels": (0.0, 1.0),
    }
    for name, (low, high) in limits.items():
        value = getattr(c, name)
        if value is not None:
            _check_range(name, value, low, high)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_range(name, value, low, high) -> None:
    pair = tuple(value) if np.ndim(value) else (value, value)
    ok = len(pair) == 2 and all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        for v in pair
    )
    if not ok or not low <= pair[0] <= pair[1] <= high:
        raise ValueError(
            f"{name} must be a number or a (low, high) pair with {low} <= low <= high <= {high}, "
            f"got {value!r}"
        )


def _modality_weights(modality) -> dict[str, float]:
    if isinstance(modality, str):
        weights = {modality: 1.0}
    elif isinstance(modality, Mapping):
        weights = {k: float(v) for k, v in modality.items()}
    else:
        weights = {k: 1.0 for k in modality}
    unknown = sorted(set(weights) - set(MODALITIES))
    if unknown or not weights:
        raise ValueError(f"modality must be among {MODALITIES} or a mix of them, got {modality!r}")
    if any(not w >= 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"modality weights must be >= 0 with a positive sum, got {modality!r}")
    return weights


# ============================================================================ per-image draws
def _draw(rng, spec, log: bool = False) -> float:
    """One value of a ``(low, high)`` range (log-uniform if ``log``) or the fixed number."""
    if not np.ndim(spec):
        return float(spec)
    low, high = (float(v) for v in spec)
    if high <= low:
        return low
    if log:
        return float(np.exp(rng.uniform(np.log(low), np.log(high))))
    return float(rng.uniform(low, high))


def _draw_diameter(rng, spec, bias: float) -> float:
    """An image's diameter: log-uniform over ``spec`` tilted by ``diameter ** bias`` (one
    uniform draw either way, so the rest of the image's draws do not depend on ``bias``)."""
    if bias == 0 or not np.ndim(spec) or float(spec[1]) <= float(spec[0]):
        return _draw(rng, spec, log=True)
    low, high = (float(v) ** bias for v in spec)  # the CDF in d**bias is uniform
    return float((low + rng.uniform() * (high - low)) ** (1.0 / bias))


def _draw_modality(rng, modality) -> str:
    weights = _modality_weights(modality)
    names = sorted(weights)
    p = np.array([weights[k] for k in names])
    return names[int(rng.choice(len(names), p=p / p.sum()))]


@dataclasses.dataclass
class _World:
    """Everything drawn once per image."""

    modality: str
    family: str  # "nuclei" (one over the other) or "cells" (tessellated whole cells)
    layout: str
    diameter: float
    spread: float
    coverage: float
    max_cells: int | None
    elongation: float
    irregularity: float
    dividing: float
    nucleus_channel: bool
    out_of_focus: float
    ghosts: float
    debris: float
    blur: float
    photons: float
    read_noise: float
    background: float
    illumination: float
    bit_depth: int
    saturated: bool
    hot_pixels: bool
    style: str  # appearance variant within the modality

    def summary(self, n_cells: int) -> dict:
        out = dataclasses.asdict(self)
        out["cells"] = n_cells
        return out


def _draw_world(rng, c: RealisticConfig, shape, modality: str) -> _World:
    family = "nuclei" if modality == "nuclei" else "cells"
    layout = c.layout or LAYOUTS[int(rng.choice(3, p=_LAYOUT_WEIGHTS[family]))]
    coverage = c.coverage if c.coverage is not None else _COVERAGE[family][layout]
    transmitted = modality in ("brightfield", "phase")
    photons = c.photons
    if transmitted and c.photons == RealisticConfig.photons:
        photons = (1000.0, 50000.0)  # transmitted light is bright: the background's photon count
    bit_depth = c.bit_depth or BIT_DEPTHS[int(rng.choice(3, p=(0.4, 0.3, 0.3)))]
    irregularity = _draw(rng, c.irregularity)
    if family == "cells":
        irregularity *= 3.0  # whole cells are far less regular than nuclei
    return _World(
        modality=modality,
        family=family,
        layout=layout,
        diameter=_draw_diameter(rng, c.diameter, c.diameter_bias),
        spread=_draw(rng, c.size_spread),
        coverage=_draw(rng, coverage),
        max_cells=c.max_cells,
        elongation=_draw(rng, c.elongation) * (1.3 if family == "cells" else 1.0),
        irregularity=irregularity,
        dividing=_draw(rng, c.dividing),
        nucleus_channel=c.nucleus_channel,
        out_of_focus=_draw(rng, c.out_of_focus),
        ghosts=_draw(rng, c.ghosts),
        debris=_draw(rng, c.debris),
        blur=_draw(rng, c.blur),
        photons=_draw(rng, photons, log=True),
        read_noise=_draw(rng, c.read_noise),
        background=_draw(rng, c.background),
        illumination=_draw(rng, c.illumination),
        bit_depth=int(bit_depth),
        saturated=bool(rng.uniform() < c.saturation) and not transmitted,
        hot_pixels=bool(rng.uniform() < c.hot_pixels),
        style=c.style or str(rng.choice(_STYLES[modality])),
    )


# ============================================================================ cell geometry
@dataclasses.dataclass
class _Cell:
    """One cell (or nucleus) shape: ``rho(y, x) <= 1`` inside (see ``_rho``)."""

    center: tuple[float, float]
    radius: float  # mean radius, pixels
    elongation: float
    angle: float
    harmonics: np.ndarray  # (K, 3): order, amplitude, phase of the edge's Fourier terms
    bumps: np.ndarray  # (P, 3): direction, height, sharpness of protrusions
    kind: str = "interphase"  # or "daughter", "mitotic", "pyknotic"
    brightness: float = 1.0
    defocus: float = 0.0  # extra blur sigma, pixels
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # (y0, y1, x0, x1) in the image
    rho: np.ndarray | None = None  # normalised radius inside box
    nucleus: _Cell | None = None  # whole cells: their nucleus

    def reach(self) -> float:
        """An upper bound of the distance from the centre to the edge, pixels: the largest
        edge factor on 90 directions (the edge is smooth), a little enlarged."""
        phi = np.linspace(0, 2 * np.pi, 90, endpoint=False)
        edge = np.ones_like(phi)
        for order, amplitude, phase in self.harmonics:
            edge += amplitude * np.cos(order * phi + phase)
        for direction, height, sharpness in self.bumps:
            edge += height * np.exp(sharpness * (np.cos(phi - direction) - 1.0))
        return self.radius * math.sqrt(self.elongation) * 1.05 * float(edge.max()) + 2.0


def _random_shape(rng, world: _World, center, radius, kind="interphase") -> _Cell:
    """A cell of the image's shape family at ``center`` with mean radius ``radius``."""
    cells = world.family == "cells"
    elongation = 1.0 + (world.elongation - 1.0) * rng.uniform() ** 1.5
    if kind == "mitotic":
        elongation, radius = rng.uniform(2.0, 3.5), radius * 0.6
    elif kind == "pyknotic":
        elongation, radius = rng.uniform(1.0, 1.3), radius * rng.uniform(0.3, 0.5)
    elif kind == "daughter":
        elongation = rng.uniform(1.1, 1.6)
    orders = np.arange(2, 9 if cells else 6)
    amplitude = world.irregularity * rng.normal(size=orders.size) / orders**0.9
    if not cells and rng.uniform() < 0.15:  # bean / kidney / lobed nucleus
        amplitude[:2] += rng.uniform(0.08, 0.2, 2) * rng.choice([-1, 1], 2)
    amplitude = np.clip(amplitude, -0.3, 0.3)
    harmonics = np.stack([orders, amplitude, rng.uniform(0, 2 * np.pi, orders.size)], axis=1)
    n_bumps = int(rng.poisson(1.5)) if cells else 0
    bumps = np.stack(
        [rng.uniform(0, 2 * np.pi, n_bumps), rng.uniform(0.1, 0.7, n_bumps),
         rng.uniform(3.0, 20.0, n_bumps)], axis=1,
    ).reshape(-1, 3)  # fmt: skip
    return _Cell(
        center=(float(center[0]), float(center[1])),
        radius=float(radius),
        elongation=float(elongation),
        angle=float(rng.uniform(0, np.pi)),
        harmonics=harmonics,
        bumps=bumps,
        kind=kind,
    )


def _compute_rho(cell: _Cell, shape, boundary_noise=None) -> None:
    """Set ``cell.box`` and ``cell.rho``: the pixel's distance from the centre over the edge's
    distance in that direction (``<= 1`` inside), optionally roughened by a noise field."""
    reach = cell.reach()
    cy, cx = cell.center
    y0, y1 = max(0, int(cy - reach)), min(shape[0], int(cy + reach) + 2)
    x0, x1 = max(0, int(cx - reach)), min(shape[1], int(cx + reach) + 2)
    y1, x1 = max(y0, y1), max(x0, x1)  # a cell wholly outside gets an empty box
    cell.box = (y0, y1, x0, x1)
    if y1 == y0 or x1 == x0:
        cell.rho = np.full((y1 - y0, x1 - x0), np.inf, np.float32)
        return
    dy = (np.arange(y0, y1, dtype=np.float32) - cy)[:, None]
    dx = (np.arange(x0, x1, dtype=np.float32) - cx)[None, :]
    cos, sin = math.cos(cell.angle), math.sin(cell.angle)
    stretch = math.sqrt(cell.elongation)
    u = (dy * cos + dx * sin) / (cell.radius * stretch)
    v = (dx * cos - dy * sin) / (cell.radius / stretch)
    r = np.sqrt(u * u + v * v)
    # cos(k phi + p) = Re(z**k e^{ip}) with z = e^{i phi}: no arctan2, one product per order
    z = (u + 1j * v) / np.maximum(r, 1e-6)
    edge = np.ones_like(r)
    power, order = np.ones_like(z), 0
    for k, amplitude, phase in cell.harmonics:
        while order < k:
            power, order = power * z, order + 1
        edge += amplitude * (power.real * math.cos(phase) - power.imag * math.sin(phase))
    for direction, height, sharpness in cell.bumps:
        cos_delta = z.real * math.cos(direction) + z.imag * math.sin(direction)
        edge += height * np.exp(sharpness * (cos_delta - 1.0))
    rho = r / np.maximum(edge, 0.2)
    if boundary_noise is not None:
        rho *= 1.0 + boundary_noise[y0:y1, x0:x1]
    cell.rho = rho.astype(np.float32)


def _target_count(world: _World, shape) -> int:
    mean_area = math.pi * (world.diameter / 2) ** 2 * math.exp(2 * world.spread**2)
    n = int(round(world.coverage * shape[0] * shape[1] / mean_area))
    if world.max_cells is not None:
        n = min(n, world.max_cells)
    return max(n, 1)


def _candidates(rng, world: _World, shape, n: int, count: int) -> np.ndarray:
    """``(count, 2)`` candidate centres for ``n`` cells in the layout (some fall a little
    outside the image, so cells are cut by its edge)."""
    size = np.array(shape, float)
    margin = 0.3 * world.diameter
    if world.layout != "clustered":
        return rng.uniform(0, 1, (count, 2)) * (size + 2 * margin) - margin
    n_clusters = 1 + int(rng.poisson(n**0.5 / 3))
    centres = rng.uniform(0, 1, (n_clusters, 2)) * size
    # a cluster of m cells packed at about half density spans about diameter * sqrt(m)
    spread = world.diameter * np.sqrt(n / n_clusters) * rng.uniform(0.4, 0.9, n_clusters)
    which = rng.integers(0, n_clusters, count)
    return centres[which] + rng.normal(size=(count, 2)) * spread[which, None]


def _greedy_spacing(points, radii, spacing) -> np.ndarray:
    """Indices of points kept in order, each at least ``spacing * (r_i + r_j)`` from every kept
    earlier one (random sequential adsorption with a k-d tree)."""
    if len(points) == 0:
        return np.zeros(0, int)
    tree = spatial.cKDTree(points)
    pairs = tree.query_pairs(2 * spacing * radii.max(), output_type="ndarray")
    if len(pairs):
        d = np.linalg.norm(points[pairs[:, 0]] - points[pairs[:, 1]], axis=1)
        pairs = pairs[d < spacing * (radii[pairs[:, 0]] + radii[pairs[:, 1]])]
    later = np.maximum(pairs[:, 0], pairs[:, 1]) if len(pairs) else np.zeros(0, int)
    earlier = np.minimum(pairs[:, 0], pairs[:, 1]) if len(pairs) else np.zeros(0, int)
    order = np.argsort(later, kind="stable")
    later, earlier = later[order], earlier[order]
    starts = np.searchsorted(later, np.arange(len(points) + 1))
    kept = np.zeros(len(points), bool)
    for i in range(len(points)):
        conflicts = earlier[starts[i] : starts[i + 1]]
        kept[i] = not kept[conflicts].any()
    return np.flatnonzero(kept)


def _place_cells(rng, world: _World, shape) -> list[_Cell]:
    """Draw the cells' centres, sizes and shapes (and their nuclei, for whole cells)."""
    n = _target_count(world, shape)
    pool = 8 * n + 16
    points = _candidates(rng, world, shape, n, pool)
    radii = world.diameter / 2 * np.exp(world.spread * rng.normal(size=pool))
    radii = np.clip(radii, 3.0, None)
    if world.family == "nuclei":
        spacing = {"scattered": 1.05, "clustered": 0.85, "confluent": 0.75}[world.layout]
    else:
        spacing = {"scattered": 0.75, "clustered": 0.6, "confluent": 0.5}[world.layout]
    kept = _greedy_spacing(points, radii, spacing * rng.uniform(0.9, 1.1))[:n]
    cells = []
    for i in kept:
        if world.family == "nuclei" and rng.uniform() < world.dividing:
            cells.extend(_special_nuclei(rng, world, points[i], radii[i]))
        else:
            cells.append(_random_shape(rng, world, points[i], radii[i]))
    cells = cells[: world.max_cells]  # a dividing pair counts two
    _assign_appearance(rng, world, cells)
    return cells


def _special_nuclei(rng, world, center, radius) -> list[_Cell]:
    """A dividing pair (two daughters side by side), or one mitotic or pyknotic nucleus."""
    kind = rng.choice(["pair", "mitotic", "pyknotic"], p=[0.5, 0.25, 0.25])
    if kind != "pair":
        return [_random_shape(rng, world, center, radius, kind=str(kind))]
    angle = rng.uniform(0, np.pi)
    r = radius * rng.uniform(0.6, 0.75)
    offset = r * rng.uniform(1.0, 1.4) * np.array([math.sin(angle), math.cos(angle)])
    pair = []
    for sign in (-1, 1):
        daughter = _random_shape(rng, world, center + sign * offset, r, kind="daughter")
        daughter.angle = angle + np.pi / 2 + rng.normal(0, 0.2)  # long axes parallel
        pair.append(daughter)
    return pair


def _assign_appearance(rng, world: _World, cells) -> None:
    """Per-cell brightness (log-normal, brighter when condensed) and defocus blur."""
    spread = rng.uniform(0.1, 0.4)
    for cell in cells:
        cell.brightness = float(np.exp(rng.normal(0, spread)))
        if cell.kind in ("mitotic", "pyknotic"):
            cell.brightness *= rng.uniform(1.5, 2.5)
        elif cell.kind == "daughter":
            cell.brightness *= rng.uniform(1.1, 1.6)
        if rng.uniform() < world.out_of_focus:
            cell.defocus = float(rng.uniform(1.0, 1.0 + 0.12 * world.diameter))


# ============================================================================ exact labels
def _stack_label(cells, shape):
    """Nuclei painted in order (later on top); mostly hidden ones and remnants dropped."""
    for cell in cells:
        _compute_rho(cell, shape)
    label = _paint(cells, shape)
    keep = _visible(label, cells)
    cells = [c for c, k in zip(cells, keep, strict=True) if k]
    return _finish_label(_paint(cells, shape), cells)


def _paint(cells, shape) -> np.ndarray:
    label = np.zeros(shape, np.int32)
    for k, cell in enumerate(cells):
        y0, y1, x0, x1 = cell.box
        label[y0:y1, x0:x1][cell.rho <= 1] = k + 1
    return label


def _visible(label, cells) -> np.ndarray:
    visible = np.bincount(label.ravel(), minlength=len(cells) + 1)[1:]
    area = np.array([np.count_nonzero(c.rho <= 1) for c in cells])
    return (visible >= _MIN_VISIBLE * np.maximum(area, 1)) & (visible >= _MIN_PIXELS)


def _tessellate_label(rng, cells, shape, world: _World):
    """Whole cells: each pixel goes to the cell it lies deepest in (smallest ``rho <= 1``), so
    cells that reach each other share a curved border; squeezed-out cells are dropped."""
    noise = 0.08 * world.irregularity * _smooth_noise(rng, shape, 0.15 * world.diameter)
    for cell in cells:
        _compute_rho(cell, shape, noise)
    label = _compete(cells, shape)
    keep = _visible(label, cells)
    cells = [c for c, k in zip(cells, keep, strict=True) if k]
    return _finish_label(_compete(cells, shape), cells)


def _compete(cells, shape) -> np.ndarray:
    best = np.full(shape, 1.0, np.float32)
    label = np.zeros(shape, np.int32)
    for k, cell in enumerate(cells):
        y0, y1, x0, x1 = cell.box
        win = cell.rho <= best[y0:y1, x0:x1]
        best[y0:y1, x0:x1][win] = cell.rho[win]
        label[y0:y1, x0:x1][win] = k + 1
    return label


def _finish_label(label, cells):
    """Keep each cell's largest 4-connected piece; drop remnants; renumber ``1..n``."""
    boxes = ndimage.find_objects(label, max_label=len(cells))
    kept = np.zeros(len(cells) + 1, bool)
    for k, box in enumerate(boxes, start=1):
        if box is None:
            continue
        own = label[box] == k
        pieces, count = ndimage.label(own)
        if count > 1:
            sizes = np.bincount(pieces.ravel())[1:]
            label[box][own & (pieces != 1 + int(np.argmax(sizes)))] = 0
            own = label[box] == k
        kept[k] = np.count_nonzero(own) >= _MIN_PIXELS
    label[~kept[label]] = 0
    cells = [c for k, c in enumerate(cells, start=1) if kept[k]]
    return relabel_sequential(label), cells


# ============================================================================ noise fields
def _blur(image, sigma):
    """Gaussian blur, reflect boundary; wide kernels by FFT on a reflect-padded canvas."""
    if sigma <= 0:
        return image
    if sigma < _FAST_BLUR_SIGMA:
        return ndimage.gaussian_filter(image, sigma, mode="reflect", truncate=3.0)
    pad = int(3 * sigma) + 1
    pad = min(pad, min(image.shape) - 1)
    padded = np.pad(image, pad, mode="reflect" if pad else "edge")
    h, w = (fft.next_fast_len(s, real=True) for s in padded.shape)
    spectrum = fft.rfft2(padded, s=(h, w), workers=1)
    fy = fft.fftfreq(h)[:, None]
    fx = fft.rfftfreq(w)[None, :]
    spectrum *= np.exp(-2 * (np.pi * sigma) ** 2 * (fy * fy + fx * fx))
    out = fft.irfft2(spectrum, s=(h, w), workers=1)
    return out[pad : pad + image.shape[0], pad : pad + image.shape[1]].astype(image.dtype)


def _smooth_noise(rng, shape, sigma) -> np.ndarray:
    """Gaussian random field of unit standard deviation and correlation length ``sigma``;
    wide fields are drawn on a coarse grid and interpolated (they have no fine detail)."""
    step = max(1, int(sigma / 3))
    coarse = tuple(-(-s // step) + 2 for s in shape)
    field = _blur(rng.normal(size=coarse).astype(np.float32), max(sigma / step, 0.5))
    if step > 1:
        field = ndimage.zoom(field, step, order=1, grid_mode=False)
    field = field[: shape[0], : shape[1]]
    return field / (field.std() + 1e-12)


def _bandpass_noise(rng, shape, sigma) -> np.ndarray:
    """Unit-variance texture with features about ``2 * sigma`` pixels across."""
    white = rng.normal(size=shape).astype(np.float32)
    field = _blur(white, sigma) - _blur(white, 3 * sigma)
    return field / (field.std() + 1e-12)


def _spots(rng, shape, mask, density, radius) -> np.ndarray:
    """Gaussian spots of width ``radius`` at random pixels of ``mask`` (about ``density`` per
    mask pixel), peak about 1."""
    where = np.flatnonzero(mask)
    plane = np.zeros(shape[0] * shape[1], np.float32)
    count = int(rng.poisson(density * where.size))
    if count and where.size:
        np.add.at(plane, rng.choice(where, count), rng.uniform(0.5, 1.0, count))
    plane = plane.reshape(shape)
    return _blur(plane, radius) * (2 * np.pi * radius * radius)


# ============================================================================ rendering
def _cell_maps(cells, label):
    """Per-pixel lookups of cell properties via the label: ``value[label]``."""
    radius = np.array([1.0] + [c.radius for c in cells], np.float32)
    brightness = np.array([0.0] + [c.brightness for c in cells], np.float32)
    return radius[label], brightness[label]


def _render_primary(rng, world: _World, cells, label, shape) -> np.ndarray:
    if world.modality == "nuclei":
        plane = _render_nuclei(rng, world, cells, shape)
        return plane + _fluorescent_debris(rng, world, label, shape)
    thickness = _thickness(rng, cells, label, world)
    if world.modality == "cytoplasm":
        plane = _render_cytoplasm(rng, world, cells, label, thickness, shape)
        return plane + _fluorescent_debris(rng, world, label, shape)
    return _render_transmitted(rng, world, cells, label, thickness, shape)


def _nucleus_profile(cell: _Cell, rho, rng) -> np.ndarray:
    """Intensity of one nucleus in its box: flat-to-dome profile with an anti-aliased edge."""
    edge = np.clip((1.0 - rho) * cell.radius + 0.5, 0.0, 1.0)
    dome = np.sqrt(np.clip(1.0 - rho * rho, 0.0, 1.0))
    w = rng.uniform(0.2, 0.9)
    return cell.brightness * edge * (1.0 - w + w * dome)


def _render_nuclei(rng, world: _World, cells, shape, *, with_ghosts=True) -> np.ndarray:
    """Fluorescent nuclei (sums where they overlap), chromatin texture, nucleoli, ghosts."""
    sharp = np.zeros(shape, np.float32)
    soft = np.zeros(shape, np.float32)
    for cell in cells:
        y0, y1, x0, x1 = cell.box
        target = soft if cell.defocus > 0 else sharp
        target[y0:y1, x0:x1] += _nucleus_profile(cell, cell.rho, rng)
    inside = sharp + soft > 0
    grain = max(0.6, world.diameter / 14)
    texture = rng.uniform(0.1, 0.45) * _bandpass_noise(rng, shape, grain)
    nucleoli = -rng.uniform(0.0, 0.6) * _spots(
        rng, shape, inside, rng.uniform(0, 3) / world.diameter**2, world.diameter / 14
    )
    centres = rng.uniform(0.0, 0.5) * _spots(
        rng, shape, inside, rng.uniform(0, 8) / world.diameter**2, max(0.7, world.diameter / 25)
    )
    modulation = np.clip(1.0 + texture + nucleoli + centres, 0.2, None)
    plane = sharp * modulation + _defocus(soft * modulation, cells)
    if with_ghosts:
        plane += _ghosts(rng, world, shape)
    return plane


def _defocus(plane, cells) -> np.ndarray:
    sigmas = [c.defocus for c in cells if c.defocus > 0]
    return _blur(plane, float(np.mean(sigmas))) if sigmas else plane


def _ghosts(rng, world: _World, shape) -> np.ndarray:
    """Unlabelled nuclei far out of focus: dim, wide blurs."""
    count = int(rng.poisson(world.ghosts * shape[0] * shape[1] / 256**2))
    plane = np.zeros(shape, np.float32)
    for _ in range(count):
        center = rng.uniform(0, 1, 2) * shape
        ghost = _random_shape(rng, world, center, world.diameter / 2 * rng.uniform(0.8, 1.3))
        ghost.brightness = rng.uniform(0.1, 0.35)
        _compute_rho(ghost, shape)
        y0, y1, x0, x1 = ghost.box
        plane[y0:y1, x0:x1] += _nucleus_profile(ghost, ghost.rho, rng)
    return _blur(plane, rng.uniform(0.3, 0.6) * world.diameter) if count else plane


def _boundary(label) -> np.ndarray:
    """``bool (H, W)``: pixels with a 4-neighbour of another label (background included)."""
    edge = np.zeros(label.shape, bool)
    edge[:-1] |= label[:-1] != label[1:]
    edge[1:] |= label[1:] != label[:-1]
    edge[:, :-1] |= label[:, :-1] != label[:, 1:]
    edge[:, 1:] |= label[:, 1:] != label[:, :-1]
    return edge


def _thickness(rng, cells, label, world: _World) -> np.ndarray:
    """Cell height in [0, ~1.5]: rises with the distance to the cell's edge (over a drawn
    fraction of its radius) and bulges over the nucleus."""
    inside = label > 0
    distance = ndimage.distance_transform_edt(inside & ~_boundary(label)).astype(np.float32)
    radius, _ = _cell_maps(cells, label)
    flatness = rng.uniform(0.1, 0.5)
    height = np.where(inside, 1.0 - np.exp(-distance / (flatness * radius)), 0.0)
    nuclei = _nucleus_shapes(rng, cells, label, world)
    return (height + rng.uniform(0.1, 0.6) * nuclei).astype(np.float32)


def _nucleus_shapes(rng, cells, label, world: _World) -> np.ndarray:
    """Each whole cell's nucleus profile (``float (H, W)``, 0 outside), inside its own cell."""
    plane = np.zeros(label.shape, np.float32)
    for k, cell in enumerate(cells, start=1):
        if cell.nucleus is None:
            shift = rng.normal(0, 0.15 * cell.radius, 2)
            radius = min(cell.radius, cell.radius / math.sqrt(cell.elongation) * 1.2) * rng.uniform(
                0.35, 0.55
            )
            nucleus = _random_shape(rng, dataclasses.replace(world, family="nuclei",
                                    irregularity=0.05, elongation=1.4),
                                    np.array(cell.center) + shift, max(radius, 2.0))  # fmt: skip
            nucleus.brightness = float(np.exp(rng.normal(0, 0.3)))
            _compute_rho(nucleus, label.shape)
            cell.nucleus = nucleus
        nucleus = cell.nucleus
        y0, y1, x0, x1 = nucleus.box
        profile = np.sqrt(np.clip(1.0 - nucleus.rho**2, 0.0, 1.0))
        plane[y0:y1, x0:x1] += profile * (label[y0:y1, x0:x1] == k)
    return plane


def _render_cytoplasm(rng, world: _World, cells, label, thickness, shape) -> np.ndarray:
    """Whole-cell fluorescence: cytoplasmic (thickness x texture, nucleus brighter or darker)
    or membrane (bright edges, dim interior)."""
    inside = label > 0
    _, brightness = _cell_maps(cells, label)
    grain = max(0.7, world.diameter / 20)
    texture = 1.0 + rng.uniform(0.1, 0.4) * _bandpass_noise(rng, shape, grain)
    granules = rng.uniform(0.0, 0.8) * _spots(
        rng, shape, inside, rng.uniform(0, 20) / world.diameter**2, max(0.7, world.diameter / 30)
    )
    nuclei = _nucleus_shapes(rng, cells, label, world) > 0.05
    nucleus_gain = rng.choice([rng.uniform(0.3, 0.8), rng.uniform(1.0, 1.4)])
    if world.style == "membrane":
        distance = ndimage.distance_transform_edt(inside & ~_boundary(label))
        rim = np.exp(-distance / rng.uniform(0.8, 2.0)).astype(np.float32)
        body = rim + rng.uniform(0.05, 0.3) * (thickness > 0)
    else:
        body = thickness * np.where(nuclei, nucleus_gain, 1.0)
    plane = np.where(inside, brightness * body * np.clip(texture + granules, 0.2, None), 0.0)
    plane = plane.astype(np.float32)
    return _defocus_cells(plane, cells, label) + _ghosts(rng, world, shape)


def _defocus_cells(plane, cells, label) -> np.ndarray:
    """Replace the defocused cells' pixels by a blurred copy of their own light."""
    defocused = np.array([False] + [c.defocus > 0 for c in cells])
    if not defocused.any():
        return plane
    own = defocused[label]
    blurred = _blur(np.where(own, plane, 0.0).astype(np.float32), np.mean(
        [c.defocus for c in cells if c.defocus > 0]))  # fmt: skip
    return np.where(own, 0.0, plane) + blurred


def _render_counterstain(rng, world: _World, cells, label, shape) -> np.ndarray:
    """The nuclei channel of whole cells: their nuclei, fluorescent, clipped to their cell."""
    nuclei = []
    for k, cell in enumerate(cells, start=1):
        nucleus = cell.nucleus
        y0, y1, x0, x1 = nucleus.box
        clipped = dataclasses.replace(nucleus)
        clipped.rho = np.where(label[y0:y1, x0:x1] == k, nucleus.rho, np.inf)
        clipped.defocus = cell.defocus
        nuclei.append(clipped)
    return _render_nuclei(rng, world, nuclei, shape, with_ghosts=False)


def _render_transmitted(rng, world: _World, cells, label, thickness, shape) -> np.ndarray:
    """Brightfield, DIC or phase contrast of the cells as phase objects (relative intensity,
    background about 1)."""
    inside = label > 0
    granules = _spots(rng, shape, inside, rng.uniform(0, 30) / world.diameter**2,
                      max(0.7, world.diameter / 25))  # fmt: skip
    _, brightness = _cell_maps(cells, label)
    optical_path = brightness * (thickness + rng.uniform(-0.4, 0.4) * granules)
    optical_path += 0.6 * _fibres(rng, world, label, shape, width=0.7)
    optical_path = _defocus_cells(optical_path.astype(np.float32), cells, label)
    absorption = rng.uniform(0.0, 0.15) * optical_path
    if world.modality == "phase":
        contrast = _phase_contrast(rng, world, cells, label, optical_path)
    elif world.style == "dic":
        angle = rng.uniform(0, 2 * np.pi)
        smooth = _blur(optical_path, 1.0)
        gy, gx = np.gradient(smooth)
        contrast = gy * math.sin(angle) + gx * math.cos(angle)
    else:  # defocused brightfield: transport of intensity, I ~ 1 - dz * laplacian(phase)
        dz = rng.choice([-1, 1])  # the focus lies above or below the cells
        contrast = -dz * ndimage.laplace(_blur(optical_path, rng.uniform(1.0, 3.0)))
    # the drawn contrast: the strongest 1 % of the cells' signal reaches 6-60 % of the background
    strength = rng.uniform(0.1, 0.6) if world.modality == "phase" else rng.uniform(0.06, 0.4)
    near = ndimage.binary_dilation(inside, iterations=3)
    if near.any():
        contrast *= strength / (float(np.percentile(np.abs(contrast[near]), 99)) + 1e-6)
    image = (1.0 - absorption) * (1.0 + contrast) * _dust_rings(rng, world, shape)
    return np.clip(image + _dark_specks(rng, world, label, shape), 0.02, None).astype(np.float32)


def _phase_contrast(rng, world, cells, label, optical_path) -> np.ndarray:
    """Zernike phase contrast with its halo: ``-(phase - wide_blur(phase))``, and phase-bright
    (rounded, thick) cells with the opposite sign; negative phase contrast flips it all."""
    bright = np.array([False] + [rng.uniform() < 0.1 for _ in cells])[label]
    halo = rng.uniform(2.0, 8.0) + rng.uniform(0.0, 0.1) * world.diameter
    signed = np.where(bright, -1.5 * optical_path, optical_path)
    contrast = _blur(signed, halo) - signed
    return -contrast if world.style == "negative" else contrast


def _fibres(rng, world: _World, label, shape, width: float) -> np.ndarray:
    """Unlabelled fibres (curved lines) outside the cells, peak about 1."""
    count = int(rng.poisson(world.debris * 0.08 * shape[0] * shape[1] / 256**2))
    plane = np.zeros(shape, np.float32)
    for _ in range(count):
        length = rng.uniform(15, 120)
        steps = int(2 * length)
        angle = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.08, steps))
        y = rng.uniform(0, shape[0]) + np.cumsum(0.5 * np.sin(angle))
        x = rng.uniform(0, shape[1]) + np.cumsum(0.5 * np.cos(angle))
        ok = (y >= 0) & (y < shape[0] - 0.5) & (x >= 0) & (x < shape[1] - 0.5)
        np.add.at(plane, (np.round(y[ok]).astype(int), np.round(x[ok]).astype(int)), 0.5)
    if count:  # widen the lines, then keep them off the cells (the PSF blurs them later)
        plane = _blur(np.minimum(plane, 1.0), width) * (2.5 * width)
    return plane * (label == 0)


def _speck_plane(rng, world: _World, label, shape, rate) -> np.ndarray:
    """Small unlabelled discs (dust, crystals, apoptotic bits) outside the cells."""
    count = int(rng.poisson(rate * shape[0] * shape[1] / 256**2))
    plane = np.zeros(shape, np.float32)
    largest = max(0.8, min(3.0, 0.12 * world.diameter))
    for _ in range(count):
        r = rng.uniform(0.5, largest)
        cy, cx = rng.uniform(0, 1, 2) * shape
        y0, y1 = max(0, int(cy - r - 1)), min(shape[0], int(cy + r) + 2)
        x0, x1 = max(0, int(cx - r - 1)), min(shape[1], int(cx + r) + 2)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        disc = np.clip(r + 0.5 - np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2), 0, 1)
        plane[y0:y1, x0:x1] += rng.uniform(0.3, 2.0) * disc
    return plane * (label == 0)


def _fluorescent_debris(rng, world: _World, label, shape) -> np.ndarray:
    specks = _speck_plane(rng, world, label, shape, 0.75 * world.debris)
    return specks + rng.uniform(0.2, 1.0) * _fibres(rng, world, label, shape, width=0.6)


def _dark_specks(rng, world: _World, label, shape) -> np.ndarray:
    return -0.5 * _speck_plane(rng, world, label, shape, 0.75 * world.debris)


def _dust_rings(rng, world: _World, shape) -> np.ndarray:
    """Transmitted light: out-of-focus dust on the optics, faint concentric rings (multiplier)."""
    out = np.ones(shape, np.float32)
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    for _ in range(int(rng.poisson(0.5 + 0.1 * world.debris))):
        cy, cx = rng.uniform(0, 1, 2) * shape
        radius, width = rng.uniform(8, 45), rng.uniform(1.5, 5.0)
        r = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        ring = np.exp(-(((r - radius) / width) ** 2)) - 0.5 * np.exp(-((r / radius) ** 2))
        out += rng.uniform(0.01, 0.06) * ring.astype(np.float32)
    return out


# ============================================================================ optics + camera
def _illumination(rng, world: _World, shape) -> np.ndarray:
    """Multiplicative field: a linear gradient, off-centre vignetting and a smooth ripple."""
    y = np.linspace(-1, 1, shape[0], dtype=np.float32)[:, None]
    x = np.linspace(-1, 1, shape[1], dtype=np.float32)[None, :]
    s = world.illumination
    angle = rng.uniform(0, 2 * np.pi)
    gradient = 1.0 + s * rng.uniform(0, 0.6) * (y * math.sin(angle) + x * math.cos(angle))
    cy, cx = rng.uniform(-0.5, 0.5, 2)
    vignette = 1.0 - s * rng.uniform(0, 0.8) * ((y - cy) ** 2 + (x - cx) ** 2) / 2
    ripple = 1.0 + 0.1 * s * _smooth_noise(rng, shape, max(shape) / 6)
    return np.clip(gradient * vignette * ripple, 0.05, None)


def _camera(rng, world: _World, plane, shape, channel: int) -> np.ndarray:
    """Optics and sensor: glow, PSF, illumination, background, photon and read noise, offset,
    gain, saturation, quantisation, hot pixels. ``plane``: relative signal (cells about 1)."""
    transmitted = world.modality in ("brightfield", "phase") and channel == 0
    if not transmitted:  # widefield glow: a weak, wide tail of the PSF
        plane = plane + rng.uniform(0, 0.15) * _blur(plane, rng.uniform(4, 12))
    signal = _blur(plane.astype(np.float32), world.blur) * _illumination(rng, world, shape)
    if transmitted:
        expected = world.photons * signal
        typical = world.photons
    else:
        scale = world.photons / max(float(np.percentile(plane[plane > 0], 90)), 1e-3) if np.any(
            plane > 0) else world.photons  # fmt: skip
        background = world.background * (1 + 0.3 * _smooth_noise(rng, shape, max(shape) / 4))
        expected = scale * np.clip(signal + background, 0, None)
        typical = world.photons
    electrons = rng.poisson(np.clip(expected, 0, 1e9)).astype(np.float32)
    electrons += rng.normal(0, world.read_noise, shape).astype(np.float32)
    top = 2**world.bit_depth - 1
    offset = rng.uniform(0, 0.08) * top if rng.uniform() < 0.6 else 0.0
    peak = float(np.percentile(electrons, 99.9))
    fill = rng.uniform(1.0, 1.5) if world.saturated else rng.uniform(0.15, 0.95)
    gain = fill * (top - offset) / max(peak, typical * 0.05, 1.0)
    adu = np.round(offset + gain * electrons)
    if world.hot_pixels:
        count = int(rng.poisson(shape[0] * shape[1] * rng.uniform(2e-5, 4e-4)))
        where = rng.integers(0, shape[0] * shape[1], count)
        adu.reshape(-1)[where] = offset + rng.uniform(0.3, 1.0, count) * (top - offset)
    dtype = np.uint8 if world.bit_depth == 8 else np.uint16
    return np.clip(adu, 0, top).astype(dtype)


__all__ = [
    "BIT_DEPTHS",
    "LAYOUTS",
    "MODALITIES",
    "RealisticCells",
    "RealisticConfig",
    "Scene",
    "realistic_cells",
    "render_scene",
]
