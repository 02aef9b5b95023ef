"""``lacss conformance``: the ops against the NumPy oracle, on every installed backend."""

from __future__ import annotations


def add_conformance_parser(subparsers) -> None:
    """Register ``lacss conformance`` (its options are the runner's)."""
    from lacss_core.conformance.__main__ import __doc__ as runner_doc

    p = subparsers.add_parser(
        "conformance",
        help="check the Keras ops against the NumPy oracle on every backend",
        description=runner_doc,
        add_help=False,  # `lacss conformance --help` shows the runner's own options
    )
    p.set_defaults(run=run_conformance, pass_through=True)


def run_conformance(args) -> int:
    """``lacss conformance``: run the ops-vs-oracle checks; exit code."""
    from lacss_core.conformance.__main__ import main as conformance_main

    return conformance_main(args.extra, prog="lacss conformance")
