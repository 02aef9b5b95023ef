"""Every model layer against its NumPy reference (``lacss_core.oracle.network``), output shapes,
argument checks, and configs that hold every constructor argument and survive a round trip."""

from __future__ import annotations

import inspect
import json

import keras
import numpy as np
import pytest

from lacss_core.models import (
    FPN,
    AuxNet,
    Bottleneck,
    ChannelAttention,
    Lacss,
    LPNHead,
    ResNetBackbone,
    Segmentor,
    preset_config,
)
from lacss_core.oracle import network as ref

TINY = preset_config("lacss_tiny")


def _image(height=64, width=96, channels=1, batch=2):
    return np.random.default_rng(0).uniform(size=(batch, height, width, channels)).astype("float32")


def _shapes(tensors):
    return [tuple(t.shape) for t in tensors]


def _tiny_backbone(normalization="batch"):
    return ResNetBackbone(
        TINY["stem_filters"],
        TINY["stage_blocks"],
        TINY["stage_widths"],
        normalization=normalization,
    )


@pytest.mark.parametrize("normalization", ["batch", "group", "layer"])
def test_backbone_stage_shapes(normalization, run):
    backbone = _tiny_backbone(normalization)
    backbone.build((None, None, None, 1))
    outputs = run(backbone, _image(), training=True)
    assert _shapes(outputs) == [(2, 32, 48, 32), (2, 16, 24, 64), (2, 8, 12, 128), (2, 4, 6, 256)]


def test_backbone_blocks_per_stage_and_strides(run):
    backbone = ResNetBackbone([4, 8], [2, 1, 3], [4, 8, 4], expansion=2)
    backbone.build((None, None, None, 1))
    outputs = run(backbone, _image(32, 32))
    assert _shapes(outputs) == [(2, 16, 16, 8), (2, 8, 8, 16), (2, 4, 4, 8)]
    assert [b.strides for b in backbone.blocks] == [2, 1, 2, 2, 1, 1]


ATOL = 1e-4  # float32 layers against float64 references, O(1) values through a few convs


@pytest.mark.parametrize(
    ("strides", "in_channels", "projects"), [(1, 8, False), (2, 8, True), (1, 6, True)]
)
def test_bottleneck_matches_reference(strides, in_channels, projects, run):
    block = Bottleneck(4, strides=strides, expansion=2, attention_reduction=2)
    block.build((None, None, None, in_channels))
    ref.randomise(block, seed=1)
    x = _image(7, 6, in_channels)
    got = run(block, x, training=False)
    assert block.projects == projects
    assert got.shape == (2, -(-7 // strides), -(-6 // strides), 8)
    np.testing.assert_allclose(got, ref.bottleneck(block, x.astype(np.float64)), atol=ATOL)


@pytest.mark.parametrize("lateral_relu", [False, True], ids=["spec", "lateral_relu"])
def test_fpn_matches_reference(lateral_relu, run):
    features = [_image(16 // 2**k, 24 // 2**k, 8 * 2**k, batch=1) for k in range(4)]
    fpn = FPN(12, lateral_relu=lateral_relu)
    fpn.build([f.shape for f in features])
    ref.randomise(fpn, seed=2)
    outputs = run(fpn, features)
    assert _shapes(outputs) == [(1, 16 // 2**k, 24 // 2**k, 12) for k in range(4)]
    expected = ref.fpn(fpn, [f.astype(np.float64) for f in features])
    for level, (got, want) in enumerate(zip(outputs, expected, strict=True)):
        np.testing.assert_allclose(got, want, atol=ATOL, err_msg=f"P{level + 1}")


def test_fpn_coarsest_level_is_the_plain_lateral():
    fpn = FPN(5)
    features = [_image(8, 8, 3, 1), _image(4, 4, 6, 1)]
    outputs = fpn(features)
    lateral = keras.ops.convert_to_numpy(fpn.laterals[1](features[1]))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(outputs[1]), lateral, rtol=1e-6)


def test_lpn_head_matches_reference(run):
    lpn = LPNHead(16)
    lpn.build((None, None, None, 32))
    ref.randomise(lpn, seed=3)
    x = _image(8, 12, 32)
    scores, offsets = run(lpn, x, training=False)
    assert scores.shape == (2, 8, 12) and offsets.shape == (2, 8, 12, 2)
    want_scores, want_offsets = ref.lpn_head(lpn, x.astype(np.float64))
    np.testing.assert_allclose(scores, want_scores, atol=ATOL)
    np.testing.assert_allclose(offsets, want_offsets, atol=ATOL)


@pytest.mark.parametrize("prior", [None, 3.0], ids=["spec", "centre_prior"])
def test_segmentor_matches_reference(prior, run):
    segmentor = Segmentor(
        filters=8, trunk_layers=2, crop_size=16, centre_prior_sigma=prior, centre_prior_scale=2.0
    )
    segmentor.build((None, None, None, 6))
    ref.randomise(segmentor, seed=4)
    features = _image(12, 10, 6, batch=1)  # the stride-2 map of a 24 x 20 image
    # inside, at the border (part of the window off the map), both parities, and padding
    locations = np.array([[[5.0, 7.0], [0.0, 18.0], [23.0, 2.0], [-1.0, -1.0]]], "float32")
    got = run(segmentor, features, locations)
    assert got.shape == (1, 4, 16, 16)
    expected = ref.segmentor(segmentor, features.astype(np.float64), locations)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_segmentor_head_on_cropped_inputs():
    segmentor = Segmentor(filters=8, trunk_layers=2, crop_size=16)
    segmentor.build((None, None, None, 12))
    shared = segmentor.shared_features(_image(16, 16, 12))
    assert tuple(shared.shape) == (2, 16, 16, 8)
    features = np.random.default_rng(1).normal(size=(2, 5, 8, 8, 8)).astype("float32")
    locations = np.random.default_rng(2).uniform(-0.5, 0.5, size=(2, 5, 8, 8, 2)).astype("float32")
    patches = keras.ops.convert_to_numpy(segmentor.decode_patches(features, locations))
    assert patches.shape == (2, 5, 16, 16)
    assert np.all((patches > 0) & (patches < 1))


def test_segmentor_head_is_per_instance():
    """Instances are independent: permuting the slots permutes the patches."""
    segmentor = Segmentor(filters=8, trunk_layers=1, crop_size=8)
    segmentor.build((None, None, None, 4))
    rng = np.random.default_rng(3)
    features = rng.normal(size=(1, 3, 4, 4, 8)).astype("float32")
    locations = rng.uniform(-0.5, 0.5, size=(1, 3, 4, 4, 2)).astype("float32")
    order = [2, 0, 1]
    full = keras.ops.convert_to_numpy(segmentor.decode_patches(features, locations))
    permuted = segmentor.decode_patches(features[:, order], locations[:, order])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(permuted), full[:, order], rtol=1e-5)


def test_auxnet_shape():
    boundary = keras.ops.convert_to_numpy(AuxNet(filters=4)(_image(20, 30)))
    assert boundary.shape == (2, 20, 30) and np.all((boundary > 0) & (boundary < 1))


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: Segmentor(crop_size=18), "crop_size"),
        (lambda: Segmentor(crop_size=0), "crop_size"),
        (lambda: LPNHead(normalization="instance"), "normalization"),
        (lambda: ResNetBackbone(stage_blocks=[1, 1], stage_widths=[4]), "stage_blocks"),
        (lambda: ResNetBackbone(stem_filters=[]), "stem_filters"),
        (lambda: FPN(0), "channels"),
        (lambda: FPN(4, lateral_relu=1), "lateral_relu"),
        (lambda: ChannelAttention(0), "reduction"),
        (lambda: AuxNet(num_layers=0), "num_layers"),
        (lambda: Lacss.from_preset("lacss_tiny", lpn_level=1), "lpn_level"),
        (lambda: Lacss.from_preset("lacss_tiny", max_output=0), "max_output"),
        (lambda: Lacss.from_preset("lacss_tiny", min_score=-1.0), "min_score"),
        (lambda: Lacss.from_preset("lacss_tiny", not_an_argument=1), "not_an_argument"),
        (lambda: Lacss.from_preset("resnet"), "lacss_resnet50"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


# A non-default value for every constructor argument of every layer: the config must hold each
# one and give it back (a key missing from get_config would fall back to the default).
NON_DEFAULTS = {
    ChannelAttention: dict(reduction=4, data_format="channels_first"),
    Bottleneck: dict(
        filters=8,
        strides=2,
        expansion=2,
        normalization="group",
        attention_reduction=4,
        data_format="channels_first",
    ),
    ResNetBackbone: dict(
        stem_filters=[4, 8],
        stage_blocks=[1, 2],
        stage_widths=[4, 8],
        expansion=2,
        normalization="layer",
        attention_reduction=2,
        data_format="channels_first",
    ),
    FPN: dict(channels=24, lateral_relu=True, data_format="channels_first"),
    LPNHead: dict(filters=32, normalization="group", data_format="channels_first"),
    Segmentor: dict(
        filters=8,
        trunk_layers=2,
        crop_size=24,
        head_bias_init=-4.0,
        centre_prior_sigma=3.0,
        centre_prior_scale=5.0,
        data_format="channels_first",
    ),
    AuxNet: dict(filters=8, num_layers=3, data_format="channels_first"),
    Lacss: dict(
        stem_filters=[4, 8],
        stage_blocks=[1, 1, 1],
        stage_widths=[4, 8, 8],
        expansion=2,
        attention_reduction=2,
        normalization="group",
        fpn_channels=8,
        fpn_lateral_relu=True,
        lpn_level=2,
        lpn_filters=8,
        segmentor_filters=4,
        segmentor_trunk_layers=1,
        crop_size=16,
        segmentor_head_bias_init=-4.0,
        centre_prior_sigma=3.0,
        centre_prior_scale=6.0,
        use_auxnet=True,
        auxnet_filters=4,
        auxnet_layers=2,
        pre_nms_topk=256,
        max_output=32,
        min_score=0.3,
        train_max_output=16,
        train_min_score=0.1,
        nms_distance=5.0,
        predict_nms_distance=6.0,
        mix_distance=8.0,
        lpn_loss_weight=2.0,
        seg_loss_weight=0.5,
        boundary_loss_weight=0.25,
        segmentation_threshold=0.4,
        image_normalization=None,
        train_diameter=12.0,
        calibration={"metric": "ap50", "scores": [0.5]},
        data_format="channels_first",
    ),
}


# Arguments that cannot be non-default together with the others above (folding needs
# normalization="batch", the default): test_fusion.py round-trips them.
EXCLUSIVE = {"fold_batch_norm"}


def _init_defaults(cls) -> dict:
    parameters = inspect.signature(cls.__init__).parameters
    return {
        name: p.default
        for name, p in parameters.items()
        if name not in {"self", *EXCLUSIVE} and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("cls", list(NON_DEFAULTS), ids=lambda cls: cls.__name__)
def test_config_holds_every_constructor_argument_and_round_trips_it(cls):
    defaults = _init_defaults(cls)
    values = NON_DEFAULTS[cls]
    assert set(values) == set(defaults), "NON_DEFAULTS must name every constructor argument"
    for name, value in values.items():
        assert _plain(value) != _plain(defaults[name]), f"{name} is its default"
    layer = cls(**values)
    config = layer.get_config()
    assert set(defaults) <= set(config), f"missing from get_config: {set(defaults) - set(config)}"
    assert {name: _plain(config[name]) for name in values} == values
    rebuilt = keras.layers.deserialize(json.loads(json.dumps(keras.layers.serialize(layer))))
    assert type(rebuilt) is cls
    assert {name: _plain(rebuilt.get_config()[name]) for name in values} == values


LAYERS = {
    "channel_attention": lambda: ChannelAttention(8, name="ca"),
    "bottleneck": lambda: Bottleneck(8, strides=2, expansion=2, normalization="group"),
    "backbone": lambda: _tiny_backbone("layer"),
    "fpn": lambda: FPN(24),
    "lpn": lambda: LPNHead(32, normalization="group"),
    "segmentor": lambda: Segmentor(8, 2, 24),
    "auxnet": lambda: AuxNet(8, 3),
    "lacss_tiny": lambda: Lacss.from_preset("lacss_tiny", use_auxnet=True, nms_distance=6.0),
    "lacss_resnet50": lambda: Lacss.from_preset("lacss_resnet50"),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_config_round_trip_is_json_identical(name):
    layer = LAYERS[name]()
    config = json.dumps(keras.layers.serialize(layer), sort_keys=True)
    rebuilt = keras.layers.deserialize(json.loads(config))
    assert type(rebuilt) is type(layer)
    assert json.dumps(keras.layers.serialize(rebuilt), sort_keys=True) == config


def test_presets_build_and_override():
    model = Lacss.from_preset("lacss_tiny", crop_size=16, lpn_level=2)
    assert model.crop_size == 16 and model.lpn_stride == 4
    assert Lacss.presets() == ["lacss_resnet50", "lacss_small", "lacss_tiny"]
    paper = Lacss.from_preset("lacss_resnet50")
    assert paper.get_config()["stage_blocks"] == [3, 4, 6, 3]
    assert paper.lpn_stride == 8 and paper.crop_size == 96 and paper.max_output == 1024
