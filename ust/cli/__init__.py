"""The ``ust`` command line: thin wrappers over the library functions the notebooks use.

Each subcommand lives in its own module with an ``add_<name>_command(subparsers)`` function that registers its
arguments and sets ``func`` (namespace → exit code); add new ones to :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ust import __version__
from ust.cli.evaluate import add_evaluate_command
from ust.cli.export import add_export_command
from ust.cli.fit import add_fit_command
from ust.cli.mvtec import add_mvtec_command
from ust.cli.predict import add_predict_command
from ust.cli.teacher import add_teacher_command

DESCRIPTION = "Uninformed Students (Bergmann et al., CVPR 2020): reproduction companion."


# Each entry registers one subcommand (one module of this package per command).
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_teacher_command,
    add_mvtec_command,
    add_fit_command,
    add_predict_command,
    add_export_command,
    add_evaluate_command,
]


def build_parser() -> argparse.ArgumentParser:
    """The ``ust`` parser with every subcommand of :data:`COMMANDS` registered."""
    parser = argparse.ArgumentParser(prog="ust", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"ust {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ust`` console script; returns the exit code (errors: 2, message on stderr)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        print(f"ust {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
