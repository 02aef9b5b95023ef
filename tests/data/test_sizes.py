"""lacss_core.data.sizes: cell sizes from labels or points + masks, and what they choose."""

import numpy as np
import pytest

from lacss_core.data import Sample
from lacss_core.data.sizes import (
    _most_cells_in_window,
    choose_training_sizes,
    measure_points_and_mask,
    measure_samples,
)


def _disks(shape, radius, centres):
    """A label image of disks of ``radius`` at ``centres`` (label i + 1 for centre i)."""
    yy, xx = np.indices(shape)
    label = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate(centres):
        label[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = i + 1
    return label


def _grid(shape, radius, gap):
    step = 2 * radius + 1 + gap
    return [
        (y, x)
        for y in range(radius, shape[0] - radius, step)
        for x in range(radius, shape[1] - radius, step)
    ]


@pytest.mark.parametrize(
    "radius, image, crop, size",
    [(10, 512, 32, 128), (20, 512, 64, 256), (20, 200, 64, 192), (3, 96, 16, 64)],
)
def test_sizes_follow_cells_of_known_diameter(radius, image, crop, size):
    shape = (image, image)
    label = _disks(shape, radius, _grid(shape, radius, gap=4))
    cells = measure_samples([Sample(np.zeros(shape), label=label)])
    assert cells.source == "labels"
    assert np.allclose(cells.extents, 2 * radius + 1)
    assert np.allclose(cells.diameters, 2 * radius + 1, rtol=0.15)  # pixel discs
    chosen = choose_training_sizes(cells)
    assert (chosen.crop_size, chosen.size) == (crop, size)
    assert chosen.crop_size >= 1.5 * (2 * radius + 1) and chosen.crop_size % 4 == 0
    assert chosen.max_instances == 256
    assert chosen.train_diameter == pytest.approx(np.median(cells.diameters))
    report = chosen.report()
    assert f"{len(_grid(shape, radius, 4))} cells in 1 image(s), from labels" in report
    assert f"--crop-size     {crop}" in report and f"--size          {size}" in report
    assert ("cut to the largest image (200 px)" in report) == (image == 200)


def test_given_values_win_and_a_too_small_crop_is_pointed_out():
    shape = (256, 256)
    cells = measure_samples([Sample(np.zeros(shape), label=_disks(shape, 10, _grid(shape, 10, 4)))])
    chosen = choose_training_sizes(cells, crop_size=16, size=96, max_instances=8)
    assert (chosen.crop_size, chosen.size, chosen.max_instances) == (16, 96, 8)
    report = chosen.report()
    assert "given; the largest cells (21.0 px) need 32 or more" in report
    assert "--size          96    given" in report
    kept = choose_training_sizes(cells, crop_size=48, crop_origin="the --init model's")
    assert kept.crop_size == 48 and "48    the --init model's\n" in kept.report()
    assert kept.size == 256  # 4 x 48 -> 256, the image side


def test_points_and_masks_measure_touching_cells_like_their_labels():
    shape = (160, 160)
    radius = 8
    # pairs of touching disks (one mask component for two cells) and lone ones
    centres = [(20, 20), (20, 37), (60, 60), (60, 77), (77, 60), (120, 30), (130, 120)]
    label = _disks(shape, radius, centres)
    diameters, extents, points = measure_points_and_mask(
        np.array(centres + [(-1, -1), (150, 5)], np.float32),  # padding, and one on background
        label > 0,
    )
    assert len(points) == len(centres)
    true = measure_samples([Sample(np.zeros(shape), label=label)])
    np.testing.assert_allclose(np.median(diameters), np.median(true.diameters), rtol=0.05)
    np.testing.assert_allclose(extents, 2 * radius + 1, rtol=0.15)  # not the merged boxes
    weak = Sample(np.zeros(shape), locations=np.array(centres, np.float32), mask=label > 0)
    cells = measure_samples([weak])
    assert cells.source == "points + masks"
    chosen = choose_training_sizes(cells)
    assert chosen.crop_size == choose_training_sizes(true).crop_size == 28


def test_crowded_crops_raise_max_instances():
    assert _most_cells_in_window([np.array([[0, 0], [0, 5], [10, 10], [15, 15.5]])], 6) == 2
    assert _most_cells_in_window([np.zeros((0, 2))], 64) == 0
    shape = (256, 256)
    label = _disks(shape, 1, _grid(shape, 1, gap=1))  # 64 x 64 tiny cells, 4 px apart
    chosen = choose_training_sizes(measure_samples([Sample(np.zeros(shape), label=label)]))
    assert chosen.size == 64
    assert chosen.max_instances == 16 * 16 * 1.25  # 16 x 16 centres in a 64 px window
    assert "a 64 px crop holds at most 256 cells" in chosen.report()


def test_no_cells_falls_back_to_defaults():
    chosen = choose_training_sizes(
        measure_samples([Sample(np.zeros((100, 300)), label=np.zeros((100, 300), np.int32))]),
        default_crop=96,
    )
    assert (chosen.crop_size, chosen.size, chosen.train_diameter) == (96, 256, None)
    assert "no cell measured" in chosen.report()
    with pytest.raises(ValueError, match="samples is empty"):
        measure_samples([])
