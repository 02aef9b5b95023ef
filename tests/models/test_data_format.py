"""Data format as config (issue 12): the model computes the same thing channels-first and -last.

The tiny preset with the auxnet and perturbed BatchNorm statistics, on a 96 x 80 image (not a
multiple of 32, so the padding and the auxnet's unpadded corner are exercised): raw outputs agree
to 1e-5 in inference and training mode, ``predict_instances`` labels are identical, and weights
saved in one layout load in the other. Across frameworks ``test_cross_backend`` covers the same:
a model saved with the default layout on torch (channels-first) loads channels-last on JAX.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import disc_sample, forward, perturb_weights

from lacss_core import _backend
from lacss_core._run_record import differences, run_record
from lacss_core.models import Bottleneck, Lacss

FORMATS = ("channels_last", "channels_first")
OTHER = {"channels_last": "channels_first", "channels_first": "channels_last"}
IMAGE = np.random.default_rng(3).uniform(size=(1, 96, 80, 1)).astype("float32")
DISCRETE = ("valid", "origins")


def _tiny(data_format, **overrides):
    return Lacss.from_preset("lacss_tiny", use_auxnet=True, data_format=data_format, **overrides)


@pytest.fixture(scope="module")
def models():
    """``{format: model}``, both built with the same (perturbed) weights."""
    keras.utils.set_random_seed(0)
    built = {}
    for data_format in FORMATS:
        built[data_format] = _tiny(data_format)
        built[data_format].build((None, None, None, 1))
    perturb_weights(built["channels_last"], seed=1)
    built["channels_first"].set_weights(built["channels_last"].get_weights())
    return built


@pytest.fixture(scope="module")
def outputs(models):
    return {fmt: forward(model, IMAGE) for fmt, model in models.items()}


def _assert_same(a: dict, b: dict):
    assert set(a) == set(b)
    for key in a:
        if key in DISCRETE:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:  # locations are pixels (up to ~100): 1e-5 relative as well
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-5, err_msg=key)


def test_default_layout_is_the_backend_choice_and_the_config_keeps_the_argument():
    model = Lacss.from_preset("lacss_tiny", use_auxnet=True)
    expected = _backend.current().default_data_format()
    if keras.backend.backend() == "torch":
        assert expected == "channels_first"
    else:
        assert expected == keras.config.image_data_format()
    layers = (model.backbone, model.fpn, model.lpn, model.segmentor, model.auxnet)
    assert model.data_format == expected
    assert {layer.data_format for layer in layers} == {expected}
    assert model.get_config()["data_format"] is None  # follows the loading backend
    explicit = _tiny("channels_first")
    assert explicit.get_config()["data_format"] == "channels_first"
    assert Lacss.from_config(explicit.get_config()).data_format == "channels_first"


def test_an_unknown_data_format_is_refused():
    with pytest.raises(ValueError, match="data_format must be one of"):
        _tiny("NHWC")


def test_the_layouts_have_the_same_weight_shapes(models):
    shapes = {fmt: [tuple(v.shape) for v in m.weights] for fmt, m in models.items()}
    assert shapes["channels_last"] == shapes["channels_first"]


def test_the_layouts_give_the_same_outputs(outputs):
    assert int(outputs["channels_last"]["valid"].sum()) > 3, "too few proposals to compare"
    _assert_same(outputs["channels_last"], outputs["channels_first"])


def test_the_layouts_train_alike(models):
    """Training mode: BatchNorm batch statistics over the channel axis, GT locations mixed in."""
    x, _, _ = disc_sample(64, 64, [(20, 20), (40, 44)], radius=6)
    results = {}
    for fmt, model in models.items():
        before = [np.asarray(v) for v in model.non_trainable_weights]
        results[fmt] = forward(model, x, training=True)
        for variable, value in zip(model.non_trainable_weights, before, strict=True):
            variable.assign(value)  # undo the moving-average update for the other tests
    _assert_same(results["channels_last"], results["channels_first"])


def test_predict_instances_labels_are_identical(models):
    labels = {fmt: model.predict_instances(IMAGE[0])[0] for fmt, model in models.items()}
    assert len(np.unique(labels["channels_last"])) > 3
    np.testing.assert_array_equal(labels["channels_last"], labels["channels_first"])


@pytest.mark.parametrize("normalization", ["group", "layer"])
def test_group_and_layer_norm_blocks_agree_across_layouts(normalization):
    """Bottleneck with the other norms (LayerNormalization over axis 1 needs its own layer on
    torch); input ``(2, 12, 10, 16)``, stride 2, projection shortcut."""
    x = np.random.default_rng(5).normal(size=(2, 12, 10, 16)).astype("float32")
    blocks = {}
    for fmt in FORMATS:
        blocks[fmt] = Bottleneck(8, strides=2, normalization=normalization, data_format=fmt)
        shape = (None, None, None, 16) if fmt == "channels_last" else (None, 16, None, None)
        blocks[fmt].build(shape)
    rng = np.random.default_rng(6)
    blocks["channels_first"].set_weights(
        [rng.normal(0.5, 0.3, w.shape).astype("float32") for w in blocks["channels_last"].weights]
    )
    blocks["channels_last"].set_weights(blocks["channels_first"].get_weights())
    last = forward(blocks["channels_last"], x)
    first = forward(blocks["channels_first"], np.transpose(x, (0, 3, 1, 2)))
    assert last.shape == (2, 6, 5, 32)
    np.testing.assert_allclose(np.transpose(first, (0, 2, 3, 1)), last, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("saved_format", FORMATS)
def test_saved_in_one_layout_loads_in_the_other(models, outputs, saved_format, tmp_path):
    path = str(tmp_path / "model.keras")
    models[saved_format].save(path)
    assert keras.saving.load_model(path).data_format == saved_format  # the config keeps it

    config = {**models[saved_format].get_config(), "data_format": OTHER[saved_format]}
    loaded = Lacss.from_config(config)
    loaded.build((None, None, None, 1))
    loaded.load_weights(path)
    for mine, theirs in zip(loaded.weights, models[saved_format].weights, strict=True):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs), err_msg=mine.path)
    _assert_same(forward(loaded, IMAGE), outputs[saved_format])


def test_the_layout_is_not_part_of_a_training_run(models):
    """Resuming a run in the other layout is the same run (same weights, same numbers);
    a change of architecture still is not."""
    optimizer, data = keras.optimizers.Adam(), [0, 1]
    records = {fmt: run_record(m, optimizer, data, seed=0) for fmt, m in models.items()}
    assert differences(records["channels_last"], records["channels_first"]) == []
    wider = run_record(_tiny("channels_last", lpn_filters=48), optimizer, data, seed=0)
    assert differences(records["channels_last"], wider) == ["model.config.lpn_filters: 64 -> 48"]


@pytest.mark.parametrize("size, stride, kernel", [(9, 2, 3), (8, 2, 3), (7, 1, 3), (8, 2, 1)])
def test_the_seam_conv_is_keras_conv_and_follows_new_weights(size, stride, kernel):
    """The layers' Conv2D (``factory.conv2d``, through the backend seam: on torch channels-first
    ``F.conv2d`` with a kernel kept between calls) against Keras' own, odd and even sizes (the
    asymmetric "same" padding of stride 2), before and after ``set_weights``."""
    from lacss_core.models import factory

    x = np.random.default_rng(size).normal(size=(2, 5, size, size + 1)).astype("float32")
    ours = factory.conv2d(4, kernel, "c", strides=stride, data_format="channels_first")
    theirs = keras.layers.Conv2D(
        4, kernel, strides=stride, padding="same", data_format="channels_first"
    )
    for layer in (ours, theirs):
        layer.build((None, 5, None, None))
    rng = np.random.default_rng(0)
    with _backend.current().no_grad():
        for _ in range(2):  # the second round checks that new weights reach the kept kernel
            weights = [rng.normal(size=w.shape).astype("float32") for w in ours.get_weights()]
            ours.set_weights(weights)
            theirs.set_weights(weights)
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(ours(x)),
                keras.ops.convert_to_numpy(theirs(x)),
                rtol=1e-5,
                atol=1e-5,
            )
