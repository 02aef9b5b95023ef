"""``lacss demo``: train a tiny model on synthetic cells, segment held-out images."""

from __future__ import annotations

from lacss_core.cli._common import add_progress_options


def add_demo_parser(subparsers) -> None:
    """Register ``lacss demo`` and its options."""
    from lacss_core.demo import DemoSettings

    defaults = DemoSettings()
    p = subparsers.add_parser(
        "demo",
        help="train a tiny model on synthetic cells and segment held-out images (a few minutes)",
        description="Generate synthetic cells, train the lacss_tiny model fully supervised on the "
        "CPU, segment held-out images, print the COCO mask AP and write model.keras, "
        "training_curve.png and per-image label TIFFs and overlay PNGs into OUT.",
        epilog="example: lacss demo -o lacss_demo",
    )
    p.add_argument(
        "-o", "--output", default="lacss_demo", help="output folder (default: %(default)s)"
    )
    p.add_argument(
        "--steps", type=int, default=defaults.steps, help="training steps (default: %(default)s)"
    )
    p.add_argument(
        "--test-images",
        type=int,
        default=defaults.test_images,
        help="held-out images to segment (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=defaults.seed, help="default: %(default)s")
    add_progress_options(p, quiet=False)
    p.set_defaults(run=run_demo)


def run_demo(args) -> int:
    """``lacss demo``: train on synthetic cells, segment, print AP; exit code."""
    from dataclasses import replace

    from lacss_core._progress import parse_log_every
    from lacss_core.demo import DemoSettings, run_demo

    parse_log_every(args.log_every)
    for name in ("steps", "test_images"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    settings = replace(
        DemoSettings(), steps=args.steps, test_images=args.test_images, seed=args.seed
    )
    run_demo(args.output, settings, log_every=args.log_every)
    return 0
