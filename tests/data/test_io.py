"""Folder loaders: pairing rules, file formats, and an error naming the file for each bad input."""

import re

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from lacss_core.data import (
    StackError,
    load_labelled_folder,
    load_point_folder,
    read_image,
    read_label,
    read_planes,
    read_points,
)

LABEL = np.zeros((12, 16), np.uint16)
LABEL[2:6, 3:7] = 5
LABEL[7:11, 9:14] = 2


def grey16(shape=(12, 16)):
    return (np.arange(np.prod(shape)) * 97 % 65535).astype(np.uint16).reshape(shape)


def rgb8(shape=(12, 16)):
    return (np.arange(np.prod(shape) * 3) % 251).astype(np.uint8).reshape(*shape, 3)


def match_path(path):
    return re.escape(str(path))


# ---- fully supervised folders -------------------------------------------------------------


def test_labelled_folder_pairs_images_with_their_masks(tmp_path):
    tifffile.imwrite(tmp_path / "img_001.tif", grey16())
    tifffile.imwrite(tmp_path / "img_001_masks.tif", LABEL)
    iio.imwrite(tmp_path / "img_002.png", rgb8())
    iio.imwrite(tmp_path / "img_002_masks.png", LABEL.astype(np.uint8))
    (tmp_path / "notes.txt").write_text("ignored")
    first, second = load_labelled_folder(tmp_path)
    assert first.name.endswith("img_001.tif") and second.name.endswith("img_002.png")
    np.testing.assert_array_equal(first.image[..., 0], grey16())  # raw 16-bit values
    assert first.image.shape == (12, 16, 1) and first.image.dtype == np.float32
    np.testing.assert_array_equal(second.image, rgb8())
    np.testing.assert_array_equal(first.label, LABEL)
    assert first.label.dtype == np.int32


def test_label_suffix_is_configurable(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", grey16())
    tifffile.imwrite(tmp_path / "a_label.tif", LABEL)
    (sample,) = load_labelled_folder(tmp_path, label_suffix="_label")
    np.testing.assert_array_equal(sample.label, LABEL)


def test_read_image_channel_first_tiff_and_rgba_png(tmp_path):
    cf = np.stack([grey16(), grey16() // 2, grey16() // 3])
    tifffile.imwrite(tmp_path / "cf.tif", cf, photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_image(tmp_path / "cf.tif"), np.moveaxis(cf, 0, -1))
    two = np.stack([grey16(), grey16() // 2])
    tifffile.imwrite(tmp_path / "c2.tif", two, metadata={"axes": "CYX"})
    assert read_image(tmp_path / "c2.tif").shape == (12, 16, 2)
    tifffile.imwrite(tmp_path / "hw2.tif", np.moveaxis(two, 0, -1))  # stored as 12 pages 16x2
    assert read_image(tmp_path / "hw2.tif").shape == (12, 16, 2)
    rgba = np.concatenate([rgb8(), np.full((12, 16, 1), 255, np.uint8)], axis=-1)
    iio.imwrite(tmp_path / "rgba.png", rgba)
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgb8())
    tifffile.imwrite(tmp_path / "page.tif", grey16()[None])  # (1, H, W)
    assert read_image(tmp_path / "page.tif").shape == (12, 16, 1)


def test_read_label_accepts_integral_float_labels(tmp_path):
    tifffile.imwrite(tmp_path / "l.tif", LABEL.astype(np.float32))
    np.testing.assert_array_equal(read_label(tmp_path / "l.tif"), LABEL)


def test_missing_label_names_the_image_and_the_expected_file(tmp_path):
    tifffile.imwrite(tmp_path / "img_001.tif", grey16())
    expected = tmp_path / "img_001_masks.*"
    with pytest.raises(
        ValueError, match=f"img_001.tif has no label image: expected {match_path(expected)}"
    ):
        load_labelled_folder(tmp_path)


def test_label_without_image(tmp_path):
    tifffile.imwrite(tmp_path / "img_001.tif", grey16())
    tifffile.imwrite(tmp_path / "img_001_masks.tif", LABEL)
    tifffile.imwrite(tmp_path / "img_002_masks.tif", LABEL)
    with pytest.raises(ValueError, match="img_002_masks.tif has no image named img_002"):
        load_labelled_folder(tmp_path)


@pytest.mark.parametrize(
    "label, message",
    [
        (np.ones((12, 15), np.uint16), r"has size \(12, 15\) but its image is \(12, 16\)"),
        (np.zeros((12, 16), np.uint16), "is empty: it has no labelled cells"),
        (np.full((12, 16), 1.5, np.float32), "has non-integer values"),
        (np.ones((12, 16, 3), np.uint8), r"has shape \(12, 16, 3\); expected one channel"),
        (-np.ones((12, 16), np.int16), "has negative values"),
    ],
)
def test_bad_label_images_are_named(tmp_path, label, message):
    tifffile.imwrite(tmp_path / "img.tif", grey16())
    tifffile.imwrite(tmp_path / "img_masks.tif", label)
    with pytest.raises(
        ValueError, match=f"label image {match_path(tmp_path / 'img_masks.tif')} {message}"
    ):
        load_labelled_folder(tmp_path)


def test_unreadable_file_is_named(tmp_path):
    (tmp_path / "img.tif").write_bytes(b"not a tiff at all")
    tifffile.imwrite(tmp_path / "img_masks.tif", LABEL)
    with pytest.raises(
        ValueError, match=f"cannot read image file {match_path(tmp_path / 'img.tif')}"
    ):
        load_labelled_folder(tmp_path)


def test_volume_is_not_an_image(tmp_path):
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((7, 12, 16), np.uint8))
    with pytest.raises(StackError, match=r"img.tif is a stack.*7 planes \(Q=7\) of 12x16 px"):
        read_image(tmp_path / "img.tif")


GREY = "minisblack"


def _stack(n=3):
    return np.stack([grey16() + i for i in range(n)])


@pytest.mark.parametrize(
    "write, axes",
    [
        (lambda p, a: tifffile.imwrite(p, a, imagej=True, metadata={"axes": "ZYX"}), "Z"),
        (lambda p, a: tifffile.imwrite(p, a[:2], imagej=True, metadata={"axes": "TYX"}), "T"),
        (lambda p, a: tifffile.imwrite(p, a, ome=True, metadata={"axes": "ZYX"}), "Z"),
        (lambda p, a: tifffile.imwrite(p, a, photometric=GREY, metadata={"axes": "ZYX"}), "Z"),
        (lambda p, a: [tifffile.imwrite(p, x, append=True, metadata=None) for x in a], "I"),
        (lambda p, a: tifffile.imwrite(p, a[:2]), "Q"),  # shaped, axes unknown
    ],
    ids=["imagej-zyx", "imagej-tyx", "ome-zyx", "shaped-zyx", "plain-pages", "shaped-unknown"],
)
def test_stacks_are_refused_with_how_to_pick_a_plane(tmp_path, write, axes):
    path = tmp_path / "stack.tif"
    write(path, _stack())
    with pytest.raises(StackError, match=rf"is a stack.*\({axes}=.*--plane N.*per-plane") as info:
        read_image(path)
    count = len(info.value.planes.images)
    planes = read_planes(path)
    assert planes.axes == axes and planes.images.shape == (count, 12, 16, 1)
    for i in range(count):
        np.testing.assert_array_equal(read_image(path, plane=i)[..., 0], _stack()[i])
    with pytest.raises(ValueError, match=f"plane must be an int in 0..{count - 1}"):
        read_image(path, plane=count)


def test_imagej_hyperstack_with_channels(tmp_path):
    data = np.stack([_stack(2)] * 3)  # Z=3, C=2
    tifffile.imwrite(tmp_path / "h.tif", data, imagej=True, metadata={"axes": "ZCYX"})
    planes = read_planes(tmp_path / "h.tif")
    assert planes.axes == "Z" and planes.images.shape == (3, 12, 16, 2)
    channels = read_image(tmp_path / "h.tif", plane=1, axes=None)
    np.testing.assert_array_equal(channels, np.moveaxis(data[1], 0, -1))


def test_pages_declared_as_channels(tmp_path):
    path = tmp_path / "pages.tif"
    for page in _stack():
        tifffile.imwrite(path, page, append=True, metadata=None)
    np.testing.assert_array_equal(read_image(path, axes="CYX"), np.moveaxis(_stack(), 0, -1))


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.png", b"", "is empty \\(0 bytes\\), not an image"),
        ("empty.tif", b"", "is empty \\(0 bytes\\), not an image"),
        ("notes.txt", b"hello", "is not an image file: lacss reads .tif"),
        ("table.csv", b"y,x\n1,2\n", "is not an image file"),
        ("half.png", b"\x89PNG\r\n\x1a\n" + b"x" * 30, "not a valid PNG image or truncated"),
        ("junk.tif", b"II*\x00 not a tiff", "not a valid TIFF file or truncated"),
    ],
)
def test_not_an_image_is_said_plainly(tmp_path, caplog, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        read_image(tmp_path / name)
    assert "backend" not in str(info.value) and "pyav" not in str(info.value)
    assert "tifffile" not in caplog.text  # no log noise beside the error


def test_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist or is not a directory"):
        load_labelled_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="has no image files"):
        load_labelled_folder(tmp_path)
    tifffile.imwrite(tmp_path / "a.tif", grey16())
    iio.imwrite(tmp_path / "a.png", rgb8())
    with pytest.raises(ValueError, match="share the stem 'a'"):
        load_labelled_folder(tmp_path)


# ---- weakly supervised folders ------------------------------------------------------------


def write_point_sample(folder, stem="img_001", csv="y,x\n3,4\n8.5,11\n"):
    tifffile.imwrite(folder / f"{stem}.tif", grey16())
    iio.imwrite(folder / f"{stem}_mask.png", ((LABEL > 0) * 255).astype(np.uint8))
    (folder / f"{stem}_points.csv").write_text(csv)


def test_point_folder_happy_path(tmp_path):
    write_point_sample(tmp_path)
    write_point_sample(tmp_path, "img_002", csv="index,axis-0,axis-1\n0,2,3\n1,-0.3,15.4\n")
    first, second = load_point_folder(tmp_path)
    np.testing.assert_array_equal(first.locations, [[3, 4], [8.5, 11]])
    np.testing.assert_array_equal(first.mask, (LABEL > 0).astype(np.float32))
    assert first.label is None
    np.testing.assert_array_equal(second.locations, [[2, 3], [0, 15]])  # clamped border clicks


def test_headerless_points(tmp_path):
    (tmp_path / "p.csv").write_text("1,2\n\n3,4\n")
    np.testing.assert_array_equal(read_points(tmp_path / "p.csv", (12, 16)), [[1, 2], [3, 4]])


@pytest.mark.parametrize(
    "csv, message",
    [
        ("", "has no points"),
        ("y,x\n", "has no points"),
        ("row,col\n1,2\n", "has header .*; expected columns y,x"),
        ("1,2,3\n", "has 3 columns and no header"),
        ("y,x\n1,a\n", "data row 1: cannot read y,x"),
        ("y,x\n1,2\n12,3\n", r"data row 2: point \(12.0, 3.0\) lies outside the 12x16 image"),
        ("y,x\nnan,1\n", "non-finite coordinate"),
    ],
)
def test_bad_points_files_are_named(tmp_path, csv, message):
    write_point_sample(tmp_path, csv=csv)
    path = match_path(tmp_path / "img_001_points.csv")
    with pytest.raises(ValueError, match=f"points file {path}.*{message}"):
        load_point_folder(tmp_path)


def test_missing_points_or_mask(tmp_path):
    write_point_sample(tmp_path)
    (tmp_path / "img_001_points.csv").unlink()
    with pytest.raises(
        ValueError, match="img_001.tif has no points file: expected .*img_001_points.csv"
    ):
        load_point_folder(tmp_path)
    write_point_sample(tmp_path)
    (tmp_path / "img_001_mask.png").unlink()
    with pytest.raises(ValueError, match=r"img_001.tif has no mask: expected .*img_001_mask\.\*"):
        load_point_folder(tmp_path)


def test_empty_or_mismatched_mask(tmp_path):
    write_point_sample(tmp_path)
    tifffile.imwrite(tmp_path / "img_001_mask.tif", np.zeros((12, 16), np.uint8))
    (tmp_path / "img_001_mask.png").unlink()
    with pytest.raises(ValueError, match="img_001_mask.tif is empty: it has no foreground"):
        load_point_folder(tmp_path)
    tifffile.imwrite(tmp_path / "img_001_mask.tif", np.ones((10, 16), np.uint8))
    with pytest.raises(ValueError, match=r"mask .*img_001_mask.tif has size \(10, 16\)"):
        load_point_folder(tmp_path)
