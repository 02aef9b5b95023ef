"""The LACSS model (``Lacss``) and its layers, all registered for ``.keras`` serialization."""

from lacss_core.models.auxnet import AuxNet
from lacss_core.models.backbone import Bottleneck, ChannelAttention, ResNetBackbone
from lacss_core.models.fpn import FPN, upsample2x_nearest
from lacss_core.models.lacss import Lacss
from lacss_core.models.lpn import LPNHead
from lacss_core.models.presets import PRESETS, preset_config, preset_names
from lacss_core.models.segmentor import Segmentor

__all__ = [
    "FPN",
    "PRESETS",
    "AuxNet",
    "Bottleneck",
    "ChannelAttention",
    "LPNHead",
    "Lacss",
    "ResNetBackbone",
    "Segmentor",
    "preset_config",
    "preset_names",
    "upsample2x_nearest",
]
