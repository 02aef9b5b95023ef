"""Train LACSS in a plain PyTorch loop: a torch.optim optimizer and a DataLoader, no Keras fit().

    KERAS_BACKEND=torch python examples/train_in_torch.py --steps 300 --size 128 --out lacss.pt

Trains on built-in synthetic cells (fully supervised) and saves the ``state_dict``; load it back
with ``LacssModule("lacss_tiny", channels=1).load_state_dict(torch.load("lacss.pt"))``.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before anything imports Keras

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from lacss_core.backends.torch import LacssModule  # noqa: E402
from lacss_core.data import LacssDataset, SyntheticCells  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="lacss_tiny")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps")
    parser.add_argument("--size", type=int, default=128, help="training crop size, pixels")
    parser.add_argument("--images", type=int, default=16, help="synthetic training images")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-instances", type=int, default=64, help="GT rows per image")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--mixed-precision", action="store_true", help="bfloat16 compute")
    parser.add_argument("--out", help="where to save the state_dict (.pt)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(0)
    dtype = {"dtype": "mixed_bfloat16"} if args.mixed_precision else {}
    model = LacssModule(args.preset, channels=1, **dtype)  # built: parameters exist already
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)

    # LacssDataset yields whole (x, y) batches of NumPy arrays, so the DataLoader must not
    # batch again (batch_size=None); it only turns the arrays into tensors.
    samples = SyntheticCells(args.images, size=2 * args.size, n_cells=12)
    dataset = LacssDataset(
        samples,
        batch_size=args.batch_size,
        max_instances=args.max_instances,
        size=args.size,
        augment=True,
        subsample=True,
    )
    loader = DataLoader(dataset, batch_size=None)

    model.train()
    step = 0
    while step < args.steps:
        for x, y in loader:
            outputs = model(x)  # with the GT locations in x: training outputs
            loss = model.lacss_loss(outputs, (x, y))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step % 10 == 0 or step == args.steps:
                terms = ", ".join(f"{k} {v:.4f}" for k, v in model.loss_terms().items())
                print(f"step {step}: loss {loss.item():.4f} ({terms})", flush=True)
                model.reset_loss_terms()
            if step == args.steps:
                break
        dataset.on_epoch_end()  # next epoch: new order and augmentation

    if args.out:
        torch.save(model.state_dict(), args.out)
        print(f"saved the state_dict to {args.out}")


if __name__ == "__main__":
    main()
