"""Options and output helpers shared by every command."""

from __future__ import annotations

import os
import re
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from dsrecon._util import to_json
from dsrecon.errors import DsreconError
from dsrecon.models.device import resolve_device  # noqa: F401  (the device is resolved by the library)

#: Logs and progress go to stderr; stdout is reserved for results (`--json`).
err_console = Console(stderr=True, highlight=False, soft_wrap=True)  # a note stays one line in a log file
out_console = Console(highlight=False)
#: set when a command has printed its --json result (cli/main.py prints a failure object only before)
JSON_EMITTED = False

def _check_seed(value: int) -> int:
    """--seed of every command: the range every library takes (`dsrecon.options.seed_value`), checked
    as the option is parsed, one line (exit 1) as for every other bad option value."""
    from dsrecon.options import seed_value

    msg = seed_value("--seed", value)
    if msg:
        raise DsreconError(msg)
    return value


SeedOpt = typer.Option(0, "--seed", callback=_check_seed, help="Random seed, 0 to 4294967295 (recorded in every output).")
DeviceOpt = typer.Option("auto", "--device", help="Compute device: auto|cpu|cuda.")
JsonOpt = typer.Option(False, "--json", help='Print one JSON object on stdout (logs go to stderr); a failure prints {"error": ..., "exit_code": ...}.')
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bars or log messages.")


def log(msg: str, quiet: bool = False) -> None:
    if not quiet:
        err_console.print(msg)


def warn(msg: str) -> None:
    """One line ``warning: msg`` on stderr, with or without --quiet."""
    err_console.print(f"warning: {msg}", markup=False, highlight=False, soft_wrap=True)


#: what a user can try when a fitted model's free run settles (docs/user-guide.md, "The check after the fit")
SETTLES_HINT = "try --alpha-end 0.02, another --seed or --ensemble 8"


def check_long_run(model, what: str = "the fitted model's free run", hint: str = SETTLES_HINT) -> dict | None:
    """`ConvSSM.long_run` of a model fitted without inputs (a driven model may rest without its
    inputs), with a warning when its free run settles on a fixed point or diverges; None for a
    model with inputs."""
    if model.config.get("n_inputs"):
        return None
    r = model.long_run()
    if r["diverged"]:
        warn(f"{what} diverges within {r['steps']} steps; {hint}")
    elif r["settles"]:
        warn(f"{what} settles on a fixed point (spread {r['spread']:.3g} in z-units over the last quarter of "
             f"{r['steps']} steps), so it does not reproduce the data's oscillation; {hint}")
    return r


def emit(result: dict[str, Any], as_json: bool, title: str = "Results", quiet: bool = False) -> None:
    """Print a result: one JSON object on stdout with --json, else a rich table of its scalars."""
    global JSON_EMITTED
    if as_json:
        sys.stdout.write(to_json(result, indent=None) + "\n")
        sys.stdout.flush()
        JSON_EMITTED = True  # (a failure after this prints no second object: cli/main.py)
        return
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for k, v in result.items():
        if isinstance(v, (dict, list)):
            continue
        if isinstance(v, float):
            v = f"{v:.6g}"
        table.add_row(str(k), str(v))
    out_console.print(table)


def progress_enabled(quiet: bool) -> bool:
    """A live progress bar: on a terminal, unless --quiet or DSRECON_NO_PROGRESS is set."""
    return not quiet and sys.stderr.isatty() and not os.environ.get("DSRECON_NO_PROGRESS")


def plain_progress_enabled(quiet: bool) -> bool:
    """Plain progress lines: stderr is not a terminal (a log file, a cluster job), unless --quiet
    or DSRECON_NO_PROGRESS is set."""
    return not quiet and not sys.stderr.isatty() and not os.environ.get("DSRECON_NO_PROGRESS")


#: a plain progress line every this many percent of the epochs
PLAIN_PROGRESS_STEP = 5


class PlainProgress:
    """The progress bar's interface (add_task, update, stop) for a stderr that is not a terminal:
    one plain line every PLAIN_PROGRESS_STEP percent of the epochs (and at the last), e.g.

        fit: epoch 20/40 (50%) · loss 0.5123 α 0.15 best D_stsp 3.21@20 · 12 s, eta 12 s

    Teacher-space pretraining reports its own epochs (the trainer's status "teacher-space
    pretraining E/T · ..."), so the first half of a default fit is not silent."""

    _PRETRAIN = re.compile(r"pretraining (\d+)/(\d+)")

    def __init__(self) -> None:
        self.tasks: dict[int, dict] = {}

    def add_task(self, description: str, total: float | None = None, **fields) -> int:
        tid = len(self.tasks)
        self.tasks[tid] = {"description": description, "total": total, "stages": {}, "t0": time.monotonic()}
        return tid

    def update(self, task_id: int, *, completed: float | None = None, total: float | None = None, status: str = "", **_) -> None:
        task = self.tasks[task_id]
        if total is not None:
            task["total"] = total
        m = self._PRETRAIN.search(status or "")
        stage, done, tot = ("pretraining", int(m.group(1)), int(m.group(2))) if m else ("epoch", completed, task["total"])
        if done is None or not tot:
            return
        now = time.monotonic()
        st = task["stages"].setdefault(stage, {"t0": now, "done0": done, "bucket": None})
        bucket = int(100 * done / tot) // PLAIN_PROGRESS_STEP
        if bucket == st["bucket"] and done < tot:
            return
        if done == st["done0"] and done < tot:  # the starting point (0, or a resumed epoch): nothing to report yet
            st["bucket"] = bucket
            return
        st["bucket"] = bucket
        rate = (done - st["done0"]) / (now - st["t0"]) if now > st["t0"] else 0.0  # epochs per second, measured in this process
        eta = f", eta {_duration((tot - done) / rate)}" if rate > 0 and done < tot else ""
        what = status.split(" · ", 1)[1] if m and " · " in status else status
        line = f"{task['description']}: {stage} {int(done)}/{int(tot)} ({100 * done / tot:.0f}%)"
        line += f" · {what}" if what else ""
        err_console.print(f"{line} · {_duration(now - task['t0'])}{eta}", markup=False, highlight=False, soft_wrap=True)

    def stop(self) -> None:
        pass


def _duration(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


@contextmanager
def progress_bar(quiet: bool) -> Iterator[Progress | PlainProgress]:
    """A rich progress bar on stderr with an ETA on a terminal; plain progress lines when stderr
    is a file or a pipe (PlainProgress); nothing with --quiet or DSRECON_NO_PROGRESS."""
    if plain_progress_enabled(quiet):
        yield PlainProgress()
        return
    prog = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err_console,
        disable=not progress_enabled(quiet),
        transient=False,
    )
    with prog:
        yield prog
