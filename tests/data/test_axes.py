"""The axes rule: which axes are the plane, the channels and a stack, from metadata or shape."""

import numpy as np
import pytest

from lacss_core.data import image_axes, split_planes


@pytest.mark.parametrize(
    "shape, axes, expected",
    [
        ((64, 64), None, "YX"),
        ((64, 64, 3), None, "YXC"),
        ((64, 64, 1), None, "YXC"),
        ((3, 64, 64), None, "CYX"),  # channels-first, not "64 channels"
        ((2, 8, 8), None, "CYX"),
        ((10, 64, 64), None, "QYX"),  # too many for channels: a stack
        ((3, 4, 3), None, "YXC"),  # tiny images stay channels-last
        ((5, 3, 64, 64), None, "QCYX"),
        ((3, 64, 64), "ZYX", "ZYX"),
        ((2, 64, 64), "tyx", "TYX"),
        ((3, 64, 64), "IYX", "IYX"),  # a plain multi-page TIFF
        ((3, 64, 64), "SYX", "CYX"),  # samples are channels
        ((64, 64, 3), "YXS", "YXC"),
        ((3, 2, 64, 64), "ZCYX", "ZCYX"),
        ((2, 64, 64), "QYX", "QYX"),  # unknown pages of a real plane: a stack
        ((64, 64, 2), "QYX", "YXC"),  # (H, W, C) stored as H pages of W x C
    ],
)
def test_image_axes(shape, axes, expected):
    assert image_axes(shape, axes) == expected


@pytest.mark.parametrize(
    "shape, axes, message",
    [
        ((64,), None, "at least 2 axes"),
        ((3, 64, 64), "YX", "2 letters for shape"),
        ((3, 64, 64), "ZYY", "Y exactly once"),
        ((3, 3, 64, 64), "ZZYX", "Z more than once"),
    ],
)
def test_image_axes_rejects_malformed_axes(shape, axes, message):
    with pytest.raises(ValueError, match=message):
        image_axes(shape, axes)


def test_split_planes_orders_stack_first_channels_last():
    array = np.arange(2 * 3 * 5 * 6).reshape(2, 3, 5, 6)  # Z=2, C=3, Y=5, X=6
    planes = split_planes(array, "ZCYX")
    assert planes.axes == "Z" and planes.shape == (2,)
    assert planes.images.shape == (2, 5, 6, 3)
    np.testing.assert_array_equal(planes.images[1, :, :, 2], array[1, 2])
    assert planes.describe() == "2 planes (Z=2) of 5x6 px, 3 channel(s)"


def test_split_planes_drops_length_one_stack_axes():
    array = np.zeros((1, 1, 2, 8, 9))
    planes = split_planes(array, "TZCYX")
    assert planes.axes == "" and planes.shape == () and planes.images.shape == (1, 8, 9, 2)


def test_split_planes_of_a_grey_plane_and_a_time_series():
    assert split_planes(np.zeros((8, 9))).images.shape == (1, 8, 9, 1)
    series = split_planes(np.zeros((2, 4, 8, 9)), "TZYX")
    assert series.axes == "TZ" and series.shape == (2, 4) and series.images.shape == (8, 8, 9, 1)
