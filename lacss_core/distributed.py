"""Training on several devices or hosts: data parallel on JAX and on PyTorch.

Both paths train on a *global* batch split evenly across replicas and give the loss and the
update that one device computes on the whole global batch (to float rounding):

- **JAX**: :func:`data_parallel` activates a ``keras.distribution.DataParallel``. Keras then
  compiles one program for the global batch, shards the batch axis of every input over a 1-D
  device mesh and replicates the weights; XLA inserts the collectives. Batch-global quantities
  (BatchNorm statistics, the loss normalisers of SPEC 4 and 8) are therefore computed on the
  global batch exactly as on one device, and ``lacss_core.train.train`` (``model.fit``) runs
  unchanged. Several hosts: :func:`initialize` on every host first, and each process feeds its
  own rows of every global batch (:func:`local_batches`).
- **PyTorch** (Keras 3 has no torch distribution support): one process per device launched by
  ``torchrun``, :func:`init_process_group` (NCCL on GPUs, gloo on CPU) and :func:`train_ddp`, a
  step loop around ``torch.nn.parallel.DistributedDataParallel``. DDP averages gradients across
  ranks, which equals the global-batch gradient only when every rank's loss has the same
  normaliser; LACSS divides its offset and segmentation terms by counts (positive LPN cells,
  valid instances) that differ between ranks, so :func:`global_batch_loss` all-reduces the counts
  and rescales each rank's terms to the global normalisers. BatchNorm (a Keras layer, so
  ``SyncBatchNorm`` does not apply) normalises with each rank's local batch statistics; choose
  ``normalization="group"`` or ``"layer"`` for results that do not depend on the device count.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence

import keras
from keras import ops

from lacss_core import _backend, _validation
from lacss_core import ops as lops
from lacss_core._progress import Progress
from lacss_core.train import DEFAULT_LEARNING_RATE, StepBatches

# ----------------------------------------------------------------------------------------------
# Data: each replica's rows of every global batch


class ShardedBatches(keras.utils.PyDataset):
    """Rows ``[index * b, (index + 1) * b)`` of every batch of ``data``, ``b = B / count``.

    Wraps a sequence of ``(x, y)`` batches (dicts of arrays with the batch on axis 0, as
    ``lacss_core.data.LacssDataset`` yields) so that process ``index`` of ``count`` sees its share
    of each global batch ``B``. The whole global batch is read and then sliced: simple and always
    consistent across processes, at the cost of preparing ``B`` samples per process.

    An ``epoch`` attribute (as ``LacssDataset`` and ``lacss_core.train.StepBatches`` use) and
    ``on_epoch_end`` are forwarded to ``data``.

    Args:
        data: sequence of ``(x, y)`` batches, every batch size a multiple of ``count``.
        index: this replica's number, ``0 <= index < count``.
        count: number of replicas (processes) sharing each batch.
    """

    def __init__(self, data, index: int, count: int):
        super().__init__(workers=1, use_multiprocessing=False)
        count = _check_int(count, "count", minimum=1)
        index = _check_int(index, "index", minimum=0)
        if index >= count:
            raise ValueError(f"index must be < count={count}, got {index}")
        self.data, self.index, self.count = data, index, count

    @property
    def epoch(self):
        """The wrapped dataset's pass number (set through to it)."""
        return self.data.epoch  # AttributeError (so hasattr is False) when data has none

    @epoch.setter
    def epoch(self, value):
        self.data.epoch = value

    def on_epoch_end(self):
        """Forward the end of a pass to the wrapped dataset."""
        if hasattr(self.data, "on_epoch_end"):
            self.data.on_epoch_end()

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i):
        return keras.tree.map_structure(self._local_rows, self.data[i])

    def _local_rows(self, array):
        global_batch = int(array.shape[0])
        if global_batch % self.count:
            raise ValueError(
                f"batch_size: the global batch ({global_batch}) must be a multiple of the "
                f"{self.count} replicas"
            )
        rows = global_batch // self.count
        return array[self.index * rows : (self.index + 1) * rows]


def local_batches(data):
    """``data`` as this process must feed it: its rows of every global batch.

    On JAX after :func:`initialize` (several processes) and on PyTorch in an initialised process
    group, this is a :class:`ShardedBatches` for this process; with one process, ``data`` itself.
    """
    index, count = _process_index_and_count()
    return data if count == 1 else ShardedBatches(data, index, count)


def _process_index_and_count() -> tuple[int, int]:
    return _backend.current().process_index_and_count()


# ----------------------------------------------------------------------------------------------
# JAX: keras.distribution


def data_parallel(devices=None) -> keras.distribution.DataParallel:
    """Activate data-parallel training over ``devices`` (JAX backend) and return it.

    Call it before the model is created: weights created afterwards are replicated on every
    device, and every ``fit``/``predict`` batch is split along axis 0 over the devices. The
    global batch size must be a multiple of the device count. It stays active for the process
    (``keras.distribution.set_distribution(None)`` turns it off).

    Several hosts: if ``KERAS_DISTRIBUTION_NUM_PROCESSES`` is set above 1 and this process has
    not joined the job yet, it first calls :func:`initialize` (which reads the other variables),
    so the same command runs on every host. The devices are then those of all hosts and each
    process must feed its own rows of every batch: pass ``local_batches(data)`` to
    ``lacss_core.train.train``. Dataset auto-sharding is off, since it needs ``tf.data``.

    Args:
        devices: ``None`` for every accelerator (else every CPU device) Keras lists; an int ``n``
            for the first ``n`` of them; or a sequence of device names such as
            ``["gpu:0", "gpu:1"]``.
    Returns:
        The active ``keras.distribution.DataParallel``.
    Raises:
        ValueError: on the PyTorch backend (use :func:`train_ddp`), or bad ``devices``.
    """
    _require_backend("jax", "data_parallel", "on PyTorch, launch with torchrun and use train_ddp")
    _join_job_from_environment()
    available = keras.distribution.list_devices()
    if devices is None:
        chosen = list(available)
    elif _validation.is_int(devices):
        if not 1 <= devices <= len(available):
            raise ValueError(f"devices must be in [1, {len(available)}], got {devices}")
        chosen = list(available[:devices])
    elif isinstance(devices, Sequence) and not isinstance(devices, str) and len(devices) > 0:
        chosen = [str(d) for d in devices]
    else:
        raise ValueError(f"devices must be None, a positive int or device names, got {devices!r}")
    distribution = keras.distribution.DataParallel(devices=chosen, auto_shard_dataset=False)
    keras.distribution.set_distribution(distribution)
    return distribution


def _join_job_from_environment() -> None:
    import jax

    processes = int(os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "1"))
    if processes > 1 and not jax.distributed.is_initialized():
        initialize()


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Join a multi-host JAX job (``keras.distribution.initialize``); one process per host.

    Call it at the start of every host's process, before any JAX computation (before
    :func:`data_parallel` and the model). Arguments left ``None`` are read from the environment
    variables ``KERAS_DISTRIBUTION_JOB_ADDRESSES``, ``KERAS_DISTRIBUTION_NUM_PROCESSES`` and
    ``KERAS_DISTRIBUTION_PROCESS_ID``; on Cloud TPU and SLURM, JAX can also find them itself.

    Args:
        coordinator_address: ``"host:port"`` of process 0, reachable from every host.
        num_processes: number of processes (hosts), ``>= 1``.
        process_id: this process's number, ``0 <= process_id < num_processes``; 0 coordinates.
    Raises:
        ValueError: on the PyTorch backend (use torchrun), or inconsistent numbers.
    """
    _require_backend("jax", "initialize", "on PyTorch, launch with torchrun and use train_ddp")
    if num_processes is not None:
        _check_int(num_processes, "num_processes", minimum=1)
    if process_id is not None:
        _check_int(process_id, "process_id", minimum=0)
        if num_processes is not None and process_id >= num_processes:
            raise ValueError(
                f"process_id must be < num_processes={num_processes}, got {process_id}"
            )
    keras.distribution.initialize(coordinator_address, num_processes, process_id)


# ----------------------------------------------------------------------------------------------
# PyTorch: DistributedDataParallel


def init_process_group(backend: str | None = None):
    """Join the ``torchrun`` job of this process; return its ``torch.device``.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` as set by
    ``torchrun``. On GPUs the process uses GPU ``LOCAL_RANK`` (made current, so the Keras model
    created afterwards lives there). Call it before creating the model.

    Args:
        backend: ``"nccl"`` or ``"gloo"``; ``None`` picks NCCL when CUDA is available, else gloo.
    Raises:
        ValueError: on the JAX backend, or when the torchrun variables are missing.
    """
    _require_backend("torch", "init_process_group", "on JAX use data_parallel")
    import torch
    import torch.distributed as dist

    missing = [
        k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ
    ]
    if missing:
        raise ValueError(f"environment variables {missing} are not set; launch with torchrun")
    use_cuda = torch.cuda.is_available()
    if backend is None:
        backend = "nccl" if use_cuda else "gloo"
    if backend not in ("nccl", "gloo"):
        raise ValueError(f"backend must be 'nccl', 'gloo' or None, got {backend!r}")
    device = torch.device("cpu")
    if use_cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return device


def wrap_ddp(model: keras.Model, *, find_unused_parameters: bool = False):
    """``model`` (built, on this rank's device) wrapped in ``DistributedDataParallel``.

    The wrapper's forward is ``model.call``: ``wrapped(x, training=True)``. Rank 0's weights are
    copied to every rank here. Set ``find_unused_parameters`` when some trainable weights get no
    gradient (e.g. an auxnet trained with fully supervised batches).
    """
    _require_backend("torch", "wrap_ddp", "on JAX use data_parallel")
    import torch
    from torch.nn.parallel import DistributedDataParallel

    if not model.built:
        raise ValueError("model must be built before wrapping, e.g. model.build((None, H, W, C))")
    device_ids = [torch.cuda.current_device()] if torch.cuda.is_available() else None
    return DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def _loss_terms(model, x, y, y_pred) -> dict[str, tuple[float, object, object]]:
    """Each term of ``Lacss.compute_loss`` as ``(weight, value, count)`` on this batch: ``value``
    a float32 scalar, ``(sum of the term) / max(1, count)`` up to a constant factor (SPEC 4, 8),
    ``count`` a float32 scalar or Python float.

    ``lpn_loss`` is ``<L_S> + <L_R>`` with different normalisers (SPEC 4), so each is evaluated
    on its own: with the offsets set to their target the Huber part is exactly 0, with the scores
    set to their (0/1) target the focal part is exactly 0.
    """
    images, gt_locations = x["image"], x["locations"]
    batch, height, width = (int(n) for n in images.shape[:3])
    score_target, offset_target = lops.lpn_targets(gt_locations, (height, width), model.lpn_stride)
    scores, offsets = y_pred["lpn_scores"], y_pred["lpn_offsets"]
    patches, locations = y_pred["patches"], y_pred["locations"]
    valid_instances = ops.sum(ops.cast(ops.all(locations >= 0, axis=-1), "float32"))
    lpn_w, seg_w = model.lpn_loss_weight, model.seg_loss_weight
    terms = {
        "lpn_score": (
            lpn_w,
            lops.lpn_loss(scores, offset_target, score_target, offset_target),
            float(batch * math.prod(score_target.shape[1:])),
        ),
        "lpn_offset": (
            lpn_w,
            lops.lpn_loss(score_target, offsets, score_target, offset_target),
            ops.sum(score_target),
        ),
    }
    if "label" in y:
        terms["seg"] = (seg_w, lops.fs_seg_loss(patches, locations, y["label"]), valid_instances)
    else:
        terms["seg"] = (seg_w, lops.ws_seg_loss(patches, locations, y["mask"]), valid_instances)
        if model.auxnet is not None:  # SPEC 8: no auxnet, no L_CB
            boundary = lops.boundary_loss(patches, locations, y_pred["boundary"])
            pixels = float(batch * height * width)
            terms["boundary"] = (model.boundary_loss_weight, boundary, pixels)
    return terms


def global_batch_loss(model, x, y, y_pred, *, all_reduce_sum=None, world_size: int = 1):
    """This rank's loss for ``backward`` and the global-batch loss values, for a ``Lacss``.

    DDP averages the gradients of the ``world_size`` ranks' losses. Each term of
    ``Lacss.compute_loss`` is ``sum / max(1, n)`` over this rank's share of the batch; the
    global-batch term is ``(sum over ranks of the sums) / max(1, N)``, ``N`` the all-reduced
    count. So this rank backpropagates ``world_size * value * max(1, n) / max(1, N)`` per term,
    whose average over the ranks is the global-batch loss, and DDP's average gradient its
    gradient. One all-reduce per call (counts and values together).

    Args:
        model: the ``Lacss`` (unwrapped), for its loss weights and LPN stride.
        x, y: this rank's batch in the training format, as tensors.
        y_pred: ``model.call(x, training=True)`` outputs.
        all_reduce_sum: function returning the element-wise sum over ranks of a float32 vector
            (no gradient needed); ``None`` for one process.
        world_size: number of ranks.
    Returns:
        ``(loss, logs)``: ``loss`` a float32 scalar tensor to backpropagate on this rank;
        ``logs`` the global-batch ``loss``, ``lpn_loss``, ``seg_loss`` (and ``boundary_loss``)
        as Python floats, the values ``fit`` logs on one device.
    """
    terms = _loss_terms(model, x, y, y_pred)
    weights = [weight for weight, _, _ in terms.values()]
    values = ops.stack([value for _, value, _ in terms.values()])
    counts = ops.maximum(ops.stack([ops.cast(n, "float32") for _, _, n in terms.values()]), 1.0)
    local = ops.concatenate([counts, ops.stop_gradient(values) * counts])
    summed = local if all_reduce_sum is None else all_reduce_sum(local)
    global_counts = ops.maximum(summed[: len(terms)], 1.0)
    share = float(world_size) * counts / global_counts
    regularisation = ops.sum(ops.stack(model.losses)) if model.losses else 0.0
    loss = ops.sum(ops.convert_to_tensor(weights, "float32") * values * share) + regularisation
    global_values = ops.convert_to_numpy(summed[len(terms) :] / global_counts).tolist()
    by_name = dict(zip(terms, global_values, strict=True))
    total = sum(w * v for w, v in zip(weights, global_values, strict=True))
    logs = {
        "loss": total + float(ops.convert_to_numpy(regularisation)),
        "lpn_loss": by_name["lpn_score"] + by_name["lpn_offset"],
        "seg_loss": by_name["seg"],
    }
    if "boundary" in by_name:
        logs["boundary_loss"] = by_name["boundary"]
    return loss, logs


def train_ddp(
    model: keras.Model,
    train_data,
    *,
    steps: int,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    optimizer: keras.optimizers.Optimizer | None = None,
    find_unused_parameters: bool = False,
    verbose: int = 1,
) -> dict[str, list]:
    """Train a ``Lacss`` for ``steps`` steps with DDP, each rank on its share of every batch.

    Run one copy per device under ``torchrun`` after :func:`init_process_group`, with the same
    ``model`` (created after it, with the same seed) and ``train_data`` on every rank; without a
    process group it trains on one device. The schedule is that of ``lacss_core.train.train``:
    step ``t`` uses global batch ``t % len(train_data)`` of pass ``t // len(train_data)``, of
    which rank ``r`` of ``R`` takes rows ``[r * B / R, (r + 1) * B / R)``. Each step is the
    Keras torch ``train_step`` (forward, loss, backward, ``optimizer.apply``) with the loss of
    :func:`global_batch_loss`; afterwards non-trainable float weights (BatchNorm moving
    statistics) are averaged over the ranks so that every rank holds the same model.

    Args:
        model: a ``lacss_core.models.Lacss``, trained in place.
        train_data: sequence of global ``(x, y)`` batches in the training format, batch size a
            multiple of the world size (e.g. ``lacss_core.data.LacssDataset``).
        steps: optimizer steps, ``>= 1``.
        learning_rate: Adam learning rate, used when ``optimizer`` is None.
        optimizer: a Keras optimizer to use instead of ``Adam(learning_rate)``.
        find_unused_parameters: passed to ``DistributedDataParallel``.
        verbose: 0 silent; 1: rank 0 reports progress on stdout as ``train`` does (a bar on a
            terminal, else about 20 lines per run; ``lacss_core._progress``).
    Returns:
        The history, as ``lacss_core.train.train`` returns it: ``"step"`` (1-based) and the
        global-batch ``"loss"``, ``"lpn_loss"``, ``"seg_loss"`` (and ``"boundary_loss"``) per step,
        identical on every rank.
    """
    _require_backend("torch", "train_ddp", "on JAX use data_parallel and lacss_core.train.train")
    steps = _check_int(steps, "steps", minimum=1)
    if optimizer is None and not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    rank, world_size = _process_index_and_count()
    batches = local_batches(StepBatches(train_data, 0, steps))
    if not model.built:
        model.build((None, None, None, int(batches[0][0]["image"].shape[-1])))
    forward = (
        model if world_size == 1 else wrap_ddp(model, find_unused_parameters=find_unused_parameters)
    )
    optimizer = optimizer or keras.optimizers.Adam(learning_rate)
    history: dict[str, list] = {"step": []}
    show = "auto" if verbose and rank == 0 else "none"
    with Progress(steps, "training", stream=sys.stdout, show=show) as progress:
        for step in range(steps):
            logs = _ddp_step(model, forward, optimizer, batches[step], world_size)
            history["step"].append(step + 1)
            for key, value in logs.items():
                history.setdefault(key, []).append(value)
            progress.update(step + 1, **logs)
    return history


def _ddp_step(model, forward, optimizer, batch, world_size: int) -> dict[str, float]:
    """One optimizer step on this rank's ``(x, y)``, as the Keras torch ``train_step`` does it,
    with the loss of :func:`global_batch_loss`; returns its logs."""
    import torch

    x, y = keras.tree.map_structure(ops.convert_to_tensor, batch)
    model.zero_grad()
    y_pred = forward(x, training=True)
    reduce = None if world_size == 1 else _torch_all_reduce_sum
    loss, logs = global_batch_loss(
        model, x, y, y_pred, all_reduce_sum=reduce, world_size=world_size
    )
    loss.backward()  # DDP averages the gradients over the ranks here
    variables = model.trainable_variables
    with torch.no_grad():
        optimizer.apply([v.value.grad for v in variables], variables)
        if world_size > 1:
            _average_non_trainable(model, world_size)
    return logs


def _torch_all_reduce_sum(tensor):
    import torch.distributed as dist

    summed = tensor.detach().clone()
    dist.all_reduce(summed)
    return summed


def _average_non_trainable(model: keras.Model, world_size: int) -> None:
    """Average float non-trainable weights (BatchNorm moving statistics) over the ranks."""
    import torch.distributed as dist

    for variable in model.non_trainable_variables:
        if variable.value.is_floating_point():
            dist.all_reduce(variable.value.data)
            variable.value.data.div_(world_size)


# ----------------------------------------------------------------------------------------------
# Argument checks


def _require_backend(name: str, function: str, hint: str) -> None:
    if keras.backend.backend() != name:
        raise ValueError(
            f"{function} needs KERAS_BACKEND={name}, the active backend is "
            f"{keras.backend.backend()!r}; {hint}"
        )


def _check_int(value, name: str, *, minimum: int) -> int:
    return _validation.check_int(value, name, minimum=minimum)


__all__ = [
    "ShardedBatches",
    "data_parallel",
    "global_batch_loss",
    "init_process_group",
    "initialize",
    "local_batches",
    "train_ddp",
    "wrap_ddp",
]
