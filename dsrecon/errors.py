"""Errors a user can act on.

Anything raised as :class:`DsreconError` is the user's or the data's fault: the CLI prints its
message as one line on stderr and exits with status 1, without a traceback.
"""

from __future__ import annotations


class DsreconError(Exception):
    """A user or data error; the message names the file or option and the problem."""


class DataError(DsreconError):
    """The input data cannot be used (missing, unreadable, NaN, too short, ...)."""


class DivergenceError(DsreconError):
    """Training or generation produced non-finite or exploding states."""
