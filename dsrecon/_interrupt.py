"""Interrupts (SIGINT, SIGTERM) as the CLI sees them. Standard library only: the CLI's entry point
imports this before anything heavy, so that its handlers are installed within milliseconds.

The CLI's handlers note the signal here and raise an exception (:class:`~dsrecon.errors.UserInterrupt`
for SIGINT, :class:`~dsrecon.errors.Terminated` for SIGTERM, both KeyboardInterrupts), so that
every clean-up runs as for Ctrl-C. Code that may swallow that exception (numba's compiler, ctypes
callbacks) is followed by :func:`check_interrupt`, which raises it again.
"""

from __future__ import annotations

import contextlib
import signal

#: the signal (SIGINT/SIGTERM) the CLI received during this command, kept in case its exception
#: was swallowed: numba's compiler and ctypes callbacks catch what a signal handler raises inside
#: them, and the command would then run on as if Ctrl-C had never been pressed
_PENDING: list[int] = []


def note_interrupt(signum: int) -> None:
    _PENDING[:] = [int(signum)]


def clear_interrupt() -> None:
    _PENDING.clear()


def interrupt_pending() -> int | None:
    """The signal number noted during this command (SIGINT/SIGTERM), or None."""
    return _PENDING[0] if _PENDING else None


def interrupt_exception(signum: int) -> KeyboardInterrupt:
    """The exception that stands for ``signum`` (SIGTERM → Terminated, else UserInterrupt)."""
    from dsrecon.errors import Terminated, UserInterrupt

    return Terminated() if signum == signal.SIGTERM else UserInterrupt()


def raise_on_signal(signum, frame) -> None:  # noqa: ARG001
    """Signal handler: note the signal (raised again at the next check if the exception is
    swallowed), then raise its exception."""
    note_interrupt(signum)
    raise interrupt_exception(signum)


def quiet_interrupts(hook):
    """``hook`` (a sys.unraisablehook) without the interrupts raised inside a C callback (a signal
    landing in numba's first compilation, llvmlite's ctypes callback): those are not printed as
    "Exception ignored … Traceback" (the handler noted them, and the next :func:`check_interrupt`
    raises them again); every other unraisable exception goes to ``hook``."""

    def handle(u) -> None:
        if u.exc_type is not None and issubclass(u.exc_type, KeyboardInterrupt):
            return
        hook(u)

    return handle


def install_handlers() -> "dict | None":
    """SIGINT and SIGTERM raise UserInterrupt / Terminated (KeyboardInterrupts, via
    :func:`raise_on_signal`), so that every clean-up (temporary files, staging directories, locks)
    runs as for Ctrl-C. Returns the handlers replaced (None outside the main thread, where signals
    are left alone)."""
    try:
        return {s: signal.signal(s, raise_on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        return None


def install_worker_handlers() -> None:
    """In a worker process of a local pool (cohort, sweep): SIGINT and SIGTERM raise as in the
    CLI, and an interrupt swallowed by a C callback is neither printed nor lost."""
    import sys

    sys.unraisablehook = quiet_interrupts(sys.unraisablehook)
    install_handlers()


def check_interrupt() -> None:
    """Raise again the interrupt of a signal received earlier (no-op when none). Long loops (the
    training batches, Lyapunov chunks) call this, so Ctrl-C is never lost."""
    if _PENDING:
        raise interrupt_exception(_PENDING[0])


@contextlib.contextmanager
def signals_deferred() -> "Iterator[None]":  # noqa: F821 (no typing import: see the module docstring)
    """Hold SIGINT/SIGTERM back for a few statements that must not be cut in half (creating a
    temporary file and remembering its name; a rename; a clean-up). They are delivered on exit."""
    sigs = {signal.SIGINT, signal.SIGTERM}
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - Windows
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
