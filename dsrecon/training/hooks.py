"""Faults a test injects into training: not options, never set by a user, never recorded.

``with inject_faults(stop_after_epoch=5): model.fit(...)`` stops the fit after epoch 5 as if the
process had been killed after a checkpoint; ``nan_at_batch=k`` poisons the loss of batch k (-1:
every batch). The engine reads the active hooks through :func:`current` at the moment it needs
them, so a test's ``with`` block is all there is to it.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass


class InjectedKill(KeyboardInterrupt):
    """Raised by the stop_after_epoch testing hook, as if the process had been killed after a
    checkpoint (a KeyboardInterrupt, so the run's staging directory is kept for --resume, as after
    a kill)."""


@dataclass
class FaultHooks:
    """Faults a test injects into training (never set by a user; not options, not recorded):
    stop after this epoch as if killed; poison the loss of this batch (-1: every batch); stop after
    this epoch of teacher-space pretraining as if killed."""

    stop_after_epoch: int | None = None
    nan_at_batch: int | None = None
    stop_after_pretrain_epoch: int | None = None


_HOOKS = FaultHooks()


def current() -> FaultHooks:
    """The faults in force now (none outside an `inject_faults` block)."""
    return _HOOKS


@contextmanager
def inject_faults(**faults):
    """``with inject_faults(stop_after_epoch=5): model.fit(...)`` (tests only)."""
    global _HOOKS
    old, _HOOKS = _HOOKS, FaultHooks(**faults)
    try:
        yield _HOOKS
    finally:
        _HOOKS = old
