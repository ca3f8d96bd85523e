"""`dsrecon simulate`: synthetic recordings from benchmark systems (`simulate model`, a fitted model's free run, is in simulate_model.py)."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from dsrecon._util import atomic_path, write_json_atomic
from dsrecon.cli.common import JsonOpt, QuietOpt, SeedOpt, emit, log, out_console
from dsrecon.cli.main import app
from dsrecon.errors import DsreconError

simulate_app = typer.Typer(
    help="Simulate recordings: benchmark systems observed through a kernel (HRF, calcium).\n\n"
    "Examples:\n\n"
    "  dsrecon simulate list\n\n"
    "  dsrecon simulate system lorenz63 --length 3000 --tr 0.2 --dt 0.01 --noise 0.01 -o x.tsv",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(simulate_app, name="simulate", help="Simulate recordings from benchmark systems or fitted models.")

# `simulate model` is registered by dsrecon.cli.simulate_model


@simulate_app.command("list")
def list_cmd(as_json: bool = JsonOpt, quiet: bool = QuietOpt) -> None:
    """List the benchmark systems with their dimension, parameters and default dt.

    Example: dsrecon simulate list --json
    """
    from dsrecon.systems import get_system, list_systems, system_specs

    rows = {}
    for name in list_systems():
        s = get_system(name)
        spec = system_specs()[name]
        rows[name] = {
            "dim": s.dim,
            "variable_dim": spec.get("dim") is None,
            "params": s.params,
            "default_dt": s.default_dt,
            "default_transient": s.default_transient,
            "state_names": s.state_names,
            "dysts_name": s.dysts_name,
            "description": s.description,
        }
    if as_json:
        emit({"systems": rows}, True)
        return
    t = Table(title="Benchmark systems (dsrecon simulate system NAME)")
    for col in ("name", "dim", "parameters", "default dt"):
        t.add_column(col)
    for name, r in rows.items():
        dim = f"{r['dim']} (--dim)" if r["variable_dim"] else str(r["dim"])
        params = ", ".join(f"{k}={v:g}" for k, v in r["params"].items())
        t.add_row(name, dim, params, f"{r['default_dt']:g}")
    out_console.print(t)


def parse_params(items: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for it in items:
        key, sep, val = it.partition("=")
        if not sep or not key.strip():
            raise DsreconError(f"--param: expected NAME=VALUE, got '{it}'")
        try:
            out[key.strip()] = float(val)
        except ValueError:
            raise DsreconError(f"--param {key.strip()}: value must be a number, got '{val}'") from None
    return out


def write_observed_and_latent(output: Path, observed, names: list[str], side: dict, latent, latent_names: list[str],
                              latent_side: dict) -> Path:
    """Write OUT.tsv + OUT.json and OUT_latent.tsv + OUT_latent.json: all four to temporary names
    first, renamed only when all were written. Returns the latent table's path."""
    from dsrecon.io.tables import sidecar_path, write_table

    lat = latent_path(output)
    with contextlib.ExitStack() as stack:
        tmp = {p: stack.enter_context(atomic_path(p)) for p in (output, sidecar_path(output), lat, sidecar_path(lat))}
        write_table(tmp[output], observed, names)
        write_json_atomic(tmp[sidecar_path(output)], side)
        write_table(tmp[lat], latent, latent_names)
        write_json_atomic(tmp[sidecar_path(lat)], latent_side)
    return lat


def check_simulation_outputs(output: Path) -> None:
    """Before any work: OUT.tsv, OUT.json, OUT_latent.tsv and OUT_latent.json can all be written,
    and none of them is a file dsrecon did not write (a rerun replaces its own outputs)."""
    from dsrecon.cli.outputs import check_output_files, json_is_ours, table_is_ours
    from dsrecon.io.tables import sidecar_path

    if output.suffix != ".tsv":
        raise DsreconError(f"--output {output}: must end in .tsv")
    lat = latent_path(output)
    check_output_files([output, sidecar_path(output), lat, sidecar_path(lat)],
                       ours=lambda p: json_is_ours(p) if p.suffix == ".json" else table_is_ours(p))


def latent_path(output: Path) -> Path:
    """x.tsv → x_latent.tsv (next to the observations)."""
    return output.with_name(output.name[: -len(".tsv")] + "_latent.tsv")


@simulate_app.command("system")
def system_cmd(
    name: str = typer.Argument(..., help="System name (see `dsrecon simulate list`)."),
    output: Path = typer.Option(..., "--output", "-o", help="Observed table to write (FILE.tsv); also writes FILE.json, FILE_latent.tsv and its .json."),
    length: int = typer.Option(1000, "--length", help="Number of samples (rows) to write."),
    dt: Optional[float] = typer.Option(None, "--dt", help="System time per sample (default: the system's)."),
    tr: float = typer.Option(1.0, "--tr", help="Seconds per sample: the grid the kernel is sampled on."),
    kernel: str = typer.Option("spm", "--kernel", help="Measurement kernel: spm|glover|calcium|none, or a file of taps."),
    noise: float = typer.Option(0.0, "--noise", help="Observation-noise std as a fraction of each clean column's std."),
    transient: Optional[float] = typer.Option(None, "--transient", help="System time discarded before sampling (default: the system's, e.g. 50 for lorenz63)."),
    dim: Optional[int] = typer.Option(None, "--dim", help="Dimension, for systems of variable size (lorenz96)."),
    tau_decay: float = typer.Option(0.4, "--tau-decay", help="Calcium kernel decay constant (seconds)."),
    tau_rise: Optional[float] = typer.Option(None, "--tau-rise", help="Calcium kernel rise constant (seconds; double exponential)."),
    param: list[str] = typer.Option([], "--param", help="Override a system parameter, NAME=VALUE (repeatable)."),
    events: Optional[Path] = typer.Option(None, "--events", help="BIDS events file: drive the ODE with one input per condition (boxcars on the TR grid)."),
    input_gain: list[float] = typer.Option([], "--input-gain", help="With --events: gain of the input in dx/dt (one value, or one per condition in sorted order; default 1)."),
    input_dim: list[int] = typer.Option([], "--input-dim", help="With --events: the state variable (0-based) each input drives (one value, or one per condition; default 0)."),
    seed: int = SeedOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Simulate a benchmark system, z-score it, convolve it with a kernel and add noise.

    Writes FILE.tsv (observations, one row per sample), FILE.json (sidecar with RepetitionTime, kernel, parameters, seed, versions), FILE_latent.tsv (z-scored states aligned row by row with the observations) and FILE_latent.json.

    Example: dsrecon simulate system lorenz63 --length 3000 --tr 0.2 --dt 0.01 --noise 0.01 --seed 0 -o x.tsv

    Driven (task) data: dsrecon simulate system van_der_pol --length 2000 --tr 0.5 --events design_events.tsv --input-gain 2 --input-dim 1 -o x.tsv
    """
    from dsrecon.io.tables import sidecar_path
    from dsrecon.signal.kernels import make_kernel
    from dsrecon.systems import get_system, simulate_system

    from dsrecon.options import tau_seconds, tr_problem

    # validate every option before computing anything
    if not (math.isfinite(tr) and tr > 0):
        raise DsreconError(f"--tr must be positive (seconds per sample), got {tr:g}")
    if tr_problem(tr):
        raise DsreconError(f"--tr {tr:g}: {tr_problem(tr)}")
    for flag, tau in (("--tau-decay", tau_decay), ("--tau-rise", tau_rise)):
        if tau is not None and tau_seconds(flag, tau):
            raise DsreconError(tau_seconds(flag, tau))
    if dt is not None and not (math.isfinite(dt) and dt > 0):
        raise DsreconError(f"--dt must be positive (system time per sample), got {dt:g}")
    if length < 1:
        raise DsreconError(f"--length must be >= 1, got {length}")
    if not (math.isfinite(noise) and noise >= 0):
        raise DsreconError(f"--noise must be >= 0, got {noise:g}")
    if transient is not None and not (math.isfinite(transient) and transient >= 0):
        raise DsreconError(f"--transient must be >= 0, got {transient:g}")
    if output.suffix == ".tsv":
        from dsrecon.cli.outputs import check_not_inputs

        ins = [(events, "the events file given with --events")] if events is not None else []
        ins += [(Path(kernel), "the kernel file given with --kernel")] if Path(kernel).is_file() else []
        check_not_inputs([output, sidecar_path(output), latent_path(output), sidecar_path(latent_path(output))], ins)
    check_simulation_outputs(output)
    lat_path = latent_path(output)
    params = parse_params(param)
    system = get_system(name, dim=dim, **params)  # name, --dim and --param errors before any work
    from dsrecon.training.memory import check_rows_memory

    # the states, observations and their z-scored and written copies: about ten float64 rows of D per sample
    check_rows_memory(length, 10 * 8 * max(int(system.dim), 1), "--length", f"simulating {name}")
    make_kernel(kernel, tr, tau_decay=tau_decay, tau_rise=tau_rise)
    inputs = input_names = None
    if events is not None:
        from dsrecon.io.events import events_to_inputs

        inputs, input_names = events_to_inputs(events, length, tr, warn=lambda m: log(m, quiet))
    elif input_gain or input_dim:
        raise DsreconError("--input-gain and --input-dim go with --events FILE")

    log(f"simulating {name} ({length} samples, TR {tr:g} s, kernel {kernel})", quiet or as_json)
    res = simulate_system(
        name, length, dt, tr, kernel=kernel, noise=noise, transient=transient, seed=seed, dim=dim,
        tau_decay=tau_decay, tau_rise=tau_rise, params=params,
        inputs=inputs, input_gain=input_gain, input_dim=input_dim, input_names=input_names,
    )
    if events is not None:
        res["sidecar"]["events"] = res["latent_sidecar"]["events"] = str(events)
    side = {**res["sidecar"], "latent_file": lat_path.name, "command": "dsrecon simulate system"}
    lat_side = {**res["latent_sidecar"], "observed_file": output.name, "command": "dsrecon simulate system"}

    write_observed_and_latent(output, res["observed"], res["names"], side, res["latent"], res["names"], lat_side)

    result = {
        "output": str(output),
        "latent": str(lat_path),
        "sidecar": str(sidecar_path(output)),
        "n_samples": int(res["observed"].shape[0]),
        "n_regions": int(res["observed"].shape[1]),
        "system": res["system"].name,
        "kernel_taps": res["kernel"].K,
        "seed": seed,
    }
    if as_json:
        emit(result, True)
    elif not quiet:
        emit(result, False, title=f"dsrecon simulate system {res['system'].name}")

