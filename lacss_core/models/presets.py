"""Named model configurations: keyword arguments of ``Lacss`` (presets are configs, not code)."""

from __future__ import annotations

import copy

PRESETS: dict[str, dict] = {
    # The paper's model (SPEC 2): ResNet-50 stages, FPN 256, LPN on level 3, crop 96.
    "lacss_resnet50": {
        "stem_filters": [24, 64],
        "stage_blocks": [3, 4, 6, 3],
        "stage_widths": [64, 128, 256, 512],
        "expansion": 4,
        "fpn_channels": 256,
        "lpn_level": 3,
        "lpn_filters": 1024,
        "segmentor_filters": 64,
        "crop_size": 96,
    },
    # The shipped generalist (lacss_core.pretrained): CPU inference between tiny and the paper's
    # model (docs/model_card.md), cells of about 8-64 px diameter (crop 64).
    "lacss_small": {
        "stem_filters": [16, 32],
        "stage_blocks": [1, 2, 2, 1],
        "stage_widths": [24, 48, 96, 192],
        "expansion": 4,
        "fpn_channels": 64,
        "lpn_level": 3,
        "lpn_filters": 128,
        "segmentor_filters": 32,
        "crop_size": 64,
    },
    # Tests and CPU demos on 64-256 px images: same structure, one block per stage, narrow.
    "lacss_tiny": {
        "stem_filters": [8, 16],
        "stage_blocks": [1, 1, 1, 1],
        "stage_widths": [8, 16, 32, 64],
        "expansion": 4,
        "fpn_channels": 32,
        "lpn_level": 3,
        "lpn_filters": 64,
        "segmentor_filters": 16,
        "crop_size": 32,
        "max_output": 128,
        "train_max_output": 64,
    },
}


def preset_names() -> list[str]:
    """The names of the presets, sorted."""
    return sorted(PRESETS)


def preset_config(name: str) -> dict:
    """A copy of the named preset's keyword arguments; ``ValueError`` (listing them) if unknown."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available presets: {preset_names()}")
    return copy.deepcopy(PRESETS[name])
