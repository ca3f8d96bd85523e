"""`dsrecon report RUN`: one self-contained HTML report of a fitted run."""

from __future__ import annotations

from pathlib import Path

import typer

from dsrecon.cli.common import JsonOpt, QuietOpt, SeedOpt, emit, err_console, log
from dsrecon.cli.main import app
from dsrecon.errors import DsreconError


@app.command("report")
def report_cmd(
    run: Path = typer.Argument(..., help="Run directory written by `dsrecon fit`."),
    data: Path = typer.Option(None, "--data", help="Test table (TSV/CSV/NPY) for D_stsp, D_H and the observed-vs-generated figures."),
    output: Path = typer.Option(None, "--output", "-o", help="HTML file to write (default: RUN/report.html)."),
    events: Path = typer.Option(None, "--events", help="With --data, for a model fitted with inputs: the test data's events file (adds the event-locked figure)."),
    inputs_table: Path = typer.Option(None, "--inputs", help="With --data: the test data's input table (one row per frame)."),
    lyapunov_steps: int = typer.Option(100_000, "--lyapunov-steps", help="Steps of the Lyapunov spectrum (QR method)."),
    k_max: int = typer.Option(10, "--k-max", help="Largest cycle period searched (SCYFI)."),
    subject: str = typer.Option(None, "--subject", help="Group runs: the full report of this subject's model (default: the group's feature-space report)."),
    participants: Path = typer.Option(None, "--participants", help="Group runs: a participants.tsv (participant_id + columns) to colour the feature space by."),
    color_by: str = typer.Option(None, "--color-by", help="Group runs: the participants.tsv column that colours the subjects (e.g. group)."),
    seed: int = SeedOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Write ONE self-contained HTML report: metrics, figures, config, provenance, versions.

    Example: dsrecon report run --data test.tsv -o report.html

    A group run (dsrecon fit-group): dsrecon report group --participants participants.tsv --color-by group
    (the subjects in the feature space and a table per subject); --subject 01 for one subject's report.

    Task fMRI: dsrecon report run --data test.tsv --events test_events.tsv
    """
    import dsrecon
    from dsrecon.io.matching import load_matched
    from dsrecon.metrics.analysis import fixed_point_counts
    from dsrecon.plots.report import build_report

    if lyapunov_steps < 1:
        raise DsreconError(f"--lyapunov-steps must be positive, got {lyapunov_steps}")
    if k_max < 1:
        raise DsreconError(f"--k-max must be positive, got {k_max}")
    if not run.is_dir():
        raise DsreconError(f"{run}: not a run directory")
    from dsrecon.cli.outputs import check_not_inputs, check_output_files, html_is_ours, run_inputs, table_inputs

    files = table_inputs(data, "the test data given with --data") + table_inputs(inputs_table, "the input table given with --inputs")
    files += table_inputs(participants, "the participants table given with --participants")
    files += [(events, "the events file given with --events")] if events is not None else []
    files_of_run, dirs = run_inputs(run, keep=("report.html",))  # RUN/report.html is the report's own default output
    files += files_of_run
    check_not_inputs([output if output is not None else run / "report.html"], files, dirs)
    check_output_files([output if output is not None else run / "report.html"], ours=html_is_ours)
    from dsrecon.estimators.group import GroupConvSSM
    from dsrecon.estimators.load import select_subject

    model = dsrecon.load_run(run)
    if (participants is not None or color_by is not None) and (not isinstance(model, GroupConvSSM) or subject is not None):
        raise DsreconError("--participants and --color-by go with the report of a group run (without --subject)")
    if isinstance(model, GroupConvSSM) and subject is None:
        from dsrecon.plots.group_report import build_group_report, read_participants

        if color_by is not None and participants is None:
            raise DsreconError("--color-by needs --participants participants.tsv")
        if data is not None:
            raise DsreconError("--data goes with --subject for a group run")
        table = read_participants(participants, color_by) if participants is not None else None
        out = output if output is not None else run / "report.html"
        log(f"group report of {run}: {len(model.subjects)} subjects (Lyapunov {min(lyapunov_steps, 20_000)} steps each)…", quiet)
        res = build_group_report(model, out, participants=table, color_by=color_by, lyapunov_steps=min(lyapunov_steps, 20_000), seed=seed)
        log(f"wrote {out}", quiet)
        emit({"report": str(out), "subjects": len(model.subjects), "seed": seed, "per_subject": res["subjects"]}, as_json,
             title=f"dsrecon report {run}", quiet=quiet)
        return
    model = select_subject(model, subject, run)
    test = None
    src = events if events is not None else inputs_table
    if src is not None and data is None:
        raise DsreconError(f"{src}: --events / --inputs describe test data: give it with --data TEST.tsv")
    if src is not None and not model.input_names:
        raise DsreconError(f"{src}: the model {run} was fitted without inputs; it takes no --events / --inputs")
    if data is not None and src is None and model.input_names:
        raise DsreconError(f"{data}: the model {run} was fitted with inputs ({', '.join(model.input_names)}); "
                           "give the test data's design with --events TEST_events.tsv (or --inputs)")
    if data is not None:
        test, notes = load_matched(data, model)
        for note in notes:
            if not quiet:
                err_console.print(note, soft_wrap=True, markup=False, highlight=False)
        if src is not None:
            from dsrecon.io.events import attach_inputs

            test = attach_inputs(test, events=events, table=inputs_table, names=model.input_names, warn=lambda m: log(m, quiet))
    out = output if output is not None else run / "report.html"
    log(f"analysing {run} (Lyapunov {lyapunov_steps} steps, cycles k ≤ {k_max})…", quiet)
    res = build_report(model, out, data=test, lyapunov_steps=lyapunov_steps, k_max=k_max, seed=seed)
    log(f"wrote {out}", quiet)
    an = res["analysis"]
    ly = an.get("lyapunov", {})
    summary = {
        "report": str(out),
        "verdict": res["verdict"],
        "lambda_max_per_second": ly.get("lambda_max_per_second"),
        "kaplan_yorke_dimension": ly.get("kaplan_yorke_dimension"),
        "regime": ly.get("regime"),
        **fixed_point_counts(an["fixed_points"]["n_by_period"]),
        "seed": seed,
    }
    if res["scores"]:
        sc = res["scores"]
        summary.update({k: sc.get(k) for k in ("D_stsp", "D_H", "PE_n", "FC_corr", "FC_rmse", "FCD_KS")})
        summary["baselines"] = sc.get("baselines")
    summary["warnings"] = res.get("warnings") or []
    emit(summary, as_json, title=f"dsrecon report {run}", quiet=quiet)
