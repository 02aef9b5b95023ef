"""LacssDataset: the contract's batch format through Keras on the current backend, reproducibly."""

import subprocess
import sys

import keras
import numpy as np
import pytest

from lacss_core.data import LacssDataset, Sample, SyntheticCells

CELLS = SyntheticCells(6, seed=1, size=40, n_cells=5, radius=(4, 6))


def test_importing_the_data_package_does_not_load_keras():
    code = "import sys, lacss_core.data; assert 'keras' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("supervision, target", [("full", "label"), ("weak", "mask")])
def test_batch_through_the_keras_adapter_has_backend_tensors(supervision, target):
    from keras.src.trainers.data_adapters import get_data_adapter

    ds = LacssDataset(
        CELLS, batch_size=2, max_instances=8, supervision=supervision, size=32, augment=True
    )
    adapter = get_data_adapter(ds)
    if keras.backend.backend() == "jax":
        batches = adapter.get_jax_iterator()
    else:
        batches = adapter.get_torch_dataloader()
    x, y = next(iter(batches))
    tensors = {k: keras.ops.convert_to_tensor(v) for k, v in {**x, **y}.items()}
    specs = {
        k: (tuple(v.shape), keras.backend.standardize_dtype(v.dtype)) for k, v in tensors.items()
    }
    assert specs == {
        "image": ((2, 32, 32, 1), "float32"),
        "locations": ((2, 8, 2), "float32"),
        target: ((2, 32, 32), "int32" if target == "label" else "float32"),
    }


class _MeanModel(keras.Model):
    """Predicts the foreground fraction from the mean intensity: just enough to run fit()."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(1)

    def call(self, x):
        pooled = keras.ops.mean(x["image"], axis=(1, 2))
        return self.dense(pooled)[:, 0] + 0.0 * keras.ops.sum(x["locations"], axis=(1, 2))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        target = y["mask"] if "mask" in y else keras.ops.cast(y["label"] > 0, "float32")
        return keras.ops.mean((y_pred - keras.ops.mean(target, axis=(1, 2))) ** 2)


@pytest.mark.parametrize("supervision", ["full", "weak"])
def test_fit_consumes_the_dataset(supervision):
    ds = LacssDataset(
        CELLS, batch_size=3, max_instances=8, supervision=supervision, size=24, augment=True
    )
    model = _MeanModel()
    model.compile(optimizer="sgd")
    history = model.fit(ds, epochs=2, shuffle=False, verbose=0)
    assert len(history.history["loss"]) == 2 and np.all(np.isfinite(history.history["loss"]))
    assert ds.epoch == 3  # Keras calls on_epoch_end once at the start of fit, then per epoch


def batches(ds):
    return [ds[i] for i in range(len(ds))]


def assert_same_batches(a, b):
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        for key in xa:
            np.testing.assert_array_equal(xa[key], xb[key])
        for key in ya:
            np.testing.assert_array_equal(ya[key], yb[key])


def test_epochs_are_reproducible_and_differ():
    def make():
        return LacssDataset(CELLS, batch_size=2, max_instances=8, size=32, augment=True, seed=3)

    first, second = make(), make()
    epoch0 = batches(first)
    assert_same_batches(epoch0, batches(second))
    first.on_epoch_end()
    epoch1 = batches(first)
    assert not np.array_equal(epoch0[0][0]["image"], epoch1[0][0]["image"])
    second.epoch = 1  # resuming: restore the saved epoch
    assert_same_batches(epoch1, batches(second))


def test_each_epoch_serves_every_sample_once():
    samples = [
        Sample(np.full((4, 4), i, np.float32), label=np.eye(4, dtype=np.int32)) for i in range(5)
    ]
    ds = LacssDataset(
        samples, batch_size=2, max_instances=1, normalize=None, drop_remainder=False, seed=0
    )
    assert len(ds) == 3
    for epoch in range(3):
        ds.epoch = epoch
        served = np.concatenate([x["image"][:, 0, 0, 0] for x, _ in batches(ds)])
        np.testing.assert_array_equal(np.sort(served), np.arange(5))
    assert len(LacssDataset(samples, batch_size=2, max_instances=1)) == 2  # drops the remainder


def test_no_shuffle_no_augment_serves_samples_in_order_normalised():
    ds = LacssDataset(CELLS, batch_size=2, max_instances=8, shuffle=False)
    x, y = ds[1]
    image = CELLS[2].image
    low, high = np.percentile(image, (1, 99.8))  # the default normalisation
    expected = (image - low) / (high - low)
    np.testing.assert_allclose(x["image"][0], expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(y["label"][0], CELLS[2].label)
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_errors():
    with pytest.raises(ValueError, match="augment=True needs size"):
        LacssDataset(CELLS, batch_size=2, max_instances=8, augment=True)
    with pytest.raises(ValueError, match="batch_size=7 is larger than the 6 samples"):
        LacssDataset(CELLS, batch_size=7, max_instances=8)
    with pytest.raises(ValueError, match="supervision must be one of"):
        LacssDataset(CELLS, batch_size=2, max_instances=8, supervision="semi")
    with pytest.raises(ValueError, match="normalize must be one of"):
        LacssDataset(CELLS, batch_size=2, max_instances=8, normalize="max")
    with pytest.raises(ValueError, match="max_instances must be a positive int"):
        LacssDataset(CELLS, batch_size=2, max_instances=0)
    with pytest.raises(ValueError, match="has 5 instances but max_instances=2"):
        LacssDataset(CELLS, batch_size=2, max_instances=2)[0]
    mixed = [CELLS[0], Sample(np.zeros((30, 30)), label=np.ones((30, 30), np.int32))]
    with pytest.raises(ValueError, match="must share"):
        LacssDataset(mixed, batch_size=2, max_instances=8, shuffle=False)[0]
