"""The user errors of the ``omnireg`` command: reported as one line ``omnireg COMMAND: error: ...``, exit code 2.

This module imports nothing from the CLI, so every sub-command (and :mod:`omnireg.cli.main`, which
imports the sub-commands) can import it without an import circle.
"""

from __future__ import annotations

__all__ = ["CliError", "Interrupted", "USER_ERRORS", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED"]

#: exit codes of every sub-command
EXIT_OK = 0
EXIT_FAILED = 1  # an internal error, or (omnireg batch) some pairs failed or were invalid
EXIT_USAGE = 2  # a user error found before any work: bad option, missing or unreadable input, refused overwrite
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), after the outputs of the interrupted work are removed; 143 on SIGTERM


class CliError(Exception):
    """A user error detected by the command line (reported as one line, exit code 2)."""


#: exceptions reported as user errors (one line naming the flag, exit code 2)
USER_ERRORS = (CliError, ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError)


class Interrupted(KeyboardInterrupt):
    """Raised by the command's signal handler on SIGINT (Ctrl-C) or SIGTERM; the exit code is ``128 + signum``.

    A ``KeyboardInterrupt``, so every ``finally`` and ``except BaseException`` on the way up removes the
    partial outputs of the interrupted work, as on an ordinary Ctrl-C.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = int(signum)
