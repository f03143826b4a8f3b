"""Entry point of the ``omnireg`` command.

Every sub-command lives in its own module with an ``add_parser(subparsers)`` function and a
``run(args) -> int`` function. User errors (missing or unreadable files, wrong dimensions, refused
overwrites, bad options) are reported as one line ``omnireg COMMAND: error: FLAG: ...`` with exit code 2,
before any work; an unexpected internal error gives one line and exit code 1 (``--debug`` shows the
traceback). Ctrl-C (SIGINT) or SIGTERM while a command runs removes the partial outputs of the
interrupted work, prints one line ``omnireg COMMAND: interrupted; ...`` and exits with 130 (143 on SIGTERM).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator, Sequence

from .common import OneLineParser
from .errors import EXIT_INTERRUPTED, EXIT_USAGE, USER_ERRORS, CliError, Interrupted

__all__ = ["main", "build_parser", "CliError"]


def _commands():
    from . import apply, batch, demo, evaluate, info, landmarks, register, segment, train

    return [demo, info, apply, register, batch, evaluate, landmarks, segment, train]


def build_parser() -> argparse.ArgumentParser:
    """The ``omnireg`` parser; building it imports no numerical package (sub-commands import theirs in ``run``)."""
    from .. import __version__

    parser = OneLineParser(
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


#: what an interruption leaves, per command (others: the file being written is not left half-written)
_INTERRUPTED = {
    "register": "the outputs of the interrupted run were removed",
    "landmarks": "the outputs of the interrupted run were removed",
    "batch": "finished pairs are kept and the interrupted ones removed; rerun the same command to resume",
    "train": "the last checkpoint is kept; rerun with --resume to continue",
}


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted(signum)


@contextmanager
def _interrupt_handlers() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` while a command runs (restored afterwards).

    Installed even when SIGINT was ignored at start-up (a process started in the background by a script
    inherits an ignored SIGINT, and Python then never raises ``KeyboardInterrupt``): an explicit
    ``kill -INT`` or Ctrl-C stops omnireg and removes the partial outputs. SIGTERM (``kill``, schedulers)
    does the same instead of killing the process mid-write.
    """
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, _raise_interrupted)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (one line, exit code 2): a return value
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command line, recorded by `train`
    if args.command is None:
        parser.print_help()
        return 2
    _configure_logging(args)
    try:
        with _interrupt_handlers():
            return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        msg = str(exc) if str(exc) else type(exc).__name__
        if isinstance(exc, FileNotFoundError) and exc.filename and str(exc.filename) not in msg:
            msg = f"{msg}: {exc.filename}"
        print(f"omnireg {args.command}: error: {msg.splitlines()[0]}", file=sys.stderr)
        if args.debug:
            raise
        return 2
    except KeyboardInterrupt as exc:
        what = _INTERRUPTED.get(args.command)
        print(f"omnireg {args.command}: interrupted" + (f"; {what}" if what else ""), file=sys.stderr)
        return 128 + exc.signum if isinstance(exc, Interrupted) else EXIT_INTERRUPTED
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
