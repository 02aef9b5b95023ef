"""Writers for segmentation results: label TIFF, overlay PNG, CSV table, COCO json, ImageJ ROI zip.

Every writer takes a label image ``(H, W)`` int (0 = background, cells 1..n) and, where it needs
them, the ``details`` dict of :func:`lacss_core.predict.predict_instances` (row ``i`` describes
label ``i + 1``). Coordinates are pixels; ``(y, x)`` order everywhere except in COCO and ImageJ,
whose formats are ``(x, y)``. Every file is written atomically (``lacss_core._atomic``: a
temporary file in the same folder, then ``os.replace``), so none is ever seen half-written. The
I/O packages (tifffile, imageio, roifile, contourpy from matplotlib) are the ``io`` extra and are
imported only by the writer that needs them.
"""

from __future__ import annotations

import csv
import json

import numpy as np

from lacss_core._atomic import atomic_open, atomic_path

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
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, label.astype(dtype), compression="zlib")


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

    rgb = overlay(image, label)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, rgb, extension=".png")


def write_csv(path, details) -> None:
    """Write one row per cell: ``label, score, y, x, area, bbox_y0, bbox_x0, bbox_y1, bbox_x1,
    in_saturated_tile``.

    ``(y, x)`` is the cell's location (LOI) in pixels; the bbox is ``[y0, y1) x [x0, x1)``;
    ``in_saturated_tile`` is 1 for a cell found by a tile that held the model's full capacity
    (``details["saturated"]``; other cells may be missing near it), else 0.
    """
    with atomic_open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(_csv_rows(details))


def _csv_rows(details) -> list[list]:
    scores = np.asarray(details["scores"])
    locations = np.asarray(details["locations"]).reshape(-1, 2)
    areas = np.asarray(details["areas"])
    bboxes = np.asarray(details["bboxes"]).reshape(-1, 4)
    saturated = np.asarray(details.get("saturated", np.zeros(len(scores), bool)), bool)
    rows = []
    for i in range(len(scores)):
        y, x = locations[i]
        rows.append(
            [i + 1, f"{scores[i]:.6g}", f"{y:.2f}", f"{x:.2f}", int(areas[i])]
            + [int(v) for v in bboxes[i]]
            + [int(saturated[i])]
        )
    return rows


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
    coco = coco_dict(label, details, file_name=file_name)
    with atomic_open(path, "w") as f:
        json.dump(coco, f)


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
    _write_rois(path, _cell_rois(_check_label(label)))


def _cell_rois(label, plane=None) -> list:
    """One ImageJ polygon ROI per cell; in a stack, set to its 1-based ``plane + 1``."""
    import roifile

    rois = []
    for cell in range(1, int(label.max(initial=0)) + 1):
        rows, cols = np.nonzero(label == cell)
        if rows.size == 0:
            continue
        top, left = rows.min(), cols.min()
        mask = np.zeros((rows.max() - top + 1, cols.max() - left + 1), bool)
        mask[rows - top, cols - left] = True
        points = cell_outline(mask) + (left, top)
        name = f"{cell:05d}" if plane is None else f"{plane + 1:04d}-{cell:05d}"
        roi = roifile.ImagejRoi.frompoints(points, name=name, index=cell)
        if plane is not None:
            roi.position = plane + 1
        rois.append(roi)
    return rois


def _write_rois(path, rois) -> None:
    import roifile

    with atomic_path(path) as tmp:  # a fresh file: roiwrite would append to an existing zip
        if rois:
            roifile.roiwrite(tmp, rois)
        else:  # an image with no cell still gets its (empty) zip, so every image has every output
            import zipfile

            zipfile.ZipFile(tmp, "w").close()


# ---------------------------------------------------------------------------- stacks
# A stack segmented plane by plane (``lacss predict --stack-mode per-plane``): ``labels (P, H, W)``
# and one ``details`` dict per plane, in the file's plane order; ``axes`` and ``shape`` are the
# stack's axis letters and shape (``lacss_core.data.axes.Planes``), so the TIFFs reopen as the
# same stack. Label ids start at 1 in every plane.


def _stack_array(planes, axes, shape):
    planes = np.asarray(planes)
    if planes.ndim < 3:
        raise ValueError(f"a stack needs (P, H, W) planes, got shape {planes.shape}")
    shape = tuple(shape) if shape else (len(planes),)
    axes = axes or "Z"
    if int(np.prod(shape)) != len(planes) or len(axes) != len(shape):
        raise ValueError(f"stack axes {axes!r} / shape {shape} do not fit {len(planes)} planes")
    return planes.reshape(shape + planes.shape[1:]), axes


def write_label_stack_tiff(path, labels, *, axes="Z", shape=None) -> None:
    """Write ``(P, H, W)`` label planes as one TIFF stack with axes ``axes + "YX"``."""
    import tifffile

    for plane in labels:
        _check_label(plane)
    labels = np.asarray(labels)
    dtype = np.uint16 if labels.max(initial=0) < 2**16 else np.uint32
    data, axes = _stack_array(labels.astype(dtype), axes, shape)
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp, data, compression="zlib", photometric="minisblack", metadata={"axes": axes + "YX"}
        )


def write_overlay_stack_tiff(path, images, labels, *, axes="Z", shape=None) -> None:
    """Write the overlays of ``(P, H, W, C)`` images and ``(P, H, W)`` labels as an RGB stack."""
    import tifffile

    rgb = np.stack([overlay(image, label) for image, label in zip(images, labels, strict=True)])
    data, axes = _stack_array(rgb, axes, shape)
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp, data, compression="zlib", photometric="rgb", metadata={"axes": axes + "YXS"}
        )


def write_stack_csv(path, details_per_plane) -> None:
    """Like :func:`write_csv`, one row per cell of every plane, with a leading ``plane`` column
    (0-based, the file's plane order)."""
    with atomic_open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("plane", *CSV_COLUMNS))
        for plane, details in enumerate(details_per_plane):
            writer.writerows([plane] + row for row in _csv_rows(details))


def write_stack_coco_json(path, labels, details_per_plane, *, file_name="image") -> None:
    """A COCO dataset with one image per plane (``id`` = plane + 1, ``file_name`` with
    ``#plane=P``) and their annotations (ids unique over the stack)."""
    images, annotations = [], []
    for plane, (label, details) in enumerate(zip(labels, details_per_plane, strict=True)):
        coco = coco_dict(label, details, file_name=f"{file_name}#plane={plane}", image_id=plane + 1)
        images += coco["images"]
        for annotation in coco["annotations"]:
            annotations.append({**annotation, "id": len(annotations) + 1})
    info = coco["info"] | {"saturated_tiles": sum(int(d.get("saturated_tiles", 0)) for d in
                                                    details_per_plane)}  # fmt: skip
    dataset = {"info": info, "images": images, "annotations": annotations}
    dataset["categories"] = coco["categories"]
    with atomic_open(path, "w") as f:
        json.dump(dataset, f)


def write_stack_imagej_rois(path, labels) -> None:
    """One polygon ROI per cell of every plane, set to its plane (ImageJ position, 1-based) and
    named ``PPPP-LLLLL`` (plane + 1, label)."""
    rois = []
    for plane, label in enumerate(labels):
        rois += _cell_rois(_check_label(label), plane)
    _write_rois(path, rois)
