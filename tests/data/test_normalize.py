"""Per-image normalisation over all channels (SPEC 11)."""

import numpy as np
import pytest

from lacss_core.data import normalize_image
from lacss_core.data.normalize import DEFAULT_METHOD, PERCENTILES


def test_range_uses_all_channels_together():
    image = np.array([[[0, 4], [2, 8]]], np.uint16)  # (1, 2, 2): min 0, max 8 over both channels
    out = normalize_image(image, "range")
    np.testing.assert_array_equal(out, [[[0, 0.5], [0.25, 1]]])
    assert out.dtype == np.float32


def test_standard_gives_zero_mean_unit_variance():
    image = np.arange(24, dtype=np.float32).reshape(2, 4, 3)
    out = normalize_image(image, "standard")
    assert abs(out.mean()) < 1e-6 and abs(out.std() - 1) < 1e-6


def test_percentile_is_the_default_and_maps_the_percentiles_to_0_and_1():
    assert DEFAULT_METHOD == "percentile" and PERCENTILES == (1.0, 99.8)
    image = np.random.default_rng(0).uniform(0, 100, (50, 40, 2))
    low, high = np.percentile(image, PERCENTILES)  # over both channels together
    out = normalize_image(image)
    np.testing.assert_allclose(out, (image - low) / (high - low), rtol=1e-6, atol=1e-6)
    assert out.dtype == np.float32 and out.min() < 0 < 1 < out.max()  # not clipped


def test_percentile_ignores_hot_pixels_that_squash_range():
    image = np.zeros((64, 64), np.float32)
    image[20:40, 20:40] = 100.0  # a cell
    image[np.arange(5), np.arange(5)] = 4095.0  # five hot pixels (0.12% of the image)
    assert normalize_image(image)[30, 30] == pytest.approx(1.0)
    assert normalize_image(image, "range")[30, 30] == pytest.approx(100 / 4095)


def test_percentile_falls_back_to_range_when_the_percentiles_meet():
    image = np.zeros((40, 40), np.float32)
    image[0, :2] = 8.0  # 2 bright pixels: the 99.8th percentile is still 0
    np.testing.assert_array_equal(normalize_image(image), normalize_image(image, "range"))


@pytest.mark.parametrize("method", ["percentile", "range", "standard"])
def test_constant_image_becomes_zeros(method):
    out = normalize_image(np.full((3, 4, 2), 7.0), method)
    np.testing.assert_array_equal(out, np.zeros((3, 4, 2)))
    assert out.dtype == np.float32


def test_bad_input():
    with pytest.raises(ValueError, match="method must be one of"):
        normalize_image(np.ones((2, 2)), "max")
    with pytest.raises(ValueError, match="non-finite"):
        normalize_image(np.array([[1.0, np.inf]]))
