"""Output shapes, argument checks and JSON-identical config round trips of every model layer."""

from __future__ import annotations

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


def test_bottleneck_projects_only_when_shape_changes():
    identity = Bottleneck(4, strides=1, expansion=2)
    out = identity(np.ones((1, 6, 6, 8), "float32"))
    assert tuple(out.shape) == (1, 6, 6, 8) and not identity.projects
    strided = Bottleneck(4, strides=2, expansion=2)
    out = strided(np.ones((1, 6, 6, 8), "float32"))
    assert tuple(out.shape) == (1, 3, 3, 8) and strided.projects


def test_fpn_shapes(run):
    features = [np.ones((1, 16 // 2**k, 24 // 2**k, 8 * 2**k), "float32") for k in range(4)]
    fpn = FPN(12)
    fpn.build([f.shape for f in features])
    outputs = run(fpn, features)
    assert _shapes(outputs) == [(1, 16 // 2**k, 24 // 2**k, 12) for k in range(4)]


def test_fpn_coarsest_level_is_the_plain_lateral():
    fpn = FPN(5)
    features = [_image(8, 8, 3, 1), _image(4, 4, 6, 1)]
    outputs = fpn(features)
    lateral = keras.ops.convert_to_numpy(fpn.laterals[1](features[1]))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(outputs[1]), lateral, rtol=1e-6)


def test_lpn_head_shapes_and_ranges(run):
    lpn = LPNHead(16)
    lpn.build((None, None, None, 32))
    scores, offsets = run(lpn, _image(8, 12, 32), training=False)
    assert scores.shape == (2, 8, 12) and offsets.shape == (2, 8, 12, 2)
    assert np.all((scores > 0) & (scores < 1))


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
    assert Lacss.presets() == ["lacss_resnet50", "lacss_tiny"]
    paper = Lacss.from_preset("lacss_resnet50")
    assert paper.get_config()["stage_blocks"] == [3, 4, 6, 3]
    assert paper.lpn_stride == 8 and paper.crop_size == 96 and paper.max_output == 1024
