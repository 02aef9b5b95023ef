"""LACSS as a ``torch.nn.Module``, for your own PyTorch training loop.

Needs ``KERAS_BACKEND=torch`` (importing it under another backend raises
``lacss_core.BackendError``). Example::

    from torch.utils.data import DataLoader
    from lacss_core.backends.torch import LacssModule
    from lacss_core.data import LacssDataset, SyntheticCells

    model = LacssModule("lacss_tiny", channels=1)        # parameters exist now
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    dataset = LacssDataset(SyntheticCells(8, size=64), batch_size=2, max_instances=32)
    for x, y in DataLoader(dataset, batch_size=None):    # the dataset yields whole batches
        outputs = model(x)                                # training mode: model.train()
        loss = model.lacss_loss(outputs, (x, y))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    dataset.on_epoch_end()                                # next epoch: new order and augmentation

Under the torch backend every Keras variable is a ``torch.nn.Parameter``; the module registers
the *same* parameter objects under their Keras paths (``"backbone/stem_conv0/kernel"``), so
``parameters()``, ``state_dict()``, ``load_state_dict()``, optimizers and ``.to(device)`` (which
moves parameters in place) act on the Keras model directly. Non-trainable variables (BatchNorm
moving statistics) are parameters with ``requires_grad=False``, as in Keras itself: optimizers
skip them, ``state_dict()`` saves them. Keras places new tensors on its own device (CUDA when
available; set ``KERAS_TORCH_DEVICE`` to choose), so keep the module there.

Mixed precision: build with a Keras dtype policy, ``LacssModule("lacss_tiny",
dtype="mixed_bfloat16")`` (float32 weights, bfloat16 compute); the losses stay float32.
"""

from __future__ import annotations

from lacss_core.backends import require_keras_backend

require_keras_backend("torch", __name__)

import keras  # noqa: E402  (after the backend check, so the error above comes first)
import torch  # noqa: E402

from lacss_core import _validation  # noqa: E402
from lacss_core.models import Lacss  # noqa: E402

__all__ = ["LacssModule"]


def _relative_path(model, variable) -> str:
    """A variable's path without the model name, e.g. ``"lpn/score/bias"``."""
    return variable.path.removeprefix(model.name + "/")


def _input_channels(model: Lacss) -> int:
    return int(model.backbone.stem_convs[0].kernel.shape[2])


def _as_tensors(tree):
    """NumPy arrays or tensors (any device) -> tensors on Keras' device, dtypes kept."""
    return keras.tree.map_structure(keras.ops.convert_to_tensor, tree)


class LacssModule(torch.nn.Module):
    """A LACSS model (``lacss_core.models.Lacss``) as a ``torch.nn.Module``, built on creation.

    Args:
        config: a preset name (``"lacss_tiny"``, ``"lacss_resnet50"``), or a built Keras ``Lacss``
            to wrap (its variables are shared, not copied; e.g. one from
            ``keras.saving.load_model``).
        channels: image channels ``C`` to build for (ignored when wrapping a built model).
        **overrides: ``Lacss`` arguments that override the preset (e.g. ``crop_size=16``).

    ``forward(inputs, training=None)``: ``inputs`` are images ``(B, H, W, C)`` float32 or
    ``{"image": ..., "locations": (B, N, 2) float32 GT LOIs in pixels, -1 padded}`` (tensors or
    NumPy arrays); ``training`` defaults to ``self.training`` (``.train()`` / ``.eval()``).
    Returns the dict of ``Lacss.call`` (fixed shapes, ``-1`` padded; with GT locations, the
    mixed locations in GT order that :meth:`lacss_loss` needs).
    """

    def __init__(self, config="lacss_tiny", *, channels: int = 1, **overrides):
        super().__init__()
        if isinstance(config, Lacss):
            if overrides:
                raise ValueError("overrides apply to a preset name, not to a built Lacss")
            if not config.built:
                config.build((None, None, None, channels))
            model = config
        elif isinstance(config, str):
            _validation.positive_int(channels, "channels")
            model = Lacss.from_preset(config, **overrides)
            model.build((None, None, None, channels))
        else:
            raise ValueError(
                f"config must be a preset name or a Lacss model, got {type(config).__name__}"
            )
        # Kept out of torch's registry (object.__setattr__): the Keras model is itself a Module
        # whose own parameter dicts list every variable once per nesting level; registering the
        # variables once, below, gives clean parameters() and state_dict().
        object.__setattr__(self, "_keras_model", model)
        for variable in model.variables:
            self.register_parameter(_relative_path(model, variable), variable.value)

    @property
    def keras_model(self) -> Lacss:
        """The wrapped Keras model (same variables): for ``model.save`` or ``predict_instances``."""
        return self._keras_model

    @property
    def channels(self) -> int:
        """Image channels ``C`` the model was built for."""
        return _input_channels(self._keras_model)

    def forward(self, inputs, training: bool | None = None):
        training = self.training if training is None else bool(training)
        return self._keras_model(_as_tensors(inputs), training=training)

    def lacss_loss(self, outputs, batch):
        """The training loss (``Lacss.compute_loss``): a scalar float32 tensor to ``backward()``.

        Args:
            outputs: ``self(x)`` for the batch's ``x`` (which holds the GT locations).
            batch: ``(x, y)`` as ``lacss_core.data.LacssDataset`` (or a ``DataLoader`` over it)
                yields it: ``y = {"label": (B, H, W) int32}`` (fully supervised) or
                ``{"mask": (B, H, W) float32}`` (weakly supervised).
        """
        x, y = _as_tensors(batch)
        return self._keras_model.compute_loss(x, y, outputs, training=True)

    def loss_terms(self) -> dict[str, float]:
        """Mean of each unweighted loss term (``lpn_loss``, ``seg_loss``, ...) over the
        :meth:`lacss_loss` calls since the last :meth:`reset_loss_terms`."""
        return {m.name: float(m.result()) for m in self._keras_model.metrics}

    def reset_loss_terms(self) -> None:
        for metric in self._keras_model.metrics:
            metric.reset_state()
