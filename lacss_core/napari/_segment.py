"""The Segment widget: a model, an Image layer and the thresholds in; Labels and Points out.

The work is :func:`lacss_core.predict.predict_instances`, in a worker thread, plane by plane for
a stack. Results go to two layers placed over the image (same scale and translation), replaced
on every run: ``"<image> cells"`` (Labels, each plane numbered 1..n by descending score) and
``"<image> locations"`` (Points, one per cell, with features ``label``, ``score``, ``area``).
"""

from __future__ import annotations

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    LineEdit,
    SpinBox,
)

from lacss_core.napari import _layers, _models
from lacss_core.napari._run import RunControls, connect_while_alive, notify_warning
from lacss_core.postprocess import DEFAULT_MAX_OVERLAP


class SegmentWidget(Container):
    """Segment the cells of an Image layer with a LACSS model (napari dock widget)."""

    def __init__(self, napari_viewer):
        self.viewer = napari_viewer
        self.model = ComboBox(label="model", choices=lambda _: _models.segment_choices())
        self.model_file = FileEdit(label="model file", mode="r", filter="*.keras")
        self.image = ComboBox(
            label="image", choices=lambda _: _layers.layer_choices(self.viewer, "image")
        )
        self.scale = FloatSpinBox(
            label="scale",
            value=1.0,
            min=0.05,
            max=20.0,
            step=0.1,
            tooltip="resize the image by this factor before segmenting: 2 when the cells are "
            "half the size of the cells the model was trained on; results map back",
        )
        self.diameter = LineEdit(
            label="diameter (px)",
            value="",
            tooltip="the cells' diameter in pixels, as in cellpose: the image is rescaled to the "
            "cell size the model was trained for; 'auto' estimates it from a first pass; "
            "empty = use scale",
        )
        # on by default: a calibrated model (the shipped generalist) stores thresholds tuned
        # on validation data, and fixed widget values would silently replace them
        self.model_thresholds = CheckBox(
            label="model's thresholds",
            value=True,
            tooltip="use the min score and mask threshold stored with the model (calibrated "
            "ones for the shipped model); untick to set them here",
        )
        self.min_score = FloatSpinBox(
            label="min score",
            value=0.2,
            min=0.0,
            max=0.99,
            step=0.05,
            tooltip="keep cells whose detection score is at least this",
        )
        self.threshold = FloatSpinBox(
            label="mask threshold",
            value=0.5,
            min=0.0,
            max=0.99,
            step=0.05,
            tooltip="a pixel belongs to a cell where the cell's probability is above this",
        )
        self.max_overlap = FloatSpinBox(
            label="max overlap",
            value=DEFAULT_MAX_OVERLAP,
            min=0.0,
            max=1.0,
            step=0.05,
            tooltip="drop a cell when more than this fraction of its mask lies under "
            "higher-scoring cells (a second detection of one cell); 1 keeps every cell",
        )
        self.min_area = SpinBox(
            label="min area (px)", value=0, min=0, max=10**7, tooltip="drop smaller cells"
        )
        self.augment = CheckBox(
            label="flip averaging",
            value=False,
            tooltip="average the model over the image and its three flips (test-time "
            "augmentation): smoother masks, about 4x slower",
        )
        self.channels = channels_field()
        self.controls = RunControls("Segment", self.run)
        super().__init__(
            widgets=[
                self.model,
                self.model_file,
                self.image,
                self.scale,
                self.diameter,
                self.model_thresholds,
                self.min_score,
                self.threshold,
                self.max_overlap,
                self.min_area,
                self.augment,
                self.channels,
                self.controls,
            ]
        )
        self.model.changed.connect(self._show_file_field)
        self._show_file_field()
        self.model_thresholds.changed.connect(self._enable_thresholds)
        self._enable_thresholds()
        _layers.follow_layers(self)
        connect_while_alive(self, [(_models.registry.changed, self._select_newest_trained)])

    def _show_file_field(self, *_):
        self.model_file.visible = self.model.value == _models.CHOSEN_FILE

    def _enable_thresholds(self, *_):
        for field in (self.min_score, self.threshold):
            field.enabled = not self.model_thresholds.value

    def _select_newest_trained(self):
        self.reset_choices()
        if _models.registry.trained:
            path = next(iter(_models.registry.trained.values()))
            self.model.value = _models.ModelSource(_models.FILE, str(path))

    def predict_options(self) -> dict:
        """The keyword arguments of ``predict_instances`` that the widget sets."""
        options = {
            **self.size_options(),
            "max_overlap": float(self.max_overlap.value),
            "min_area": int(self.min_area.value),
            "channels": parse_channels(self.channels.value),
            "augment": bool(self.augment.value),
        }
        if not self.model_thresholds.value:
            options["min_score"] = float(self.min_score.value)
            options["segmentation_threshold"] = float(self.threshold.value)
        return options

    def size_options(self) -> dict:
        """``{"scale": s}``, or ``{"diameter": d}`` when the diameter field is filled in."""
        from lacss_core.predict import parse_diameter

        diameter = parse_diameter(self.diameter.value, empty_means_none=True)
        if diameter is None:
            return {"scale": float(self.scale.value)}
        if float(self.scale.value) != 1:
            raise ValueError(
                f"set diameter ({self.diameter.value!r}) or scale ({self.scale.value}), not "
                "both: clear the diameter field or set scale back to 1"
            )
        return {"diameter": diameter}

    def run(self):
        """Start segmenting (the Segment button); bad input raises ``ValueError``."""
        layer = self.image.value
        if layer is None:
            raise ValueError("add or open an image first (an Image layer)")
        source = _models.resolve(self.model.value, self.model_file.value)
        planes, stack_shape = _layers.image_planes(layer)
        options = self.predict_options()
        self.controls.start(
            lambda job: segment_planes(job, source, planes, options),
            lambda results: show_results(self.viewer, layer, results, stack_shape),
        )


def segment_planes(job, source, planes, options) -> list:
    """``[(label, details)]`` of ``predict_instances`` for each plane (in the worker thread)."""
    job.progress(0, 0, f"loading {source.describe()}...")
    model = _models.load_for_prediction(source)
    if source.kind == _models.PRESET:
        notify_warning(f"{source.describe()} is untrained: random weights give random cells")
    return predict_planes(job, model, planes, options)


def predict_planes(job, model, planes, options) -> list:
    """Segment each plane with a loaded model, checking for Cancel between planes."""
    from lacss_core.predict import predict_instances

    results = []
    for k, plane in enumerate(planes):
        job.check()
        job.progress(k, len(planes), f"segmenting plane {k + 1} of {len(planes)}...")
        results.append(predict_instances(model, plane, progress=False, **options))
    return results


def parse_channels(text: str):
    """The ``channels`` field: empty (the model's rule), ``grey`` or indices like ``1`` or
    ``0,0,0`` (see ``lacss_core.predict.select_channels``)."""
    from lacss_core.cli.predict import parse_channels as parse

    if not text.strip():
        return None
    try:
        return parse(text)
    except ValueError:
        raise ValueError(
            f"channels must be empty, 'grey' or channel indices such as 1 or 0,0,0, got {text!r}"
        ) from None


def channels_field() -> LineEdit:
    """The text field that takes the ``channels`` rule of ``predict_instances``."""
    return LineEdit(
        label="channels",
        value="",
        tooltip="which image channels feed the model: empty = as many as the model has (grey "
        "saved as RGB counts as grey); 'grey' = their mean; indices, e.g. 1 for green or "
        "0,0,0 to repeat grey for a 3-channel model",
    )


def show_results(viewer, image_layer, results, stack_shape) -> str:
    """Put the label image and the cell locations over ``image_layer`` (replacing old ones);
    returns a one-line summary."""
    labels, points, features = _layers.result_layers(image_layer, results, stack_shape)
    placement = _layers.transform_of(image_layer)
    name = image_layer.name
    put_layer(viewer, "labels", f"{name} cells", labels, placement)
    size = max(2.0, min(_layers.plane_shape(image_layer)) / 100)
    put_layer(
        viewer,
        "points",
        f"{name} locations",
        points,
        placement,
        features=features,
        size=size,
        face_color="yellow",
        border_width=0,
    )
    return f"{len(features['score'])} cells in {name}"


def put_layer(viewer, kind, name, data, placement, **kwargs):
    """Replace the data of layer ``name`` if it is a ``kind`` layer, else add a new one."""
    if name in viewer.layers and _layers.is_kind(viewer.layers[name], kind):
        layer = viewer.layers[name]
        layer.data = data
        if "features" in kwargs:  # after the data: napari resizes features to its rows
            layer.features = kwargs["features"]
        for key, value in placement.items():
            setattr(layer, key, value)
        return layer
    return getattr(viewer, f"add_{kind}")(data, name=name, **placement, **kwargs)
