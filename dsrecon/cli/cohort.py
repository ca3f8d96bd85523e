"""`dsrecon fit-cohort` (one model per subject) and `dsrecon sweep` (hyperparameter grid × seeds), on Ray.

Both take every option of `dsrecon fit` that applies to one subject or trial (`dsrecon.cli.options`
makes them from the same dataclasses) and run one fit per worker with one CPU (``--gpus-per-fit`` GPUs) each. Without Ray they run on a local process pool.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dsrecon.cli.common import JsonOpt, QuietOpt, emit, log
from dsrecon.cli.main import app
from dsrecon.cli.options import parse_fit_options, with_fit_options
from dsrecon.errors import DsreconError

COHORT_HELP = """Fit one model per subject of a cohort, in parallel on Ray (or a local process pool without Ray).

DIR is an fMRIPrep/BIDS derivatives directory (one model per sub-XX, all its matching runs), a directory of tables (one model per file; BIDS-named files sharing sub-XX form one subject) or a directory of subfolders (one model per subfolder). Each subject gets a normal run directory OUT/sub-XX/.

A rerun skips finished subjects and resumes killed fits from their checkpoints; a failed subject is listed in OUT/failures.tsv and does not stop the others. OUT/summary.tsv (one row per subject: D_stsp, D_H, PE on the held-out tail, λ_max per second) with its sidecar summary.json and the group figure summary.png are written at the end.

Examples:

  dsrecon fit-cohort tables/ --tr 2.0 --epochs 1000 -o cohort

  dsrecon fit-cohort derivatives/fmriprep --atlas atlas.nii.gz --confounds scrubbing --task rest -o cohort

  dsrecon fit-cohort derivatives/fmriprep --atlas atlas.nii.gz --address auto --gpus-per-fit 0.25 -o cohort   (on a cluster)
"""

SWEEP_HELP = """Hyperparameter sweep on Ray Tune: every combination of --grid values × --seeds seeds.

Each trial fits DATA (tables, NIfTI + --atlas, a BIDS tree, as `dsrecon fit`) and is scored on the held-out tail. --asha stops poor trials early on validation D_stsp (needs Ray). Writes OUT/results.tsv (one row per trial) and OUT/best_config.json (the grid point with the lowest D_stsp averaged over seeds).

Examples:

  dsrecon sweep x.tsv --grid 'latent_dim=3,5,8' --grid 'alpha=0.1,0.15,adaptive' --seeds 5 -o sweep

  dsrecon sweep x.tsv --grid 'hidden_dim=20,50' --seeds 3 --asha --epochs 2000 -o sweep
"""

# distribution
MaxParOpt = typer.Option(None, "--max-parallel", help="At most this many fits at a time (default: as many as there are CPUs).")
GpusOpt = typer.Option(0.0, "--gpus-per-fit", help="GPUs per fit (Ray resource; fractions share a GPU).")
AddressOpt = typer.Option(None, "--address", help="Existing Ray cluster: auto, HOST:PORT or ray://HOST:10001 (default: start Ray locally).")


def _settings(options: dict) -> "FitSettings":  # noqa: F821
    """The fit options Typer parsed → FitSettings, checked (one line naming a bad option)."""
    from dsrecon.distributed.settings import FitSettings

    params, spec = parse_fit_options(options)
    return FitSettings(**params, **spec).validate()


@app.command("fit-cohort", help=COHORT_HELP)
@with_fit_options(exclude=("participant_label",))  # the cohort's own --participant-label picks subjects
def fit_cohort_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Cohort directory (BIDS/fMRIPrep derivatives, tables, or subfolders)."),
    output: Path = typer.Option(..., "--output", "-o", help="Output directory (one run directory per subject)."),
    participant_label: list[str] = typer.Option([], "--participant-label", help="Only these subjects (repeatable)."),
    lyapunov_steps: int = typer.Option(10_000, "--lyapunov-steps", help="Steps of the QR Lyapunov estimate for λ_max (0: skip)."),
    force: bool = typer.Option(False, "--force", help="Refit every subject, even finished ones."),
    max_parallel: Optional[int] = MaxParOpt,
    gpus_per_fit: float = GpusOpt,
    address: Optional[str] = AddressOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    **options,
) -> None:
    from dsrecon.distributed.cohort import fit_cohort

    s = _settings(options)
    check_cohort_output(directory, output)
    res = fit_cohort(directory, output, s, max_parallel=max_parallel, gpus_per_fit=gpus_per_fit, address=address,
                     lyapunov_steps=lyapunov_steps, force=force, participant_label=list(participant_label),
                     log=lambda m: log(m, quiet))
    log(f"wrote {output}/summary.tsv, summary.json, summary.png, failures.tsv", quiet)
    if as_json:
        emit(res, True)
    else:
        emit({k: v for k, v in res.items() if k not in ("settings", "versions", "files", "subjects")}, False,
             title=f"dsrecon fit-cohort → {output}", quiet=quiet)
    if res["n_failed"]:  # the others are kept (and skipped by a rerun); the command as a whole failed
        raise DsreconError(f"{res['n_failed']} of {res['n_subjects']} subjects failed: see {Path(res['out']) / 'failures.tsv'}")


def check_cohort_output(directory: Path, output: Path) -> None:
    """-o of fit-cohort: apart from the cohort directory (neither inside the other: a rerun would
    read the outputs as subjects, or write among the inputs), and its summary files absent or
    written by an earlier fit-cohort (the subjects' runs are checked as any run directory)."""
    from dsrecon.cli.outputs import is_within, json_is_ours, table_is_ours

    if is_within(output, directory):
        raise DsreconError(f"{output}: is inside the cohort directory {directory} (a rerun would read it as a subject); "
                           "dsrecon never writes among its inputs: choose another -o")
    if is_within(directory, output):
        raise DsreconError(f"{directory}: the cohort directory is inside -o {output}; dsrecon never writes over its inputs: "
                           "choose another -o")
    out = Path(output)

    def failures_ours(p: Path) -> bool:
        try:
            with open(p, encoding="utf-8") as f:
                return f.readline().rstrip("\n") == "subject\terror"
        except (OSError, UnicodeDecodeError):
            return False

    ours = {"summary.tsv": table_is_ours, "summary.json": json_is_ours, "failures.tsv": failures_ours,
            "summary.png": lambda p: json_is_ours(out / "summary.json")}
    for name, check in ours.items():
        p = out / name
        if (p.exists() or p.is_symlink()) and not (p.is_file() and check(p)):
            raise DsreconError(f"{p}: already exists and was not written by dsrecon (fit-cohort writes {name} in -o {output}); "
                               "move it away or choose another -o")


def check_sweep_output(data: list[Path], output: Path) -> None:
    """-o of sweep: results.tsv, results.json and best_config.json are none of its inputs (or their
    sidecars) and absent or an earlier sweep's; no input lies in OUT/trials/ (the trials' runs,
    replaced by a rerun)."""
    from dsrecon.cli.outputs import check_inputs_outside, check_not_inputs, json_is_ours, table_inputs, table_is_ours

    out = Path(output)
    files = [f for d in data if Path(d).is_file() for f in table_inputs(d, "the data of the sweep")]
    check_not_inputs([out / "results.tsv", out / "results.json", out / "best_config.json"], files)
    check_inputs_outside(out / "trials", data, what="the trials folder")
    for name, ours in (("results.tsv", table_is_ours), ("results.json", json_is_ours), ("best_config.json", json_is_ours)):
        p = out / name
        if (p.exists() or p.is_symlink()) and not (p.is_file() and ours(p)):
            raise DsreconError(f"{p}: already exists and was not written by dsrecon (sweep writes {name} in -o {output}); "
                               "move it away or choose another -o")


@app.command("sweep", help=SWEEP_HELP)
@with_fit_options()
def sweep_cmd(
    data: list[Path] = typer.Argument(..., metavar="DATA...", help="Input files or directories (as `dsrecon fit`)."),
    output: Path = typer.Option(..., "--output", "-o", help="Output directory (results.tsv, best_config.json, trials/)."),
    grid: list[str] = typer.Option([], "--grid", help="NAME=V1,V2,… (repeatable), e.g. 'latent_dim=3,5,8', 'alpha=0.1,adaptive'."),
    seeds: int = typer.Option(1, "--seeds", help="Seeds per grid point (--seed, --seed+1, …)."),
    asha: bool = typer.Option(False, "--asha", help="Stop poor trials early (ASHA on validation D_stsp; needs Ray)."),
    asha_grace: int = typer.Option(1, "--asha-grace", help="ASHA: validations every trial gets before it can be stopped."),
    max_parallel: Optional[int] = MaxParOpt,
    gpus_per_fit: float = GpusOpt,
    address: Optional[str] = AddressOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    **options,
) -> None:
    from dsrecon.distributed.settings import parse_grid
    from dsrecon.distributed.sweep import run_sweep

    g = parse_grid(list(grid))
    s = _settings(options)
    check_sweep_output(data, output)
    res = run_sweep([str(p) for p in data], output, s, g, seeds=seeds, asha=asha, asha_grace=asha_grace, max_parallel=max_parallel,
                    gpus_per_trial=gpus_per_fit, address=address, log=lambda m: log(m, quiet))
    log(f"wrote {output}/results.tsv, results.json, best_config.json", quiet)
    if as_json:
        emit(res, True)
    else:
        best = res["best"]
        emit({"trials": res["n_trials"], "complete": res["n_complete"], "stopped early": res["n_stopped"], "failed": res["n_failed"],
              "best": ", ".join(f"{k}={v}" for k, v in best["params"].items()) or "(no grid)", "best mean D_stsp": best["mean_D_stsp"],
              "seconds": res["seconds"]}, False, title=f"dsrecon sweep → {output}", quiet=quiet)
