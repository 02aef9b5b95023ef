"""LacssDataset(random_crops=True): any image count and size, crops a pure function of the step."""

import numpy as np
import pytest

from lacss_core.data import LacssDataset, Sample, synthetic_cells
from lacss_core.data.samples import valid_rows
from lacss_core.train import StepBatches


def _position_image(h, w):
    """An image whose pixel value is its flat index + 1, so a crop reveals where it came from."""
    image = np.arange(1, h * w + 1, dtype=np.float32).reshape(h, w)
    return Sample(image, label=np.zeros((h, w), np.int32), name=f"{h}x{w}")


def _crops(h=96, w=80, size=32, **kwargs):
    return LacssDataset(
        [_position_image(h, w)],
        batch_size=4,
        max_instances=4,
        size=size,
        random_crops=True,
        normalize=None,
        **kwargs,
    )


def test_one_image_gives_batches_of_crops_that_cover_it():
    ds = _crops()  # 1 image, batch 4: no "batch_size larger than the samples" error
    assert len(ds) == 2  # round(96 * 80 / (4 * 32 * 32))
    seen = np.zeros(96 * 80 + 1, bool)
    for step in range(40):
        for crop in ds.crops_for_step(step):
            window = crop.image[..., 0].astype(np.int64)
            oy, ox = divmod(int(window[0, 0]) - 1, 80)
            assert 0 <= oy <= 96 - 32 and 0 <= ox <= 80 - 32
            expected = np.arange(96 * 80).reshape(96, 80)[oy : oy + 32, ox : ox + 32] + 1
            np.testing.assert_array_equal(window, expected)  # an unflipped, unscaled window
            seen[window.ravel()] = True
    assert seen[1:].all()  # every pixel, corners included, lies in some crop


def test_the_crops_of_a_step_depend_only_on_seed_and_step():
    def images(ds, step):
        return np.stack([c.image for c in ds.crops_for_step(step)])

    a, b, other = _crops(augment=True), _crops(augment=True), _crops(augment=True, seed=1)
    np.testing.assert_array_equal(images(a, 7), images(b, 7))
    assert not np.array_equal(images(a, 7), images(a, 8))
    assert not np.array_equal(images(a, 7), images(other, 7))
    # Through the step schedule (epoch, index = divmod(step, len)), in any order.
    steps = StepBatches(b, 0, 10)
    for step in (9, 3, 4):
        x, _ = steps.batch_for_step(step)
        np.testing.assert_array_equal(x["image"], images(a, step))


def test_images_are_drawn_in_proportion_to_their_area_and_small_ones_padded():
    samples = [_position_image(20, 20), _position_image(40, 40), _position_image(60, 20)]
    ds = LacssDataset(
        samples, batch_size=4, max_instances=4, size=32, random_crops=True, normalize=None
    )
    np.testing.assert_allclose(ds.image_probabilities(), [400 / 3200, 1600 / 3200, 1200 / 3200])
    sources = np.concatenate([ds.crop_sources(t) for t in range(500)])
    counts = np.bincount(sources, minlength=3) / sources.size
    np.testing.assert_allclose(counts, ds.image_probabilities(), atol=0.03)
    x, _ = ds[0]
    assert x["image"].shape == (4, 32, 32, 1)
    for j, image in zip(ds.crop_sources(0), x["image"][..., 0], strict=True):
        h, w = samples[j].shape
        assert not image[min(h, 32) :].any() and not image[:, min(w, 32) :].any()  # zero padding
        assert image[: min(h, 32), : min(w, 32)].all()


@pytest.mark.parametrize("augment", [False, True])
def test_weak_crops_keep_points_and_mask_together(augment):
    sample = synthetic_cells(seed=3, size=(96, 128), n_cells=20, radius=(5.0, 7.0)).to_weak()
    ds = LacssDataset(
        [sample],
        batch_size=4,
        max_instances=32,
        supervision="weak",
        size=48,
        augment=augment,
        random_crops=True,
        bucket_instances=False,
    )
    kept, steps = 0, StepBatches(ds, 0, 6)
    for step in range(6):
        x, y = steps.batch_for_step(step)
        for points, mask in zip(x["locations"], y["mask"], strict=True):
            valid = points[valid_rows(points)]
            yx = np.round(valid).astype(int)
            assert (mask[yx[:, 0], yx[:, 1]] == 1).all()  # every kept point is on its cell
            kept += len(valid)
    assert kept > 0


def test_random_crops_needs_a_size():
    with pytest.raises(ValueError, match="random_crops=True needs size"):
        LacssDataset([_position_image(8, 8)], batch_size=2, max_instances=1, random_crops=True)
