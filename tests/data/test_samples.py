"""Sample checks, label-image converters and batching into the contract's fit() format."""

import numpy as np
import pytest

from lacss_core.data import (
    Sample,
    batch_samples,
    drop_excess_labels,
    label_to_locations,
    label_to_mask,
    pad_locations,
    relabel_sequential,
)
from lacss_core.data.samples import MIN_INSTANCE_ROWS, instance_rows

# label 7 covers (0,0),(0,1); label 3 covers the 2x2 block at rows 2-3, cols 2-3
LABEL = np.array(
    [
        [7, 7, 0, 0, 0],
        [0, 0, 0, 0, 0],
        [0, 0, 3, 3, 0],
        [0, 0, 3, 3, 0],
    ],
    np.int32,
)


def test_relabel_sequential_keeps_value_order():
    np.testing.assert_array_equal(relabel_sequential([[0, 5], [9, 5]]), [[0, 1], [2, 1]])
    out = relabel_sequential(np.array([[3, 3], [7, 7]], np.uint16))  # no background pixel
    np.testing.assert_array_equal(out, [[1, 1], [2, 2]])
    assert out.dtype == np.int32


def test_label_to_locations_rows_follow_sequential_labels():
    # row 0 <-> smallest label value (3), row 1 <-> 7
    locations = label_to_locations(LABEL)
    np.testing.assert_array_equal(locations, [[2.5, 2.5], [0.0, 0.5]])
    assert locations.dtype == np.float32


def test_label_to_locations_of_empty_label_is_empty():
    assert label_to_locations(np.zeros((3, 4), np.int32)).shape == (0, 2)


def test_label_to_mask():
    mask = label_to_mask(LABEL)
    np.testing.assert_array_equal(mask, (LABEL > 0).astype(np.float32))
    assert mask.dtype == np.float32


def test_pad_locations_keeps_valid_rows_in_order_and_pads():
    rows = [[1.0, 2.0], [-1.0, -1.0], [3.0, 4.0]]
    out = pad_locations(rows, 4)
    np.testing.assert_array_equal(out, [[1, 2], [3, 4], [-1, -1], [-1, -1]])
    assert out.dtype == np.float32


def test_pad_locations_over_capacity_says_how_many_and_what_to_raise():
    with pytest.raises(
        ValueError, match=r"sample 2 has 3 instances but max_instances=2.*subsample"
    ):
        pad_locations([[1, 1], [2, 2], [3, 3]], 2, where="sample 2")


def test_pad_locations_subsample_keeps_the_first_rows():
    out = pad_locations([[1, 1], [2, 2], [3, 3]], 2, subsample=True)
    np.testing.assert_array_equal(out, [[1, 1], [2, 2]])


def test_drop_excess_labels():
    label = np.array([[0, 4, 9], [2, 2, 9]])
    with pytest.raises(ValueError, match="3 instances but max_instances=2"):
        drop_excess_labels(label, 2)
    np.testing.assert_array_equal(
        drop_excess_labels(label, 2, subsample=True), [[0, 2, 0], [1, 1, 0]]
    )


def test_batch_full_matches_the_contract_format():
    image = np.arange(20, dtype=np.float32).reshape(4, 5)
    x, y = batch_samples([Sample(image, label=LABEL)] * 2, max_instances=3)
    assert x["image"].shape == (2, 4, 5, 1) and x["image"].dtype == np.float32
    assert x["locations"].shape == (2, 3, 2) and x["locations"].dtype == np.float32
    assert y["label"].shape == (2, 4, 5) and y["label"].dtype == np.int32
    np.testing.assert_array_equal(x["locations"][0], [[2.5, 2.5], [0.0, 0.5], [-1, -1]])
    np.testing.assert_array_equal(y["label"][0], relabel_sequential(LABEL))


def test_batch_full_over_capacity_names_the_sample():
    sample = Sample(np.zeros((4, 5)), label=LABEL, name="cells.tif")
    with pytest.raises(ValueError, match=r"sample 0 of cells.tif has 2 instances.*max_instances=1"):
        batch_samples([sample], max_instances=1)
    x, y = batch_samples([sample], max_instances=1, subsample=True)
    np.testing.assert_array_equal(x["locations"][0], [[2.5, 2.5]])
    assert set(np.unique(y["label"])) == {0, 1}


def test_batch_weak_from_points_and_from_labels():
    points = Sample(np.zeros((4, 5, 2)), locations=[[1.0, 1.0]], mask=LABEL > 0)
    labelled = Sample(np.zeros((4, 5, 2)), label=LABEL)
    x, y = batch_samples([points, labelled], max_instances=2, supervision="weak")
    assert set(y) == {"mask"} and y["mask"].dtype == np.float32
    np.testing.assert_array_equal(x["locations"][0], [[1, 1], [-1, -1]])
    np.testing.assert_array_equal(x["locations"][1], [[2.5, 2.5], [0.0, 0.5]])
    np.testing.assert_array_equal(y["mask"][1], label_to_mask(LABEL))


def test_instance_rows_is_the_next_power_of_two_between_the_floor_and_the_capacity():
    assert MIN_INSTANCE_ROWS == 16
    counts = [0, 1, 16, 17, 32, 33, 100, 300, 600]
    assert [instance_rows(n, 1024) for n in counts] == [16, 16, 16, 32, 32, 64, 128, 512, 1024]
    assert instance_rows(300, 256) == 256  # never above the capacity
    assert instance_rows(3, 8) == 8 and instance_rows(5, 64, floor=4) == 8


def _cells(count, shape=(40, 40)):
    """A label image with ``count`` one-pixel cells on a grid."""
    label = np.zeros(shape, np.int32)
    for n in range(count):
        label[2 * (n // 20), 2 * (n % 20)] = n + 1
    return Sample(np.zeros(shape), label=label)


@pytest.mark.parametrize("supervision", ["full", "weak"])
def test_bucketed_batch_cuts_only_padding_rows(supervision):
    samples = [_cells(5), _cells(21), _cells(0)]
    full_x, full_y = batch_samples(samples, max_instances=100, supervision=supervision)
    x, y = batch_samples(samples, max_instances=100, supervision=supervision, bucket=True)
    assert x["locations"].shape == (3, 32, 2) and x["locations"].flags.c_contiguous
    np.testing.assert_array_equal(x["locations"], full_x["locations"][:, :32])
    assert np.all(full_x["locations"][:, 32:] == -1)  # what was cut is padding only
    np.testing.assert_array_equal(x["image"], full_x["image"])
    for key in y:
        np.testing.assert_array_equal(y[key], full_y[key])
    x, _ = batch_samples(samples[:1], max_instances=100, supervision=supervision, bucket=True)
    assert x["locations"].shape == (1, MIN_INSTANCE_ROWS, 2)
    x, _ = batch_samples(samples, max_instances=24, supervision=supervision, bucket=True)
    assert x["locations"].shape == (3, 24, 2)  # the capacity caps the bucket


def test_batch_errors():
    a = Sample(np.zeros((4, 5)), label=LABEL)
    b = Sample(np.zeros((5, 5)), label=np.ones((5, 5), np.int32))
    with pytest.raises(ValueError, match=r"sample 1 has image shape \(5, 5, 1\).*\(4, 5, 1\)"):
        batch_samples([a, b], max_instances=4)
    weak = Sample(np.zeros((4, 5)), locations=[[1, 1]], mask=LABEL)
    with pytest.raises(ValueError, match="sample 0 has no label image; pass supervision='weak'"):
        batch_samples([weak], max_instances=4)
    with pytest.raises(ValueError, match="supervision must be one of"):
        batch_samples([a], max_instances=4, supervision="semi")
    with pytest.raises(ValueError, match="max_instances must be a positive int"):
        batch_samples([a], max_instances=0)


def test_sample_converts_and_checks_its_arrays():
    s = Sample(np.zeros((4, 5), np.uint16), locations=[[0, 0], [-1, 3]], mask=LABEL * 255)
    assert s.image.shape == (4, 5, 1) and s.image.dtype == np.float32
    np.testing.assert_array_equal(s.locations, [[0, 0], [-1, -1]])  # a negative coord: invalid row
    np.testing.assert_array_equal(s.mask, label_to_mask(LABEL))


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(label=np.zeros((4, 4), np.int32)), r"label of x.tif must have the image's shape"),
        (dict(label=LABEL.astype(np.float32)), "label of x.tif must be an integer image"),
        (dict(label=-LABEL), "label of x.tif has negative values"),
        (dict(locations=[[3.5, 1]], mask=LABEL), r"locations of x.tif row 0 .* outside"),
        (dict(locations=[[1, 1, 1]], mask=LABEL), r"must have shape \(N, 2\)"),
        (dict(locations=[[1, 1]]), "needs a label image .* or both locations and a mask"),
        (dict(locations=[[1, 1]], mask=np.ones((3, 5))), "mask of x.tif must have the image's"),
    ],
)
def test_sample_rejects_bad_fields(fields, message):
    with pytest.raises(ValueError, match=message):
        Sample(np.zeros((4, 5)), name="x.tif", **fields)


def test_sample_rejects_non_finite_image():
    with pytest.raises(ValueError, match="image contains non-finite values"):
        Sample(np.full((4, 5), np.nan), label=LABEL)
