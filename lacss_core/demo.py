"""``lacss demo``: train the tiny model on built-in synthetic cells, segment held-out images.

Everything runs on the CPU in a few minutes: synthetic fluorescence-like cells are generated,
``lacss_tiny`` is trained fully supervised (the settings of ``docs/results.md``), held-out images
(larger than the training crops) are segmented, and the COCO mask AP against their ground truth is
printed. Written to the output folder: ``model.keras`` (usable with ``lacss predict``),
``training_curve.png``, the held-out inputs in ``images/``, their truth in ``ground_truth/`` and
the predictions in ``predictions/`` (label TIFF, outline overlay PNG, CSV table per image), so
``lacss predict`` and ``lacss evaluate`` can be tried on them next.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import keras
import tifffile

from lacss_core._atomic import atomic_path
from lacss_core._lock import FolderLock
from lacss_core._progress import track
from lacss_core.data import LacssDataset, SyntheticCells
from lacss_core.export import write_csv, write_label_tiff, write_overlay_png
from lacss_core.metrics import coco_mask_ap
from lacss_core.models import Lacss
from lacss_core.predict import predict_instances
from lacss_core.train import plot_history, save_model, train


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo; the defaults finish in a few minutes on 2 CPU cores."""

    steps: int = 400
    train_images: int = 32
    train_size: int = 64
    cells_per_train_image: int = 6
    test_images: int = 4
    test_size: int = 128
    cells_per_test_image: int = 24
    crop_size: int = 24
    batch_size: int = 4
    learning_rate: float = 2e-3
    seed: int = 0


def _cells(settings: DemoSettings, n: int, size: int, cells: int, seed: int) -> SyntheticCells:
    return SyntheticCells(n, seed=seed, size=(size, size), n_cells=cells, radius=(5.0, 8.0))


def train_demo_model(
    settings: DemoSettings, progress: bool = True, log_every=None
) -> tuple[Lacss, dict]:
    """The tiny preset trained fully supervised on synthetic cells; returns (model, history).

    ``progress``: report the steps on stdout (``train``'s ``verbose``; ``log_every`` as there).
    """
    keras.utils.set_random_seed(settings.seed)
    model = Lacss.from_preset(
        "lacss_tiny", crop_size=settings.crop_size, max_output=256, train_max_output=32
    )
    size = settings.train_size
    samples = _cells(
        settings, settings.train_images, size, settings.cells_per_train_image, settings.seed
    )
    data = LacssDataset(
        samples,
        batch_size=settings.batch_size,
        max_instances=4 * settings.cells_per_train_image,
        supervision="full",
        size=(size, size),
        augment=True,
        seed=settings.seed,
    )
    history = train(
        model,
        data,
        steps=settings.steps,
        learning_rate=settings.learning_rate,
        seed=settings.seed,
        verbose=int(progress),
        log_every=log_every,
    )
    return model, history


def segment_test_images(model, settings: DemoSettings, output: str, progress: bool = True):
    """Segment held-out synthetic images and write them in the layout the CLI reads.

    ``images/NAME.tif`` (input), ``ground_truth/NAME_masks.tif`` (truth) and, as ``lacss predict``
    writes them, ``predictions/NAME_label.tif``, ``NAME_overlay.png`` and ``NAME_cells.csv``.
    Returns (predicted labels, true labels, scores).
    """
    test = _cells(
        settings,
        settings.test_images,
        settings.test_size,
        settings.cells_per_test_image,
        settings.seed + 2000,
    )
    folders = {k: os.path.join(output, k) for k in ("images", "ground_truth", "predictions")}
    for folder in folders.values():
        os.makedirs(folder, exist_ok=True)
    predictions, truths, scores = [], [], []
    show = "auto" if progress else "none"
    for i in track(range(len(test)), "segmenting", "image", show=show, stream=sys.stdout):
        sample, name = test[i], f"synthetic_{i:02d}"
        label, details = predict_instances(model, sample.image)
        with atomic_path(os.path.join(folders["images"], name + ".tif")) as tmp:
            tifffile.imwrite(tmp, sample.image[..., 0])
        write_label_tiff(os.path.join(folders["ground_truth"], name + "_masks.tif"), sample.label)
        prediction = os.path.join(folders["predictions"], name)
        write_label_tiff(prediction + "_label.tif", label)
        write_overlay_png(prediction + "_overlay.png", sample.image, label)
        write_csv(prediction + "_cells.csv", details)
        predictions.append(label)
        truths.append(sample.label)
        scores.append(details["scores"])
    return predictions, truths, scores


def run_demo(
    output: str = "lacss_demo",
    settings: DemoSettings | None = None,
    progress: bool = True,
    log_every=None,
) -> dict:
    """Run the whole demo, write its files into ``output``; returns the AP dict it prints.

    ``progress``: report training steps and segmented images on stdout, a bar on a terminal,
    else a line every ``log_every`` steps (``"Ns"``: seconds; default about 20 lines).
    """
    settings = settings or DemoSettings()
    with FolderLock(output, purpose="lacss demo"):  # two demos into one folder would mix
        return _run_demo(output, settings, progress, log_every)


def _run_demo(output: str, settings: DemoSettings, progress: bool, log_every) -> dict:
    print(f"lacss demo: backend {keras.backend.backend()}, output folder {output!r}")
    model, history = train_demo_model(settings, progress, log_every)
    save_model(model, os.path.join(output, "model.keras"))
    plot_history(history, os.path.join(output, "training_curve.png"))
    predictions, truths, scores = segment_test_images(model, settings, output, progress)
    ap = coco_mask_ap(predictions, truths, scores=scores).to_dict()
    found = sum(int(p.max()) for p in predictions)
    total = sum(int(t.max()) for t in truths)
    print(f"segmented {len(predictions)} held-out images: {found} cells found, {total} in truth")
    print(f"AP50 {ap['ap50']:.3f}   AP75 {ap['ap75']:.3f}   mAP {ap['map']:.3f}")
    print(
        f"wrote model.keras, training_curve.png, images/, ground_truth/, predictions/ to {output}/"
    )
    return ap
