"""``lacss train``: train a model from labelled images, or from points + masks."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

from lacss_core.cli._common import add_progress_options


def add_train_parser(subparsers) -> None:
    """Register ``lacss train`` and its options."""
    p = subparsers.add_parser(
        "train",
        help="train a model from a folder of labelled images, or of points + masks",
        description="Train LACSS. Fully supervised: DATA holds IMAGE.tif with IMAGE_masks.tif "
        "label images. Weakly supervised (--weak): DATA holds IMAGE.tif, IMAGE_points.csv (y,x "
        "per cell) and IMAGE_mask.tif (binary foreground). Writes the model (-o), checkpoints "
        "and a training-curve PNG beside the model. Run again after an interruption and it "
        "resumes exactly, but only if the data and settings are those the checkpoints recorded; "
        "otherwise it stops and asks for --resume or --overwrite. The same --seed gives the same "
        "model, bit for bit, on one machine and backend.",
        epilog="example: lacss train data/train -o cells.keras --steps 5000 --validation data/val",
    )
    p.add_argument("data", help="training folder")
    p.add_argument("-o", "--output", required=True, help="model file to write (.keras)")
    _add_model_options(p)
    _add_training_options(p)
    _add_checkpoint_options(p)
    add_progress_options(p, quiet=True)
    p.set_defaults(run=run_train)


def _add_model_options(p) -> None:
    """The "model" options: a new model's preset and crop, or --init."""
    g = p.add_argument_group("model")
    g.add_argument(
        "--preset", default="lacss_tiny", help="model preset for a new model (default: %(default)s)"
    )
    g.add_argument("--init", help="start from this saved model (transfer learning)")
    g.add_argument(
        "--crop-size",
        type=int,
        help="segmentation crop in pixels, new models (default: 1.5 x the largest cells, "
        "measured in DATA)",
    )
    g.add_argument(
        "--auxnet",
        action="store_true",
        help="with --weak: add the auxnet and its cell-boundary loss (new models)",
    )


def _add_training_options(p) -> None:
    """The "training" options: regime, schedule, data sampling, seed."""
    g = p.add_argument_group("training")
    g.add_argument(
        "--weak",
        action="store_true",
        help="weakly supervised (points + masks); a new model then gets the segmentor head bias "
        "and centre prior (sigma = crop size / 8 px) against collapse to empty masks; from "
        "scratch some seeds still collapse (try another --seed, or --auxnet; "
        "docs/results.md, 'Weak training: seed spread')",
    )
    g.add_argument("--steps", type=int, default=1000, help="default: %(default)s")
    g.add_argument("--batch-size", type=int, default=4, help="default: %(default)s")
    g.add_argument(
        "--size",
        type=int,
        help="side in pixels of the random crops every step trains on, taken from the images "
        "with probability proportional to their area; smaller images are zero-padded (default: "
        "4 segmentation crops, a power of two, at most the largest image)",
    )
    g.add_argument(
        "--target-diameter",
        type=float,
        metavar="PX",
        help="resize the training (and --validation) images, labels, points and masks so the "
        "median cell diameter measured in DATA becomes PX pixels, and record PX in the model: "
        "`lacss predict --diameter D` then resizes images of cells D px across by PX / D, the "
        "scale trained at (default: no rescale, unless the cells do not fit a given "
        "--crop-size or the --init model's crop; the printed sizes say so)",
    )
    g.add_argument(
        "--max-instances",
        type=int,
        help="cells per training crop (default: 256, or more if a crop can hold more)",
    )
    g.add_argument("--learning-rate", type=float, default=1e-3, help="default: %(default)s")
    g.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the initial weights, the data order and the augmentation (default: "
        "%(default)s)",
    )
    g.add_argument(
        "--subsample",
        action="store_true",
        help="keep only the first --max-instances cells of an image that has more (default: stop "
        "with an error)",
    )
    g.add_argument(
        "--data-parallel",
        action="store_true",
        help="JAX: split every batch over all local devices (keras.distribution)",
    )


def _add_checkpoint_options(p) -> None:
    """The "checkpoints and validation" options, and --resume / --overwrite."""
    g = p.add_argument_group("checkpoints and validation")
    g.add_argument(
        "--checkpoint-dir", help="checkpoint folder (default: OUTPUT without suffix + _checkpoints)"
    )
    g.add_argument("--checkpoint-every", type=int, default=500, help="default: %(default)s")
    g.add_argument(
        "--validation",
        help="folder of labelled images for validation AP50 and, after training, threshold "
        "calibration",
    )
    g.add_argument("--validate-every", type=int, default=500, help="default: %(default)s")
    g.add_argument(
        "--no-calibrate",
        dest="calibrate",
        action="store_false",
        help="with --validation: keep the default thresholds (by default they are chosen on "
        "the validation images after training, as `lacss calibrate` does, and stored in "
        "OUTPUT)",
    )
    how = g.add_mutually_exclusive_group()
    how.add_argument(
        "--resume",
        action="store_true",
        help="continue the checkpoints although the data or training settings changed (the "
        "model must be the same)",
    )
    how.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the old checkpoints and start afresh; replace an existing OUTPUT",
    )


# Opt-in segmentor settings that let weakly supervised training from random weights learn, as
# measured: lacss_tiny at crop WEAK_REFERENCE_CROP on cells of median diameter
# WEAK_REFERENCE_DIAMETER (docs/results.md). weak_from_scratch() scales the centre prior's sigma
# (a length) with the cells; the bias and the prior's peak are logits. Bias -6, not the -4 first
# measured: at -4 the background pixels' pull on the head (G(1 - G) = 0.018 each) rivals the
# cells' push and 2 runs in 3 collapsed to empty masks; at -6 (0.0025) 8 of 8 learned.
WEAK_FROM_SCRATCH = {"segmentor_head_bias_init": -6.0, "centre_prior_sigma": 3.0}
WEAK_REFERENCE_CROP = 24
WEAK_REFERENCE_DIAMETER = 12.4  # SyntheticCells radius 5-8 px: equivalent diameter, median


def weak_from_scratch(crop_size: int, diameter: float | None = None) -> dict:
    """The ``Lacss`` options of ``lacss train --weak`` for a new model with ``crop_size``.

    The centre prior stands for a cell-sized blob: with peak logit 12 it stays above logit 1 out
    to 2.2 sigma, 6.7 px at sigma 3, the radius of the cells it was measured on. With the cells'
    median ``diameter`` (px, as measured from the training data), ``sigma = 3 * diameter /
    12.4``; without it, the crop stands in for the cell size: ``sigma = 3 * crop_size / 24``
    (12 px at crop 96, where the original LACSS code uses 10). The crop is sized to the largest
    cells, so it overstates the typical one: at crop 32 on the reference cells it gives 4 px,
    where the diameter gives 3 (docs/results.md, "Weak training: seed spread").
    """
    if diameter is not None:
        if not diameter > 0:
            raise ValueError(f"diameter must be a number of pixels > 0, got {diameter!r}")
        sigma = WEAK_FROM_SCRATCH["centre_prior_sigma"] * diameter / WEAK_REFERENCE_DIAMETER
    else:
        sigma = WEAK_FROM_SCRATCH["centre_prior_sigma"] * crop_size / WEAK_REFERENCE_CROP
    return {**WEAK_FROM_SCRATCH, "centre_prior_sigma": round(sigma, 2)}


def preset_crop_size(preset: str) -> int:
    """The crop size (px) of a new model of ``preset`` (ValueError naming an unknown one)."""
    import inspect

    from lacss_core.models import Lacss
    from lacss_core.models.presets import preset_config

    default = inspect.signature(Lacss.__init__).parameters["crop_size"].default
    return preset_config(preset).get("crop_size", default)


def _training_model(args, samples):
    """The model to train and the sizes chosen from ``samples`` (printed: what and why)."""
    from lacss_core._model_file import load_lacss_model
    from lacss_core.data.sizes import choose_training_sizes, measure_samples
    from lacss_core.models import Lacss

    init = load_lacss_model(args.init) if args.init else None
    sizes = choose_training_sizes(
        measure_samples(samples),
        crop_size=init.crop_size if init else args.crop_size,
        size=args.size,
        max_instances=args.max_instances,
        target_diameter=args.target_diameter,
        default_crop=init.crop_size if init else preset_crop_size(args.preset),
        crop_origin="the --init model's" if init else "given",
    )
    if not args.quiet:
        print(sizes.report(), flush=True)
    if init is None:
        overrides = {"use_auxnet": bool(args.weak and args.auxnet), "crop_size": sizes.crop_size}
        if args.weak:  # from scratch, the SPEC head collapses under L_WS (docs/results.md)
            overrides.update(weak_from_scratch(sizes.crop_size, sizes.train_diameter))
        init = Lacss.from_preset(args.preset, **overrides)
    # for prediction's diameter option, also from points; rescaled data set it anew, also for
    # an --init model (its images now have cells of that diameter)
    if init.train_diameter is None or sizes.scale != 1.0:
        init.train_diameter = sizes.train_diameter
    return init, sizes


def checkpoint_folder(args) -> Path:
    """``--checkpoint-dir``, or OUTPUT without its suffix + ``_checkpoints``."""
    return Path(args.checkpoint_dir or f"{Path(args.output).with_suffix('')}_checkpoints")


def check_train_args(args) -> None:
    """Every usage error of ``lacss train`` that needs no data, before any work (exit 2)."""
    from lacss_core._progress import parse_log_every
    from lacss_core.train import STATE_FILE

    parse_log_every(args.log_every)
    if not args.output.endswith(".keras"):
        raise ValueError(f"--output must end in .keras, got {args.output!r}")
    for name in ("steps", "batch_size", "size", "max_instances", "crop_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("checkpoint_every", "validate_every"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    target = args.target_diameter
    if target is not None and not (math.isfinite(target) and target > 0):
        raise ValueError(f"--target-diameter must be a number of pixels > 0, got {target:g}")
    if not args.learning_rate > 0:
        raise ValueError(f"--learning-rate must be > 0, got {args.learning_rate}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if not Path(args.data).is_dir():
        raise ValueError(f"training folder {args.data} does not exist or is not a folder")
    if args.validation and not Path(args.validation).is_dir():
        raise ValueError(f"--validation {args.validation} does not exist or is not a folder")
    if args.init and not Path(args.init).is_file():
        raise ValueError(f"--init {args.init}: no such model file")
    checkpoints = checkpoint_folder(args)
    if checkpoints.exists() and not checkpoints.is_dir():
        raise ValueError(f"--checkpoint-dir {checkpoints} exists and is not a folder")
    output = Path(args.output)
    if output.is_dir():
        raise ValueError(f"--output {output} is a folder; name a .keras file")
    has_state = (checkpoints / STATE_FILE).is_file()
    if output.exists() and not has_state and not args.overwrite:
        raise ValueError(
            f"{output} exists and {checkpoints} holds no run that made it; use --overwrite to "
            "replace it, or another --output"
        )
    _check_writable(output.parent if str(output.parent) else Path("."), "--output")


def _check_writable(folder: Path, option: str) -> None:
    """``folder`` (created if missing) accepts files, else ValueError naming ``option``."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise ValueError(f"{option}: cannot write into {folder}: {e.strerror or e}") from e


class CollapseWarning(UserWarning):
    """Weak training ended with a model that segments (almost) none of its training cells."""


def warn_if_collapsed(model, samples, *, images: int = 4, fraction: float = 0.1) -> int:
    """Warn (``CollapseWarning``) when ``model`` finds fewer than ``fraction`` of the points of
    its first ``images`` training samples: weakly supervised training from scratch can settle on
    empty masks for some seeds (docs/results.md, "Weak training: seed spread"), and the model it
    writes then finds nothing, silently. ``samples``: ``Sample`` objects with ``locations``
    ``(n, 2)``. Returns the number of cells found."""
    from lacss_core.predict import predict_instances

    chosen = [s for s in samples if s.locations is not None and len(s.locations)][:images]
    points = sum(len(s.locations) for s in chosen)
    found = sum(int(predict_instances(model, s.image, progress=False)[0].max()) for s in chosen)
    if points and found < fraction * points:
        warnings.warn(
            f"the trained model finds {found} cells on {len(chosen)} of its training images, "
            f"which hold {points} points: weak training collapsed to empty masks (it happens "
            "for some seeds from scratch, docs/results.md). Train again with another --seed, "
            "--auxnet, or from a model trained on labels (--init).",
            CollapseWarning,
            stacklevel=2,
        )
    return found


def run_train(args) -> int:
    """``lacss train``: train, write the model and its training curve; exit code."""
    import keras

    from lacss_core.data import LacssDataset, load_labelled_folder, load_point_folder
    from lacss_core.train import BEST_FILE, plot_history, save_model, train

    check_train_args(args)
    # Before the model exists: the seed fixes its initial weights too (train() sets it again).
    keras.utils.set_random_seed(args.seed)
    if args.data_parallel:  # before the model exists, so its weights are replicated
        from lacss_core.distributed import data_parallel

        data_parallel()
    samples = load_point_folder(args.data) if args.weak else load_labelled_folder(args.data)
    model, sizes = _training_model(args, samples)
    data = LacssDataset(
        sizes.rescale(samples),  # to --target-diameter, if given or needed (printed)
        batch_size=args.batch_size,
        max_instances=sizes.max_instances,
        supervision="weak" if args.weak else "full",
        size=(sizes.size, sizes.size),
        augment=True,
        random_crops=True,  # any number and size of images: crops weighted by area
        subsample=args.subsample,
        seed=args.seed,
    )
    if args.data_parallel:
        from lacss_core.distributed import local_batches

        data = local_batches(data)  # each host feeds its rows of every batch (no-op on one)
    validation = None
    if args.validation:  # at the training scale, so AP and calibration see what training saw
        validation = sizes.rescale(load_labelled_folder(args.validation))
    stem = Path(args.output).with_suffix("")
    checkpoint_dir = str(checkpoint_folder(args))
    history = train(
        model,
        data,
        steps=args.steps,
        learning_rate=args.learning_rate,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=args.checkpoint_every,
        validation_data=validation,
        validate_every=args.validate_every,
        seed=args.seed,
        resume="always" if args.resume else "never" if args.overwrite else "auto",
        run_info={"preset": args.preset, "init": args.init},
        verbose=0 if args.quiet else 1,
        log_every=args.log_every,
        calibrate=args.calibrate,
    )
    save_model(model, args.output)
    plot_history(history, f"{stem}_training_curve.png")
    if args.weak:
        warn_if_collapsed(model, sizes.rescale(samples))
    best = Path(checkpoint_dir) / BEST_FILE
    if not args.quiet:
        print(
            f"wrote {args.output} and {stem}_training_curve.png"
            + (f"; best validation model: {best}" if validation else "")
        )
    return 0
