"""Realistic synthetic microscopy: exact labels, seeds, each modality's look, camera ranges."""

import numpy as np
import pytest
from scipy import ndimage

from lacss_core.data import LacssDataset, label_to_locations, label_to_mask
from lacss_core.data import realistic as rl
from lacss_core.data.realistic import (
    MODALITIES,
    RealisticCells,
    RealisticConfig,
    realistic_cells,
    render_scene,
)

SIZE = 128


def _ring(mask, inner, outer):
    """Pixels between ``inner`` and ``outer`` dilations of ``mask``."""
    return ndimage.binary_dilation(mask, iterations=outer) & ~ndimage.binary_dilation(
        mask, iterations=inner
    )


@pytest.mark.parametrize("modality", MODALITIES)
@pytest.mark.parametrize("layout", rl.LAYOUTS)
def test_labels_are_exact_sequential_and_one_piece_each(modality, layout):
    for seed in range(2):
        scene = render_scene(seed, modality=modality, layout=layout, size=SIZE, diameter=(10, 40))
        label = scene.label
        assert label.dtype == np.int32 and label.shape == (SIZE, SIZE)
        count = int(label.max())
        assert count >= 1, scene.params
        np.testing.assert_array_equal(np.unique(label), np.arange(count + 1))
        for k, box in enumerate(ndimage.find_objects(label), start=1):
            _, pieces = ndimage.label(label[box] == k)  # 4-connectivity
            assert pieces == 1, f"label {k} of {modality}/{layout} seed {seed} is in pieces"
        assert np.bincount(label.ravel())[1:].min() >= rl._MIN_PIXELS


def test_sample_carries_points_and_foreground_mask():
    sample = realistic_cells(3, modality="cytoplasm", size=SIZE)
    np.testing.assert_array_equal(sample.locations, label_to_locations(sample.label))
    np.testing.assert_array_equal(sample.mask, label_to_mask(sample.label))
    weak = sample.to_weak()
    assert weak.label is None and len(weak.locations) == sample.label.max()


@pytest.mark.parametrize("modality", MODALITIES)
def test_same_seed_same_arrays_other_seed_other_image(modality):
    a, b = (render_scene((4, 2), modality=modality, size=96) for _ in range(2))
    c = render_scene((4, 3), modality=modality, size=96)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    assert a.params == b.params
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("bits, dtype", [(8, np.uint8), (12, np.uint16), (16, np.uint16)])
def test_camera_bit_depths_and_value_ranges(bits, dtype):
    for modality in MODALITIES:
        scene = render_scene(1, modality=modality, size=96, bit_depth=bits)
        assert scene.image.dtype == dtype and scene.image.shape == (96, 96, 1)
        assert int(scene.image.max()) <= 2**bits - 1
        assert scene.params["bit_depth"] == bits
        assert len(np.unique(scene.image)) > 16  # a real picture, not a flat or binary one


def test_saturation_clips_at_the_top_of_the_range_and_hot_pixels_appear():
    scene = render_scene(
        2, modality="nuclei", size=SIZE, bit_depth=12, saturation=1.0, hot_pixels=1.0,
        coverage=0.3, diameter=20,
    )  # fmt: skip
    assert scene.params["saturated"] and scene.params["hot_pixels"]
    assert np.count_nonzero(scene.image == 4095) >= 5
    clean = render_scene(
        2, modality="nuclei", size=SIZE, bit_depth=12, saturation=0.0, hot_pixels=0.0,
        coverage=0.3, diameter=20,
    )  # fmt: skip
    assert np.count_nonzero(clean.image == 4095) <= 2


def test_photon_budget_sets_the_noise():
    def background_noise(photons):
        scene = render_scene(5, modality="nuclei", size=SIZE, photons=photons, read_noise=1.0,
                             background=0.2, illumination=0.0, blur=1.0, bit_depth=16,
                             debris=0, ghosts=0, diameter=16)  # fmt: skip
        image = scene.image[..., 0].astype(float)
        inside = scene.label > 0
        far = ~ndimage.binary_dilation(inside, iterations=6)
        return np.std(np.diff(image, axis=1)[far[:, 1:]]) / image[inside].mean()

    assert background_noise(20.0) > 3 * background_noise(5000.0)


def test_nuclei_are_bright_on_a_dark_background():
    for seed in range(3):
        scene = render_scene(seed, modality="nuclei", size=SIZE, diameter=20, ghosts=0)
        image, inside = scene.image[..., 0].astype(float), scene.label > 0
        far = ~ndimage.binary_dilation(inside, iterations=5)
        assert np.median(image[inside]) > np.median(image[far]) * 1.3


def test_nuclei_size_follows_the_diameter():
    for diameter in (10.0, 40.0):
        scene = render_scene(0, modality="nuclei", size=256, diameter=diameter, layout="scattered")
        areas = np.bincount(scene.label.ravel())[1:]
        measured = np.median(2 * np.sqrt(areas / np.pi))
        assert 0.6 * diameter < measured < 1.3 * diameter


def test_diameter_bias_tilts_the_draw_towards_large_cells():
    """bias 1 makes the diameter uniform in pixels: P(d > 32) over 8-64 px is 32/56, against
    1/3 log-uniform; bias 0 is the log-uniform draw, from the same single uniform number."""
    draws = {
        bias: np.array([rl._draw_diameter(np.random.default_rng(i), (8.0, 64.0), bias)
                        for i in range(2000)])
        for bias in (0.0, 1.0)
    }  # fmt: skip
    logs = [rl._draw(np.random.default_rng(i), (8.0, 64.0), log=True) for i in range(2000)]
    np.testing.assert_array_equal(draws[0.0], logs)
    assert abs(np.mean(draws[0.0] > 32) - 1 / 3) < 0.04
    assert abs(np.mean(draws[1.0] > 32) - 32 / 56) < 0.04
    assert draws[1.0].min() >= 8 and draws[1.0].max() <= 64

    # the config's bias reaches the scene: the same seeds draw larger cells
    def diameters(bias):
        config = RealisticConfig(size=48, diameter=(8.0, 64.0), diameter_bias=bias)
        return np.array([render_scene(seed, config).params["diameter"] for seed in range(12)])

    assert np.all(diameters(2.0) >= diameters(0.0))
    assert np.mean(diameters(2.0)) > np.mean(diameters(0.0)) + 5


def test_confluent_cells_touch_and_monolayers_cover_the_field():
    scene = render_scene(0, modality="cytoplasm", size=SIZE, layout="confluent", diameter=30)
    label = scene.label
    a, b = label[:, :-1], label[:, 1:]
    touching = np.count_nonzero((a > 0) & (b > 0) & (a != b))
    assert touching > 20
    assert np.mean(label > 0) > 0.4


def test_membrane_style_is_bright_at_cell_edges():
    scene = render_scene(1, modality="cytoplasm", style="membrane", size=SIZE, diameter=40,
                         blur=0.8, photons=2000.0, layout="scattered")  # fmt: skip
    image, label = scene.image[..., 0].astype(float), scene.label
    edge = rl._boundary(label) & (label > 0)
    core = ndimage.binary_erosion(label > 0, iterations=5)
    assert image[edge].mean() > 1.3 * image[core].mean()


def test_nucleus_channel_shows_each_cells_nucleus():
    for seed in range(3):
        scene = render_scene(seed, modality="cytoplasm", nucleus_channel=True, size=SIZE,
                             diameter=30, layout="scattered", background=0.1)  # fmt: skip
        assert scene.image.shape == (SIZE, SIZE, 2)
        nuclei = scene.image[..., 1].astype(float)
        outside = ~ndimage.binary_dilation(scene.label > 0, iterations=4)
        assert np.percentile(nuclei[scene.label > 0], 90) > 2 * np.median(nuclei[outside])
    with pytest.raises(ValueError, match="nucleus_channel"):
        RealisticConfig(modality="nuclei", nucleus_channel=True)


def test_phase_contrast_cells_are_dark_with_a_bright_halo():
    for seed in range(2):
        scene = render_scene(seed, modality="phase", style="positive", size=SIZE, diameter=30,
                             layout="scattered", debris=0, illumination=0.0)  # fmt: skip
        image, inside = scene.image[..., 0].astype(float), scene.label > 0
        halo, far = _ring(inside, 1, 4), ~ndimage.binary_dilation(inside, iterations=25)
        assert np.median(image[inside]) < np.median(image[far])
        assert np.median(image[halo]) > np.median(image[far])


def test_brightfield_shows_cells_at_their_edges():
    for style in ("defocus", "dic"):
        scene = render_scene(3, modality="brightfield", style=style, size=SIZE, diameter=30,
                             layout="scattered", debris=0, illumination=0.0)  # fmt: skip
        image, inside = scene.image[..., 0].astype(float), scene.label > 0
        gradient = np.hypot(*np.gradient(ndimage.gaussian_filter(image, 1.0)))
        edges = _ring(inside, 0, 2) | (inside & ~ndimage.binary_erosion(inside, iterations=2))
        far = ~ndimage.binary_dilation(inside, iterations=10)
        assert gradient[edges].mean() > 2 * gradient[far].mean(), style


def test_debris_is_never_inside_a_cell():
    config = RealisticConfig(size=SIZE, debris=200.0, diameter=20, layout="confluent")
    rng = np.random.default_rng(0)
    world = rl._draw_world(rng, config, (SIZE, SIZE), "nuclei")
    label = render_scene(0, config).label
    inside = label > 0
    assert rl._fluorescent_debris(rng, world, label, (SIZE, SIZE))[inside].max() == 0
    assert rl._dark_specks(rng, world, label, (SIZE, SIZE))[inside].min() == 0
    assert rl._fluorescent_debris(rng, world, label, (SIZE, SIZE))[~inside].max() > 0


def test_debris_and_ghosts_do_not_change_the_labels():
    plain = render_scene(6, modality="nuclei", size=SIZE, debris=0.0, ghosts=0.0)
    dirty = render_scene(6, modality="nuclei", size=SIZE, debris=100.0, ghosts=20.0)
    np.testing.assert_array_equal(plain.label, dirty.label)
    assert not np.array_equal(plain.image, dirty.image)


def test_max_cells_caps_the_count():
    scene = render_scene(0, modality="nuclei", size=256, diameter=8, layout="confluent",
                         max_cells=50)  # fmt: skip
    assert 30 <= scene.label.max() <= 50


def test_modality_mix_draws_every_modality():
    drawn = {render_scene(i, modality=MODALITIES, size=64).modality for i in range(40)}
    assert drawn == set(MODALITIES)
    assert {render_scene(i, modality={"phase": 1, "nuclei": 0}, size=64).modality
            for i in range(5)} == {"phase"}  # fmt: skip


def test_lazy_dataset_streams_seeded_samples_into_batches():
    cells = RealisticCells(6, seed=3, modality=MODALITIES, size=96, max_cells=40)
    assert len(cells) == 6 and len(cells[1:4]) == 3
    np.testing.assert_array_equal(cells[2].image, realistic_cells((3, 2), cells.config).image)
    np.testing.assert_array_equal(cells[-1].label, cells[5].label)
    with pytest.raises(IndexError):
        cells[6]
    data = LacssDataset(
        cells, batch_size=2, max_instances=40, size=(64, 64), augment=True, normalize="range"
    )
    x, y = data[0]
    assert x["image"].shape == (2, 64, 64, 1) and x["image"].dtype == np.float32
    assert 0.0 <= x["image"].min() and x["image"].max() <= 1.0
    assert y["label"].shape == (2, 64, 64)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"modality": "confocal"}, "modality"),
        ({"modality": {"phase": -1}}, "weights"),
        ({"layout": "grid"}, "layout"),
        ({"bit_depth": 10}, "bit_depth"),
        ({"diameter": (40, 10)}, "diameter"),
        ({"diameter": 1}, "diameter"),
        ({"diameter_bias": 9}, "diameter_bias"),
        ({"diameter_bias": (0, 1)}, "diameter_bias"),
        ({"size": 8}, "size"),
        ({"max_cells": 0}, "max_cells"),
        ({"photons": "many"}, "photons"),
        ({"modality": "phase", "style": "membrane"}, "style"),
    ],
)
def test_bad_config_names_the_problem(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RealisticConfig(**kwargs)
    with pytest.raises(ValueError, match=match):
        RealisticCells(3, **kwargs)


def test_fingerprint_describes_the_stream_without_drawing_it(monkeypatch):
    """The resume record of train() must not render a million images to hash them."""
    from lacss_core.data import realistic

    monkeypatch.setattr(realistic, "realistic_cells", lambda *a, **k: pytest.fail("drew an image"))
    big = RealisticCells(10**6, seed=3, modality="nuclei")
    assert big.fingerprint() == RealisticCells(10**6, seed=3, modality="nuclei").fingerprint()
    # runs recorded before diameter_bias existed resume: the default leaves no trace
    assert "diameter_bias" not in big.fingerprint()["config"]
    tilted = RealisticCells(10**6, seed=3, modality="nuclei", diameter_bias=1.0)
    assert tilted.fingerprint()["config"]["diameter_bias"] == 1.0
    assert big.fingerprint() != RealisticCells(10**6, seed=4, modality="nuclei").fingerprint()
    assert big.fingerprint() != RealisticCells(10**6, seed=3, modality="phase").fingerprint()
