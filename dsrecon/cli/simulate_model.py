"""`dsrecon simulate model RUN`: free-run a fitted model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dsrecon._util import dsrecon_version, versions
from dsrecon.cli.common import DeviceOpt, JsonOpt, QuietOpt, SeedOpt, emit, err_console, log, resolve_device
from dsrecon.cli.simulate import check_simulation_outputs, latent_path, simulate_app, write_observed_and_latent
from dsrecon.errors import DsreconError


@simulate_app.command("model")
def model_cmd(
    run: Path = typer.Argument(..., help="Run directory written by `dsrecon fit`."),
    steps: int = typer.Option(..., "--steps", "-n", help="Number of observation frames to generate."),
    output: Path = typer.Option(..., "--output", "-o", help="Observations to write (OUT.tsv); also OUT_latent.tsv and sidecars."),
    from_data: Optional[Path] = typer.Option(None, "--from", help="Start from the state inferred at the end of this recording (default: the end of the training data)."),
    from_start: bool = typer.Option(False, "--from-start", help="With --from: replay that recording instead, from the state inferred at its first reliable frame; --events/--inputs are then the recording's own design (time 0 = its first frame) and output row j is its frame first_frame + j (in the sidecar)."),
    subject: Optional[str] = typer.Option(None, "--subject", help="Group runs (dsrecon fit-group): the subject whose model to run."),
    events: Optional[Path] = typer.Option(None, "--events", help="Drive the run with this design (BIDS events file; time 0 = the first generated frame). Without it a model fitted with inputs runs with zero input."),
    inputs_table: Optional[Path] = typer.Option(None, "--inputs", help="Drive the run with this input table (one row per generated frame, the model's input columns)."),
    seed: int = SeedOpt,
    device: str = typer.Option("cpu", "--device", help="auto|cpu|cuda. Free runs are sequential: the CPU (fused path) is usually faster."),
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Generate a free-running trajectory from a fitted model (observations in data units).

    Example: dsrecon simulate model run --steps 10000 -o gen.tsv

    A group run: dsrecon simulate model group --subject 01 --steps 10000 -o gen.tsv
    Task fMRI: dsrecon simulate model run --events new_events.tsv --steps 600 -o response.tsv
    Replay a task run: dsrecon simulate model run --from bold.tsv --from-start --events bold_events.tsv --steps 600 -o replay.tsv
    """
    from dsrecon.estimators.load import load_run

    if output.suffix != ".tsv":
        raise DsreconError(f"--output {output}: must end in .tsv")
    if steps < 1:
        raise DsreconError(f"--steps must be positive, got {steps}")
    from dsrecon.cli.outputs import check_not_inputs, run_inputs, table_inputs
    from dsrecon.io.tables import sidecar_path

    files = table_inputs(from_data, "the recording given with --from") + table_inputs(inputs_table, "the input table given with --inputs")
    files += [(events, "the events file given with --events")] if events is not None else []
    files_of_run, dirs = run_inputs(run)
    files += files_of_run
    check_not_inputs([output, sidecar_path(output), latent_path(output), sidecar_path(latent_path(output))], files, dirs)
    check_simulation_outputs(output)
    from dsrecon.estimators.load import select_subject

    if from_start and from_data is None:
        raise DsreconError("--from-start replays a recording: give it with --from FILE")
    model = select_subject(load_run(run), subject, run).to(resolve_device(device))
    from dsrecon.training.memory import check_rows_memory, free_run_row_bytes

    # before anything is allocated: a free run of 10¹² steps must be one line, not a MemoryError
    check_rows_memory(steps, free_run_row_bytes(len(model.names), int(model.config.get("latent_dim") or 1)), "--steps",
                      f"a free run of {model.run_dir or run}")
    data = None
    if from_data is not None:
        from dsrecon.io.matching import load_matched

        data, notes = load_matched(from_data, model)
        for note in notes:
            if not quiet:
                err_console.print(note, soft_wrap=True, markup=False, highlight=False)
    # a replay's design is the recording's own (one row per recorded frame); otherwise one per generated frame
    drive = _design(model, events, inputs_table, data.n_frames if from_start else steps, quiet,
                    f"{from_data} ({data.n_frames} frames)" if from_start else f"--steps {steps}")
    out = model.simulate(steps, seed=seed, data=data, inputs=drive, start="start" if from_start else "end")
    lat_names = [f"z{i + 1}" for i in range(out["latent"].shape[1])]
    common = {"RepetitionTime": model.tr, "run": str(run), **({} if subject is None else {"subject": model.config["subject"]}), "steps": steps, "seed": seed, "from": None if from_data is None else str(from_data),
              "from_start": from_start, "first_frame": out["first_frame"],
              "events": None if events is None else str(events), "inputs": None if inputs_table is None else str(inputs_table),
              "input_names": model.input_names,
              "DsreconVersion": dsrecon_version(), "versions": versions(), "command": "dsrecon simulate model"}
    lat = write_observed_and_latent(
        output, out["observed"], model.names, {**common, "Units": "data units (normalisation inverted)", "latent_file": latent_path(output).name},
        out["latent"], lat_names, {**common, "Units": "latent (normalised) units; row j aligned with observation j"},
    )
    log(f"wrote {output} and {lat}", quiet or as_json)
    emit({"output": str(output), "latent": str(lat), "n_steps": steps, "n_regions": len(model.names), "latent_dim": len(lat_names), "seed": seed, "first_frame": out["first_frame"]},
         as_json, title="dsrecon simulate model", quiet=quiet)


def _design(model, events: Path | None, table: Path | None, steps: int, quiet: bool, rows_for: str):
    """The (steps, K) inputs of the run from --events / --inputs, checked against the model."""
    if events is None and table is None:
        return None
    if events is not None and table is not None:
        raise DsreconError(f"{events}: give --events or --inputs, not both")
    src = events if events is not None else table
    if not model.input_names:
        raise DsreconError(f"{src}: the model {model.run_dir} was fitted without inputs; it takes no --events / --inputs")
    if events is not None:
        from dsrecon.io.events import events_to_inputs

        s, _ = events_to_inputs(events, steps, model.tr, model.input_names, warn=lambda m: log(m, quiet))
        return s
    from dsrecon.io.events import read_input_table

    s, names = read_input_table(table, steps, model.tr, rows_for)
    if names != model.input_names:
        raise DsreconError(f"{table}: input columns {', '.join(names)} differ from the model's inputs ({', '.join(model.input_names)})")
    return s
