"""Capacity-aware tiling: saturated tiles are split, what stays saturated is reported.

``MarkerModel`` (from ``test_predict``) gives exact expectations: it is translation-equivariant,
so a tiling that splits saturated tiles must reproduce the whole-image result of a model with
enough capacity. ``BlobModel`` finds the cells of a dense synthetic slide (4,096 cells on
2048^2) cheaply enough to compare tilings on it.
"""

import warnings

import numpy as np
import pytest
from blob_model import BlobModel, recall
from test_predict import MarkerModel, marker_image, random_markers

from lacss_core import tiling
from lacss_core._network import Network
from lacss_core.data import SyntheticSlide
from lacss_core.predict import SaturationWarning, predict_instances


def segment(model, image, **kwargs):
    return predict_instances(model, image, **{"normalize": None, **kwargs})


@pytest.fixture(scope="module")
def markers():
    """60 markers on 128^2, 6+ px apart (none suppressed by NMS at 3 px)."""
    return random_markers(np.random.default_rng(2), (128, 128), 60, spacing=6)


@pytest.fixture(scope="module")
def reference(markers):
    """The whole image, with capacity to spare (64 slots for 60 markers)."""
    label, details = segment(MarkerModel(), marker_image((128, 128), markers), tile_size=256)
    assert len(details["scores"]) == 60 and details["saturated_tiles"] == 0
    return label, details


def spy_on_windows(model):
    """Record ``(side, saturated)`` of every window ``predict_instances`` runs ``model`` on."""
    network, calls = Network.of(model), []
    run = network.run

    def spy(window, *args, **kwargs):
        out = run(window, *args, **kwargs)
        calls.append((max(window.shape[:2]), out["saturated"]))
        return out

    network.run = spy
    return calls


def test_default_tile_size_follows_the_capacity():
    assert tiling.default_tile_size(24, 256, 64) == 192  # the demo's model
    assert tiling.default_tile_size(96, 1024, 192) == 1024  # the paper's model (at the cap)
    assert tiling.default_tile_size(24, 1024, 64) == 384
    assert tiling.default_tile_size(24, 16, 64) == 128  # never below twice the overlap
    model = MarkerModel()  # crop 16, overlap 32: 64 px tiles for 64 slots, 128 px for 256
    calls = spy_on_windows(model)
    image = marker_image((300, 300), [(150, 150, 0.9)])
    for max_output, side in ((64, 64), (256, 128)):
        calls.clear()
        segment(model, image, max_output=max_output)
        assert {s for s, _ in calls} == {side}


def test_split_cores_partition_the_parent_core():
    shape, overlap, crop = (700, 450), 64, 24
    for parent in tiling.grid_tiles(shape, 384, overlap) + [tiling.whole_tile(shape)]:
        size = tiling.child_size(parent.side, overlap, crop)
        children = tiling.split_tile(parent, size, overlap)
        assert len(children) >= 2
        cover = np.zeros(shape, int)
        for child in children:
            for axis, whole, length in (
                (child.rows, parent.rows, shape[0]),
                (child.cols, parent.cols, shape[1]),
            ):
                end, whole_end = axis.start + axis.size, whole.start + whole.size
                assert whole.start <= axis.start and end <= whole_end and axis.size <= size
                assert (axis.start - whole.start) % tiling.TILE_ALIGN == 0 or end == whole_end
                # a core edge inside the image is at least overlap / 2 from the tile's edge
                if axis.core_lo > 0:
                    assert axis.core_lo - axis.start >= overlap / 2
                if axis.core_hi < length:
                    assert axis.start + axis.size - axis.core_hi >= overlap / 2
            rows, cols = child.rows, child.cols
            cover[int(np.ceil(rows.core_lo)) : int(np.ceil(rows.core_hi)),
                  int(np.ceil(cols.core_lo)) : int(np.ceil(cols.core_hi))] += 1  # fmt: skip
        core = np.zeros(shape, int)
        core[int(np.ceil(parent.rows.core_lo)) : int(np.ceil(parent.rows.core_hi)),
             int(np.ceil(parent.cols.core_lo)) : int(np.ceil(parent.cols.core_hi))] = 1  # fmt: skip
        np.testing.assert_array_equal(cover, core)


def test_child_sizes_shrink_to_the_floor():
    sizes = [1024]
    while (child := tiling.child_size(sizes[-1], 192, 96)) < sizes[-1]:
        sizes.append(child)
    assert sizes == [1024, 608, 416, 320, 288] and tiling.floor_tile(192, 96) == 288
    assert tiling.child_size(192, 64, 24) == 128 and tiling.child_size(128, 64, 24) == 96


@pytest.mark.parametrize("tile_size", [96, 128])  # tiled, and whole (128^2 fits one tile)
def test_saturated_tiles_are_split_until_everything_fits(markers, reference, tile_size):
    # 24 slots: a 96^2 tile (about 34 markers) saturates, its 64^2 children (about 15) do not
    small = MarkerModel()
    calls = spy_on_windows(small)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SaturationWarning)
        label, details = segment(
            small, marker_image((128, 128), markers), tile_size=tile_size, max_output=24
        )
    assert (tile_size, True) in calls and (64, False) in calls  # split
    np.testing.assert_array_equal(label, reference[0])
    for key in ("scores", "locations", "areas", "bboxes"):
        np.testing.assert_array_equal(details[key], reference[1][key])
    assert details["saturated_tiles"] == 0 and not details["saturated"].any()


def test_saturation_at_the_floor_is_reported():
    dense = [(y, x, 0.9 - 0.001 * (y + x)) for y in range(2, 64, 4) for x in range(2, 64, 4)]
    image = marker_image((64, 64), dense)  # 256 markers, 4 px apart: 8 slots cannot hold them
    with pytest.warns(SaturationWarning, match=r"the image: 1 tile\(s\).*capacity of 8") as w:
        # markers 4 px apart overlap: keep them all (max_overlap 1), this counts slots
        label, details = segment(MarkerModel(), image, max_output=8, max_overlap=1.0)
    assert sum(r.category is SaturationWarning for r in w) == 1
    assert label.max() == 8 and details["saturated_tiles"] == 1 and details["saturated"].all()
    sparse = marker_image((64, 64), [(20, 20, 0.9)])
    with pytest.warns(SaturationWarning, match=r"images\[1\]: 1 tile") as w:
        _, both = segment(MarkerModel(), [sparse, image], max_output=8)
    assert sum(r.category is SaturationWarning for r in w) == 1
    assert [d["saturated_tiles"] for d in both] == [0, 1]


def test_bad_capacity_options():
    image = marker_image((32, 32), [(10, 10, 0.9)])
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="max_output"):
            segment(MarkerModel(), image, max_output=bad)
    with pytest.raises(ValueError, match="progress"):
        segment(MarkerModel(), image, progress="yes")


@pytest.fixture(scope="module")
def slide():
    slide = SyntheticSlide(2048, seed=0)  # 4,096 cells, one per 32 x 32 px
    return slide.image(), slide.label()


def test_dense_slide_recall_with_the_defaults(slide):
    image, truth = slide
    model = BlobModel()  # 1024 slots, crop 24: default tile 384 px (about 144 cells)
    assert len(np.unique(truth)) - 1 >= 4000
    with warnings.catch_warnings():
        warnings.simplefilter("error", SaturationWarning)
        _, defaults = predict_instances(model, image)
        _, small = predict_instances(model, image, tile_size=192)
    assert defaults["saturated_tiles"] == small["saturated_tiles"] == 0
    found, reference = recall(defaults["locations"], truth), recall(small["locations"], truth)
    assert reference >= 0.98 and found >= reference - 0.02


def test_dense_slide_oversized_tiles_are_split_not_truncated(slide):
    image, truth = slide
    model = BlobModel()
    calls = spy_on_windows(model)
    _, big = predict_instances(model, image, tile_size=1024)  # 1,024 cells per tile: full
    assert {side for side, saturated in calls if saturated} == {1024}
    assert big["saturated_tiles"] == 0
    assert recall(big["locations"], truth) >= 0.98
