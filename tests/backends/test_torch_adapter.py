"""``lacss_core.backends.torch``: LacssModule as a plain torch.nn.Module (runs under torch only)."""

from __future__ import annotations

import keras
import pytest

if keras.backend.backend() != "torch":
    pytest.skip(
        "the torch adapter needs KERAS_BACKEND=torch (this process runs Keras on "
        f"{keras.backend.backend()!r})",
        allow_module_level=True,
    )

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from lacss_core.backends.torch import LacssModule  # noqa: E402
from lacss_core.data import LacssDataset, SyntheticCells  # noqa: E402
from lacss_core.models import Lacss  # noqa: E402

# Few proposal slots keep the per-instance layers and NMS cheap on CPU.
OVERRIDES = dict(max_output=16, train_max_output=16, pre_nms_topk=64)


def _module(**kwargs):
    return LacssModule("lacss_tiny", channels=1, **OVERRIDES, **kwargs)


@pytest.fixture(scope="module")
def dataset():
    return LacssDataset(
        SyntheticCells(2, size=64, n_cells=6), batch_size=2, max_instances=16, shuffle=False
    )


@pytest.fixture(scope="module")
def batch(dataset):
    """One ``(x, y)`` batch as a DataLoader over our dataset yields it (torch tensors)."""
    return next(iter(DataLoader(dataset, batch_size=None)))


def _outputs(module, inputs):
    with torch.no_grad():
        return {k: v.clone() for k, v in module(inputs).items()}


def _assert_equal_outputs(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_parameters_exist_on_creation_and_match_keras_variables():
    module = _module()
    keras_model = module.keras_model
    params = dict(module.named_parameters())
    trainable = [p for p in params.values() if p.requires_grad]
    assert len(trainable) == len(keras_model.trainable_variables)
    assert sum(p.numel() for p in trainable) == sum(
        int(np.prod(v.shape)) for v in keras_model.trainable_variables
    )
    assert len(params) == len(keras_model.variables)  # + BatchNorm moving statistics
    assert list(module.state_dict()) == list(params)
    assert "lpn/score/bias" in params
    assert module.channels == 1


def test_parameters_are_the_keras_variables_after_to_device():
    module = _module().to("cpu")
    keras_model = module.keras_model
    for variable in keras_model.variables:
        name = variable.path.removeprefix(keras_model.name + "/")
        assert module.get_parameter(name) is variable.value


def test_outputs_equal_a_keras_model_with_the_same_weights(batch):
    module = _module().eval()
    other = Lacss.from_preset("lacss_tiny", **OVERRIDES)
    other.build((None, None, None, 1))
    state = module.state_dict()
    for variable in other.variables:
        variable.assign(state[variable.path.removeprefix(other.name + "/")])
    x, _ = batch
    for inputs in (x["image"], x):  # inference and training-style (GT locations) outputs
        expected = {k: v.detach() for k, v in other(inputs, training=False).items()}
        _assert_equal_outputs(_outputs(module, inputs), expected)


def test_state_dict_round_trip_reproduces_outputs(batch, tmp_path):
    images = batch[0]["image"]
    module = _module().eval()
    expected = _outputs(module, images)
    path = tmp_path / "lacss.pt"
    torch.save(module.state_dict(), path)

    restored = _module().eval()
    before = _outputs(restored, images)
    assert not torch.equal(before["lpn_offsets"], expected["lpn_offsets"])  # a new random init
    restored.load_state_dict(torch.load(path))
    _assert_equal_outputs(_outputs(restored, images), expected)


def test_train_and_eval_modes_choose_batchnorm_behaviour(batch):
    module = _module()
    moving_mean = module.get_parameter("lpn/norm1/moving_mean")
    before = moving_mean.detach().clone()
    _outputs(module.eval(), batch[0])
    assert torch.equal(moving_mean, before)
    _outputs(module.train(), batch[0])
    assert not torch.equal(moving_mean, before)


def test_sgd_steps_of_a_plain_torch_loop_lower_the_loss(dataset):
    torch.manual_seed(0)
    module = _module().train()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.05)
    loader = DataLoader(dataset, batch_size=None)
    losses = []
    for _ in range(4):
        for x, y in loader:  # one batch per epoch: the same images every step
            loss = module.lacss_loss(module(x), (x, y))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 0.05, losses
    module.reset_loss_terms()
    module.lacss_loss(module(x), (x, y))
    terms = module.loss_terms()
    assert set(terms) == {"lpn_loss", "seg_loss"}
    assert all(np.isfinite(list(terms.values())))


def test_weakly_supervised_loss_reaches_every_trainable_parameter_it_uses():
    dataset = LacssDataset(
        SyntheticCells(1, size=64, n_cells=6),
        batch_size=1,
        max_instances=16,
        supervision="weak",
    )
    x, y = next(iter(DataLoader(dataset, batch_size=None)))
    assert set(y) == {"mask"}
    # Fixed weights: the tiny model's channel-attention MLPs have 2 hidden ReLUs, and some random
    # draws (the RNG state other tests leave) kill both, so their kernels get no gradient.
    keras.utils.set_random_seed(0)
    module = _module(use_auxnet=True).train()
    loss = module.lacss_loss(module(x), (x, y))
    loss.backward()
    assert torch.isfinite(loss)
    assert set(module.loss_terms()) == {"lpn_loss", "seg_loss", "boundary_loss"}
    trainable = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
    assert len(trainable) == len(module.keras_model.trainable_variables)
    for name, parameter in trainable:
        assert parameter.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{name} has a non-finite gradient"
        assert parameter.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def test_wraps_a_keras_model_without_copying():
    keras_model = Lacss.from_preset("lacss_tiny", **OVERRIDES)
    module = LacssModule(keras_model, channels=2)
    assert module.channels == 2
    assert module.get_parameter("lpn/score/bias") is keras_model.lpn.score.bias.value


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((3,), {}, "config must be a preset name"),
        (("lacss_tiny",), {"channels": 0}, "channels must be a positive int"),
        (("no_such_preset",), {}, "unknown preset"),
    ],
)
def test_bad_arguments_raise_value_error(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        LacssModule(*args, **kwargs)
