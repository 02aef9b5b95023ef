"""Data-parallel LACSS training on PyTorch with DistributedDataParallel, one process per device.

One machine with 4 GPUs (NCCL)::

    KERAS_BACKEND=torch torchrun --nproc_per_node=4 examples/train_ddp_torch.py \\
        --data my_cells/ --size 256 --batch-size 16 --steps 5000 --save lacss.keras

Two machines with 4 GPUs each (run on both; ``--node_rank`` 0 on the host named by
``--master_addr``, 1 on the other)::

    KERAS_BACKEND=torch torchrun --nnodes=2 --node_rank=0 --nproc_per_node=4 \\
        --master_addr=10.0.0.1 --master_port=29500 examples/train_ddp_torch.py ...

On CPUs (gloo), e.g. a quick check with two processes on built-in synthetic cells::

    KERAS_BACKEND=torch torchrun --nproc_per_node=2 examples/train_ddp_torch.py --steps 20

``--batch-size`` is the global batch, split evenly across all processes. Every process builds the
same model (same seed) and the same dataset; ``lacss_core.distributed.train_ddp`` gives each its
rows of every batch and keeps the loss that of the global batch. Rank 0 prints the progress and
writes ``--save`` and ``--history``. Started without torchrun, it trains in one process. See
docs/distributed.md.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402  (after the backend is chosen)
import torch.distributed  # noqa: E402

from lacss_core import distributed  # noqa: E402
from lacss_core.data import LacssDataset, SyntheticCells, load_labelled_folder  # noqa: E402
from lacss_core.models import Lacss  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        help="folder of images with <stem>_masks label images (default: built-in synthetic cells)",
    )
    parser.add_argument("--n-images", type=int, default=32, help="synthetic images (no --data)")
    parser.add_argument("--preset", default="lacss_tiny", help="model preset")
    parser.add_argument(
        "--normalization",
        choices=("batch", "group", "layer"),
        help="override the preset's normalization (batch: per-rank statistics)",
    )
    parser.add_argument("--size", type=int, default=128, help="training crop size, pixels")
    parser.add_argument("--batch-size", type=int, default=8, help="global batch size")
    parser.add_argument("--max-instances", type=int, default=64, help="GT rows per image")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="learning rate")
    parser.add_argument(
        "--optimizer", choices=("adam", "sgd"), default="adam", help="optimizer (default: adam)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, data and order")
    parser.add_argument("--save", help="write the trained model to this .keras file (rank 0)")
    parser.add_argument("--history", help="write the loss history to this JSON file (rank 0)")
    return parser.parse_args(argv)


def make_data(args: argparse.Namespace) -> LacssDataset:
    """The global batches, identical on every rank."""
    if args.data:
        samples = load_labelled_folder(args.data)
    else:
        samples = SyntheticCells(args.n_images, seed=args.seed, size=(args.size, args.size))
    return LacssDataset(
        samples,
        batch_size=args.batch_size,
        max_instances=args.max_instances,
        size=(args.size, args.size),
        augment=True,
        subsample=True,
        seed=args.seed,
    )


def make_model(args: argparse.Namespace, channels: int) -> Lacss:
    """A fresh model whose initial weights depend only on ``--seed``."""
    keras.utils.set_random_seed(args.seed)
    overrides = {} if args.normalization is None else {"normalization": args.normalization}
    model = Lacss.from_preset(args.preset, **overrides)
    model.build((None, None, None, channels))
    return model


def make_optimizer(args: argparse.Namespace) -> keras.optimizers.Optimizer:
    if args.optimizer == "sgd":
        return keras.optimizers.SGD(args.learning_rate)
    return keras.optimizers.Adam(args.learning_rate)


def main(argv=None) -> None:
    args = parse_args(argv)
    launched = "RANK" in os.environ  # by torchrun; without it, train in this one process
    if launched:
        distributed.init_process_group()  # reads torchrun's variables; before the model
    data = make_data(args)
    model = make_model(args, channels=int(data[0][0]["image"].shape[-1]))
    history = distributed.train_ddp(model, data, steps=args.steps, optimizer=make_optimizer(args))
    if int(os.environ.get("RANK", 0)) == 0:
        if args.save:
            model.save(args.save)
        if args.history:
            with open(args.history, "w") as f:
                json.dump(history, f)
    if launched:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
