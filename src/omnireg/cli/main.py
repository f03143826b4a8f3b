"""Entry point of the ``omnireg`` command.

Every sub-command lives in its own module with an ``add_parser(subparsers)`` function and a
``run(args) -> int`` function. User errors (missing or unreadable files, wrong dimensions, refused
overwrites, bad options) are reported as one line ``omnireg: error: ...`` with exit code 2; an
unexpected internal error gives one line and exit code 1 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from .. import __version__

__all__ = ["main", "build_parser", "CliError"]


class CliError(Exception):
    """A user error detected by the command line (reported as one line, exit code 2)."""


USER_ERRORS = (CliError, ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError)


def _commands():
    from . import apply, batch, demo, evaluate, info, landmarks, register, segment, train

    return [demo, info, apply, register, batch, evaluate, landmarks, segment, train]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omnireg",
        description=(
            "omnireg: image registration in world coordinates, with classical and learned similarity "
            "measures. Transforms are written as ITK files that ANTs, SimpleITK and 3D Slicer apply unchanged."
        ),
        epilog="Run 'omnireg COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"omnireg {__version__}")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="count", default=0, help="log progress details (-vv: debug)")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="only errors; no progress bar")
    parser.add_argument("--debug", action="store_true", help="show a traceback on internal errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _commands():
        module.add_parser(sub)
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.ERROR if args.quiet else {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.verbose < 2:
        # third-party chatter stays at warnings unless -vv
        for name in ("matplotlib", "PIL", "distributed", "asyncio", "h5py", "nibabel"):
            logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command line, recorded by `train`
    if args.command is None:
        parser.print_help()
        return 2
    _configure_logging(args)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        msg = str(exc) if str(exc) else type(exc).__name__
        if isinstance(exc, FileNotFoundError) and exc.filename and str(exc.filename) not in msg:
            msg = f"{msg}: {exc.filename}"
        print(f"omnireg {args.command}: error: {msg.splitlines()[0]}", file=sys.stderr)
        if args.debug:
            raise
        return 2
    except KeyboardInterrupt:
        print("omnireg: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - last resort: one line, not a traceback
        if args.debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"omnireg {args.command}: internal error: {type(exc).__name__}: {first} (rerun with --debug for details)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover - `python -m omnireg.cli.main`: use the package's module copy
    from omnireg.cli.main import main as _main

    sys.exit(_main())
