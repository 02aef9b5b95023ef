"""Which axes of an array are the image plane, the channels and a stack: one rule for everything.

LACSS segments 2-D images ``(H, W, C)``. Files and arrays come in many layouts: a grey plane
``YX``, colour ``YXC`` or channels-first ``CYX``, and stacks that are *not* channels: a z-stack
``ZYX``, a time series ``TYX``, a plain multi-page TIFF ``IYX``. Reading a stack as channels (and
averaging it to grey) silently gives a wrong result, so every reader in lacss-core (TIFF files,
NumPy arrays, zarr arrays) goes through :func:`image_axes`, and a stack is either refused or split
into planes with :func:`split_planes`.

Axis letters (upper or lower case) follow tifffile and OME:

====== =========================================================================================
letter meaning
====== =========================================================================================
Y, X   the image plane (rows, columns); each appears exactly once
C, S   channels (``S``: samples of a pixel, e.g. RGB); several channel axes are merged into one
Z, T   depth, time: stack axes
I      image sequence (the pages of a plain multi-page TIFF): a stack axis
Q      unknown (tifffile's "shaped" files without axes): a stack axis, unless the plane it
       leaves is an ``(H, W, C)`` array written page by page (see below)
other  any other letter (``A`` angle, ``P`` phase, ``R`` tile, ...): a stack axis
====== =========================================================================================

The rule, :func:`image_axes`:

1. Known letters (file metadata: tifffile ``series.axes``, ImageJ ``axes``, OME-NGFF axis names)
   are used as they are, with ``S`` read as ``C``.
2. Letters with ``Q`` whose ``Y``/``X`` sides include one of at most ``MAX_CHANNELS`` pixels are
   an ``(H, W, C)`` array that tifffile stored as ``H`` pages of ``W x C``: the shape rule decides.
3. No letters (a NumPy array) -> the shape rule: ``(H, W)`` is ``YX``; ``(..., H, W, C)`` with
   ``C <= MAX_CHANNELS`` is ``YXC``; else ``(..., C, H, W)`` with ``C <= MAX_CHANNELS < W`` is
   ``CYX``; else the last two axes are ``YX``. Leading axes are ``Q`` (unknown: a stack).

Length-1 axes never make a stack: a ``TZCYX`` file with ``T = Z = 1`` is one image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Most channels an axis may have to be read as channels by the shape rule (RGBA).
MAX_CHANNELS = 4
PLANE_LETTERS = "YX"
CHANNEL_LETTERS = "CS"


def image_axes(shape, axes: str | None = None) -> str:
    """The normalised axis letters of an array of ``shape``: one of ``Y``, ``X``, ``C`` per axis
    for plane and channels, any other upper-case letter for a stack axis (see the module rule).

    Args:
        shape: the array's shape, at least 2-D.
        axes: the letters from file metadata (same length as ``shape``), or None for NumPy arrays.
    Returns:
        A string of ``len(shape)`` letters, e.g. ``"YXC"``, ``"CYX"``, ``"ZYX"``, ``"TZCYX"``.
    Raises:
        ValueError: ``shape`` has fewer than 2 axes, or ``axes`` is malformed.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) < 2:
        raise ValueError(f"an image needs at least 2 axes (H, W), got shape {shape}")
    if axes is None:
        return _axes_from_shape(shape)
    letters = "".join(axes).upper()
    if len(letters) != len(shape):
        raise ValueError(f"axes {axes!r} has {len(letters)} letters for shape {shape}")
    for letter in PLANE_LETTERS:
        if letters.count(letter) != 1:
            raise ValueError(f"axes {axes!r} must name {letter} exactly once")
    for letter in set(letters) - set(PLANE_LETTERS + CHANNEL_LETTERS):
        if letters.count(letter) != 1:
            raise ValueError(f"axes {axes!r} names {letter} more than once")
    if "Q" in letters and min(shape[letters.index("Y")], shape[letters.index("X")]) <= MAX_CHANNELS:
        return _axes_from_shape(shape)
    return letters.replace("S", "C")


def _axes_from_shape(shape: tuple[int, ...]) -> str:
    lead = "Q" * (len(shape) - 3)
    if len(shape) == 2:
        return "YX"
    if shape[-1] <= MAX_CHANNELS:
        return lead + "YXC"
    if shape[-3] <= MAX_CHANNELS:
        return lead + "CYX"
    return lead + "QYX"


def stack_axes(shape, axes: str) -> str:
    """The letters of ``axes`` (normalised, from :func:`image_axes`) that make a stack: every
    axis longer than 1 that is neither plane nor channel. ``""`` for a single image."""
    return "".join(a for a, n in zip(axes, shape, strict=True) if a not in "YXC" and n > 1)


@dataclass(frozen=True)
class Planes:
    """The 2-D images of an array, in the stack's order (C order over the stack axes).

    Attributes:
        images: ``(P, H, W, C)`` array, ``P`` = product of ``shape`` (1 for a single image).
        axes: the stack axis letters, e.g. ``"Z"``, ``"TZ"``; ``""`` for a single image.
        shape: the stack's shape, e.g. ``(3,)``; ``()`` for a single image.
    """

    images: np.ndarray
    axes: str
    shape: tuple[int, ...]

    def describe(self) -> str:
        """E.g. ``"3 planes (Z=3) of 64x64 px, 1 channel(s)"``."""
        sizes = ", ".join(f"{a}={n}" for a, n in zip(self.axes, self.shape, strict=True))
        _, h, w, c = self.images.shape
        return f"{len(self.images)} planes ({sizes}) of {h}x{w} px, {c} channel(s)"


def split_planes(array, axes: str | None = None) -> Planes:
    """Split ``array`` into its 2-D ``(H, W, C)`` images by the rule of :func:`image_axes`.

    Args:
        array: any array-like with at least 2 axes.
        axes: its axis letters from file metadata, or None (the shape rule).
    Returns:
        :class:`Planes` with ``images`` in the array's dtype: stack axes first (in their order),
        then ``Y``, ``X`` and the channel axes merged into one (``C = 1`` if there is none).
    """
    array = np.asarray(array)
    letters = image_axes(array.shape, axes)
    stack = [i for i, a in enumerate(letters) if a not in "YXC"]
    channels = [i for i, a in enumerate(letters) if a == "C"]
    order = stack + [letters.index("Y"), letters.index("X")] + channels
    moved = np.transpose(array, order)
    stack_shape = moved.shape[: len(stack)]
    height, width = moved.shape[len(stack) : len(stack) + 2]
    images = moved.reshape(-1, height, width, int(np.prod(moved.shape[len(stack) + 2 :])))
    kept = [(letters[i], n) for i, n in zip(stack, stack_shape, strict=True) if n > 1]
    return Planes(
        images=images,
        axes="".join(a for a, _ in kept),
        shape=tuple(n for _, n in kept),
    )


__all__ = ["MAX_CHANNELS", "Planes", "image_axes", "split_planes", "stack_axes"]
