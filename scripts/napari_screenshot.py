"""Take the screenshot in docs/napari.md: a real napari window with the LACSS widgets docked
(opened through the plugin, as Plugins -> LACSS does) and an image segmented by the Segment widget.

Usage (any X display; headless: ``xvfb-run -a -s "-screen 0 1600x1100x24" python ...``)::

    lacss demo -o lacss_demo
    python scripts/napari_screenshot.py lacss_demo/model.keras \
        lacss_demo/images/synthetic_00.tif docs/napari.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import napari
import tifffile
from qtpy.QtWidgets import QApplication

from lacss_core.napari import _models


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a .keras model")
    parser.add_argument("image", help="an image file to segment")
    parser.add_argument("output", help="the PNG to write")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for Segment")
    args = parser.parse_args()

    viewer = napari.Viewer(title="napari + LACSS")
    viewer.window.resize(1500, 1050)
    image = viewer.add_image(tifffile.imread(args.image), name=Path(args.image).stem)
    _, segment = viewer.window.add_plugin_dock_widget("lacss-core", "Segment")
    viewer.window.add_plugin_dock_widget("lacss-core", "Train")  # docked below Segment
    segment.image.value = image
    segment.model.value = _models.CHOSEN_FILE
    segment.model_file.value = args.model
    segment.controls.run_button.clicked()
    deadline = time.monotonic() + args.timeout
    while segment.controls.running:
        if time.monotonic() > deadline:
            raise SystemExit("Segment did not finish in time")
        QApplication.processEvents()
        time.sleep(0.05)
    for _ in range(20):  # let the canvas draw the new layers
        QApplication.processEvents()
        time.sleep(0.05)
    viewer.screenshot(args.output, canvas_only=False, flash=False)
    print(f"wrote {args.output}: {segment.controls.status.value}")
    viewer.close()


if __name__ == "__main__":
    main()
