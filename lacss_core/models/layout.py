"""Feature-map layouts: ``"channels_last"`` ``(B, H, W, C)``, ``"channels_first"`` ``(B, C, H, W)``.

The model's interface is channels-last whatever its layout (images in, LPN maps and patches out);
its layers run in the layout they are given, so ``Lacss`` transposes once at its boundary. The
layout does not change any weight: Keras stores conv kernels as ``(kh, kw, in, out)`` and norm
parameters as ``(C,)`` in both layouts, so weights load under either.
"""

from __future__ import annotations

from keras import ops

DATA_FORMATS = ("channels_last", "channels_first")


def check_data_format(data_format: str | None) -> str:
    """``data_format``, or Keras' ``keras.config.image_data_format()`` for ``None`` (the Keras
    layer convention); anything else raises ``ValueError``."""
    if data_format is None:
        import keras

        return keras.config.image_data_format()
    if data_format not in DATA_FORMATS:
        raise ValueError(f"data_format must be one of {DATA_FORMATS} or None, got {data_format!r}")
    return data_format


def model_data_format(data_format: str | None) -> str:
    """The layout a model runs in: ``data_format``, or for ``None`` the backend's default
    (``lacss_core._backend.current().default_data_format()``: channels-first on torch, Keras'
    ``image_data_format()`` elsewhere)."""
    if data_format is None:
        from lacss_core import _backend

        return _backend.current().default_data_format()
    return check_data_format(data_format)


def channel_axis(data_format: str) -> int:
    """The channel axis of a 4-D feature map: ``-1`` or ``1``."""
    return -1 if data_format == "channels_last" else 1


def spatial_axes(data_format: str) -> tuple[int, int]:
    """The ``(H, W)`` axes of a 4-D feature map."""
    return (1, 2) if data_format == "channels_last" else (2, 3)


def channels(shape, data_format: str):
    """The channel count of a 4-D ``shape``."""
    return shape[channel_axis(data_format)]


def feature_shape(channel_count, data_format: str, batch=None) -> tuple:
    """A size-agnostic 4-D shape: ``(batch, None, None, C)`` or ``(batch, C, None, None)``."""
    if data_format == "channels_last":
        return (batch, None, None, channel_count)
    return (batch, channel_count, None, None)


def from_channels_last(x, data_format: str):
    """``(B, H, W, C)`` to the layout (a transpose for channels-first, else ``x`` itself)."""
    return x if data_format == "channels_last" else ops.transpose(x, (0, 3, 1, 2))


def to_channels_last(x, data_format: str):
    """A 4-D map in the layout to ``(B, H, W, C)``."""
    return x if data_format == "channels_last" else ops.transpose(x, (0, 2, 3, 1))


def single_channel(x, data_format: str):
    """``(B, H, W)`` from a one-channel 4-D map (no copy in either layout)."""
    return x[..., 0] if data_format == "channels_last" else x[:, 0]
