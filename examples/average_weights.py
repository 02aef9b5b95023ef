"""Average the weights of models of one architecture (a uniform "model soup", Wortsman et al.
2022): the shipped generalist is the average of two fine-tunes' ends (docs/model_card.md).

Usage::

    KERAS_BACKEND=jax python examples/average_weights.py A.keras B.keras [C.keras ...] -o OUT.keras

Every floating-point variable becomes the mean over the models (BatchNorm statistics too:
``examples/train_generalist.py --evaluate-only --init OUT.keras`` recalibrates them, then
calibrates the thresholds); the config (thresholds, diameter) is the last model's. Models whose
variables differ in name or shape are refused.
"""

from __future__ import annotations

import argparse


def average_weights(models):
    """Set the last of ``models`` to the mean of their floating-point variables; returns it."""
    import keras
    import numpy as np

    target = models[-1]
    for model in models:
        if [(v.path, tuple(v.shape)) for v in model.weights] != [
            (v.path, tuple(v.shape)) for v in target.weights
        ]:
            raise ValueError(f"{model.name} does not have the variables of {target.name}")
    for k, variable in enumerate(target.weights):
        values = [keras.ops.convert_to_numpy(m.weights[k]) for m in models]
        if np.issubdtype(values[0].dtype, np.floating):
            variable.assign(np.mean(values, axis=0).astype(values[0].dtype))
    return target


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help=".keras models (at least two)")
    p.add_argument("-o", "--output", required=True, help="the averaged model's .keras path")
    args = p.parse_args(argv)
    if len(args.models) < 2:
        p.error("give at least two models to average")
    import keras

    import lacss_core.models  # noqa: F401  (registers Lacss for load_model)
    from lacss_core.train import save_model

    model = average_weights([keras.saving.load_model(path) for path in args.models])
    save_model(model, args.output)  # atomic: a crash leaves no half-written model
    print(f"wrote {args.output}: the mean of {len(args.models)} models")


if __name__ == "__main__":
    main()
