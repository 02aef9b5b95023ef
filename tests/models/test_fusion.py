"""Inference fusion (issue 12): ``Lacss.fused()`` folds BatchNorm into the convolutions.

The tiny preset with the auxnet and perturbed BatchNorm statistics (so every fold matters), on a
96 x 80 image: the fused copy's raw outputs agree with the model's to 1e-5, ``predict_instances``
labels are identical, and the copy is an inference model that says so.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import disc_sample, forward, perturb_weights

from lacss_core.models import Lacss

IMAGE = np.random.default_rng(4).uniform(size=(1, 96, 80, 1)).astype("float32")


@pytest.fixture(scope="module")
def pair():
    keras.utils.set_random_seed(0)
    model = Lacss.from_preset("lacss_tiny", use_auxnet=True)
    model.build((None, None, None, 1))
    perturb_weights(model, seed=2)
    return model, model.fused()


def _batch_norms(model) -> list:
    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def test_no_norm_is_left(pair):
    model, fused = pair
    assert _batch_norms(fused) == []
    assert len(_batch_norms(model)) > 10
    assert fused.get_config()["fold_batch_norm"] is True
    assert fused.data_format == model.data_format
    assert Lacss.from_config(fused.get_config()).lpn.norm1 is None
    assert fused.count_params() < model.count_params()


def test_fused_outputs_match_the_model(pair):
    model, fused = pair
    here, there = forward(model, IMAGE), forward(fused, IMAGE)
    assert set(here) == set(there)
    assert int(here["valid"].sum()) > 3, "too few proposals to compare"
    for key in here:
        if key in ("valid", "origins"):
            np.testing.assert_array_equal(there[key], here[key], err_msg=key)
        else:
            np.testing.assert_allclose(there[key], here[key], rtol=1e-5, atol=1e-5, err_msg=key)


def test_fused_labels_are_identical(pair):
    model, fused = pair
    label, _ = model.predict_instances(IMAGE[0])
    assert len(np.unique(label)) > 3
    np.testing.assert_array_equal(fused.predict_instances(IMAGE[0])[0], label)


def test_fused_models_refuse_what_they_cannot_do(pair):
    _, fused = pair
    x, y, _ = disc_sample(32, 32, [(10, 10)], radius=4)
    with pytest.raises(ValueError, match="inference only"):
        fused.compute_loss(x, y, y_pred=None)
    with pytest.raises(ValueError, match="fused already"):
        fused.fused()
    with pytest.raises(ValueError, match="built model"):
        Lacss.from_preset("lacss_tiny").fused()
    with pytest.raises(ValueError, match="fold_batch_norm needs normalization='batch'"):
        Lacss.from_preset("lacss_tiny", normalization="group", fold_batch_norm=True)
