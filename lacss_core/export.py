"""Writers for segmentation results: label TIFF, overlay PNG, CSV table, COCO json, ImageJ ROI zip.

Every writer takes a label image ``(H, W)`` int (0 = background, cells 1..n) and, where it needs
them, the ``details`` dict of :func:`lacss_core.predict.predict_instances` (row ``i`` describes
label ``i + 1``). Coordinates are pixels; ``(y, x)`` order everywhere except in COCO and ImageJ,
whose formats are ``(x, y)``. The I/O packages (tifffile, imageio, roifile, contourpy from
matplotlib) are the ``io`` extra and are imported only by the writer that needs them.
"""

from __future__ import annotations

import csv
import json
import os

import numpy as np

CSV_COLUMNS = (
    "label", "score", "y", "x", "area", "bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1",
    "in_saturated_tile",
)  # fmt: skip


def _check_label(label) -> np.ndarray:
    label = np.asarray(label)
    if label.ndim != 2 or not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"label must be a 2-D integer array, got {label.dtype} {label.shape}")
    return label


def write_label_tiff(path, label) -> None:
    """Write a label image as a zlib-compressed TIFF.

    uint16 when the largest label fits (ImageJ/Fiji and cellpose read it), else uint32.
    """
    import tifffile

    label = _check_label(label)
    dtype = np.uint16 if label.max(initial=0) < 2**16 else np.uint32
    tifffile.imwrite(path, label.astype(dtype), compression="zlib")


def display_image(image) -> np.ndarray:
    """Map an image ``(H, W)`` or ``(H, W, C)`` of any dtype to uint8 RGB ``(H, W, 3)`` for viewing.

    Each channel is stretched between its 1st and 99.8th percentile; one channel becomes grey,
    two fill red and green, more than three keep the first three.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[..., None]
    lo = np.percentile(image, 1.0, axis=(0, 1))
    hi = np.percentile(image, 99.8, axis=(0, 1))
    scaled = np.clip((image - lo) / np.maximum(hi - lo, 1e-12), 0.0, 1.0)
    channels = scaled.shape[-1]
    if channels == 1:
        rgb = np.repeat(scaled, 3, axis=-1)
    else:
        rgb = np.zeros(scaled.shape[:2] + (3,), np.float32)
        rgb[..., : min(channels, 3)] = scaled[..., :3]
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def outlines(label) -> np.ndarray:
    """``(H, W)`` bool: cell pixels with a 4-neighbour of another value (or the image edge)."""
    label = _check_label(label)
    padded = np.pad(label, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    differs = (
        (padded[:-2, 1:-1] != centre)
        | (padded[2:, 1:-1] != centre)
        | (padded[1:-1, :-2] != centre)
        | (padded[1:-1, 2:] != centre)
    )
    return (label > 0) & differs


def overlay(image, label, color=(255, 255, 0)) -> np.ndarray:
    """uint8 RGB ``(H, W, 3)``: the image (see :func:`display_image`) with cell outlines drawn."""
    label = _check_label(label)
    image = np.asarray(image)
    if image.shape[:2] != label.shape:
        raise ValueError(f"image {image.shape[:2]} and label {label.shape} differ in size")
    rgb = display_image(image)
    rgb[outlines(label)] = color
    return rgb


def write_overlay_png(path, image, label) -> None:
    """Write :func:`overlay` as a PNG."""
    import imageio.v3 as iio

    iio.imwrite(path, overlay(image, label))


def write_csv(path, details) -> None:
    """Write one row per cell: ``label, score, y, x, area, bbox_y0, bbox_x0, bbox_y1, bbox_x1,
    in_saturated_tile``.

    ``(y, x)`` is the cell's location (LOI) in pixels; the bbox is ``[y0, y1) x [x0, x1)``;
    ``in_saturated_tile`` is 1 for a cell found by a tile that held the model's full capacity
    (``details["saturated"]``; other cells may be missing near it), else 0.
    """
    scores = np.asarray(details["scores"])
    locations = np.asarray(details["locations"]).reshape(-1, 2)
    areas = np.asarray(details["areas"])
    bboxes = np.asarray(details["bboxes"]).reshape(-1, 4)
    saturated = np.asarray(details.get("saturated", np.zeros(len(scores), bool)), bool)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for i in range(len(scores)):
            y, x = locations[i]
            writer.writerow(
                [i + 1, f"{scores[i]:.6g}", f"{y:.2f}", f"{x:.2f}", int(areas[i])]
                + [int(v) for v in bboxes[i]]
                + [int(saturated[i])]
            )


def read_csv_scores(path) -> dict[int, float]:
    """Read the ``label -> score`` column pair of a table written by :func:`write_csv`."""
    with open(path, newline="") as f:
        return {int(row["label"]): float(row["score"]) for row in csv.DictReader(f)}


def rle_encode(mask) -> dict:
    """COCO uncompressed RLE of a bool mask ``(H, W)``: column-major runs, starting with zeros."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def coco_dict(label, details, *, file_name="image", image_id=1) -> dict:
    """A COCO dataset dict (images, annotations with RLE masks and scores, one "cell" category).

    bbox is COCO ``[x, y, width, height]``; each annotation also carries ``score`` so the
    annotation list loads as COCO results too. ``info.saturated_tiles`` is
    ``details["saturated_tiles"]`` (tiles that held the model's full capacity: cells may be
    missing there), 0 when absent.
    """
    label = _check_label(label)
    height, width = label.shape
    annotations = []
    for i, score in enumerate(np.asarray(details["scores"])):
        y0, x0, y1, x1 = (int(v) for v in np.asarray(details["bboxes"])[i])
        annotations.append(
            {
                "id": i + 1,
                "image_id": image_id,
                "category_id": 1,
                "segmentation": rle_encode(label == i + 1),
                "area": int(details["areas"][i]),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "score": float(score),
                "iscrowd": 0,
            }
        )
    return {
        "info": {
            "description": "lacss-core predictions",
            "saturated_tiles": int(details.get("saturated_tiles", 0)),
        },
        "images": [{"id": image_id, "file_name": file_name, "height": height, "width": width}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "cell"}],
    }


def write_coco_json(path, label, details, *, file_name="image") -> None:
    """Write :func:`coco_dict` as json."""
    with open(path, "w") as f:
        json.dump(coco_dict(label, details, file_name=file_name), f)


def cell_outline(mask) -> np.ndarray:
    """``(P, 2)`` float ``(x, y)`` polygon (ImageJ coordinates) around a bool mask's largest piece.

    The contour runs through pixel-edge midpoints (marching squares at 0.5); ImageJ puts pixel
    ``(r, c)`` at ``[c, c+1) x [r, r+1)``, hence the half-pixel shift. Holes are ignored.
    """
    import contourpy

    padded = np.pad(np.asarray(mask, dtype=np.float64), 1)
    lines = contourpy.contour_generator(z=padded, line_type="Separate").lines(0.5)
    if not lines:
        raise ValueError("mask is empty")
    longest = max(lines, key=len)
    return longest - 1.0 + 0.5


def write_imagej_rois(path, label) -> None:
    """Write one polygon ROI per cell (named by its label) into an ImageJ/Fiji ROI zip."""
    import roifile

    label = _check_label(label)
    rois = []
    for cell in range(1, int(label.max(initial=0)) + 1):
        rows, cols = np.nonzero(label == cell)
        if rows.size == 0:
            continue
        top, left = rows.min(), cols.min()
        mask = np.zeros((rows.max() - top + 1, cols.max() - left + 1), bool)
        mask[rows - top, cols - left] = True
        points = cell_outline(mask) + (left, top)
        rois.append(roifile.ImagejRoi.frompoints(points, name=f"{cell:05d}", index=cell))
    if os.path.exists(path):
        os.remove(path)  # roiwrite appends to an existing zip
    if rois:
        roifile.roiwrite(path, rois)
    else:  # an image with no cell still gets its (empty) zip, so every image has every output
        import zipfile

        zipfile.ZipFile(path, "w").close()
