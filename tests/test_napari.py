"""The napari plugin (lacss_core.napari): reader and writer, Segment and Train widgets, cancel,
errors as notifications. A real (hidden) viewer under Xvfb, which pytest-xvfb starts.

Runs on the active backend; every test runs on both. Cost: one tiny model, 64 px images, a few
training steps.
"""

import os

import numpy as np
import pytest

napari = pytest.importorskip(
    "napari", reason="napari is not installed: pip install 'lacss-core[napari]'"
)

import keras  # noqa: E402
import tifffile  # noqa: E402

from lacss_core import export, pretrained  # noqa: E402
from lacss_core.data import realistic_cells, synthetic_cells  # noqa: E402
from lacss_core.data.sizes import measure_points_and_mask  # noqa: E402
from lacss_core.models import Lacss  # noqa: E402
from lacss_core.napari import _layers, _models  # noqa: E402
from lacss_core.napari._reader import napari_get_reader  # noqa: E402
from lacss_core.napari._segment import SegmentWidget  # noqa: E402
from lacss_core.napari._train import (  # noqa: E402
    TrainWidget,
    instance_capacity,
    split_validation,
    unused_path,
)
from lacss_core.postprocess import DEFAULT_MAX_OVERLAP  # noqa: E402
from lacss_core.predict import predict_instances  # noqa: E402

PLUGIN = "lacss-core"
JOB_TIMEOUT_MS = 120_000


@pytest.fixture(autouse=True)
def _display():
    """Fail with the fix instead of letting Qt abort the whole run when there is no display."""
    if not os.environ.get("DISPLAY") and os.environ.get("QT_QPA_PLATFORM") != "offscreen":
        pytest.fail(
            "the napari tests need an X display: apt-get install xvfb (pytest-xvfb starts it)"
        )


@pytest.fixture(scope="module")
def cells():
    """A 64 x 64 synthetic image with its label image (a handful of cells)."""
    sample = synthetic_cells(3, size=(64, 64), n_cells=6, radius=(5.0, 8.0))
    return sample.image[..., 0], sample.label


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A seeded lacss_tiny saved as .keras (random weights: the plumbing is under test)."""
    keras.utils.set_random_seed(0)
    model = Lacss.from_preset("lacss_tiny")
    model.build((None, None, None, 1))
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    return path


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def notifications():
    """The messages of the napari notifications shown during the test."""
    from napari.utils.notifications import notification_manager

    messages = []

    def record(event):
        messages.append(event.message if hasattr(event, "message") else str(event))

    notification_manager.notification_ready.connect(record)
    yield messages
    notification_manager.notification_ready.disconnect(record)


def wait_for(qtbot, controls):
    qtbot.waitUntil(lambda: not controls.running, timeout=JOB_TIMEOUT_MS)


# ---------------------------------------------------------------------------- reader / writer
def test_labels_round_trip_through_writer_and_reader(viewer, cells, tmp_path):
    _, label = cells
    layer = viewer.add_labels(label.astype(np.int64), name="cells")
    path = tmp_path / "cells_label.tif"
    written = layer.save(str(path), plugin=PLUGIN)
    assert written == [str(path)]
    on_disk = tifffile.imread(path)
    assert on_disk.dtype == np.uint16  # what lacss predict writes
    np.testing.assert_array_equal(on_disk, label)

    [opened] = viewer.open(path, plugin=PLUGIN)
    assert opened._type_string == "labels" and opened.name == "cells_label"
    np.testing.assert_array_equal(opened.data, label)


def test_reader_declines_intensity_tiffs_and_plain_zips(tmp_path):
    tifffile.imwrite(tmp_path / "photo_label.tif", np.full((8, 8), 0.5, np.float32))
    (tmp_path / "notes.zip").write_bytes(b"not a zip")
    assert napari_get_reader(str(tmp_path / "photo_label.tif")) is None
    assert napari_get_reader(str(tmp_path / "notes.zip")) is None
    assert napari_get_reader(str(tmp_path / "image.png")) is None


def test_mask_tiff_opens_as_binary_labels(tmp_path):
    tifffile.imwrite(tmp_path / "a_mask.tif", np.array([[0, 255], [7, 0]], np.uint8))
    [(data, meta, kind)] = napari_get_reader(str(tmp_path / "a_mask.tif"))(tmp_path / "a_mask.tif")
    assert kind == "labels" and meta["name"] == "a_mask"
    np.testing.assert_array_equal(data, [[0, 1], [1, 0]])


def test_writer_refuses_a_stack_with_a_message(viewer, tmp_path, notifications):
    layer = viewer.add_labels(np.zeros((2, 8, 8), np.int32), name="stack")
    with pytest.warns(UserWarning, match="did not return any written paths"):
        assert layer.save(str(tmp_path / "stack_label.tif"), plugin=PLUGIN) == []
    assert any("'stack' has shape (2, 8, 8)" in m for m in notifications)
    assert list(tmp_path.iterdir()) == []


def test_roi_zip_opens_as_shapes_and_points(viewer, cells, tmp_path):
    import roifile
    from matplotlib.path import Path as Polygon

    _, label = cells
    path = tmp_path / "cells_rois.zip"
    export.write_imagej_rois(path, label)
    [shapes] = viewer.open(path, plugin=PLUGIN)
    count = int(label.max())
    assert shapes._type_string == "shapes" and len(shapes.data) == count
    assert list(shapes.features["name"]) == [f"{i:05d}" for i in range(1, count + 1)]
    for i, polygon in enumerate(shapes.data):  # (y, x) napari pixels: every cell pixel inside
        rows, cols = np.nonzero(label == i + 1)
        assert Polygon(polygon).contains_points(np.stack([rows, cols], 1)).all()

    clicks = np.array([[10.5, 20.5], [30.5, 5.5]], np.float32)  # ImageJ (x, y), pixel centres
    roi = roifile.ImagejRoi.frompoints(clicks)
    roi.roitype = roifile.ROI_TYPE.POINT
    roi.tofile(tmp_path / "clicks.zip")
    [points] = viewer.open(tmp_path / "clicks.zip", plugin=PLUGIN)
    assert points._type_string == "points"
    np.testing.assert_allclose(points.data, [[20, 10], [5, 30]])  # (y, x) of the pixels


# ---------------------------------------------------------------------------- layers
def test_points_map_into_the_image_through_layer_transforms():
    image = napari.layers.Image(np.zeros((32, 32)), scale=(2, 2), translate=(10, 0))
    points = napari.layers.Points([[14.0, 8.0], [9.9, 0.0]])  # world = data for this layer
    np.testing.assert_allclose(_layers.points_in_image(points, image), [[2, 4], [0, 0]])
    outside = napari.layers.Points([[0.0, 0.0]], name="far")
    with pytest.raises(ValueError, match="point 0 of layer 'far'"):
        _layers.points_in_image(outside, image)


def test_samples_from_a_stack_leave_unannotated_planes_out(cells):
    image, label = cells
    stack = napari.layers.Image(np.stack([image, image, image]), name="stack")
    labels = napari.layers.Labels(np.stack([label, np.zeros_like(label), label]), name="cells")
    samples, planes = _layers.full_samples(stack, labels)
    assert planes == 3 and [s.name for s in samples] == [
        "plane (0,) of image 'stack'",
        "plane (2,) of image 'stack'",
    ]
    np.testing.assert_array_equal(samples[1].label, label)

    clicks = napari.layers.Points([[1, 10.0, 12.0], [1, 30.0, 31.0]], name="clicks")
    square = np.array([[1, 0, 0], [1, 0, 40], [1, 40, 40], [1, 40, 0]], float)
    outline = napari.layers.Shapes([square], shape_type="polygon", name="fg")
    [weak], planes = _layers.weak_samples(stack, clicks, outline)
    assert planes == 3 and weak.name == "plane (1,) of image 'stack'"
    np.testing.assert_allclose(weak.locations, [[10, 12], [30, 31]])
    assert weak.mask[20, 20] == 1 and weak.mask[50, 50] == 0


def test_samples_name_the_layer_that_does_not_fit(cells):
    image, label = cells
    layer = napari.layers.Image(image, name="img")
    with pytest.raises(ValueError, match="labels layer 'small' has shape"):
        _layers.full_samples(layer, napari.layers.Labels(label[:10], name="small"))
    with pytest.raises(ValueError, match="'clicks' has no points"):
        _layers.weak_samples(
            layer,
            napari.layers.Points(np.zeros((0, 2)), name="clicks"),
            napari.layers.Labels(label, name="fg"),
        )


# ---------------------------------------------------------------------------- Segment
def test_segment_widget_gives_predict_instances_result(viewer, qtbot, cells, model_file):
    image, _ = cells
    layer = viewer.add_image(image, name="img", scale=(0.5, 0.5))
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.image.value is layer
    widget.model.value = _models.CHOSEN_FILE
    widget.model_file.value = model_file
    widget.model_thresholds.value = False
    widget.min_score.value = 0.0
    widget.controls.run_button.clicked()
    wait_for(qtbot, widget.controls)

    expected, details = predict_instances(
        keras.saving.load_model(model_file), image, **widget.predict_options()
    )
    assert expected.max() > 0
    labels, points = viewer.layers["img cells"], viewer.layers["img locations"]
    np.testing.assert_array_equal(labels.data, expected)
    np.testing.assert_allclose(points.data, details["locations"])
    np.testing.assert_allclose(points.features["score"], details["scores"])
    np.testing.assert_array_equal(points.features["area"], details["areas"])
    assert tuple(labels.scale) == tuple(points.scale) == (0.5, 0.5)


def test_segment_widget_keeps_the_models_thresholds_unless_told(viewer):
    widget = SegmentWidget(viewer)
    assert widget.model_thresholds.value and not widget.min_score.enabled
    assert not {"min_score", "segmentation_threshold"} & set(widget.predict_options())
    widget.model_thresholds.value = False
    widget.min_score.value, widget.threshold.value = 0.3, 0.6
    assert widget.min_score.enabled
    options = widget.predict_options()
    assert (options["min_score"], options["segmentation_threshold"]) == (0.3, 0.6)


def test_segment_widget_passes_max_overlap_and_diameter(viewer):
    widget = SegmentWidget(viewer)
    options = widget.predict_options()
    assert (options["max_overlap"], options["scale"]) == (DEFAULT_MAX_OVERLAP, 1.0)
    assert "diameter" not in options
    widget.max_overlap.value = 1.0
    widget.diameter.value = " 30 "
    options = widget.predict_options()
    assert (options["max_overlap"], options["diameter"]) == (1.0, 30.0)
    assert "scale" not in options
    widget.diameter.value = "Auto"
    assert widget.predict_options()["diameter"] == "auto"


def test_segment_widget_flip_averaging_is_off_until_ticked(viewer):
    widget = SegmentWidget(viewer)
    assert widget.predict_options()["augment"] is False
    widget.augment.value = True
    assert widget.predict_options()["augment"] is True


@pytest.mark.parametrize("text", ["0", "-4", "nan", "inf", "big"])
def test_segment_widget_refuses_a_bad_diameter_by_name(viewer, text):
    widget = SegmentWidget(viewer)
    widget.diameter.value = text
    with pytest.raises(ValueError, match="diameter must be empty, 'auto' or a number"):
        widget.predict_options()


def test_segment_widget_refuses_diameter_and_scale_together(viewer):
    widget = SegmentWidget(viewer)
    widget.diameter.value, widget.scale.value = "20", 2.0
    with pytest.raises(ValueError, match="set diameter .* or scale .*, not both"):
        widget.predict_options()


@pytest.mark.skipif(not pretrained.has_weights("generalist"), reason="no generalist shipped")
def test_segment_widget_runs_the_shipped_generalist_with_its_calibration(viewer, qtbot):
    sample = realistic_cells((77, 0), size=128, modality="nuclei", diameter=(14.0, 20.0))
    image = sample.image[..., 0]  # (H, W): napari would read (H, W, 1) as a stack of planes
    viewer.add_image(image, name="nuclei")
    widget = SegmentWidget(viewer)
    assert widget.model.value == _models.ModelSource("shipped", "generalist")
    widget.controls.run_button.clicked()
    wait_for(qtbot, widget.controls)
    expected, _ = predict_instances(pretrained.load_pretrained("generalist"), image)
    assert expected.max() > 0
    np.testing.assert_array_equal(viewer.layers["nuclei cells"].data, expected)


def test_shipped_models_are_offered_first(viewer, monkeypatch):
    monkeypatch.setattr(_models, "shipped_models", lambda: ["generalist"])
    shipped = _models.ModelSource("shipped", "generalist")
    assert SegmentWidget(viewer).model.value == shipped  # the default for segmenting
    assert shipped in [source for _, source in _models.train_choices()]  # to fine-tune


def test_errors_become_notifications(viewer, notifications):
    segment, train = SegmentWidget(viewer), TrainWidget(viewer)
    segment.controls.run_button.clicked()
    assert any("add or open an image" in m for m in notifications)
    viewer.add_image(np.zeros((16, 16)), name="empty")
    train.reset_choices()
    train.controls.run_button.clicked()
    assert any("weak training needs a Points layer" in m for m in notifications)
    assert not segment.controls.running and not train.controls.running


# ---------------------------------------------------------------------------- Train
def test_train_samples_from_layers_and_a_folder(viewer, cells, tmp_path):
    image, label = cells
    for i in range(2):
        tifffile.imwrite(tmp_path / f"img{i}.tif", image)
        tifffile.imwrite(tmp_path / f"img{i}_masks.tif", label.astype(np.uint16))
    viewer.add_image(image, name="img")
    viewer.add_labels(label, name="cells")
    widget = TrainWidget(viewer)
    widget.supervision.value = "full"
    widget.folder.value = tmp_path
    samples, summary = widget.training_samples(weak=False)
    assert len(samples) == 3
    assert summary == f"1 of 1 plane(s) of 'img' and 2 image(s) from {tmp_path}"
    assert instance_capacity(samples) == 16  # <= 16 cells per image

    training, validation = split_validation(samples, 0.34, weak=False)
    assert len(training) == 2 and len(validation) == 1
    with pytest.raises(ValueError, match="needs cell labels"):
        split_validation(samples, 0.34, weak=True)
    with pytest.raises(ValueError, match="leaves no validation or no training image"):
        split_validation(samples[:1], 0.5, weak=False)


def test_models_are_never_overwritten_by_default(tmp_path):
    (tmp_path / "img.keras").touch()
    (tmp_path / "img-2.keras").touch()
    assert unused_path(tmp_path, "img") == tmp_path / "img-3.keras"


def weak_layers(viewer, cells):
    image, label = cells
    viewer.add_image(image, name="img")
    viewer.add_points(_layers_centroids(label), name="clicks")
    viewer.add_labels((label > 0).astype(np.uint8), name="fg")


def _layers_centroids(label):
    from lacss_core.data import label_to_locations

    return label_to_locations(label)


def test_train_from_points_writes_a_model_and_segments(viewer, qtbot, cells, tmp_path):
    weak_layers(viewer, cells)
    widget = TrainWidget(viewer)
    segment = SegmentWidget(viewer)
    widget.points.value = viewer.layers["clicks"]
    widget.foreground.value = viewer.layers["fg"]
    widget.steps.value = 3
    output = tmp_path / "weak.keras"
    widget.output.value = output
    widget.controls.run_button.clicked()
    wait_for(qtbot, widget.controls)

    assert widget.controls.status.value.startswith("trained 3 steps: weak.keras; "), (
        widget.controls.status.value
    )
    model = keras.saving.load_model(output)
    # as lacss train --weak from scratch: the prior sized to the cells the layers mark
    points, mask = _layers_centroids(cells[1]), cells[1] > 0
    diameter = float(np.median(measure_points_and_mask(points, mask)[0]))
    assert model.get_config()["centre_prior_sigma"] == round(3.0 * diameter / 12.4, 2)
    assert "img cells" in viewer.layers and "img locations" in viewer.layers
    assert segment.model.value == _models.ModelSource("file", str(output.resolve()))


def test_cancel_stops_training_and_writes_nothing(viewer, qtbot, cells, tmp_path, notifications):
    weak_layers(viewer, cells)
    widget = TrainWidget(viewer)
    widget.points.value = viewer.layers["clicks"]
    widget.foreground.value = viewer.layers["fg"]
    widget.steps.value = 100_000
    output = tmp_path / "never.keras"
    widget.output.value = output
    widget.controls.run_button.clicked()
    qtbot.waitUntil(lambda: widget.controls.progress.value >= 1, timeout=JOB_TIMEOUT_MS)
    widget.controls.cancel_button.clicked()
    wait_for(qtbot, widget.controls)

    assert widget.controls.status.value == "Train cancelled"
    assert any("cancelled" in m for m in notifications)
    assert not output.exists() and list(tmp_path.iterdir()) == []
    assert "img cells" not in viewer.layers
