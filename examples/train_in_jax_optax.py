"""Train LACSS with pure JAX functions and optax: your own jitted train step, no Keras fit().

    KERAS_BACKEND=jax python examples/train_in_jax_optax.py --steps 300 --size 128 --out lacss.keras

Trains on built-in synthetic cells (fully supervised). ``params`` is a plain dict of arrays and
``state`` holds the BatchNorm statistics; ``to_keras`` turns both into a Keras model to save or
to segment with ``lacss_core.predict.predict_instances``.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "jax")  # before anything imports Keras

import jax  # noqa: E402
import optax  # noqa: E402

from lacss_core.backends import jax as lacss_jax  # noqa: E402
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
    parser.add_argument("--out", help="where to save the trained model (.keras)")
    return parser.parse_args(argv)


def make_train_step(optimizer):
    """One jitted step: loss and gradients, optax update, new BatchNorm statistics."""

    @jax.jit
    def train_step(params, state, opt_state, batch):
        grad_fn = jax.value_and_grad(lacss_jax.loss_fn, has_aux=True)
        (loss, (state, logs)), grads = grad_fn(params, state, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), state, opt_state, loss, logs

    return train_step


def main(argv=None):
    args = parse_args(argv)
    # Every batch has the same image shapes (fixed crop size, dropped remainder); the locations
    # have as many rows as the batch's cells need, rounded up to a power of two, so train_step
    # compiles once per such bucket (bucket_instances=False: always max_instances rows).
    samples = SyntheticCells(args.images, size=2 * args.size, n_cells=12)
    dataset = LacssDataset(
        samples,
        batch_size=args.batch_size,
        max_instances=args.max_instances,
        size=args.size,
        augment=True,
        subsample=True,
    )
    params, state = lacss_jax.init(args.preset, jax.random.key(0), (None, None, None, 1))
    optimizer = optax.adam(args.lr)
    opt_state = optimizer.init(params)
    train_step = make_train_step(optimizer)

    step = 0
    while step < args.steps:
        for index in range(len(dataset)):
            batch = dataset[index]  # (x, y) dicts of NumPy arrays
            params, state, opt_state, loss, logs = train_step(params, state, opt_state, batch)
            step += 1
            if step % 10 == 0 or step == args.steps:
                terms = ", ".join(f"{k} {float(v):.4f}" for k, v in logs.items())
                print(f"step {step}: loss {float(loss):.4f} ({terms})", flush=True)
            if step == args.steps:
                break
        dataset.on_epoch_end()  # next epoch: new order and augmentation

    if args.out:
        lacss_jax.to_keras(params, state).save(args.out)
        print(f"saved the model to {args.out}")


if __name__ == "__main__":
    main()
