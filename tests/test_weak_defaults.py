"""`lacss train --weak`: the centre prior's sigma follows the measured cell diameter, else the crop
size (docs/results.md)."""

import argparse

import pytest

from lacss_core.cli import train as cli_train
from lacss_core.data import synthetic_cells


@pytest.mark.parametrize("crop, sigma", [(24, 3.0), (16, 2.0), (32, 4.0), (96, 12.0)])
def test_sigma_scales_with_the_crop_and_the_logits_do_not(crop, sigma):
    options = cli_train.weak_from_scratch(crop)
    assert options["centre_prior_sigma"] == sigma
    assert options["segmentor_head_bias_init"] == -6.0  # a logit, not a length
    assert cli_train.WEAK_FROM_SCRATCH["centre_prior_sigma"] == 3.0  # the measured setting


@pytest.mark.parametrize("diameter, sigma", [(12.4, 3.0), (24.8, 6.0), (6.2, 1.5)])
def test_sigma_follows_the_cell_diameter_when_it_is_known(diameter, sigma):
    # the crop plays no part then: the reference cells at crop 32 get the measured 3 px, not 4
    for crop in (24, 32, 96):
        options = cli_train.weak_from_scratch(crop, diameter)
        assert options["centre_prior_sigma"] == sigma
        assert options["segmentor_head_bias_init"] == -6.0


@pytest.mark.parametrize("diameter", [0.0, -3.0, float("nan")])
def test_a_diameter_that_is_not_a_size_is_refused(diameter):
    with pytest.raises(ValueError, match="diameter must be a number of pixels > 0"):
        cli_train.weak_from_scratch(32, diameter)


def _args(**kwargs):
    defaults = dict(init=None, weak=True, auxnet=False, crop_size=None, preset="lacss_tiny")
    defaults.update(size=256, max_instances=256, target_diameter=None, quiet=True)
    return argparse.Namespace(**{**defaults, **kwargs})


def _samples():
    return [synthetic_cells(seed=0, size=(64, 64), n_cells=4, radius=(5.0, 7.0))]


@pytest.mark.parametrize(
    "preset, crop_size", [("lacss_tiny", 24), ("lacss_resnet50", 96), ("lacss_tiny", None)]
)
def test_a_new_weak_model_gets_the_sigma_of_its_measured_cells(preset, crop_size):
    model, sizes = cli_train._training_model(_args(preset=preset, crop_size=crop_size), _samples())
    config = model.get_config()
    assert config["crop_size"] == sizes.crop_size == (crop_size or sizes.crop_size)
    # whatever the crop, the prior is sized to the median cell the data were measured to have
    assert sizes.train_diameter > 0
    want = round(3.0 * sizes.train_diameter / cli_train.WEAK_REFERENCE_DIAMETER, 2)
    assert config["centre_prior_sigma"] == want
    assert config["segmentor_head_bias_init"] == -6.0


def test_full_supervision_gets_no_prior_and_unknown_presets_are_named():
    model, _ = cli_train._training_model(_args(weak=False), _samples())
    assert model.get_config()["centre_prior_sigma"] is None
    with pytest.raises(ValueError, match="lacss_huge"):
        cli_train.preset_crop_size("lacss_huge")
