"""`dsrecon` entry point: signal handling, one-line errors, exit codes.

Exit codes: 0 success, 1 user or data error (one line on stderr, no traceback), 2 usage error,
130 interrupted (SIGINT, Ctrl-C), 143 terminated (SIGTERM). With ``--json`` a failure also prints
one JSON object on stdout: ``{"error": "<the line>", "exit_code": <code>}``.

Interrupts. :func:`run` (the console script and ``python -m dsrecon.cli.main``) installs the
SIGINT/SIGTERM handlers as its first statement: this module imports only the standard library
(typer, numpy and torch are imported after the handlers are in place), so from a few milliseconds
after the interpreter starts, a signal at any moment (imports, numba's compilation, training,
Lyapunov chunks, writing) ends the command with 130/143 and one line, after every clean-up.
Before that point (while the interpreter itself starts) the interpreter's defaults apply: the
process is killed by the signal (a shell reports 130/143, Python's subprocess -2/-15), and nothing
has been read or written yet. Once the exit code is decided, a further signal ends the process at
once with that code.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import signal
import sys
import warnings

# (nothing heavier than this here: the handlers are installed once this module is imported)
from dsrecon._interrupt import clear_interrupt, install_handlers, interrupt_pending, quiet_interrupts, signals_deferred
from dsrecon.errors import DsreconError, FitInterrupted, Terminated

#: the arguments of the command being run (for messages that repeat the command, e.g. --resume)
CURRENT_ARGV: list[str] = []


def __getattr__(name: str):
    # `app` (the Typer application, dsrecon/cli/app.py) is imported on first use, after the signal
    # handlers are installed; the command modules register on it with `from dsrecon.cli.main import app`
    if name == "app":
        from dsrecon.cli.app import app

        globals()["app"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _app():
    return globals()["app"] if "app" in globals() else __getattr__("app")


def _setup_logging() -> None:
    """Library warnings (the ``dsrecon`` logger) as one plain line each on the CLI's stderr."""
    import logging

    class _ConsoleHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            from dsrecon.cli.common import err_console

            try:
                err_console.print(self.format(record), soft_wrap=True, markup=False, highlight=False)
            except Exception:  # pragma: no cover - a broken stderr must not turn a warning into a crash
                self.handleError(record)

    log = logging.getLogger("dsrecon")
    if not any(type(h).__name__ == "_ConsoleHandler" for h in log.handlers):
        log.addHandler(_ConsoleHandler())
    log.setLevel(logging.WARNING)


def _register() -> None:
    # Each command group lives in its own module; importing it registers its commands on `app`.
    import importlib

    for mod in ("simulate", "simulate_model", "evaluate", "fit", "group", "demo", "backends", "report", "cohort"):
        importlib.import_module(f"dsrecon.cli.{mod}")


# ------------------------------------------------------------------------------------ signals
_STATE: dict = {"reported": False, "json": False, "json_done": False}


def _restore_handlers(old: dict | None) -> None:
    for s, h in (old or {}).items():
        signal.signal(s, h)


def _interrupt_line_and_code() -> tuple[str, int]:
    if interrupt_pending() == signal.SIGTERM:
        return "terminated (SIGTERM)", 143
    return "interrupted", 130


def _code_of(e: KeyboardInterrupt) -> tuple[str, int]:
    if isinstance(e, Terminated) or interrupt_pending() == signal.SIGTERM:
        return "terminated (SIGTERM)", 143
    return "interrupted", 130


# ------------------------------------------------------------------------------------ output
def _ascii_fallback(err: UnicodeError):
    """Codec error handler: a character the output's encoding lacks becomes its ASCII look-alike
    (→ ->, α alpha, ≤ <=, … ...; else its decomposition without accents, else ?), so that a latin-1
    or ASCII terminal never turns a finished command into a failure."""
    import unicodedata

    if not isinstance(err, UnicodeEncodeError):
        raise err
    out = []
    for ch in err.object[err.start:err.end]:
        rep = _ASCII.get(ch)
        if rep is None:
            rep = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode("ascii") or "?"
        out.append(rep)
    return "".join(out), err.end


_ASCII = {"→": "->", "←": "<-", "↔": "<->", "≤": "<=", "≥": ">=", "≠": "!=", "≈": "~", "±": "+/-", "×": "x", "·": ".",
          "…": "...", "−": "-", "–": "-", "—": "-", "‘": "'", "’": "'", "“": '"', "”": '"', "α": "alpha", "β": "beta",
          "γ": "gamma", "δ": "delta", "Δ": "Delta", "ε": "eps", "θ": "theta", "λ": "lambda", "μ": "mu", "σ": "sigma",
          "τ": "tau", "∞": "inf", "²": "^2", "√": "sqrt", "✓": "ok", "✗": "x", "•": "*", "│": "|", "─": "-"}
codecs.register_error("dsrecon.ascii", _ascii_fallback)


def _safe_streams() -> None:
    """stdout/stderr never fail on a character their encoding lacks (see _ascii_fallback)."""
    for s in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            if s is not None and (s.encoding or "").lower().replace("-", "") not in ("utf8", "utf16", "utf32"):
                s.reconfigure(errors="dsrecon.ascii")


def _wants_json(args: list[str]) -> bool:
    return "--json" in (args[:args.index("--")] if "--" in args else args)


def _say(line: str, code: int) -> int:
    """Print the failure's one line on stderr (and, with --json, its JSON object on stdout). A second
    signal waits until both are written and noted (run() then prints nothing more)."""
    with signals_deferred():
        print(line, file=sys.stderr, flush=True)
        _STATE["reported"] = True
        _json_failure(line, code)
    return code


def _json_failure(line: str | None, code: int) -> None:
    from_common = sys.modules.get("dsrecon.cli.common")
    if not _STATE["json"] or _STATE.get("json_done") or (from_common is not None and getattr(from_common, "JSON_EMITTED", False)):
        return
    import json

    _STATE["json_done"] = True
    msg = (line or f"exit status {code}").strip()
    if msg.startswith("error: "):
        msg = msg[len("error: "):]
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.write(json.dumps({"error": msg, "exit_code": code}) + "\n")
        sys.stdout.flush()


@contextlib.contextmanager
def _cli_edge():
    """What the CLI owns for the duration of a command: outputs that cannot fail to encode, Python
    warnings silenced (an error stays one line; library warnings come through the dsrecon logger,
    and -W / PYTHONWARNINGS or DSRECON_DEBUG=1 bring them back), no traceback for a Ctrl-C that a
    C callback could not pass on."""
    _safe_streams()
    old_hook = sys.unraisablehook
    sys.unraisablehook = quiet_interrupts(old_hook)
    try:
        with warnings.catch_warnings():
            if not sys.warnoptions and not os.environ.get("DSRECON_DEBUG"):
                warnings.simplefilter("ignore")
            yield
    finally:
        sys.unraisablehook = old_hook


# ------------------------------------------------------------------------------------ reports
def report_interrupt(e: FitInterrupted) -> int:
    """Print the one line for an interrupted fit (epoch, checkpoint, the exact --resume command);
    return the exit code (130 for SIGINT, 143 for SIGTERM)."""
    if e.checkpoint_epoch is not None:
        hint = f"checkpoint at epoch {e.checkpoint_epoch} kept; resume with: {resume_command()}"
    else:
        hint = "no checkpoint yet; run the same command again to start over"
    return _say(f"interrupted ({e.signal}) at epoch {e.epoch}; {hint}", 143 if e.signal == "SIGTERM" else 130)


def resume_command(argv: list[str] | None = None) -> str:
    """The command line that continues the current fit: the same arguments plus --resume."""
    import shlex

    args = list(CURRENT_ARGV if argv is None else argv)
    if "--resume" not in args:
        args.append("--resume")
    return shlex.join(["dsrecon", *args])


def _one_line(e: BaseException | str) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else e.__class__.__name__


def main(argv: list[str] | None = None, *, _handlers_installed: bool = False) -> int:
    """Run the CLI on ``argv``; return the exit code (never raises for user errors).

    Installs the SIGINT/SIGTERM handlers for the duration (unless the caller, `run`, already did)
    and restores the previous ones afterwards."""
    global CURRENT_ARGV
    args = list(sys.argv[1:] if argv is None else argv)
    CURRENT_ARGV = args
    _STATE.update(reported=False, json=_wants_json(args), json_done=False)
    old = None
    if not _handlers_installed:
        clear_interrupt()
        old = install_handlers()
    try:
        with _cli_edge():
            return _main(args)
    finally:
        _restore_handlers(old)


def _main(args: list[str]) -> int:
    import typer  # (after the handlers: an interrupt while importing is reported like any other)

    try:
        from typer._click import exceptions as _cx  # typer >= 0.20 vendors click
    except ImportError:  # pragma: no cover - older typer depends on click
        from click import exceptions as _cx
    common = sys.modules.get("dsrecon.cli.common")
    if common is not None:
        common.JSON_EMITTED = False
    try:
        _setup_logging()
        _register()  # (imports torch: seconds, in which a signal must not print a traceback either)
        rv = _app()(args=args, prog_name="dsrecon", standalone_mode=False)
    except DsreconError as e:
        from dsrecon.cli.options import cli_words  # (the library's parameter names → the command's flags)

        return _say(f"error: {_one_line(cli_words(e) or e)}", 1)
    except typer.Abort as e:
        cause = e.__cause__ or e.__context__
        if isinstance(cause, KeyboardInterrupt):  # (click < 8.2 turned Ctrl-C into Abort)
            return _say(*_code_of(cause))
        # typer turns an EOFError (e.g. a truncated gzip stream) into Abort: a data error, not Ctrl-C
        detail = f"{cause.__class__.__name__}: {_one_line(cause)}" if cause is not None else "aborted"
        return _say(f"error: unexpected end of input ({detail}); is a file truncated?", 1)
    except _cx.ClickException as e:
        e.show()
        _STATE["reported"] = True
        _json_failure(e.format_message(), e.exit_code)
        return e.exit_code
    except FitInterrupted as e:
        return report_interrupt(e)
    except KeyboardInterrupt as e:
        return _say(*_code_of(e))
    except Exception as e:  # a bug, not a data error: one line unless asked for the traceback
        if interrupt_pending():  # Ctrl-C inside a C extension's import turns into "ImportError: initialization failed"
            return _say(*_interrupt_line_and_code())
        if os.environ.get("DSRECON_DEBUG"):
            raise
        return _say(f"error: internal error: {e.__class__.__name__}: {e} (set DSRECON_DEBUG=1 for the traceback)", 1)
    if rv == 130:  # typer turns KeyboardInterrupt (Ctrl-C, and SIGTERM through the handler) into exit 130
        line, rv = _interrupt_line_and_code()
        if not _STATE["reported"]:
            return _say(line, rv)
    if isinstance(rv, int) and rv != 0:
        _json_failure(None, rv)
    return rv if isinstance(rv, int) else 0


def _exit_now(code: int, signum, frame) -> None:  # noqa: ARG001
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def run() -> None:  # console-script entry point
    """The process's entry point: handlers first, then the command; exits with its code."""
    sys.unraisablehook = quiet_interrupts(sys.unraisablehook)  # (the command's own line reports the interrupt)
    clear_interrupt()
    install_handlers()
    try:
        code = main(_handlers_installed=True)
    except KeyboardInterrupt as e:  # a signal between the handlers and main(), or a second one while the first was reported
        line, code = _code_of(e)
        if not _STATE["reported"]:
            _say(line, code)
    # the exit code is decided (and reported): a further signal ends the process at once with it
    # (the interpreter's default would kill it by the signal: exit -2/-15 instead of 130/143)
    import functools

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, functools.partial(_exit_now, code))
    if code in (130, 143) and "ray" not in sys.modules:
        # interrupted: everything is cleaned up and reported. The interpreter's teardown can abort
        # (exit −6, "PyThreadState … released … finalizing") when a signal left a thread of an
        # extension (numba, torch) mid-call, seen once on a fresh clone with `report` under SIGTERM;
        # leave without the teardown. Commands that started Ray keep it: its exit handler stops the
        # workers
        _exit_now(code, None, None)
    sys.exit(code)


if __name__ == "__main__":
    # `python -m dsrecon.cli.main` runs this file as __main__, a second copy of the module; the
    # command modules register on the importable one's app, so run that
    from dsrecon.cli.main import run as _run

    _run()
