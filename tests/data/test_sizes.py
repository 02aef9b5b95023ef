"""lacss_core.data.sizes: cell sizes from labels or points + masks, and what they choose."""

import numpy as np
import pytest

from lacss_core.data import Sample
from lacss_core.data.sizes import (
    RescaledSamples,
    _most_cells_in_window,
    choose_training_sizes,
    measure_points_and_mask,
    measure_samples,
    rescale_sample,
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
    chosen = choose_training_sizes(cells, crop_size=24, size=96, max_instances=8)
    assert (chosen.crop_size, chosen.size, chosen.max_instances) == (24, 96, 8)
    assert chosen.scale == 1.0  # the cells (21 px) fit, without the margin
    report = chosen.report()
    assert "given; the largest cells (21.0 px) need 32 or more" in report
    assert "  rescale " not in report
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


def _big_cells(radius=20, image=512):
    shape = (image, image)
    label = _disks(shape, radius, _grid(shape, radius, gap=4))
    image = np.where(label > 0, 1.0, 0.1).astype(np.float32)
    return Sample(image, label=label), len(_grid(shape, radius, 4))


def test_a_target_diameter_rescales_and_every_size_follows_the_rescaled_cells():
    sample, count = _big_cells(radius=20)  # 41 px discs
    cells = measure_samples([sample])
    median = float(np.median(cells.diameters))
    chosen = choose_training_sizes(cells, target_diameter=20)
    assert chosen.scale == pytest.approx(20 / median)
    assert chosen.train_diameter == 20.0
    same = choose_training_sizes(measure_samples([rescale_sample(sample, chosen.scale)]))
    assert (chosen.crop_size, chosen.size) == (same.crop_size, same.size) == (32, 128)
    report = chosen.report()
    assert f"rescale         x{chosen.scale:.3g} " in report
    assert f"--target-diameter 20 / the median diameter {median:.1f} px" in report
    assert "train_diameter  20.0" in report
    rescaled = chosen.rescale([sample])
    assert isinstance(rescaled, RescaledSamples) and rescaled.train_diameter == 20.0
    assert rescaled[0].shape == (round(512 * chosen.scale),) * 2 and rescaled[0] is rescaled[0]
    again = measure_samples(rescaled)
    assert again.count == count  # nearest neighbour: every cell survives, none merge
    assert np.median(again.diameters) == pytest.approx(20, rel=0.05)
    assert choose_training_sizes(cells).rescale([sample]) == [sample]  # scale 1: unchanged


def test_cells_that_do_not_fit_a_given_crop_are_shrunk_to_fit_it():
    sample, _ = _big_cells(radius=10)  # 21 px
    cells = measure_samples([sample])
    chosen = choose_training_sizes(cells, crop_size=16, crop_origin="the --init model's")
    assert chosen.scale == pytest.approx(16 / (1.5 * 21))
    assert chosen.crop_size == 16 and chosen.train_diameter == pytest.approx(
        np.median(cells.diameters) * chosen.scale
    )
    report = chosen.report()
    assert "the largest cells (21.0 px) do not fit the 16 px crop (the --init model's)" in report
    assert "need" not in report  # the rescaled cells fit the crop with its margin
    kept = choose_training_sizes(cells, crop_size=16, target_diameter=np.median(cells.diameters))
    assert kept.scale == 1.0 and "need 32 or more" in kept.report()  # a target overrides


def test_cells_large_for_the_preset_get_a_target_diameter_suggested():
    sample, _ = _big_cells(radius=40)  # 81 px: a 124 px crop against the preset's 32
    chosen = choose_training_sizes(measure_samples([sample]), default_crop=32)
    assert chosen.scale == 1.0 and chosen.crop_size == 124
    note = chosen.report().splitlines()[-2]
    assert "large for the preset (crop 124 px, its own is 32;" in note
    target = float(note.rsplit("--target-diameter ", 1)[1].split()[0])
    smaller = choose_training_sizes(measure_samples([sample]), target_diameter=target)
    assert smaller.crop_size <= 32 and "note" not in smaller.report()


@pytest.mark.parametrize("bad", [0, -3, float("nan"), float("inf"), "20", True])
def test_bad_target_diameters_are_named(bad):
    cells = measure_samples([_big_cells(radius=5, image=64)[0]])
    with pytest.raises(ValueError, match="target_diameter must be a finite number > 0"):
        choose_training_sizes(cells, target_diameter=bad)
    empty = measure_samples([Sample(np.zeros((32, 32)), label=np.zeros((32, 32), np.int32))])
    with pytest.raises(ValueError, match="no cell was measured in the training data"):
        choose_training_sizes(empty, target_diameter=10)


def test_rescaled_points_and_masks_move_together():
    shape = (96, 96)
    centres = [(20, 20), (20, 37), (60, 70)]
    label = _disks(shape, 7, centres)
    weak = Sample(
        np.where(label > 0, 1.0, 0.0), locations=np.array(centres, np.float32), mask=label > 0
    )
    for scale in (0.5, 1.7):
        small = rescale_sample(weak, scale)
        assert small.shape == (round(96 * scale),) * 2 and small.label is None
        np.testing.assert_allclose(small.locations, (np.array(centres) + 0.5) * scale - 0.5)
        yx = np.round(small.locations).astype(int)
        assert np.all(small.mask[yx[:, 0], yx[:, 1]] == 1)  # points stay on their cells
        assert small.mask.sum() == pytest.approx(label.astype(bool).sum() * scale**2, rel=0.1)
    with pytest.raises(ValueError, match="scale must be a finite number > 0"):
        RescaledSamples([weak], 0)
    assert RescaledSamples([weak], 2.0).fingerprint()["rescaled"] == 2.0
