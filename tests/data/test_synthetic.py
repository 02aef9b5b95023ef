"""Synthetic cells: formats, determinism, the look of both modes, argument checks."""

import numpy as np
import pytest
from scipy import ndimage

from lacss_core.data import SyntheticCells, label_to_locations, label_to_mask, synthetic_cells


@pytest.mark.parametrize("mode", ["fluorescence", "phase"])
def test_sample_formats(mode):
    s = synthetic_cells(1, size=(64, 80), n_cells=8, channels=2, mode=mode)
    assert s.image.shape == (64, 80, 2) and s.image.dtype == np.float32
    assert 0 <= s.image.min() and s.image.max() <= 1
    assert s.label.shape == (64, 80) and s.label.dtype == np.int32
    count = s.label.max()
    assert 4 <= count <= 8
    np.testing.assert_array_equal(np.unique(s.label), np.arange(count + 1))  # sequential
    np.testing.assert_array_equal(s.locations, label_to_locations(s.label))
    np.testing.assert_array_equal(s.mask, label_to_mask(s.label))


@pytest.mark.parametrize("mode", ["fluorescence", "phase"])
def test_same_seed_same_arrays(mode):
    a = synthetic_cells(7, size=48, n_cells=5, mode=mode)
    b = synthetic_cells(7, size=48, n_cells=5, mode=mode)
    c = synthetic_cells(8, size=48, n_cells=5, mode=mode)
    for field in ("image", "label", "locations", "mask"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.image, c.image)


def test_cells_touch_and_vary_in_size_and_brightness():
    s = synthetic_cells(0, size=128, n_cells=20)
    areas = np.bincount(s.label.ravel())[1:]
    assert areas.max() > 2 * areas.min()
    # two different cells in 4-neighbour contact somewhere: touching or overlapping cells
    a, b = s.label[:, :-1], s.label[:, 1:]
    assert np.any((a > 0) & (b > 0) & (a != b))
    means = ndimage.mean(s.image[..., 0], s.label, np.arange(1, s.label.max() + 1))
    assert means.max() - means.min() > 0.2


def test_fluorescence_cells_are_bright_and_phase_cells_dark_with_a_bright_halo():
    fluo = synthetic_cells(2, size=96, n_cells=10, noise=0.0)
    phase = synthetic_cells(2, size=96, n_cells=10, mode="phase", noise=0.0)
    np.testing.assert_array_equal(fluo.label, phase.label)  # same cells, other look
    inside, outside = fluo.mask > 0, fluo.mask == 0
    assert fluo.image[inside].mean() > fluo.image[outside].mean() + 0.3
    assert phase.image[inside].mean() < phase.image[outside].mean() - 0.1
    ring = ndimage.binary_dilation(inside, iterations=3) & ~ndimage.binary_dilation(inside)
    far = ~ndimage.binary_dilation(inside, iterations=8)
    assert phase.image[..., 0][ring].mean() > phase.image[..., 0][far].mean() + 0.05


def test_extra_channels_show_nuclei_inside_the_cells():
    s = synthetic_cells(3, size=64, n_cells=6, channels=3, noise=0.0)
    nuclei = s.image[..., 1]
    assert nuclei[s.mask > 0].mean() > nuclei[s.mask == 0].mean() + 0.1
    assert not np.array_equal(s.image[..., 1], s.image[..., 2])  # own brightness and noise


def test_synthetic_cells_sequence_is_lazy_and_seeded():
    cells = SyntheticCells(3, seed=4, size=32, n_cells=3)
    assert len(cells) == 3
    np.testing.assert_array_equal(cells[1].image, synthetic_cells((4, 1), size=32, n_cells=3).image)
    np.testing.assert_array_equal(cells[-1].image, cells[2].image)
    assert len(cells[0:2]) == 2
    with pytest.raises(IndexError):
        cells[3]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(size=(0, 8)), "size must be"),
        (dict(n_cells=-1), "n_cells must be"),
        (dict(radius=(5, 2)), "radius must be"),
        (dict(channels=0), "channels must be"),
        (dict(mode="brightfield"), "mode must be one of"),
        (dict(noise=-0.1), "noise must be"),
        (dict(blur=-1), "blur must be"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthetic_cells(0, **kwargs)
    with pytest.raises(ValueError, match=message):
        SyntheticCells(2, **kwargs)


def test_no_cells_gives_an_empty_annotation():
    s = synthetic_cells(0, size=16, n_cells=0)
    assert s.label.max() == 0 and s.locations.shape == (0, 2)
