"""`lacss train --weak`: the centre prior's sigma follows the crop size (docs/results.md)."""

import argparse

import pytest

from lacss_core.cli import train as cli_train
from lacss_core.data import synthetic_cells


@pytest.mark.parametrize("crop, sigma", [(24, 3.0), (16, 2.0), (32, 4.0), (96, 12.0)])
def test_sigma_scales_with_the_crop_and_the_logits_do_not(crop, sigma):
    options = cli_train.weak_from_scratch(crop)
    assert options["centre_prior_sigma"] == sigma
    assert options["segmentor_head_bias_init"] == -4.0  # a logit, not a length
    assert cli_train.WEAK_FROM_SCRATCH["centre_prior_sigma"] == 3.0  # the measured setting


def _args(**kwargs):
    defaults = dict(init=None, weak=True, auxnet=False, crop_size=None, preset="lacss_tiny")
    defaults.update(size=256, max_instances=256, target_diameter=None, quiet=True)
    return argparse.Namespace(**{**defaults, **kwargs})


def _samples():
    return [synthetic_cells(seed=0, size=(64, 64), n_cells=4, radius=(5.0, 7.0))]


@pytest.mark.parametrize(
    "preset, crop_size, sigma",
    [("lacss_tiny", 24, 3.0), ("lacss_resnet50", 96, 12.0), ("lacss_tiny", None, None)],
)
def test_a_new_weak_model_gets_the_sigma_of_its_crop(preset, crop_size, sigma):
    model, sizes = cli_train._training_model(_args(preset=preset, crop_size=crop_size), _samples())
    config = model.get_config()
    assert config["crop_size"] == sizes.crop_size == (crop_size or sizes.crop_size)
    # a crop chosen from the measured cells scales the prior just as a given one
    assert config["centre_prior_sigma"] == (sigma or 3.0 * sizes.crop_size / 24)
    assert config["segmentor_head_bias_init"] == -4.0


def test_full_supervision_gets_no_prior_and_unknown_presets_are_named():
    model, _ = cli_train._training_model(_args(weak=False), _samples())
    assert model.get_config()["centre_prior_sigma"] is None
    with pytest.raises(ValueError, match="lacss_huge"):
        cli_train.preset_crop_size("lacss_huge")
