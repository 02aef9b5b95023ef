"""The task model: outputs against the oracle, padding, mixing, save/load, losses and fit()."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from conftest import disc_sample, forward, perturb_weights

from lacss_core import oracle
from lacss_core.models import Lacss
from lacss_core.predict import predict_instances

MAX_OUTPUT, TRAIN_MAX_OUTPUT, CROP = 32, 16, 32
CENTERS = [(12.0, 14.5), (30.0, 40.0), (50.5, 20.0)]


@pytest.fixture(scope="module")
def model():
    model = Lacss.from_preset(
        "lacss_tiny", use_auxnet=True, max_output=MAX_OUTPUT, train_max_output=TRAIN_MAX_OUTPUT
    )
    model.build((None, None, None, 1))
    perturb_weights(model, seed=0)
    return model


def _image(height, width, seed=0):
    return np.random.default_rng(seed).uniform(size=(2, height, width, 1)).astype("float32")


def _expected_proposals(outputs, image_shape, *, max_output, min_score):
    candidates = oracle.decode_proposals(
        outputs["lpn_scores"], outputs["lpn_offsets"], image_shape, 8
    )
    return oracle.nms(*candidates, max_output=max_output, nms_distance=8.0, min_score=min_score)


def test_inference_outputs(model):
    out = forward(model, _image(70, 90))
    assert out["lpn_scores"].shape == (2, 9, 12) and out["lpn_offsets"].shape == (2, 9, 12, 2)
    assert out["boundary"].shape == (2, 70, 90)
    assert out["patches"].shape == (2, MAX_OUTPUT, CROP, CROP)
    assert out["origins"].dtype == np.int32 and out["valid"].dtype == np.bool_
    locations, scores, _ = _expected_proposals(out, (70, 90), max_output=MAX_OUTPUT, min_score=0.2)
    np.testing.assert_array_equal(out["scores"], scores)
    np.testing.assert_allclose(out["locations"], locations, atol=1e-4)
    valid = np.all(out["locations"] >= 0, axis=-1)
    assert valid.sum() > 2, "the perturbed model should propose something"
    np.testing.assert_array_equal(out["valid"], valid)
    np.testing.assert_array_equal(out["origins"], oracle.patch_origins(out["locations"], CROP))
    assert np.all(out["patches"][~valid] == 0) and np.all(out["patches"][valid] > 0)


def test_dense_outputs_do_not_depend_on_internal_padding(model):
    """A 70 x 90 image is padded to 96 x 96 inside; so is its zero-extended 96 x 96 copy."""
    image = _image(70, 90)
    extended = np.zeros((2, 96, 96, 1), "float32")
    extended[:, :70, :90] = image
    small, large = forward(model, image), forward(model, extended)
    for key in ("lpn_scores", "lpn_offsets"):
        np.testing.assert_allclose(small[key], large[key][:, :9, :12], atol=1e-5)


def test_training_call_segments_mixed_locations(model):
    x, _, _ = disc_sample(64, 64, CENTERS, radius=6.0)
    out = forward(model, x, training=True)
    assert "scores" not in out
    proposals, proposal_scores, _ = _expected_proposals(
        out, (64, 64), max_output=TRAIN_MAX_OUTPUT, min_score=0.0
    )
    np.testing.assert_array_equal(out["proposal_scores"], proposal_scores)
    np.testing.assert_allclose(out["proposals"], proposals, atol=1e-4)
    mixed = oracle.mix_locations(x["locations"], out["proposals"], mix_distance=16.0)
    np.testing.assert_array_equal(out["locations"], mixed)
    assert out["patches"].shape == (1, len(CENTERS) + 2, CROP, CROP)
    np.testing.assert_array_equal(out["valid"], [[True] * len(CENTERS) + [False, False]])


def test_predict_instances_method_is_the_predict_api(model):
    image = _image(32, 32, seed=1)[0, ..., 0]
    label, details = model.predict_instances(image, min_score=0.0)
    expected_label, expected = predict_instances(model, image, min_score=0.0)
    np.testing.assert_array_equal(label, expected_label)
    np.testing.assert_array_equal(details["scores"], expected["scores"])
    assert label.shape == image.shape and label.dtype == np.int32


def test_keras_file_round_trip_gives_identical_outputs(model, tmp_path):
    path = str(tmp_path / "tiny.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)  # safe_mode: no lambdas or pickles needed
    assert json.dumps(loaded.get_config()) == json.dumps(model.get_config())
    image = _image(64, 64, seed=2)
    expected, got = forward(model, image), forward(loaded, image)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def _reset_trackers(model):
    for metric in model.metrics:
        metric.reset_state()


def _tracked(model, name):
    return float(
        keras.ops.convert_to_numpy(next(m for m in model.metrics if m.name == name).result())
    )


@pytest.mark.parametrize("supervision", ["label", "mask"])
def test_losses_equal_the_oracle_on_the_models_outputs(model, supervision):
    x, y_label, y_mask = disc_sample(64, 64, CENTERS, radius=6.0)
    y = y_label if supervision == "label" else y_mask
    y_pred = forward(model, x, training=True)
    _reset_trackers(model)
    total = float(keras.ops.convert_to_numpy(model.compute_loss(x, y, y_pred)))

    targets = oracle.lpn_targets(x["locations"], (64, 64), 8)
    lpn = oracle.lpn_loss(y_pred["lpn_scores"], y_pred["lpn_offsets"], *targets)
    patches, locations = y_pred["patches"], y_pred["locations"]
    expected = {"lpn_loss": lpn}
    if supervision == "label":
        expected["seg_loss"] = oracle.fs_seg_loss(patches, locations, y["label"])
    else:
        expected["seg_loss"] = oracle.ws_seg_loss(patches, locations, y["mask"])
        expected["boundary_loss"] = oracle.boundary_loss(patches, locations, y_pred["boundary"])
    for name, value in expected.items():
        np.testing.assert_allclose(_tracked(model, name), value, rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(total, sum(expected.values()), rtol=1e-5)


def test_loss_weights_and_input_checks():
    model = Lacss.from_preset("lacss_tiny", lpn_loss_weight=0.0, seg_loss_weight=2.0)
    model.build((None, None, None, 1))
    x, y, _ = disc_sample(64, 64, CENTERS, radius=6.0)
    y_pred = forward(model, x, training=True)
    total = float(keras.ops.convert_to_numpy(model.compute_loss(x, y, y_pred)))
    expected = 2.0 * oracle.fs_seg_loss(y_pred["patches"], y_pred["locations"], y["label"])
    np.testing.assert_allclose(total, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="locations"):
        model.compute_loss(x["image"], y, y_pred)
    with pytest.raises(ValueError, match="label"):
        model.compute_loss(x, {"other": y["label"]}, y_pred)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("supervision", "trackers"),
    [("label", {"lpn_loss", "seg_loss"}), ("mask", {"lpn_loss", "seg_loss", "boundary_loss"})],
)
def test_fit_runs_with_finite_losses(supervision, trackers):
    model = Lacss.from_preset("lacss_tiny", use_auxnet=supervision == "mask")
    model.build((None, None, None, 1))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    samples = [disc_sample(64, 64, CENTERS, radius=6.0, seed=s) for s in range(2)]
    x = {k: np.concatenate([s[0][k] for s in samples]) for k in ("image", "locations")}
    y_index = 1 if supervision == "label" else 2
    y = {supervision: np.concatenate([s[y_index][supervision] for s in samples])}
    before = [np.array(v.numpy()) for v in model.trainable_variables]
    history = model.fit(x, y, batch_size=2, epochs=3, verbose=0).history
    assert trackers <= set(history)
    for name in trackers | {"loss"}:
        assert np.all(np.isfinite(history[name])), (name, history[name])
    after = [v.numpy() for v in model.trainable_variables]
    assert any(not np.array_equal(a, b) for a, b in zip(after, before, strict=True))
