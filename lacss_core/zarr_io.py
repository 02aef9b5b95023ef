"""Zarr and OME-Zarr images, read and written a block at a time.

:func:`open_image` opens a zarr array, or an OME-Zarr image (a group whose ``multiscales``
metadata names its levels and axes; level 0, full resolution, is read), as a :class:`ZarrImage`:
one 2-D plane whose pixels are read on demand, ``(h, w, C)`` per region, so nothing holds the
whole image. Axes follow the one rule of ``lacss_core.data.axes``: OME axis names (or a zarr v3
array's ``dimension_names``, or xarray's ``_ARRAY_DIMENSIONS``) when there are any, else the shape
rule; a stack (z, time) needs ``plane``.

:func:`create_label` makes the output label image: a chunked, compressed int32 zarr array.

Needs the ``[dask]`` extra (``pip install 'lacss-core[dask]'``) for the ``zarr`` package.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Files that mark a folder as a zarr store (v3; v2 array, group, attributes).
ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup", ".zattrs")


def _zarr():
    try:
        import zarr
    except ImportError as e:  # the extra is not installed
        raise ImportError(
            "zarr images need the zarr package: pip install 'lacss-core[dask]'"
        ) from e
    return zarr


def is_zarr_path(path) -> bool:
    """Whether ``path`` is a folder holding a zarr array or group (or is named ``*.zarr``)."""
    path = Path(path)
    if path.suffix.lower() == ".zarr":
        return True
    return path.is_dir() and any((path / name).exists() for name in ZARR_MARKERS)


@dataclass(frozen=True)
class ZarrImage:
    """One 2-D image of a zarr array, read region by region.

    Attributes:
        array: the ``zarr.Array`` (level 0 of an OME-Zarr image).
        axes: its normalised axis letters (``lacss_core.data.axes.image_axes``), e.g. ``"CYX"``.
        index: the plane's index along each stack axis (``{axis position: index}``).
        source: what was opened, for messages (a path, or ``repr`` of an array).
    """

    array: object
    axes: str
    index: dict
    source: str

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` pixels."""
        return (
            int(self.array.shape[self.axes.index("Y")]),
            int(self.array.shape[self.axes.index("X")]),
        )

    @property
    def channels(self) -> int:
        """Channels per pixel (the product of the channel axes; 1 without one)."""
        sizes = [n for a, n in zip(self.axes, self.array.shape, strict=True) if a == "C"]
        return int(np.prod(sizes)) if sizes else 1

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    def read(self, y0, y1, x0, x1) -> np.ndarray:
        """Pixels ``[y0, y1) x [x0, x1)`` as ``(h, w, C)`` in the array's dtype."""
        selection, kept = [], []
        for position, letter in enumerate(self.axes):
            if letter == "Y":
                selection.append(slice(y0, y1))
            elif letter == "X":
                selection.append(slice(x0, x1))
            elif letter == "C":
                selection.append(slice(None))
            else:
                selection.append(self.index.get(position, 0))
                continue
            kept.append(letter)
        region = np.asarray(self.array[tuple(selection)])
        channels = [i for i, a in enumerate(kept) if a == "C"]
        order = [kept.index("Y"), kept.index("X")] + channels
        region = np.transpose(region, order)
        return region.reshape(region.shape[:2] + (-1,))


def open_image(source, *, plane=None) -> ZarrImage:
    """Open a zarr array or OME-Zarr image as one 2-D :class:`ZarrImage`.

    Args:
        source: a path (str or Path) to a zarr array or OME-Zarr image folder, or a
            ``zarr.Array``.
        plane: for a stack (axes other than Y, X and channels longer than 1, e.g. ZYX): which
            plane, 0-based in C order over the stack axes (``lacss predict --plane``).
    Raises:
        ValueError: ``source`` is not a zarr array or OME-Zarr image (naming what it is), the
            array has fewer than 2 axes, it is a stack and ``plane`` is None, or ``plane`` is out
            of range.
    """
    from lacss_core.data.axes import image_axes, stack_axes

    array, names, name = _open_array(source)
    axes = image_axes(array.shape, names)
    stack = [i for i, a in enumerate(axes) if a not in "YXC" and array.shape[i] > 1]
    letters = stack_axes(array.shape, axes)
    sizes = tuple(int(array.shape[i]) for i in stack)
    if plane is None:
        if stack:
            described = ", ".join(f"{a}={n}" for a, n in zip(letters, sizes, strict=True))
            raise ValueError(
                f"{name} is a stack ({described}, axes {axes}), not one 2-D image: pick a plane "
                "with plane=N (open_image, predict_zarr) or --plane N "
                f"(0..{int(np.prod(sizes)) - 1})"
            )
        return ZarrImage(array, axes, {}, name)
    count = int(np.prod(sizes)) if sizes else 1
    if not isinstance(plane, (int, np.integer)) or not 0 <= plane < count:
        raise ValueError(f"plane must be an int in [0, {count - 1}] for {name}, got {plane!r}")
    index = dict(zip(stack, (int(i) for i in np.unravel_index(int(plane), sizes)), strict=True))
    return ZarrImage(array, axes, index, name)


def _open_array(source):
    """``(array, axis letters or None, name)`` of a zarr source (see ``open_image``)."""
    zarr = _zarr()
    if isinstance(source, zarr.Array):
        return source, _array_axis_names(source), repr(source)
    if not isinstance(source, (str, Path)):
        raise ValueError(
            f"expected a path to a zarr array / OME-Zarr image or a zarr.Array, got "
            f"{type(source).__name__}"
        )
    path = Path(source)
    if not path.exists():
        raise ValueError(f"{path}: no such zarr array or OME-Zarr image")
    if not is_zarr_path(path) or not path.is_dir():
        raise ValueError(
            f"{path} is not a zarr array or OME-Zarr image (a folder with zarr.json, .zarray or "
            ".zgroup); read other files with lacss_core.data.read_image"
        )
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as e:  # zarr raises several kinds for a broken store
        raise ValueError(f"{path} is not a readable zarr store: {e}") from e
    if isinstance(node, zarr.Array):
        return node, _array_axis_names(node), str(path)
    return _open_ome_level0(node, path)


def _array_axis_names(array):
    """Axis letters from a zarr array's own metadata, or None."""
    names = getattr(getattr(array, "metadata", None), "dimension_names", None)
    if not names:
        names = array.attrs.get("_ARRAY_DIMENSIONS")
    if not names or len(names) != array.ndim or not all(isinstance(n, str) and n for n in names):
        return None
    return _letters([n for n in names])


def _letters(names) -> str | None:
    """``["t", "c", "y", "x"]`` -> ``"TCYX"``; None if a name is not a single-letter axis."""
    letters = "".join(n[0].upper() for n in names)
    if any(len(n) != 1 for n in names) or len(set(letters)) != len(letters):
        return None
    return letters


def _open_ome_level0(group, path):
    """Level 0 of an OME-Zarr image group (NGFF 0.4 ``multiscales`` or 0.5 ``ome.multiscales``)."""
    attrs = dict(group.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not multiscales:
        arrays = sorted(name for name, _ in group.arrays())
        hint = f"; its arrays: {', '.join(arrays)} (pass {path}/NAME)" if arrays else ""
        raise ValueError(
            f"{path} is a zarr group without OME-Zarr multiscales metadata, not an image{hint}"
        )
    first = multiscales[0]
    level = first["datasets"][0]["path"]
    array = group[level]
    axes = first.get("axes")
    names = None
    if axes:
        names = _letters([a["name"] if isinstance(a, dict) else a for a in axes])
    if names is not None and len(names) != array.ndim:
        names = None
    return array, names, f"{path} (OME-Zarr level {level})"


def read_whole(image) -> np.ndarray | None:
    """A zarr array, a ``ZarrImage`` or a path to a zarr / OME-Zarr image read whole, as
    ``(H, W, C)``; None for anything else (so callers can take arrays and zarr alike)."""
    if isinstance(image, ZarrImage):
        return image.read(0, image.shape[0], 0, image.shape[1])
    if isinstance(image, (str, Path)) and is_zarr_path(image):
        return read_whole(open_image(image))
    if type(image).__module__.startswith("zarr") and hasattr(image, "shape"):
        return read_whole(open_image(image))
    return None


def create_label(path, shape, chunk, *, overwrite=False):
    """A new ``(H, W)`` int32 zarr array at ``path``: ``chunk x chunk`` chunks, compressed
    (zarr's default codec), 0 = background. ``overwrite`` replaces what is there."""
    zarr = _zarr()
    return zarr.create_array(
        store=str(path),
        shape=tuple(int(n) for n in shape),
        chunks=(int(chunk), int(chunk)),
        dtype="int32",
        fill_value=0,
        dimension_names=["y", "x"],
        overwrite=overwrite,
    )


def open_label(path):
    """The label array written by :func:`create_label`, for writing."""
    return _zarr().open_array(str(path), mode="r+")


__all__ = [
    "ZarrImage",
    "create_label",
    "is_zarr_path",
    "open_image",
    "open_label",
    "read_whole",
]
