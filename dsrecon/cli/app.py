"""The Typer application every command registers on (`from dsrecon.cli.main import app` gives
this object). Kept apart from cli/main.py, whose entry point installs the signal handlers before
anything heavy (typer, numpy, torch) is imported."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="dsrecon",
    help="Reconstruct the dynamical system behind neuroimaging recordings.\n\n"
    "Examples:\n\n"
    "  dsrecon simulate system lorenz63 --length 3000 --tr 0.2 -o x.tsv\n\n"
    "  dsrecon fit x.tsv -o run\n\n"
    "  dsrecon evaluate run --data x.tsv",
    epilog="Exit status: 0 success; 1 a data or user error (one line on stderr naming the file); 2 a usage error; "
    "130 interrupted (Ctrl-C, SIGINT); 143 terminated (SIGTERM). With --json a failure also prints one JSON object "
    'on stdout: {"error": "<the line>", "exit_code": <status>}.',
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
