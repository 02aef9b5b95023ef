"""Writers: each output is read back with an independent reader and compared with the label."""

import csv
import json
import zipfile

import imageio.v3 as iio
import numpy as np
import pytest
import roifile
import tifffile
from matplotlib.path import Path as PolygonPath

from lacss_core import export


def disc(shape, centre, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


@pytest.fixture
def label():
    """Three cells: a disc, a rectangle touching the image edge, an L shape; one pixel cell."""
    label = np.zeros((40, 50), np.int32)
    label[disc(label.shape, (12, 14), 6)] = 1
    label[25:40, 0:9] = 2
    label[5:20, 30:34] = 3
    label[16:20, 34:44] = 3
    label[35, 45] = 4
    return label


def details_of(label):
    cells = range(1, label.max() + 1)
    boxes = []
    for cell in cells:
        rows, cols = np.nonzero(label == cell)
        boxes.append((rows.min(), cols.min(), rows.max() + 1, cols.max() + 1))
    return {
        "scores": np.linspace(0.9, 0.6, len(cells)).astype(np.float32),
        "locations": np.array([np.argwhere(label == c).mean(0) for c in cells], np.float32),
        "areas": np.bincount(label.ravel())[1:].astype(np.int32),
        "bboxes": np.array(boxes, np.int32),
    }


def test_label_tiff_round_trip(tmp_path, label):
    export.write_label_tiff(tmp_path / "a.tif", label)
    back = tifffile.imread(tmp_path / "a.tif")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, label)
    big = label.astype(np.int64) * 30000
    export.write_label_tiff(tmp_path / "b.tif", big)
    assert tifffile.imread(tmp_path / "b.tif").dtype == np.uint32


def test_overlay_draws_outlines_only_on_cell_borders(tmp_path, label):
    image = np.random.default_rng(0).uniform(0, 1000, label.shape).astype(np.uint16)
    export.write_overlay_png(tmp_path / "o.png", image, label)
    rgb = iio.imread(tmp_path / "o.png")
    assert rgb.shape == label.shape + (3,) and rgb.dtype == np.uint8
    edge = export.outlines(label)
    assert np.all(rgb[edge] == (255, 255, 0))
    assert edge[12, 8] and not edge[12, 14] and not edge[0, 0]  # disc border, centre, background
    assert edge[35, 45]  # a one-pixel cell is all outline
    grey = rgb[~edge]
    assert np.all(grey[:, 0] == grey[:, 1]) and np.all(grey[:, 1] == grey[:, 2])


def test_display_image_handles_channels():
    for shape in [(8, 8), (8, 8, 1), (8, 8, 2), (8, 8, 3), (8, 8, 5)]:
        image = np.random.default_rng(0).uniform(0, 1, shape)
        assert export.display_image(image).shape == (8, 8, 3)
    assert export.display_image(np.zeros((4, 4))).max() == 0  # constant image: no division by 0


def test_csv_table(tmp_path, label):
    details = details_of(label)
    export.write_csv(tmp_path / "c.csv", details)
    with open(tmp_path / "c.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(export.CSV_COLUMNS)
    assert [int(r["label"]) for r in rows] == [1, 2, 3, 4]
    assert [int(r["area"]) for r in rows] == details["areas"].tolist()
    assert [int(r["bbox_x1"]) for r in rows] == details["bboxes"][:, 3].tolist()
    np.testing.assert_allclose([float(r["y"]) for r in rows], details["locations"][:, 0], atol=0.01)
    scores = export.read_csv_scores(tmp_path / "c.csv")
    np.testing.assert_allclose(list(scores.values()), details["scores"], rtol=1e-5)


def test_coco_json_decodes_with_pycocotools(tmp_path, label):
    from pycocotools.coco import COCO

    details = details_of(label)
    export.write_coco_json(tmp_path / "c.json", label, details, file_name="img.tif")
    coco = COCO(str(tmp_path / "c.json"))
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert len(annotations) == 4 and coco.loadImgs(1)[0]["file_name"] == "img.tif"
    for ann in annotations:
        np.testing.assert_array_equal(coco.annToMask(ann), label == ann["id"])
        y0, x0, y1, x1 = details["bboxes"][ann["id"] - 1]
        assert ann["bbox"] == [x0, y0, x1 - x0, y1 - y0]
    with open(tmp_path / "c.json") as f:
        assert json.load(f)["annotations"][0]["score"] == pytest.approx(0.9)


def test_rle_of_a_mask_starting_with_foreground():
    mask = np.array([[1, 0], [1, 1]], bool)
    assert export.rle_encode(mask) == {"size": [2, 2], "counts": [0, 2, 1, 1]}


def test_imagej_rois_rasterise_back_to_the_cells(tmp_path, label):
    export.write_imagej_rois(tmp_path / "r.zip", label)
    rois = roifile.roiread(tmp_path / "r.zip")
    assert [roi.name for roi in rois] == ["00001", "00002", "00003", "00004"]
    yy, xx = np.mgrid[: label.shape[0], : label.shape[1]]
    centres = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], -1)  # ImageJ pixel centres
    for cell, roi in enumerate(rois, start=1):
        inside = PolygonPath(roi.coordinates()).contains_points(centres).reshape(label.shape)
        np.testing.assert_array_equal(inside, label == cell)


def test_imagej_rois_of_an_empty_label(tmp_path):
    export.write_imagej_rois(tmp_path / "r.zip", np.zeros((8, 8), np.int32))
    assert zipfile.ZipFile(tmp_path / "r.zip").namelist() == []


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 1), np.int32), np.zeros((4, 4), np.float32)])
def test_writers_reject_non_label_arrays(tmp_path, bad):
    with pytest.raises(ValueError, match="label must be a 2-D integer array"):
        export.write_label_tiff(tmp_path / "x.tif", bad)
