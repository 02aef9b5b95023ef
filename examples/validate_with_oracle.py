"""Check the running backend against the NumPy oracle on your own image (or synthetic cells).

    KERAS_BACKEND=torch python examples/validate_with_oracle.py --image cells.tif --label masks.tif
    KERAS_BACKEND=jax python examples/validate_with_oracle.py --model my.keras   # synthetic image

The model (``--model``, or a fresh ``--preset``) runs on the image with the label's cell centroids
as GT locations. Its outputs (LPN maps, proposals, mixed locations, patches) are then the inputs of
every ``lacss_core.ops`` function and of its oracle twin, and the largest differences are printed
per function and mode (eager; also jit on JAX). Each loss also has its gradient checked: the
backend's autodiff along a random direction against float64 central differences of the oracle.
Exit status 1 if any check is outside the tolerances of ``lacss_core.conformance.tolerances``.
"""

from __future__ import annotations

import argparse
import sys

import lacss_core  # noqa: F401  # isort: skip (first: picks JAX or PyTorch for Keras)
import keras
import numpy as np

from lacss_core import oracle
from lacss_core.conformance import harness
from lacss_core.conformance import tolerances as tol
from lacss_core.data import (
    Sample,
    batch_samples,
    normalize_image,
    read_image,
    read_label,
    synthetic_cells,
)
from lacss_core.models import Lacss


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", help="image file (TIFF/PNG/JPEG); default: synthetic cells")
    parser.add_argument("--label", help="its label image (0 = background); needed with --image")
    parser.add_argument("--model", help="a saved .keras model; default: a fresh --preset")
    parser.add_argument("--preset", default="lacss_tiny")
    parser.add_argument("--size", type=int, default=96, help="synthetic image size, pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.image and not args.label:
        parser.error("--image needs --label (the GT cells the losses compare against)")
    return args


def load_sample(args) -> Sample:
    if args.image:
        image = read_image(args.image)
        return Sample(
            normalize_image(image, "range"), label=read_label(args.label, image.shape[:2])
        )
    return synthetic_cells(args.seed, size=args.size, n_cells=8)


def load_model(args, channels: int) -> Lacss:
    if args.model:
        return keras.saving.load_model(args.model)
    model = Lacss.from_preset(args.preset)
    model.build((None, None, None, channels))
    return model


def numpy_outputs(model, inputs) -> dict:
    return {k: keras.ops.convert_to_numpy(v) for k, v in model(inputs, training=False).items()}


def value_cases(model, x, y, trained, inferred):
    """``(function, args, kwargs, exact outputs)``: the model's own data through each function."""
    height, width = x["image"].shape[1:3]
    stride, crop = model.lpn_stride, model.crop_size
    gt, label = x["locations"], y["label"]
    scores, offsets = trained["lpn_scores"], trained["lpn_offsets"]
    score_target, offset_target = oracle.lpn_targets(gt, (height, width), stride)
    candidates, candidate_scores = oracle.decode_proposals(scores, offsets, (height, width), stride)
    nms_distance = float(stride if model.nms_distance is None else model.nms_distance)
    nms_kwargs = dict(
        max_output=model.train_max_output,
        nms_distance=nms_distance,
        min_score=float(model.train_min_score),
        pre_nms_topk=model.pre_nms_topk,
    )
    locations, patches = trained["locations"], trained["patches"]
    mask = (label > 0).astype(np.float32)
    cases = [
        ("lpn_targets", (gt, (height, width), stride), {}, (0,)),
        ("lpn_loss", (scores, offsets, score_target, offset_target), {}, ()),
        ("decode_proposals", (scores, offsets, (height, width), stride), {}, (1,)),
        ("nms", (candidates.astype(np.float32), candidate_scores), nms_kwargs, (0, 1)),
        ("mix_locations", (gt, trained["proposals"]), {"mix_distance": model.mix_distance}, (0,)),
        ("patch_origins", (locations, crop), {}, ()),
        ("location_tensor", (locations, crop), {}, ()),
        ("gt_patches", (label, locations, crop), {}, (0,)),
        ("fs_seg_loss", (patches, locations, label), {}, ()),
        ("ws_seg_loss", (patches, locations, mask), {}, ()),
        ("sobel_magnitude", (patches,), {}, ()),
        (
            "render_label",
            (inferred["patches"], inferred["locations"], inferred["scores"], (height, width)),
            {},
            (),
        ),
    ]
    if "boundary" in trained:  # the auxnet is on
        cases.append(("boundary_loss", (patches, locations, trained["boundary"]), {}, ()))
    return cases


# (function, argument to differentiate) for every loss
GRADIENT_CASES = [
    ("lpn_loss", 0),
    ("lpn_loss", 1),
    ("fs_seg_loss", 0),
    ("ws_seg_loss", 0),
    ("boundary_loss", 0),
    ("boundary_loss", 2),
]


def compare_values(name, args, kwargs, exact, mode):
    """Rows ``(check, max abs error, tolerance, passed)``, one per output."""
    expected = harness.run_oracle(name, args, kwargs)
    got = harness.run_op(name, args, kwargs, mode)
    rows = []
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        error = float(np.max(np.abs(g.astype(np.float64) - e), initial=0.0))
        if g.dtype.kind != "f" or i in exact:
            rows.append((f"{name}[{i}]", error, "exact", bool(np.array_equal(g, e))))
        else:
            ok = bool(np.allclose(g, e, rtol=tol.FLOAT_RTOL, atol=tol.FLOAT_ATOL))
            rows.append((f"{name}[{i}]", error, f"rtol {tol.FLOAT_RTOL:g}", ok))
    return rows


def compare_gradient(name, args, wrt, mode, rng):
    """Backend gradient along a random direction vs central differences of the oracle."""
    gradient = harness.backend_grad(name, args, {}, wrt, mode).astype(np.float64)
    direction = rng.standard_normal(gradient.shape)
    function = getattr(oracle, name)
    base = [
        a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a
        for a in args
    ]

    def oracle_at(t):
        shifted = list(base)
        shifted[wrt] = base[wrt] + t * direction
        return float(function(*shifted))

    step = tol.FD_STEP
    expected = (oracle_at(step) - oracle_at(-step)) / (2 * step)
    got = float(np.sum(gradient * direction))
    scale = float(np.sum(np.abs(gradient * direction)))  # the size of the summed terms
    ok = abs(got - expected) <= tol.GRAD_RTOL * abs(expected) + tol.GRAD_ATOL_FRACTION * scale
    return (f"d {name} / d arg{wrt}", abs(got - expected), f"rtol {tol.GRAD_RTOL:g}", ok)


def main(argv=None):
    args = parse_args(argv)
    sample = load_sample(args)
    x, y = batch_samples([sample], max_instances=max(1, int(sample.label.max())))
    model = load_model(args, channels=x["image"].shape[-1])
    trained, inferred = numpy_outputs(model, x), numpy_outputs(model, x["image"])
    cases = value_cases(model, x, y, trained, inferred)
    arguments = {name: case_args for name, case_args, _, _ in cases}
    rng = np.random.default_rng(args.seed)

    print(
        f"backend {keras.backend.backend()}, image {x['image'].shape[1:]}, "
        f"{int(sample.label.max())} cells"
    )
    print(f"{'check':28s} {'mode':6s} {'max abs err':>12s}  tolerance    result")
    failures = 0
    for mode in harness.modes():
        rows = [row for case in cases for row in compare_values(*case, mode)]
        rows += [
            compare_gradient(name, arguments[name], wrt, mode, rng)
            for name, wrt in GRADIENT_CASES
            if name in arguments
        ]
        for check, error, tolerance, ok in rows:
            print(f"{check:28s} {mode:6s} {error:12.3g}  {tolerance:12s} {'ok' if ok else 'FAIL'}")
            failures += not ok
    print("all checks passed" if not failures else f"{failures} checks FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
