"""Load training samples from folders of image files (TIFF via tifffile, PNG/JPEG via imageio).

Pairing rules (one folder, partners share the image's file stem, as in cellpose):

- Fully supervised, :func:`load_labelled_folder`: ``img_001.tif`` + ``img_001_masks.tif`` (label
  image; the suffix is ``label_suffix``, cellpose's ``_masks`` by default; any supported extension).
- Weakly supervised, :func:`load_point_folder`: ``img_001.tif`` + ``img_001_points.csv`` (one
  ``y,x`` row per cell; a header ``y,x`` or napari's ``index,axis-0,axis-1`` is recognised) +
  ``img_001_mask.tif`` (binary foreground, any nonzero pixel counts).

Images may be 8/16-bit or float, grey ``(H, W)`` or colour ``(H, W, C)``, channels-first or -last;
which axes are channels and which a stack (z, time, pages) is read from the file's metadata by the
rule of :mod:`lacss_core.data.axes`, and a stack is refused by :func:`read_image` unless a plane
is chosen (:func:`read_planes` gives them all). The alpha channel of RGBA PNG/JPEG files is
dropped. Intensities are returned raw (as float32); normalise them later. Every bad file (missing,
empty, not an image, unreadable, wrong shape, missing partner, empty annotation) raises
``ValueError`` naming it and what is wrong.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from lacss_core.data.axes import Planes, split_planes
from lacss_core.data.samples import Sample

IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
_TIFF = (".tif", ".tiff")


def read_image(path, *, plane: int | None = None, axes: str | None = None) -> np.ndarray:
    """Read one 2-D image from a file as ``(H, W, C) float32`` raw intensities.

    The layout comes from the file's metadata (tifffile axes, ImageJ or OME) by the rule of
    :mod:`lacss_core.data.axes`: channels are ``C``/``S`` axes (RGB, channels-first or -last);
    a z-stack, time series or plain multi-page TIFF is a stack, not channels.

    Args:
        path: a ``.tif``/``.tiff``/``.png``/``.jpg``/``.jpeg`` file.
        plane: for a stack, the plane to read (index in the file's order over its stack axes,
            ``0 .. planes - 1``); ``0`` is also accepted for a single image.
        axes: the file's axis letters, overriding its metadata (e.g. ``"CYX"`` for a multi-page
            TIFF whose pages are channels).
    Raises:
        StackError: the file is a stack and ``plane`` is None (the message says how to choose).
        ValueError: the file is missing, empty, not an image, corrupt, or ``plane`` is out of range.
    """
    planes = read_planes(path, axes=axes)
    count = len(planes.images)
    if plane is None:
        if count > 1:
            raise StackError(Path(path), planes)
        plane = 0
    if (
        isinstance(plane, bool)
        or not isinstance(plane, (int, np.integer))
        or not (0 <= plane < count)
    ):
        raise ValueError(f"plane must be an int in 0..{count - 1} for {path}, got {plane!r}")
    return planes.images[plane]


def read_planes(path, *, axes: str | None = None) -> Planes:
    """Every 2-D image of a file (one for a plain image, one per plane for a stack).

    Returns:
        :class:`~lacss_core.data.axes.Planes`: ``images (P, H, W, C) float32`` raw intensities in
        the file's order, with the stack's axis letters and shape (``""`` and ``()`` for a single
        image). The alpha channel of an RGBA PNG/JPEG is dropped.
    Raises:
        ValueError: the file is missing, empty, not an image or corrupt, naming it.
    """
    path = Path(path)
    array, file_axes = _read(path)
    if axes is not None:
        file_axes = axes
    if array.ndim < 2 or min(array.shape) < 1:
        raise ValueError(f"file {path} has shape {array.shape}; expected a 2-D image")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"file {path} has dtype {array.dtype}; expected a numeric image")
    try:
        planes = split_planes(array, file_axes)
    except ValueError as e:
        raise ValueError(f"file {path}: {e}") from e
    images = planes.images
    if images.shape[-1] == 4 and path.suffix.lower() not in _TIFF:
        images = images[..., :3]  # RGBA PNG/JPEG: alpha is transparency, not signal
    return Planes(images=images.astype(np.float32), axes=planes.axes, shape=planes.shape)


class StackError(ValueError):
    """A file holds a stack (z, time, pages) where one 2-D image was asked for."""

    def __init__(self, path: Path, planes: Planes):
        self.path, self.planes = path, planes
        super().__init__(
            f"image {path} is a stack, not one 2-D image: {planes.describe()}. Pick a plane "
            "(read_image(path, plane=N); lacss predict --plane N) or segment every plane "
            "(read_planes(path); lacss predict --stack-mode per-plane); if that axis holds "
            "channels, say so (read_image(path, axes='CYX'); lacss predict --stack-mode channels)"
        )


def read_label(path, shape=None) -> np.ndarray:
    """Read a label image as ``(H, W) int32``, 0 = background; ``shape``: the image's ``(H, W)``."""
    path = Path(path)
    a = _squeeze_leading(_read(path)[0], path)
    _check_plane(a, path, "label image", shape)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise ValueError(f"label image {path} has non-integer values")
    elif a.dtype.kind not in "biu":
        raise ValueError(f"label image {path} has dtype {a.dtype}; expected integers")
    if a.min() < 0:
        raise ValueError(f"label image {path} has negative values")
    if a.max() == 0:
        raise ValueError(f"label image {path} is empty: it has no labelled cells")
    if a.max() > np.iinfo(np.int32).max:
        raise ValueError(f"label image {path} has labels beyond int32; relabel it first")
    return a.astype(np.int32)


def read_mask(path, shape=None) -> np.ndarray:
    """Read a foreground mask as ``(H, W) float32`` in ``{0, 1}`` (any nonzero pixel is 1)."""
    path = Path(path)
    a = _squeeze_leading(_read(path)[0], path)
    _check_plane(a, path, "mask", shape)
    mask = (a != 0).astype(np.float32)
    if not mask.any():
        raise ValueError(f"mask {path} is empty: it has no foreground pixels")
    return mask


def read_points(path, shape) -> np.ndarray:
    """Read point annotations (CSV, one ``y,x`` row per cell) as ``(N, 2) float32``.

    Points within half a pixel of the image border are clamped into ``[0, H-1] x [0, W-1]``;
    points further out are an error. ``shape`` is the image's ``(H, W)``.
    """
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read points file {path}: {e}") from e
    columns, rows = _point_columns(rows, path)
    points = np.array([_parse_point(r, columns, path, i) for i, r in enumerate(rows)], np.float64)
    if len(points) == 0:
        raise ValueError(f"points file {path} has no points")
    return _clamp_points(points.reshape(-1, 2), shape, path)


def load_labelled_folder(folder, *, label_suffix: str = "_masks") -> list[Sample]:
    """Fully supervised samples from ``folder``: each image with its ``<stem><label_suffix>`` label.

    Returns samples sorted by file name, each named by its image path.
    """
    files = _image_files(folder)
    images = {s: p for s, p in files.items() if not s.endswith(label_suffix)}
    labels = {s[: -len(label_suffix)]: p for s, p in files.items() if s.endswith(label_suffix)}
    _check_partners(images, labels, "label image", "{stem}" + label_suffix + ".*")
    samples = []
    for stem in sorted(images):
        image = read_image(images[stem])
        label = read_label(labels[stem], image.shape[:2])
        samples.append(Sample(image, label=label, name=str(images[stem])))
    return samples


def load_point_folder(folder, *, points_suffix="_points", mask_suffix="_mask") -> list[Sample]:
    """Weakly supervised samples from ``folder``: image + ``<stem>_points.csv`` + ``<stem>_mask.*``.

    Returns samples sorted by file name, each named by its image path.
    """
    files = _image_files(folder)
    images = {s: p for s, p in files.items() if not s.endswith(mask_suffix)}
    masks = {s[: -len(mask_suffix)]: p for s, p in files.items() if s.endswith(mask_suffix)}
    points = {
        p.stem[: -len(points_suffix)]: p
        for p in Path(folder).glob(f"*{points_suffix}.csv")
        if not p.name.startswith(".")
    }
    _check_partners(images, masks, "mask", "{stem}" + mask_suffix + ".*")
    _check_partners(images, points, "points file", "{stem}" + points_suffix + ".csv")
    samples = []
    for stem in sorted(images):
        image = read_image(images[stem])
        shape = image.shape[:2]
        mask = read_mask(masks[stem], shape)
        locations = read_points(points[stem], shape)
        samples.append(Sample(image, locations=locations, mask=mask, name=str(images[stem])))
    return samples


def _read(path: Path) -> tuple[np.ndarray, str | None]:
    """The file's pixels and, where the format says, its axis letters (tifffile convention)."""
    if not path.is_file():
        raise ValueError(f"file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        raise ValueError(
            f"file {path} is not an image file: lacss reads {', '.join(IMAGE_EXTENSIONS)}"
        )
    if path.stat().st_size == 0:
        raise ValueError(f"file {path} is empty (0 bytes), not an image")
    try:
        if suffix in _TIFF:
            return _read_tiff(path)
        import imageio.v3 as iio

        array = np.asarray(iio.imread(path, plugin="pillow"))
        return array, "YX" if array.ndim == 2 else "YXC" if array.ndim == 3 else None
    except ImportError as e:
        raise ImportError(f"reading {path} needs: pip install 'lacss-core[io]' ({e})") from e
    except Exception as e:  # the readers raise many types for corrupt files; name the file
        raise ValueError(f"cannot read image file {path}: {_reason(path, e)}") from e


def _read_tiff(path: Path) -> tuple[np.ndarray, str]:
    import logging

    import tifffile

    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # a corrupt file is reported once, by us, not as log noise
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            return np.asarray(series.asarray()), series.axes
    finally:
        logger.setLevel(level)


def _reason(path: Path, error: Exception) -> str:
    """What is wrong with an unreadable file, in words (imageio's own messages name plugins)."""
    if path.suffix.lower() in _TIFF:
        return f"not a valid TIFF file or truncated ({error})"
    try:
        from PIL import Image

        with Image.open(path) as image:
            image.load()
    except Exception as pil_error:
        return f"not a valid {path.suffix[1:].upper()} image or truncated ({pil_error})"
    return str(error)


def _squeeze_leading(a: np.ndarray, path: Path) -> np.ndarray:
    """Drop leading length-1 axes (e.g. a ``(1, H, W)`` TIFF page)."""
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim < 2 or min(a.shape) < 1:
        raise ValueError(f"file {path} has shape {a.shape}; expected a 2-D image")
    if a.dtype.kind not in "biuf":
        raise ValueError(f"file {path} has dtype {a.dtype}; expected a numeric image")
    return a


def _check_plane(a, path, what, shape):
    if a.ndim != 2:
        raise ValueError(f"{what} {path} has shape {a.shape}; expected one channel (H, W)")
    if shape is not None and a.shape != tuple(shape):
        raise ValueError(f"{what} {path} has size {a.shape} but its image is {tuple(shape)}")


def _image_files(folder) -> dict[str, Path]:
    """Map stem -> path of every supported image file in ``folder`` (one per stem)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"folder {folder} does not exist or is not a directory")
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in IMAGE_EXTENSIONS or p.name.startswith(".") or not p.is_file():
            continue
        if p.stem in files:
            raise ValueError(f"{files[p.stem]} and {p} share the stem {p.stem!r}; keep only one")
        files[p.stem] = p
    if not files:
        raise ValueError(f"folder {folder} has no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def _check_partners(images: dict, partners: dict, what: str, pattern: str) -> None:
    """Every image has a partner (named ``pattern`` with its stem) and every partner an image."""
    for stem, path in images.items():
        if stem not in partners:
            expected = path.with_name(pattern.format(stem=stem))
            raise ValueError(f"image {path} has no {what}: expected {expected} beside it")
    for stem, path in partners.items():
        if stem not in images:
            raise ValueError(f"{what} {path} has no image named {stem}.* beside it")


def _point_columns(rows, path):
    """Column indices of y and x, and the data rows (header removed)."""
    if not rows:
        raise ValueError(f"points file {path} has no points")
    header = [c.strip().lower() for c in rows[0]]
    if not _is_number(header[0]):
        for names in (("y", "x"), ("axis-0", "axis-1")):
            if all(n in header for n in names):
                return tuple(header.index(n) for n in names), rows[1:]
        raise ValueError(
            f"points file {path} has header {rows[0]}; expected columns y,x (or napari's "
            "axis-0,axis-1)"
        )
    if len(header) != 2:
        raise ValueError(
            f"points file {path} has {len(header)} columns and no header; expected y,x"
        )
    return (0, 1), rows


def _parse_point(row, columns, path, i):
    try:
        point = [float(row[c]) for c in columns]
    except (ValueError, IndexError) as e:
        raise ValueError(f"points file {path}, data row {i + 1}: cannot read y,x from {row}") from e
    if not all(np.isfinite(point)):
        raise ValueError(f"points file {path}, data row {i + 1}: non-finite coordinate {row}")
    return point


def _clamp_points(points, shape, path):
    upper = np.asarray(shape, np.float64) - 1
    outside = np.any((points < -0.5) | (points >= upper + 0.5), axis=-1)
    if np.any(outside):
        i = int(np.argmax(outside))
        raise ValueError(
            f"points file {path}, data row {i + 1}: point {tuple(points[i].tolist())} lies "
            f"outside the {shape[0]}x{shape[1]} image"
        )
    # a click on the outer half of a border pixel still marks that pixel
    return np.clip(points, 0, upper).astype(np.float32)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
