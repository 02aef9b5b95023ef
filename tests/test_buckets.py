"""Size buckets (``lacss_core._network``): images are zero padded to a few bucket shapes before
the compiled stages, giving the labels of an unpadded run and one compiled program per bucket.

Runs on the active backend; every test runs on both (the compile count is JAX's: eager torch
compiles nothing, and ``torch.compile`` is tested in ``test_compiled_predict.py``).
"""

import dataclasses

import keras
import numpy as np
import pytest
from test_predict import MarkerModel, marker_image

from lacss_core._network import Network, Settings, _slot_count, bucket_shape, bucket_side
from lacss_core.predict import predict_instances

# Sides that are not bucket sides (nor multiples of 32), small enough for the tiny preset.
SHAPES = [(70, 45), (100, 130), (33, 97)]


def test_bucket_sides_are_few_aligned_and_waste_little():
    sides = [bucket_side(n) for n in range(1, 4097)]
    assert all(s >= n and s % 32 == 0 for n, s in enumerate(sides, start=1))
    assert sides == sorted(sides)
    assert len(set(sides[:1024])) == 24  # 16 multiples of 32 up to 512, 8 of 64 up to 1024
    # up to 512 the model's own padding (next multiple of 32); above, <= 12.5% more per side
    own = [-(-n // 32) * 32 for n in range(1, 4097)]
    assert sides[:512] == own[:512]
    assert max(s / o for s, o in zip(sides, own, strict=True)) <= 1.125
    assert bucket_shape((300, 513, 1)) == (320, 576)


@pytest.fixture(scope="module")
def tiny():
    from lacss_core.models import Lacss

    keras.utils.set_random_seed(0)
    model = Lacss.from_preset("lacss_tiny")
    model.build((None, None, None, 1))
    return model


def _settings(model):
    return Settings(
        min_score=0.0, nms_distance=4.0, threshold=0.5, max_output=int(model.max_output),
        pre_nms_topk=int(model.pre_nms_topk),
    )  # fmt: skip


@pytest.mark.parametrize("shape", SHAPES)
def test_bucketed_run_equals_the_unpadded_run_on_the_tiny_model(tiny, shape):
    image = np.random.default_rng(sum(shape)).uniform(size=(*shape, 1)).astype(np.float32)
    settings = _settings(tiny)
    bucketed, unpadded = Network(tiny), Network(tiny, buckets=False)
    for render in (True, False):
        got = bucketed.run(image, settings, render=render)
        want = unpadded.run(image, settings, render=render)
        assert np.sum(want["locations"][:, 0] >= 0) > 0  # something to compare
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{shape} {key}")


def test_slots_are_powers_of_two_when_compiled_and_multiples_of_16_when_eager():
    settings = Settings(0.0, 4.0, 0.5, max_output=1024, pre_nms_topk=4096)
    assert [_slot_count(settings, n, compiled=True) for n in (0, 1, 17, 263, 1000)] == [
        16, 16, 32, 512, 1024,
    ]  # fmt: skip
    assert [_slot_count(settings, n, compiled=False) for n in (0, 1, 17, 263, 1000)] == [
        16, 16, 32, 272, 1008,
    ]  # fmt: skip
    small = dataclasses.replace(settings, max_output=100)
    assert _slot_count(small, 100, compiled=True) == _slot_count(small, 100, compiled=False) == 100


def test_the_slot_count_does_not_change_the_result(tiny):
    image = np.random.default_rng(1).uniform(size=(100, 130, 1)).astype(np.float32)
    network = Network(tiny)
    scores = network.run(image, _settings(tiny), render=False)["scores"]
    # 40 proposals: 64 slots when compiled, 48 when eager
    settings = dataclasses.replace(_settings(tiny), min_score=float(np.sort(scores)[::-1][39]))
    runs = {}
    for compiled in (True, False):
        network._compiles = compiled
        runs[compiled] = network.run(image, settings, render=True)
    assert [len(run["scores"]) for run in runs.values()] == [64, 48]
    valid = runs[True]["scores"] >= 0
    assert valid.sum() == 40 and not valid[40:].any()
    np.testing.assert_array_equal(runs[True]["ranks"], runs[False]["ranks"])
    for key in ("locations", "scores"):
        np.testing.assert_array_equal(runs[True][key][:48], runs[False][key], err_msg=key)


def test_no_proposal_outside_the_image():
    # min_score 0: every pixel of the image is a proposal, the bucket's padding pixels (masked to
    # score -1) never are; NMS keeps max_output = 64 of them
    model = MarkerModel()
    image = marker_image((40, 50), [(39, 49, 0.9), (5, 5, 0.8)])[..., None]
    out = Network.of(model).run(image, Settings(0.0, 3.0, 0.5, 64, 4096), render=True)
    valid = out["locations"][out["locations"][:, 0] >= 0]
    assert len(valid) == 64 and np.all(valid <= [39, 49])
    assert out["ranks"].shape == (40, 50)
    np.testing.assert_array_equal(valid[:2], [[39, 49], [5, 5]])


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="counts XLA compilations (JAX)")
@pytest.mark.parametrize("make", ["marker", "tiny"])
def test_a_folder_of_sizes_in_one_bucket_compiles_once(make, tiny):
    shapes = [(97, 100), (101, 128), (110, 99), (120, 115), (127, 126), (128, 97)]
    assert len({bucket_shape(s) for s in shapes}) == 1
    rng = np.random.default_rng(0)
    if make == "marker":  # three proposals per image: the same slot count for every image
        model = MarkerModel()
        images = [marker_image(s, [(10, 10, 0.9), (50, 60, 0.8), (90, 90, 0.7)]) for s in shapes]
        kwargs = {"normalize": None, "tile_size": 256}  # whole images, not 64-pixel tiles
    else:  # min_score 1: no proposal, so the segment stage has one slot count too
        model = tiny
        images = [rng.uniform(size=s).astype(np.float32) for s in shapes]
        kwargs = {"min_score": 1.0}
    labels, _ = predict_instances(model, images, **kwargs)
    assert [label.shape for label in labels] == shapes
    network = Network.of(model)
    assert network.traces["propose"] == 1 and network.traces["render"] == 1
    if make == "marker":
        assert [int(label.max()) for label in labels] == [3] * len(shapes)
        # the counter counts: without buckets every shape compiles
        unpadded = Network(model, buckets=False)
        for image in images:
            unpadded.run(image[..., None], Settings(0.5, 3.0, 0.5, 64, 4096), render=True)
        assert unpadded.traces["propose"] == len(shapes)


def test_the_compile_option_is_checked_and_eager_gives_the_default_labels():
    model = MarkerModel()
    image = marker_image((60, 70), [(10, 10, 0.9), (30, 40, 0.8)])
    with pytest.raises(ValueError, match="compile must be None, True or False"):
        predict_instances(model, image, normalize=None, compile="yes")
    default, _ = predict_instances(model, image, normalize=None, tile_size=256)
    eager, _ = predict_instances(model, image, normalize=None, tile_size=256, compile=False)
    np.testing.assert_array_equal(eager, default)
    assert default.max() == 2
