"""Load a saved ``.keras`` model under this process's backend and write its outputs.

Usage: ``KERAS_BACKEND=... python cross_backend_worker.py MODEL.keras IMAGE.npy OUT.npz``.
``OUT.npz`` holds every model output as NumPy plus ``label``, the oracle label image of those
outputs. Used by ``test_cross_backend.py`` to run the *other* backend in a subprocess.
"""

from __future__ import annotations

import sys

import keras
import numpy as np

import lacss_core.models  # noqa: F401  (registers the layers for deserialization)
from lacss_core import oracle


def main(model_path: str, image_path: str, out_path: str) -> None:
    model = keras.saving.load_model(model_path)
    image = np.load(image_path)
    outputs = {k: np.asarray(v) for k, v in model.predict_on_batch(image).items()}
    outputs["label"] = oracle.render_label(
        outputs["patches"], outputs["locations"], outputs["scores"], image.shape[1:3]
    )
    outputs["backend"] = np.array(keras.backend.backend())
    # The saved model was built right after keras.utils.set_random_seed(0): the same seed here
    # must give the same kernels (host initializers), which perturb_weights leaves alone.
    keras.utils.set_random_seed(0)
    fresh = type(model).from_config(model.get_config())
    fresh.build((None, None, None, image.shape[-1]))
    outputs["same_seeded_kernels"] = np.array(
        all(
            np.array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
            for a, b in zip(fresh.weights, model.weights, strict=True)
            if a.path.endswith("kernel")
        )
    )
    np.savez(out_path, **outputs)


if __name__ == "__main__":
    main(*sys.argv[1:])
