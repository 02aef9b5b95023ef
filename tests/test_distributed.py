"""Data-parallel training: batch sharding, the DDP loss rescaling, and (slow) equivalence of a
multi-device run with one device on the same global batch.

The equivalence tests start subprocesses under the active ``KERAS_BACKEND``: the JAX one in the
jax pass (4 simulated CPU devices), the PyTorch one in the torch pass (2 gloo processes on
loopback through ``torchrun`` and ``examples/train_ddp_torch.py``).
"""

import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from lacss_core import distributed
from lacss_core.data import LacssDataset, SyntheticCells
from lacss_core.models import Lacss
from lacss_core.train import StepBatches, train

BACKEND = keras.backend.backend()
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "train_ddp_torch.py"
jax_only = pytest.mark.skipif(
    BACKEND != "jax", reason="keras.distribution data parallel is tested in the jax pass"
)
torch_only = pytest.mark.skipif(BACKEND != "torch", reason="DDP is tested in the torch pass")

# The loss trajectories of the equivalence tests differ only by the order of float32 sums (the
# sharded reductions); over 3 SGD steps that stays near 1e-6 relative. (Adam is not used: it
# divides each gradient by its own magnitude, so a near-zero component whose float32 noise flips
# its sign moves its weight by the full learning rate, and CI saw 3e-4 after 2 steps.)
TRAJECTORY_RTOL = 1e-4

SMALL = dict(size=(32, 32), n_cells=3, radius=(4.0, 6.0))


def small_batches(batch_size=4, supervision="full"):
    return LacssDataset(
        SyntheticCells(8, seed=0, **SMALL),
        batch_size=batch_size,
        max_instances=6,
        supervision=supervision,
        size=SMALL["size"],
        augment=True,
        seed=0,
    )


# ------------------------------------------------------------------------------------------------
# Sharding the global batch


def test_sharded_batches_split_every_global_batch_in_order():
    data = small_batches(batch_size=4)
    shards = [distributed.ShardedBatches(data, index, 2) for index in range(2)]
    x, y = data[1]
    parts = [shard[1] for shard in shards]
    assert len(shards[0]) == len(data)
    for key in ("image", "locations"):
        np.testing.assert_array_equal(np.concatenate([p[0][key] for p in parts]), x[key])
    np.testing.assert_array_equal(np.concatenate([p[1]["label"] for p in parts]), y["label"])
    assert parts[0][0]["image"].shape[0] == 2


def test_sharded_batches_follow_the_step_schedule_through_the_epoch():
    data = small_batches(batch_size=4)  # 2 batches per pass: step 3 is batch 1 of pass 1
    shard = distributed.ShardedBatches(data, 1, 2)
    x_step, _ = StepBatches(shard, 0, 4)[3]
    assert data.epoch == 1 and shard.epoch == 1
    x_full, _ = StepBatches(small_batches(batch_size=4), 0, 4)[3]
    np.testing.assert_array_equal(x_step["image"], x_full["image"][2:])


def test_sharded_batches_reject_bad_arguments():
    data = small_batches(batch_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        distributed.ShardedBatches(data, 0, 3)[0]
    with pytest.raises(ValueError, match="index"):
        distributed.ShardedBatches(data, 2, 2)
    with pytest.raises(ValueError, match="count"):
        distributed.ShardedBatches(data, 0, 0)
    assert not hasattr(distributed.ShardedBatches([({"a": np.zeros(2)}, {})], 0, 1), "epoch")


def test_one_process_feeds_the_whole_batch():
    data = small_batches()
    assert distributed.local_batches(data) is data


# ------------------------------------------------------------------------------------------------
# Backend checks and the JAX distribution


@jax_only
def test_data_parallel_activates_a_batch_sharded_mesh():
    try:
        dp = distributed.data_parallel()
        assert keras.distribution.distribution() is dp
        assert dp.device_mesh.devices.size == len(keras.distribution.list_devices())
        assert not dp.auto_shard_dataset
        assert dp.get_data_layout((4, 8, 8, 1)).axes[0] == dp.batch_dim_name
    finally:
        keras.distribution.set_distribution(None)


@jax_only
@pytest.mark.parametrize("devices", [0, 10_000, "cpu:0", [], 1.5])
def test_data_parallel_rejects_bad_devices(devices):
    with pytest.raises(ValueError, match="devices"):
        distributed.data_parallel(devices)
    assert keras.distribution.distribution() is None


@jax_only
def test_initialize_rejects_inconsistent_process_numbers():
    with pytest.raises(ValueError, match="process_id"):
        distributed.initialize("127.0.0.1:1234", num_processes=2, process_id=2)
    with pytest.raises(ValueError, match="num_processes"):
        distributed.initialize("127.0.0.1:1234", num_processes=0, process_id=0)


@pytest.mark.parametrize(
    "function", ["data_parallel", "initialize", "init_process_group", "train_ddp"]
)
def test_functions_of_the_other_backend_name_the_backend_to_use(function):
    other = {"data_parallel": "jax", "initialize": "jax"}.get(function, "torch")
    if other == BACKEND:
        pytest.skip(f"{function} belongs to this backend")
    kwargs = {"model": None, "train_data": None, "steps": 1} if function == "train_ddp" else {}
    with pytest.raises(ValueError, match=f"KERAS_BACKEND={other}"):
        getattr(distributed, function)(**kwargs)


# ------------------------------------------------------------------------------------------------
# The DDP loss: global normalisers


def tiny_model(**overrides):
    keras.utils.set_random_seed(0)
    model = Lacss.from_preset(
        "lacss_tiny", crop_size=16, max_output=32, train_max_output=16, **overrides
    )
    model.build((None, None, None, 1))
    return model


def scalar(tensor) -> float:
    return float(keras.ops.convert_to_numpy(tensor))


def as_tensors(batch):
    return keras.tree.map_structure(keras.ops.convert_to_tensor, batch)


@torch_only
@pytest.mark.parametrize("supervision, overrides", [("full", {}), ("weak", {"use_auxnet": True})])
def test_one_rank_loss_is_compute_loss(supervision, overrides):
    model = tiny_model(**overrides)
    x, y = as_tensors(small_batches(supervision=supervision)[0])
    y_pred = model(x, training=True)
    loss, logs = distributed.global_batch_loss(model, x, y, y_pred)
    expected = scalar(model.compute_loss(x, y, y_pred))
    np.testing.assert_allclose(scalar(loss), expected, rtol=1e-6)
    np.testing.assert_allclose(logs["loss"], expected, rtol=1e-6)
    assert ("boundary_loss" in logs) == (supervision == "weak")


@torch_only
def test_rank_losses_average_to_the_global_batch_loss_and_gradient():
    """Two simulated ranks in one process: the DDP average of their losses and gradients is the
    loss and gradient of the whole batch, though their instance counts differ."""
    import torch

    model = tiny_model(normalization="group")  # no batch statistics
    x, y = as_tensors(small_batches()[0])
    halves = [
        keras.tree.map_structure(lambda t, r=r: t[2 * r : 2 * r + 2], (x, y)) for r in range(2)
    ]
    local_vectors = []

    def collect(vector):
        local_vectors.append(vector)
        return vector

    for hx, hy in halves:  # first pass: each rank's (counts, sums) before the all-reduce
        distributed.global_batch_loss(
            model, hx, hy, model(hx, training=True), all_reduce_sum=collect
        )
    total = local_vectors[0] + local_vectors[1]
    counts = [v[:3] for v in local_vectors]  # lpn_score, lpn_offset, seg
    assert not torch.equal(counts[0], counts[1]), "the test needs ranks with different counts"

    weights = [v.value for v in model.trainable_variables]
    rank_losses, rank_grads = [], []
    for hx, hy in halves:
        loss, logs = distributed.global_batch_loss(
            model, hx, hy, model(hx, training=True), all_reduce_sum=lambda v: total, world_size=2
        )
        rank_losses.append(scalar(loss))
        rank_grads.append(torch.autograd.grad(loss, weights, allow_unused=True))
    y_pred = model(x, training=True)
    expected = model.compute_loss(x, y, y_pred)
    expected_grads = torch.autograd.grad(expected, weights, allow_unused=True)
    np.testing.assert_allclose(np.mean(rank_losses), scalar(expected), rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], scalar(expected), rtol=1e-5)
    for g0, g1, g, var in zip(*rank_grads, expected_grads, model.trainable_variables, strict=True):
        if g is None:
            continue
        mean = ((g0 + g1) / 2).detach().cpu().numpy()
        np.testing.assert_allclose(
            mean, g.detach().cpu().numpy(), rtol=1e-3, atol=1e-6, err_msg=var.path
        )


@torch_only
def test_train_ddp_in_one_process_matches_fit():
    history = distributed.train_ddp(tiny_model(), small_batches(batch_size=2), steps=2, verbose=0)
    expected = train(tiny_model(), small_batches(batch_size=2), steps=2, verbose=0)
    assert history["step"] == expected["step"] == [1, 2]
    for key in ("loss", "lpn_loss", "seg_loss"):
        np.testing.assert_allclose(history[key], expected[key], rtol=1e-5, err_msg=key)


# ------------------------------------------------------------------------------------------------
# Equivalence with one device (slow: subprocesses, compiled training steps)

# argv[1] "one-host": the same run on 1 device, then on 4 (DataParallel); "two-hosts": one of two
# processes with 2 devices each, joined through the KERAS_DISTRIBUTION_* variables.
JAX_CHILD = textwrap.dedent(
    """
    import json, os, sys
    devices_per_process = 4 if sys.argv[1] == "one-host" else 2
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices_per_process}"
    import keras  # only now: XLA reads the flag when JAX starts
    from lacss_core import distributed
    from lacss_core.data import LacssDataset, SyntheticCells
    from lacss_core.models import Lacss
    from lacss_core.train import train

    def run():
        keras.utils.set_random_seed(0)
        model = Lacss.from_preset("lacss_tiny")
        samples = SyntheticCells(8, seed=0, size=(64, 64), n_cells=5, radius=(5.0, 8.0))
        data = LacssDataset(samples, batch_size=4, max_instances=8, size=(64, 64), augment=True)
        sgd = keras.optimizers.SGD(learning_rate=0.05)
        history = train(model, distributed.local_batches(data), steps=3, seed=0, verbose=0,
                        optimizer=sgd)
        kernel = model.backbone.weights[0].value
        return dict(history=history, devices=len(kernel.sharding.device_set),
                    replicated=kernel.sharding.is_fully_replicated)

    runs = [run()] if sys.argv[1] == "one-host" else []
    distributed.data_parallel()
    runs.append(run())
    print(json.dumps(runs))
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_child(command, env=None):
    env = {**os.environ, "KERAS_BACKEND": BACKEND, **(env or {})}
    return subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(child, timeout=900) -> list[str]:
    """The child's stdout lines once it exits with status 0 (else its stderr as the failure)."""
    stdout, stderr = child.communicate(timeout=timeout)
    assert child.returncode == 0, stderr[-4000:]
    return stdout.splitlines()


def stop_if_running(child):
    """SIGTERM first: torchrun passes it on to its workers (SIGKILL would orphan them)."""
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def assert_same_trajectory(multi, single):
    assert multi["step"] == single["step"] == [1, 2, 3]
    for key in ("loss", "lpn_loss", "seg_loss"):
        np.testing.assert_allclose(multi[key], single[key], rtol=TRAJECTORY_RTOL, err_msg=key)


@pytest.mark.slow
@jax_only
def test_jax_data_parallel_on_one_and_two_hosts_trains_like_one_device():
    """4 simulated devices in one process, and 2 x 2 in two processes on loopback (the
    multi-host path: ``initialize`` from the environment, each process feeding its rows)."""
    hosts = {
        "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{free_port()}",
        "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
    }
    children = [start_child([sys.executable, "-c", JAX_CHILD, "one-host"])]
    for process_id in range(2):
        env = {**hosts, "KERAS_DISTRIBUTION_PROCESS_ID": str(process_id)}
        children.append(start_child([sys.executable, "-c", JAX_CHILD, "two-hosts"], env))
    try:
        (one, four), (host0,), (host1,) = (json.loads(finish(c)[-1]) for c in children)
    finally:
        for child in children:  # a failed host leaves its peer waiting for it
            stop_if_running(child)
    assert [one["devices"], four["devices"], host0["devices"]] == [1, 4, 4]
    assert four["replicated"] and host0["replicated"]
    for multi in (four, host0, host1):
        assert_same_trajectory(multi["history"], one["history"])


def load_example():
    spec = importlib.util.spec_from_file_location("train_ddp_torch", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@torch_only
def test_torch_two_gloo_processes_train_like_one_on_the_same_global_batch(tmp_path):
    args = [
        "--size", "64", "--batch-size", "4", "--steps", "3", "--n-images", "8",
        "--max-instances", "8", "--normalization", "group", "--optimizer", "sgd",
        "--history", str(tmp_path / "history.json"),
    ]  # fmt: skip
    torchrun = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(EXAMPLE),
    ]  # fmt: skip
    child = start_child(torchrun + args)
    try:
        finish(child, timeout=600)
    finally:
        stop_if_running(child)
    two = json.loads((tmp_path / "history.json").read_text())

    example = load_example()
    options = example.parse_args(args)
    data = example.make_data(options)
    model = example.make_model(options, channels=1)
    # SGD: the check is about the DDP loss and gradient; Adam would magnify the float32 noise of
    # a different reduction order (torchrun runs 1 thread per rank, this process 2) past 1e-4.
    one = train(model, data, steps=3, optimizer=example.make_optimizer(options), verbose=0)
    assert_same_trajectory(two, one)


RANK_CHILD = textwrap.dedent(
    """
    import os, sys
    import keras, numpy as np, torch.distributed
    from lacss_core import distributed
    from lacss_core.data import LacssDataset, SyntheticCells
    from lacss_core.models import Lacss

    distributed.init_process_group()
    keras.utils.set_random_seed(0)
    model = Lacss.from_preset("lacss_tiny", crop_size=16, max_output=32, train_max_output=16)
    samples = SyntheticCells(4, seed=0, size=(32, 32), n_cells=3, radius=(4.0, 6.0))
    data = LacssDataset(samples, batch_size=4, max_instances=6, size=(32, 32), augment=True)
    distributed.train_ddp(model, data, steps=2, verbose=0)
    weights = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}
    np.savez(os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.npz"), **weights)
    torch.distributed.destroy_process_group()
    """
)


@pytest.mark.slow
@torch_only
def test_torch_ranks_end_with_the_same_weights_and_batchnorm_statistics(tmp_path):
    """BatchNorm sees different rows on each rank; its moving statistics are averaged after
    every step, so every rank (not only rank 0) holds the same model."""
    script = tmp_path / "rank_child.py"
    script.write_text(RANK_CHILD)
    torchrun = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(script), str(tmp_path),
    ]  # fmt: skip
    child = start_child(torchrun)
    try:
        finish(child, timeout=600)
    finally:
        stop_if_running(child)
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in range(2)]
    moving = [name for name in ranks[0].files if "moving_mean" in name]
    assert moving, "the default preset should use BatchNorm"
    assert any(np.any(ranks[0][name] != 0) for name in moving), "statistics never updated"
    for name in ranks[0].files:
        np.testing.assert_allclose(ranks[0][name], ranks[1][name], rtol=1e-6, err_msg=name)
