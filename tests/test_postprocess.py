"""Host post-processing: one piece per cell, no holes (``clean_label``), cell sizes."""

import numpy as np
import pytest
from scipy import ndimage

from lacss_core.postprocess import (
    clean_label,
    count_defects,
    drop_occluded,
    equivalent_diameters,
    median_diameter,
)


def parse(text):
    """A label image from rows of digits ('.' = background)."""
    rows = text.strip().split()
    return np.array([[0 if c == "." else int(c) for c in row] for row in rows], np.int32)


def test_stray_pieces_become_background_and_the_largest_stays():
    label = parse(
        """
        11..1
        11...
        ....2
        .1.22
        """
    )
    expected = parse(
        """
        11...
        11...
        ....2
        ...22
        """
    )
    np.testing.assert_array_equal(clean_label(label), expected)


def test_pieces_touching_only_at_a_corner_are_two_pieces():
    label = parse(
        """
        11..
        11..
        ..1.
        """
    )
    assert clean_label(label)[2, 2] == 0


def test_holes_are_filled_from_background_and_lower_priority_cells():
    label = parse(
        """
        1111111
        1.1..31
        1111111
        """
    )
    # the background hole and cell 3 (lower priority than 1) inside cell 1 become cell 1
    np.testing.assert_array_equal(clean_label(label), np.ones((3, 7), np.int32))


def test_a_higher_priority_cell_inside_a_hole_keeps_its_pixels():
    label = parse(
        """
        22222
        221.2
        22222
        """
    )
    expected = parse(
        """
        22222
        22122
        22222
        """
    )
    np.testing.assert_array_equal(clean_label(label), expected)


def test_regions_open_to_the_outside_are_not_holes():
    label = parse(
        """
        111.
        1.1.
        1...
        """
    )
    np.testing.assert_array_equal(clean_label(label), label)


def test_cleaning_commutes_with_dropping_lower_priority_cells():
    """What calibration relies on: keeping the cells ranked <= k before or after cleaning gives
    the same label image, for random overlapping blobs."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        ranks = random_painted_label(rng, (40, 40), cells=12)
        clean = clean_label(ranks)
        for k in (1, 4, 8, 12):
            kept_first = clean_label(np.where(ranks <= k, ranks, 0))
            np.testing.assert_array_equal(kept_first, np.where(clean <= k, clean, 0))


def test_random_labels_come_out_in_one_piece_holding_only_higher_priority_cells():
    rng = np.random.default_rng(1)
    for _ in range(20):
        clean = clean_label(random_painted_label(rng, (40, 40), cells=12))
        for value in np.unique(clean[clean > 0]):
            mask = clean == value
            assert ndimage.label(mask)[1] == 1
            enclosed = clean[ndimage.binary_fill_holes(mask) & ~mask]
            assert np.all((enclosed > 0) & (enclosed < value))  # only higher-priority cells


def random_painted_label(rng, shape, cells):
    """SPEC 9 painting of ragged random blobs: rank r wins over ranks > r."""
    label = np.zeros(shape, np.int32)
    for rank in range(1, cells + 1):
        noise = ndimage.gaussian_filter(rng.normal(size=shape), 1.5)
        y, x = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        yy, xx = np.mgrid[: shape[0], : shape[1]]
        blob = ((yy - y) ** 2 + (xx - x) ** 2 < rng.uniform(9, 64)) & (noise > -0.05)
        label[blob & (label == 0)] = rank
    return label


def test_clean_label_keeps_values_and_rejects_bad_input():
    out = clean_label(parse("1.3\n1.3"))
    assert out.dtype == np.int32 and set(np.unique(out)) == {0, 1, 3}
    with pytest.raises(ValueError, match="2-D"):
        clean_label(np.zeros((2, 2, 2), np.int32))


def test_count_defects():
    label = parse(
        """
        111.2.2
        1.1....
        111.333
        """
    )
    assert count_defects(label) == {"cells": 3, "fragmented": 1, "with_holes": 1}
    assert count_defects(clean_label(label)) == {"cells": 3, "fragmented": 0, "with_holes": 0}


def test_diameters():
    np.testing.assert_allclose(equivalent_diameters([np.pi, 4 * np.pi]), [2.0, 4.0])
    label = np.zeros((10, 10), np.int32)
    label[:2, :2], label[5:8, 5:8], label[9, 9] = 1, 2, 5  # areas 4, 9, 1
    assert median_diameter(label) == pytest.approx(2 * np.sqrt(4 / np.pi))
    assert median_diameter([label, np.zeros((3, 3), np.int32)]) == median_diameter(label)
    assert median_diameter(np.zeros((3, 3), np.int32)) is None


def test_drop_occluded_removes_cells_hidden_beyond_the_limit():
    # cell 1: 4 px all visible; cell 2: own 4, visible 1 (75 % hidden); cell 3: own 4, visible 2
    ranks = np.array([[1, 1, 2, 0], [1, 1, 3, 3]], np.int32)
    own, visible = [4, 4, 4], [4, 1, 2]
    np.testing.assert_array_equal(
        drop_occluded(ranks, own, visible, 0.5), [[1, 1, 0, 0], [1, 1, 3, 3]]
    )  # cell 3 is exactly half hidden: kept
    dropped = drop_occluded(ranks, own, visible, 0.4)
    np.testing.assert_array_equal(dropped, [[1, 1, 0, 0], [1, 1, 0, 0]])
    np.testing.assert_array_equal(drop_occluded(ranks, own, visible, 1.0), ranks)
    assert drop_occluded(ranks, own, visible, 0.0).max() == 1
    with pytest.raises(ValueError, match="own_areas"):
        drop_occluded(ranks, own, visible[:2], 0.5)
