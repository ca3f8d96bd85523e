"""`dsrecon backends`: list the latent-dynamics backends."""

from __future__ import annotations

import dataclasses

import typer
from rich.table import Table

from dsrecon.cli.common import JsonOpt, QuietOpt, emit, out_console
from dsrecon.cli.main import app
from dsrecon.models.base import available_backends


@app.command("backends")
def backends_cmd(as_json: bool = JsonOpt, quiet: bool = QuietOpt) -> None:
    """List the latent-dynamics backends with a one-line description and their parameters.

    Each option is a flag of `dsrecon fit` (or --backend-option KEY=VALUE).

    Example: dsrecon backends --json
    """
    rows = {}
    for name, cls in sorted(available_backends().items()):
        fields = dataclasses.fields(cls.Options)
        rows[name] = {"description": cls.description, "parameters": [f.name for f in fields],
                      "options": {f.name: {"default": f.default, "help": f.metadata.get("help", "")} for f in fields}}
    if as_json:
        emit({"backends": rows}, True)
        return
    t = Table(title="Latent-dynamics backends (--backend NAME)")
    t.add_column("name")
    t.add_column("description")
    t.add_column("options (--flag default)")
    for name, r in rows.items():
        t.add_row(name, r["description"], ", ".join(f"--{k.replace('_', '-')} {o['default']:g}" if isinstance(o["default"], float)
                                                     else f"--{k.replace('_', '-')} {o['default']}" for k, o in r["options"].items()))
    out_console.print(t)
