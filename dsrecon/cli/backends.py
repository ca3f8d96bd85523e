"""`dsrecon backends`: list the latent-dynamics backends."""

from __future__ import annotations

import inspect

import typer
from rich.table import Table

from dsrecon.cli.common import JsonOpt, QuietOpt, emit, out_console
from dsrecon.cli.main import app
from dsrecon.models.base import available_backends


@app.command("backends")
def backends_cmd(as_json: bool = JsonOpt, quiet: bool = QuietOpt) -> None:
    """List the latent-dynamics backends with a one-line description and their parameters.

    Example: dsrecon backends --json
    """
    rows = {}
    for name, cls in sorted(available_backends().items()):
        params = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "latent_dim", "kwargs", "generator")]
        rows[name] = {"description": cls.description, "parameters": params}
    if as_json:
        emit({"backends": rows}, True)
        return
    t = Table(title="Latent-dynamics backends (--backend NAME)")
    t.add_column("name")
    t.add_column("description")
    t.add_column("parameters")
    for name, r in rows.items():
        t.add_row(name, r["description"], ", ".join(r["parameters"]))
    out_console.print(t)
