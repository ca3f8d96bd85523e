"""Errors a user can act on.

Anything raised as :class:`DsreconError` is the user's or the data's fault: the CLI prints its
message as one line on stderr and exits with status 1, without a traceback.
"""

from __future__ import annotations

import re
from typing import Callable


class DsreconError(Exception):
    """A user or data error; the message names the file or option and the problem."""


class OptionError(DsreconError):
    """An option's value is refused. The message names each option by its parameter name in
    backquotes (`hidden_dim`), the library's own words; the CLI shows its flag there instead
    (``--hidden-dim``: `dsrecon.cli.options.cli_words`)."""

    NAME = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")

    def named(self, name_of: Callable[[str], str]) -> str:
        """The message with each `name` replaced by ``name_of(name)``."""
        return self.NAME.sub(lambda m: name_of(m.group(1)), str(self))


class DataError(DsreconError):
    """The input data cannot be used (missing, unreadable, NaN, too short, ...)."""


class DivergenceError(DsreconError):
    """Training or generation produced non-finite or exploding states."""


class UserInterrupt(KeyboardInterrupt):
    """Ctrl-C (SIGINT), raised by the CLI's signal handler.

    A subclass, not KeyboardInterrupt itself: CPython remembers a plain KeyboardInterrupt that
    escapes code run by ``exec()`` of a string (numba compiles through it; dataclasses and
    namedtuples are made by it) even when it is caught later, and a ``python -m`` process then
    ends by SIGINT at exit (status -2) instead of with the 130 the CLI returned."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised by the CLI's signal handler so that clean-up code runs as for Ctrl-C."""


class FitInterrupted(KeyboardInterrupt):
    """A fit stopped by SIGINT/SIGTERM; its message says the epoch reached and how to resume.

    ``signal`` is the signal's name; ``epoch`` the last epoch finished; ``checkpoint_epoch`` the
    epoch the kept checkpoint holds (None when there is none); ``staging`` the kept directory."""

    def __init__(self, message: str, *, signal: str = "SIGINT", epoch: int = 0, checkpoint_epoch: int | None = None,
                 staging: str | None = None):
        super().__init__(message)
        self.signal, self.epoch, self.checkpoint_epoch, self.staging = signal, epoch, checkpoint_epoch, staging
