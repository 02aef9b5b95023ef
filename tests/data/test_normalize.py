"""Per-image normalisation over all channels (SPEC 11)."""

import numpy as np
import pytest

from lacss_core.data import normalize_image


def test_range_uses_all_channels_together():
    image = np.array([[[0, 4], [2, 8]]], np.uint16)  # (1, 2, 2): min 0, max 8 over both channels
    out = normalize_image(image)
    np.testing.assert_array_equal(out, [[[0, 0.5], [0.25, 1]]])
    assert out.dtype == np.float32


def test_standard_gives_zero_mean_unit_variance():
    image = np.arange(24, dtype=np.float32).reshape(2, 4, 3)
    out = normalize_image(image, "standard")
    assert abs(out.mean()) < 1e-6 and abs(out.std() - 1) < 1e-6


@pytest.mark.parametrize("method", ["range", "standard"])
def test_constant_image_becomes_zeros(method):
    out = normalize_image(np.full((3, 4, 2), 7.0), method)
    np.testing.assert_array_equal(out, np.zeros((3, 4, 2)))
    assert out.dtype == np.float32


def test_bad_input():
    with pytest.raises(ValueError, match="method must be one of"):
        normalize_image(np.ones((2, 2)), "percentile")
    with pytest.raises(ValueError, match="non-finite"):
        normalize_image(np.array([[1.0, np.inf]]))
