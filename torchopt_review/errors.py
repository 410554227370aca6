"""Errors a user can cause, and the one-line, exit-status-2 way the CLIs report them."""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Callable

EXIT_USAGE = 2


class UserError(Exception):
    """Bad input the user can fix: printed as one line (``error: ...``), exit status 2."""


class ConfigError(UserError, ValueError):
    """A config value or key is invalid."""


class Terminated(BaseException):
    """The process was asked to stop (SIGTERM: a scheduler's pre-emption, ``scancel``, ``kill``)
    after its finished epochs were checkpointed: one line, exit status 128 + 15 = 143. A
    BaseException, like KeyboardInterrupt: no ``except Exception`` may swallow it."""

    def __init__(self, signum: int = 15):
        super().__init__(f"terminated (signal {signum})")
        self.signum = signum


class DataError(UserError):
    """The dataset is missing, corrupt or inconsistent."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (``error: ... (see --help)``, exit status 2), like
    every other error a user can cause, instead of the usage block followed by the message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see --help)")


def cli_entry(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wrap a CLI ``main``: a :class:`UserError` becomes one line on stderr and exit status 2;
    ``--debug`` shows the traceback. Anything else is a bug and keeps
    its traceback."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        args = sys.argv[1:] if argv is None else argv
        debug = "--debug" in args
        try:
            return main(argv)
        except UserError as exc:
            if debug:
                raise
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print("interrupted: finished epochs are checkpointed; run the same command to resume", file=sys.stderr)
            return 130
        except Terminated as exc:
            print("terminated (SIGTERM): finished epochs are checkpointed; run the same command to resume",
                  file=sys.stderr)
            return 128 + exc.signum

    return wrapper
