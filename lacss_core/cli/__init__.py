"""The ``lacss`` command line: ``lacss COMMAND --help`` describes each command.

Each command is a pair of functions, ``add_<command>_parser(subparsers)`` and
``run_<command>(args) -> int`` (the exit status); ``COMMANDS`` lists the ``add_*`` functions in
the order ``lacss --help`` shows them. Each command lives in its own module
(``lacss_core.cli.predict``, ...); what they share is in ``_common``. Keras and the model are
imported only by the commands that need them, so ``lacss --help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys

from lacss_core.cli.calibrate import add_calibrate_parser
from lacss_core.cli.conformance import add_conformance_parser
from lacss_core.cli.demo import add_demo_parser
from lacss_core.cli.evaluate import add_evaluate_parser
from lacss_core.cli.predict import add_predict_parser
from lacss_core.cli.train import WEAK_FROM_SCRATCH, add_train_parser

COMMANDS = [
    add_demo_parser,
    add_predict_parser,
    add_train_parser,
    add_calibrate_parser,
    add_evaluate_parser,
    add_conformance_parser,
]


def main(argv=None) -> int:
    """Entry point of the ``lacss`` console script; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if extra and not getattr(args, "pass_through", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    from lacss_core._lock import FolderLockedError

    try:
        return args.run(args)
    except ValueError as error:  # bad input, named by the library: a message, not a traceback
        print(f"lacss {args.command}: error: {error}", file=sys.stderr)
        return 2
    except FolderLockedError as error:  # another run writes there: nothing was touched
        print(f"lacss {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # every file is atomic: nothing half-written is left
        print(
            f"lacss {args.command}: interrupted; files written so far are complete. Run the same "
            "command again to go on",
            file=sys.stderr,
        )
        return 130


def build_parser() -> argparse.ArgumentParser:
    """The ``lacss`` argument parser with every command's subparser."""
    parser = argparse.ArgumentParser(
        prog="lacss",
        description="LACSS cell segmentation: segment images, score segmentations, check the "
        "implementation. Run `lacss COMMAND --help` for the options of a command.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add_parser in COMMANDS:
        add_parser(subparsers)
    return parser


__all__ = ["COMMANDS", "WEAK_FROM_SCRATCH", "build_parser", "main"]
