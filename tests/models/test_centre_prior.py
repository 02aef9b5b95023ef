"""The segmentor's opt-in options for weak training from scratch: head bias init, centre prior."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from lacss_core import ops as lops
from lacss_core.models import Lacss, Segmentor
from lacss_core.oracle import network as ref

CROP = 16
# Instance locations (y, x) in pixels of a 20 x 24 image, -1 padded; both parities of y and x.
LOCATIONS = np.array([[[5.0, 7.0], [12.0, 18.0], [-1.0, -1.0]]], dtype="float32")


def _head_inputs(seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(1, 3, CROP // 2, CROP // 2, 4)).astype("float32")
    return features, lops.location_tensor(LOCATIONS, CROP)


def _built(**options):
    segmentor = Segmentor(filters=4, trunk_layers=1, crop_size=CROP, **options)
    segmentor.build((None, None, None, 4))
    return segmentor


def _logits(probabilities):
    p = keras.ops.convert_to_numpy(probabilities).astype("float64")
    return np.log(p) - np.log1p(-p)


def test_defaults_are_the_spec_head():
    """Zero bias and no prior: the patch is the sigmoid of the two head layers alone, as the
    NumPy reference of ``lacss_core.oracle.network`` computes them from the layer's weights."""
    segmentor = _built()
    assert segmentor.head_bias_init == 0.0 and segmentor.centre_prior_sigma is None
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(segmentor.head_upsample.bias), [0.0])
    features, location_patches = _head_inputs()
    location_patches = keras.ops.convert_to_numpy(location_patches)
    expected = ref.segmentor_head(segmentor, features.astype(np.float64), location_patches)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(segmentor.decode_patches(features, location_patches)),
        expected,
        atol=1e-6,
    )


def test_head_bias_init_sets_the_initial_logit():
    segmentor = _built(head_bias_init=-4.0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(segmentor.head_upsample.bias), [-4.0])


def test_centre_prior_adds_a_gaussian_centred_on_the_location():
    plain, with_prior = _built(), _built(centre_prior_sigma=3.0, centre_prior_scale=5.0)
    with_prior.set_weights(plain.get_weights())
    features, location_patches = _head_inputs()
    difference = _logits(with_prior.decode_patches(features, location_patches)) - _logits(
        plain.decode_patches(features, location_patches)
    )
    origins = keras.ops.convert_to_numpy(lops.patch_origins(LOCATIONS, CROP))
    pixels = np.arange(CROP)
    for n in range(2):  # valid rows: d is the image-pixel distance from the location
        dy = origins[0, n, 0] + pixels - LOCATIONS[0, n, 0]
        dx = origins[0, n, 1] + pixels - LOCATIONS[0, n, 1]
        squared = dy[:, None] ** 2 + dx[None, :] ** 2
        np.testing.assert_allclose(difference[0, n], 5.0 * np.exp(-squared / 18.0), atol=1e-3)
        peak = np.unravel_index(np.argmax(difference[0, n]), difference[0, n].shape)
        assert tuple(origins[0, n] + np.array(peak)) == tuple(LOCATIONS[0, n].astype(int))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"centre_prior_sigma": 0.0}, "centre_prior_sigma"),
        ({"centre_prior_sigma": -2.0}, "centre_prior_sigma"),
        ({"centre_prior_sigma": "3"}, "centre_prior_sigma"),
        ({"centre_prior_scale": float("nan")}, "centre_prior_scale"),
        ({"head_bias_init": True}, "head_bias_init"),
    ],
)
def test_bad_options_raise_value_error_naming_them(options, message):
    with pytest.raises(ValueError, match=message):
        Segmentor(crop_size=CROP, **options)


def test_options_survive_the_config_round_trip():
    model = Lacss.from_preset(
        "lacss_tiny",
        crop_size=CROP,
        segmentor_head_bias_init=-4.0,
        centre_prior_sigma=3.0,
        centre_prior_scale=12.0,
    )
    config = json.dumps(keras.layers.serialize(model), sort_keys=True)
    rebuilt = keras.layers.deserialize(json.loads(config))
    segmentor = rebuilt.segmentor
    assert (segmentor.head_bias_init, segmentor.centre_prior_sigma) == (-4.0, 3.0)
    assert segmentor.centre_prior_scale == 12.0
    assert json.dumps(keras.layers.serialize(rebuilt), sort_keys=True) == config
