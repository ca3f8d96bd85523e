"""Options and output helpers shared by every command."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from dsrecon._util import to_json
from dsrecon.errors import DsreconError
from dsrecon.options import resolve_device  # noqa: F401  (the device is resolved by the library)

#: Logs and progress go to stderr; stdout is reserved for results (`--json`).
err_console = Console(stderr=True, highlight=False, soft_wrap=True)  # a note stays one line in a log file
out_console = Console(highlight=False)

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
JsonOpt = typer.Option(False, "--json", help="Print one JSON object on stdout (logs go to stderr).")
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
    if as_json:
        sys.stdout.write(to_json(result, indent=None) + "\n")
        sys.stdout.flush()
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
    return not quiet and sys.stderr.isatty() and os.environ.get("DSRECON_NO_PROGRESS") is None


@contextmanager
def progress_bar(quiet: bool) -> Iterator[Progress]:
    """A rich progress bar on stderr with an ETA; disabled when quiet or not on a terminal."""
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
