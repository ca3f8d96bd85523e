"""`dsrecon fit`: fit a convSSM to recordings and write a run directory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from dsrecon.cli.common import JsonOpt, QuietOpt, check_long_run, emit, log, progress_bar
from dsrecon.cli.main import app
from dsrecon.cli.options import parse_fit_options, with_fit_options
from dsrecon.errors import DsreconError

FIT_HELP = """Fit a generative convSSM (latent dynamics + measurement kernel) with generalized teacher forcing.

INPUTS are region time-series tables (TSV/CSV/NPY, TR from a JSON sidecar or --tr), a directory
of tables, 4D NIfTI images with --atlas, an fMRIPrep derivatives directory, or a suite2p plane
folder. Several inputs (or runs) are separate recordings of one model.

Examples:

  dsrecon fit x.tsv -o run

  dsrecon fit sub-01_task-rest_bold.tsv --tr 2.0 --latent-dim 20 --epochs 3000 -o run

  dsrecon fit bold.nii.gz --atlas labels.nii.gz --confounds scrubbing -o run

  dsrecon fit run --resume   (continue a killed fit: give the same inputs and options)

  dsrecon fit x.tsv --ensemble 16 --ensemble-alpha 0.1,0.15,0.2 -o ens   (16 models at once; ens/best)

  dsrecon fit x.tsv --backend alrnn --pwl-units 3 -o run   (backend options: see `dsrecon backends`)
"""


@app.command("fit", help=FIT_HELP)
@with_fit_options()
def fit_cmd(
    inputs: list[Path] = typer.Argument(..., help="Input files or directories."),
    output: Path = typer.Option(..., "--output", "-o", help="Run directory to write."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed run from its last checkpoint."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing run directory."),
    ensemble: int = typer.Option(1, "--ensemble", help="Train E independent models (seeds SEED…SEED+E−1) in one batched computation; writes OUT/member-XX runs, ensemble.json and OUT/best (every backend)."),
    ensemble_alpha: Optional[str] = typer.Option(None, "--ensemble-alpha", help="With --ensemble: comma-separated α values; member k uses the (k mod n)-th."),
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    **options,
) -> None:
    from dsrecon.estimators.convssm import ConvSSM
    from dsrecon.cli.outputs import check_inputs_outside, fit_input_paths
    from dsrecon.io.load import InputSpec, load_inputs, refuse_unused_queries
    from dsrecon.io.runs import check_target, recover_commit
    from dsrecon.options import validate_options

    params, spec_kw = parse_fit_options(options)
    model = ConvSSM(**params).validate()  # bad values fail here, before any data is read
    spec = validate_options(InputSpec(**spec_kw, quiet=quiet))
    if ensemble < 1:
        raise DsreconError(f"--ensemble must be at least 1, got {ensemble}")
    recover_commit(output, lambda s: log(s, quiet))  # a commit of this run cut short by a kill: completed first
    check_target(output, resume=resume, force=force)  # refuse an unusable -o before loading anything
    check_inputs_outside(output, fit_input_paths(inputs, spec, model.kernel))
    refuse_unused_queries([str(p) for p in inputs], spec)
    recs = load_inputs([str(p) for p in inputs], spec)
    if model.decoder == "identity" and recs[0].regressors is not None:
        log("nuisance regressors present: use --decoder regressor to model them; the identity decoder ignores them", quiet)
    if ensemble != 1 or ensemble_alpha is not None:
        from dsrecon.cli.ensemble import fit_ensemble_cli

        return fit_ensemble_cli(model.resolved(recs, lambda s: log(s, quiet)), recs, output, ensemble, ensemble_alpha, resume=resume,
                                force=force, quiet=quiet, as_json=as_json, inputs=[str(p) for p in inputs])
    from dsrecon.cli.main import report_interrupt
    from dsrecon.errors import FitInterrupted

    t0 = time.perf_counter()
    with progress_bar(quiet) as prog:
        task_id = prog.add_task("fit", total=model.epochs, status="")

        def on_epoch(epoch: int, total: int, status: str) -> None:
            prog.update(task_id, completed=epoch, total=total, status=status)

        try:
            model.fit(recs, output, resume=resume, overwrite=force, progress=on_epoch, log=lambda s: log(s, quiet),
                      inputs=[str(p) for p in inputs])
        except FitInterrupted as e:  # one line: the epoch, the checkpoint, the exact --resume command
            prog.stop()
            raise typer.Exit(report_interrupt(e)) from None
    summary = model.config["training"]
    result = {"run": str(output), "seconds": time.perf_counter() - t0, **summary, "seed": model.seed, "versions": model.config["versions"]}
    long_run = check_long_run(model)
    if long_run is not None:
        result["long_run"] = long_run
    log(f"wrote {output}/model.safetensors, config.json, training_log.tsv", quiet)
    emit(result, as_json, title=f"dsrecon fit → {output}", quiet=quiet)
