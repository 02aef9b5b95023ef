"""The Train widget: train a LACSS model from layers (and a folder), then segment with it.

Annotations, per image plane (a stack trains on each annotated plane):

- full supervision: an Image layer and a Labels layer of the cells;
- weak supervision (LACSS's own): an Image layer, a Points layer with one click per cell and a
  foreground (a Labels layer, nonzero = cell pixels, or a Shapes layer drawn around them).

More training images can come from a folder in ``lacss train``'s layout (IMAGE.tif with
IMAGE_masks.tif, or with IMAGE_points.csv and IMAGE_mask.tif). The work is
:func:`lacss_core.train.train` in a worker thread; a Keras callback reports every step's loss
and stops the run on Cancel (``model.stop_training``). The model is written atomically to the
chosen ``.keras`` file (nothing is written if cancelled); with a validation split, the model with
the best validation AP50 is also written, beside it as ``<name>_best.keras``. Then the image is
segmented with the new model, which the Segment widget also offers from then on.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import keras
import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSpinBox, RadioButtons, SpinBox

from lacss_core.napari import _layers, _models
from lacss_core.napari._run import Cancelled, RunControls, connect_while_alive, notify_info
from lacss_core.napari._segment import channels_field, parse_channels, predict_planes, show_results
from lacss_core.train import BEST_FILE, DEFAULT_LEARNING_RATE, save_model, train

FULL, WEAK = "full", "weak"
#: Where models go when no file is chosen: ``~/lacss_models/<image layer>.keras``.
DEFAULT_MODEL_FOLDER = Path("~/lacss_models")


class TrainWidget(Container):
    """Train a LACSS model from annotated layers (napari dock widget)."""

    def __init__(self, napari_viewer):
        self.viewer = napari_viewer
        viewer = self.viewer
        self.image = ComboBox(
            label="image", choices=lambda _: _layers.layer_choices(viewer, "image")
        )
        self.supervision = RadioButtons(
            label="annotation",
            choices=[("points + foreground (weak)", WEAK), ("cell labels (full)", FULL)],
            value=WEAK,
        )
        self.points = ComboBox(
            label="cell points",
            choices=lambda _: _layers.layer_choices(viewer, "points"),
            tooltip="a Points layer: click once inside every cell",
        )
        self.foreground = ComboBox(
            label="foreground",
            choices=lambda _: _layers.layer_choices(viewer, "labels", "shapes"),
            tooltip="a Labels layer (painted cell pixels) or a Shapes layer around the cells",
        )
        self.cell_labels = ComboBox(
            label="cell labels",
            choices=lambda _: _layers.layer_choices(viewer, "labels"),
            tooltip="a Labels layer with a different value for every cell",
        )
        self.folder = FileEdit(
            label="more images",
            mode="d",
            tooltip="optional: a folder of training images in the lacss train layout",
        )
        self.start_from = ComboBox(label="start from", choices=lambda _: _models.train_choices())
        self.start_file = FileEdit(label="model file", mode="r", filter="*.keras")
        self.steps = SpinBox(label="steps", value=1000, min=1, max=10**7, step=100)
        self.learning_rate = FloatSpinBox(
            label="learning rate", value=DEFAULT_LEARNING_RATE, min=1e-6, max=1.0, step=1e-4
        )
        self.learning_rate.native.setDecimals(6)
        self.crop = SpinBox(
            label="crop (px)",
            value=256,
            min=32,
            max=4096,
            step=32,
            tooltip="side of the random training crops (smaller images are padded)",
        )
        self.validation = FloatSpinBox(
            label="validation split",
            value=0.0,
            min=0.0,
            max=0.5,
            step=0.05,
            tooltip="fraction of the labelled images held out to score AP50 during training",
        )
        self.channels = channels_field()
        self.output = FileEdit(
            label="save model as",
            mode="w",
            filter="*.keras",
            tooltip="default: ~/lacss_models/<image>.keras (never overwritten)",
        )
        self.controls = RunControls("Train", self.run)
        super().__init__(
            widgets=[
                self.image,
                self.supervision,
                self.points,
                self.foreground,
                self.cell_labels,
                self.folder,
                self.start_from,
                self.start_file,
                self.steps,
                self.learning_rate,
                self.crop,
                self.validation,
                self.channels,
                self.output,
                self.controls,
            ]
        )
        self.supervision.changed.connect(self._show_fields)
        self.start_from.changed.connect(self._show_fields)
        connect_while_alive(self, [(_models.registry.changed, self.reset_choices)])
        _layers.follow_layers(self)
        self._show_fields()

    def _show_fields(self, *_):
        weak = self.supervision.value == WEAK
        self.points.visible = self.foreground.visible = weak
        self.cell_labels.visible = not weak
        self.start_file.visible = self.start_from.value == _models.CHOSEN_FILE

    # ------------------------------------------------------------------ run
    def run(self):
        """Start training (the Train button); bad input raises ``ValueError``."""
        weak = self.supervision.value == WEAK
        samples, summary = self.training_samples(weak)
        samples, validation = split_validation(samples, float(self.validation.value), weak)
        source = _models.resolve(self.start_from.value, self.start_file.value)
        output = self.output_path()
        image = self.image.value
        planes, stack_shape = _layers.image_planes(image) if image is not None else ([], ())
        settings = {
            "steps": int(self.steps.value),
            "learning_rate": float(self.learning_rate.value),
            "crop": int(self.crop.value),
            "channels": parse_channels(self.channels.value),
        }

        def work(job):
            return train_and_segment(
                job, source, weak, samples, validation, settings, output, planes
            )

        def done(result):
            _models.registry.add(result["model"])
            notify_info(result_message(result, summary))
            status = f"trained {result['history']['step'][-1]} steps: {result['model'].name}"
            if result["segmented"]:
                status += "; " + show_results(self.viewer, image, result["segmented"], stack_shape)
            return status

        self.controls.start(work, done)

    def training_samples(self, weak: bool) -> tuple[list, str]:
        """The training samples from the chosen layers and folder, and a summary of them."""
        from lacss_core.data import load_labelled_folder, load_point_folder

        samples, parts = [], []
        image = self.image.value
        if image is not None:
            if weak:
                points, foreground = self.points.value, self.foreground.value
                if points is None or foreground is None:
                    raise ValueError(
                        "weak training needs a Points layer (one click per cell) and a "
                        "foreground layer (Labels or Shapes)"
                    )
                layer_samples, planes = _layers.weak_samples(image, points, foreground)
            else:
                if self.cell_labels.value is None:
                    raise ValueError("full training needs a Labels layer of the cells")
                layer_samples, planes = _layers.full_samples(image, self.cell_labels.value)
            samples += layer_samples
            parts.append(f"{len(layer_samples)} of {planes} plane(s) of {image.name!r}")
        folder = chosen_path(self.folder.value)
        if folder is not None:
            folder_samples = load_point_folder(folder) if weak else load_labelled_folder(folder)
            samples += folder_samples
            parts.append(f"{len(folder_samples)} image(s) from {folder}")
        if not samples:
            raise ValueError("choose an image layer with its annotations, or a folder of images")
        return samples, " and ".join(parts)

    def output_path(self) -> Path:
        """The chosen model file, or a new ``~/lacss_models/<image>.keras`` (never overwritten)."""
        chosen = chosen_path(self.output.value)
        if chosen is not None:
            if chosen.suffix != ".keras":
                raise ValueError(f"the model file must end in .keras, got {chosen.name}")
            if not chosen.parent.is_dir():
                raise ValueError(f"folder {chosen.parent} does not exist")
            return chosen
        stem = self.image.value.name if self.image.value is not None else "lacss_model"
        return unused_path(DEFAULT_MODEL_FOLDER.expanduser(), safe_name(stem))


# ---------------------------------------------------------------------------- the job
class LiveProgress(keras.callbacks.Callback):
    """Reports every step's loss to the widget and stops training on Cancel."""

    def __init__(self, job, steps: int):
        super().__init__()
        self.job, self.steps = job, steps

    def on_epoch_end(self, epoch, logs=None):  # a fit "epoch" is one optimizer step
        """Report the step and its loss; stop training if the user cancelled."""
        done, loss = epoch + 1, (logs or {}).get("loss", float("nan"))
        self.job.progress(done, self.steps, f"step {done}/{self.steps}  loss {float(loss):.4f}")
        if self.job.cancel_requested.is_set():
            self.model.stop_training = True


def train_and_segment(job, source, weak, samples, validation, settings, output, planes) -> dict:
    """Train (in the worker thread), write the model, segment ``planes`` with it.

    Returns ``{"model": path, "best": path or None, "history": ..., "segmented": [...]}``.
    """
    from lacss_core.data import LacssDataset
    from lacss_core.predict import model_channels, select_channels

    steps, channels = settings["steps"], settings["channels"]
    job.progress(0, steps, f"preparing {source.describe()}...")
    keras.utils.set_random_seed(0)  # the same inputs train the same model (new weights, dropout)
    diameter = median_diameter(samples) if weak else None
    model = _models.load_for_training(source, weak=weak, diameter=diameter)
    model_inputs = model_channels(model)  # None for a new model: it takes the images' count
    samples = [s.replace(image=select_channels(s.image, model_inputs, channels)) for s in samples]
    validation = [
        s.replace(image=select_channels(s.image, model_inputs, channels)) for s in validation
    ]
    crop = training_crop(samples, settings["crop"])
    data = LacssDataset(
        samples,
        batch_size=min(4, len(samples)),
        max_instances=instance_capacity(samples),
        supervision=WEAK if weak else FULL,
        size=(crop, crop),
        augment=True,
        seed=0,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    best = None
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".lacss-train-") as checkpoints:
        history = train(
            model,
            data,
            steps=steps,
            learning_rate=settings["learning_rate"],
            checkpoint_dir=checkpoints if validation else None,
            checkpoint_every=steps,
            validation_data=validation or None,
            validate_every=max(1, steps // 10),
            callbacks=[LiveProgress(job, steps)],
            verbose=0,
        )
        job.check()  # cancelled: stop before anything is written
        save_model(model, output)  # atomic: a temporary file, then os.replace
        if validation and os.path.exists(os.path.join(checkpoints, BEST_FILE)):
            best = output.with_name(f"{output.stem}_best.keras")
            os.replace(os.path.join(checkpoints, BEST_FILE), best)
    try:
        segmented = predict_planes(job, model, planes, {"channels": channels})
    except Cancelled:  # the model is written; only its preview was cancelled
        segmented = []
    return {"model": output, "best": best, "history": history, "segmented": segmented}


def result_message(result: dict, summary: str) -> str:
    """The status line after training: steps, data, final loss and the files written."""
    history = result["history"]
    steps = history.get("step", [0])[-1] if history.get("step") else 0
    losses = history.get("loss") or [float("nan")]
    message = f"LACSS: trained {steps} steps on {summary}; final loss {losses[-1]:.4f}; "
    message += f"model written to {result['model']}"
    if result["best"] is not None:
        ap50 = max(history.get("val_ap50", [float("nan")]))
        message += f"; best validation AP50 {ap50:.3f} model: {result['best']}"
    return message


# ---------------------------------------------------------------------------- helpers
def split_validation(samples: list, fraction: float, weak: bool) -> tuple[list, list]:
    """``(training, validation)``: ``round(fraction * n)`` samples held out (seeded order)."""
    if fraction <= 0:
        return samples, []
    if weak:
        raise ValueError(
            "validation needs cell labels (AP is scored against them): set the validation "
            "split to 0 for weak training"
        )
    count = round(fraction * len(samples))
    if count < 1 or count >= len(samples):
        raise ValueError(
            f"a validation split of {fraction:g} of {len(samples)} image(s) leaves no "
            "validation or no training image: add images (a stack or a folder) or set it to 0"
        )
    order = np.random.default_rng(0).permutation(len(samples))
    return [samples[i] for i in order[count:]], [samples[i] for i in order[:count]]


def instance_capacity(samples) -> int:
    """Rows of the training LOI tensor: the most cells in one sample, as a power of two >= 16
    (few distinct shapes to compile, and no annotated cell is dropped)."""
    counts = [
        int(np.unique(s.label).size - (s.label.min() == 0))
        if s.label is not None
        else int(np.sum(np.all(s.locations >= 0, axis=1)))
        for s in samples
    ]
    return max(16, 1 << (max(counts) - 1).bit_length())


def median_diameter(samples) -> float | None:
    """The median cell diameter of ``samples`` in pixels (``lacss_core.data.sizes``, from the
    points and mask of weak samples), or None when they mark no cell."""
    from lacss_core.data.sizes import measure_samples

    diameters = measure_samples(samples).diameters
    return float(np.median(diameters)) if diameters.size else None


def training_crop(samples, crop: int) -> int:
    """``crop``, or less when every image is smaller: the largest side rounded up to 32 px
    (padding small images to a large crop only costs time)."""
    largest = max(max(s.shape) for s in samples)
    return min(crop, -(-largest // 32) * 32)


def chosen_path(value) -> Path | None:
    """A FileEdit's path, or None when it is empty."""
    text = str(value or "").strip()
    return None if text in ("", ".") else Path(text).expanduser()


def safe_name(name: str) -> str:
    """``name`` with every character but letters, digits and ``-_.`` replaced by ``_``."""
    kept = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._")
    return kept or "lacss_model"


def unused_path(folder: Path, stem: str) -> Path:
    """``folder/stem.keras``, or ``stem-2.keras``, ``stem-3.keras``, ... if it exists."""
    path, n = folder / f"{stem}.keras", 1
    while path.exists():
        n += 1
        path = folder / f"{stem}-{n}.keras"
    return path
