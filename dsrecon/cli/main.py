"""`dsrecon` entry point: the Typer app plus one-line error handling.

Exit codes: 0 success, 1 user or data error (one line on stderr, no traceback), 2 usage error.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys

import typer

try:  # typer >= 0.20 vendors click
    from typer._click import exceptions as _cx
except ImportError:  # pragma: no cover - older typer depends on click
    from click import exceptions as _cx

from dsrecon._util import clear_interrupt, interrupt_pending
from dsrecon.errors import DsreconError, FitInterrupted, Terminated

#: the arguments of the command being run (for messages that repeat the command, e.g. --resume)
CURRENT_ARGV: list[str] = []

app = typer.Typer(
    name="dsrecon",
    help="Reconstruct the dynamical system behind neuroimaging recordings.\n\n"
    "Examples:\n\n"
    "  dsrecon simulate system lorenz63 --length 3000 --tr 0.2 -o x.tsv\n\n"
    "  dsrecon fit x.tsv -o run\n\n"
    "  dsrecon evaluate run --data x.tsv",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        from dsrecon._util import dsrecon_version

        print(f"dsrecon {dsrecon_version()}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
) -> None:
    """Reconstruct the dynamical system behind neuroimaging recordings."""


class _ConsoleHandler(logging.Handler):
    """Library warnings (the ``dsrecon`` logger) as one plain line each on the CLI's stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        from dsrecon.cli.common import err_console

        try:
            err_console.print(self.format(record), soft_wrap=True, markup=False, highlight=False)
        except Exception:  # pragma: no cover - a broken stderr must not turn a warning into a crash
            self.handleError(record)


def _setup_logging() -> None:
    log = logging.getLogger("dsrecon")
    if not any(isinstance(h, _ConsoleHandler) for h in log.handlers):
        log.addHandler(_ConsoleHandler())
    log.setLevel(logging.WARNING)


def _register() -> None:
    # Each command group lives in its own module; importing it registers its commands on `app`.
    import importlib

    for mod in ("simulate", "simulate_model", "evaluate", "fit", "group", "demo", "backends", "report", "cohort"):
        importlib.import_module(f"dsrecon.cli.{mod}")


_STATE = {"sigterm": False, "reported": False}


def _on_sigterm(signum, frame):  # noqa: ARG001
    from dsrecon._util import note_interrupt

    _STATE["sigterm"] = True
    note_interrupt(signal.SIGTERM)
    raise Terminated()


def _on_sigint(signum, frame):  # noqa: ARG001
    from dsrecon._util import note_interrupt

    note_interrupt(signal.SIGINT)  # raised again at the next check if the exception is swallowed
    raise KeyboardInterrupt()


def report_interrupt(e: FitInterrupted) -> int:
    """Print the one line for an interrupted fit (epoch, checkpoint, the exact --resume command);
    return the exit code (130 for SIGINT, 143 for SIGTERM)."""
    if e.checkpoint_epoch is not None:
        hint = f"checkpoint at epoch {e.checkpoint_epoch} kept; resume with: {resume_command()}"
    else:
        hint = "no checkpoint yet; run the same command again to start over"
    print(f"interrupted ({e.signal}) at epoch {e.epoch}; {hint}", file=sys.stderr)
    _STATE["reported"] = True
    return 143 if e.signal == "SIGTERM" else 130


def resume_command(argv: list[str] | None = None) -> str:
    """The command line that continues the current fit: the same arguments plus --resume."""
    args = list(CURRENT_ARGV if argv is None else argv)
    if "--resume" not in args:
        args.append("--resume")
    return shlex.join(["dsrecon", *args])


def main(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv``; return the exit code (never raises for user errors).

    SIGTERM is turned into an exception (a KeyboardInterrupt, like Ctrl-C) for the duration, so
    that every clean-up (temporary files, staging directories, locks) runs as for Ctrl-C."""
    global CURRENT_ARGV
    _setup_logging()
    try:
        _register()  # (imports torch: seconds, in which Ctrl-C must not print a traceback either)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    CURRENT_ARGV = list(sys.argv[1:] if argv is None else argv)
    _STATE.update(sigterm=False, reported=False)
    old_term = old_int = None
    clear_interrupt()
    try:
        old_term = signal.signal(signal.SIGTERM, _on_sigterm)
        old_int = signal.signal(signal.SIGINT, _on_sigint)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        rv = app(args=argv, prog_name="dsrecon", standalone_mode=False)
    except DsreconError as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        print(f"error: {msg}", file=sys.stderr)
        return 1
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except _cx.ClickException as e:
        e.show()
        return e.exit_code
    except FitInterrupted as e:
        return report_interrupt(e)
    except KeyboardInterrupt as e:
        print("terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except Exception as e:  # a bug, not a data error: one line unless asked for the traceback
        if interrupt_pending():  # Ctrl-C inside a C extension's import turns into "ImportError: initialization failed"
            term = interrupt_pending() == signal.SIGTERM
            print("terminated (SIGTERM)" if term else "interrupted", file=sys.stderr)
            return 143 if term else 130
        if os.environ.get("DSRECON_DEBUG"):
            raise
        print(f"error: internal error: {e.__class__.__name__}: {e} (set DSRECON_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        if old_int is not None:
            signal.signal(signal.SIGINT, old_int)
    if rv == 130:  # typer turns KeyboardInterrupt (Ctrl-C, and SIGTERM through _on_sigterm) into exit 130
        if _STATE["sigterm"]:
            rv = 143
        if not _STATE["reported"]:
            print("terminated (SIGTERM)" if rv == 143 else "interrupted", file=sys.stderr)
    return rv if isinstance(rv, int) else 0


def run() -> None:  # console-script entry point
    try:
        code = main()
    except KeyboardInterrupt:  # an interrupt re-raised while main() was returning (its report is printed)
        code = 143 if interrupt_pending() == signal.SIGTERM else 130
    sys.exit(code)


if __name__ == "__main__":
    # `python -m dsrecon.cli.main` runs this file as __main__, a second copy of the module; the
    # command modules register on the importable one's app, so run that
    from dsrecon.cli.main import run as _run

    _run()
