"""napari reader: label TIFFs as Labels layers, ImageJ/Fiji ROI zips as Shapes (and Points).

Claimed files (see ``napari.yaml``):

- ``*_label.tif`` (what ``lacss predict`` writes), ``*_labels.tif`` and ``*_masks.tif``
  (cellpose's and ``lacss train``'s label images): a Labels layer with the file's values.
- ``*_mask.tif`` (the binary foreground of weak training): a Labels layer, 1 = foreground.
- ``*.zip`` holding ``.roi`` files (``lacss predict --rois``, Fiji's ROI Manager): area ROIs
  (polygon, freehand, traced, rectangle, oval, composite) become one Shapes layer of polygons;
  point ROIs (Fiji's multi-point tool: one click per cell) become a Points layer.

A TIFF with non-integer values (an intensity image that happens to match a pattern) and a zip
without ROIs are declined, so napari's own reader opens them instead.

Coordinates: ImageJ puts pixel ``(r, c)`` at ``[c, c+1) x [r, r+1)``; napari puts its centre at
``(r, c)``. Area ROI vertices and sub-pixel point coordinates therefore move by half a pixel;
integer point coordinates name the pixel itself.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

LABEL_SUFFIXES = ("_label", "_labels", "_masks")
MASK_SUFFIX = "_mask"
_TIFF = (".tif", ".tiff")


def napari_get_reader(path):
    """The reader function for ``path`` (a str, or a list holding one), or None to decline."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    path = Path(path)
    if path.suffix.lower() in _TIFF and _is_integer_tiff(path):
        if path.stem.endswith(MASK_SUFFIX):
            return read_mask_tiff
        if path.stem.endswith(LABEL_SUFFIXES):
            return read_label_tiff
    if path.suffix.lower() == ".zip" and _has_rois(path):
        return read_roi_zip
    return None


# ---------------------------------------------------------------------------- TIFF
def _is_integer_tiff(path: Path) -> bool:
    """Whether the first series of a TIFF has integer or bool pixels (read from the header)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            dtype = np.dtype(tif.series[0].dtype)
    except Exception:  # not a TIFF we can read: leave it to other readers
        return False
    return dtype.kind in "biu"


def _read_tiff(path) -> np.ndarray:
    import tifffile

    data = np.asarray(tifffile.imread(path))
    while data.ndim > 2 and data.shape[0] == 1:  # a (1, H, W) page is one image
        data = data[0]
    return data


def read_label_tiff(path):
    """``[(label, {"name": stem}, "labels")]``: the label image with its values unchanged."""
    path = Path(path)
    return [(_read_tiff(path), {"name": path.stem}, "labels")]


def read_mask_tiff(path):
    """``[(mask, {"name": stem}, "labels")]``: ``(H, W) uint8``, 1 where the file is nonzero."""
    path = Path(path)
    return [((_read_tiff(path) != 0).astype(np.uint8), {"name": path.stem}, "labels")]


# ---------------------------------------------------------------------------- ROI zip
_AREA_TYPES = ("POLYGON", "RECT", "OVAL", "FREEHAND", "TRACED")


def _has_rois(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return any(name.lower().endswith(".roi") for name in names)


def read_roi_zip(path):
    """Layers of an ImageJ ROI zip: a Shapes layer of the area ROIs (polygons, ``(y, x)``
    napari pixels, feature ``name``) and a Points layer of the point ROIs, each only if present.

    Lines and angles have no place in a segmentation; if the zip holds some, a warning names
    how many were left out.
    """
    import roifile

    path = Path(path)
    polygons, names, points, skipped = [], [], [], 0
    for roi in roifile.roiread(path):
        kind = roi.roitype.name
        if kind == "POINT":
            xy = np.asarray(roi.coordinates(), np.float64)
            if roi.subpixel_coordinates is not None:
                xy = xy - 0.5
            points.append(xy[:, ::-1])
        elif kind in _AREA_TYPES or roi.multi_coordinates is not None:
            xy = np.asarray(roi.coordinates(), np.float64)  # composite: its largest piece
            if len(xy) >= 3:
                polygons.append(xy[:, ::-1] - 0.5)
                names.append(roi.name or str(len(names) + 1))
            else:
                skipped += 1
        else:
            skipped += 1
    if skipped:
        from napari.utils.notifications import show_warning

        show_warning(f"{path.name}: left out {skipped} ROI(s) that are not areas or points")
    layers = []
    if polygons:
        meta = {"name": path.stem, "shape_type": "polygon", "features": {"name": names}}
        meta.update(edge_color="yellow", face_color="transparent", edge_width=1)
        layers.append((polygons, meta, "shapes"))
    if points:
        layers.append((np.concatenate(points), {"name": f"{path.stem} points"}, "points"))
    return layers
