"""`dsrecon evaluate`: attractor metrics of a generated trajectory against a reference one.

Two forms share the command:
  dsrecon evaluate --generated G.tsv --reference R.tsv     (this module: two tables)
  dsrecon evaluate RUN --data TEST.tsv                      (dsrecon.cli.evaluate_run, if installed)
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any, Optional

import numpy as np
import typer

from dsrecon._util import versions, write_json_atomic
from dsrecon.cli.common import JsonOpt, QuietOpt, SeedOpt, emit, log
from dsrecon.cli.main import app
from dsrecon.errors import DataError, DsreconError
from dsrecon.io.tables import read_array
from dsrecon.metrics import attractor_metrics
from dsrecon.metrics.spectrum import DEFAULT_SMOOTHING
from dsrecon.metrics.stsp import DEFAULT_BINS, DEFAULT_GMM_POINTS, DEFAULT_GMM_VAR

#: The keys `--json` always prints (plus "seed" and "versions").
RESULT_KEYS = ("D_stsp", "D_stsp_method", "D_H", "n_generated", "n_reference")


class StspMethod(str, Enum):
    auto = "auto"
    binned = "binned"
    gmm = "gmm"


class GmmPoints(str, Enum):
    first = "first"
    even = "even"


def _check_options(bins: int, gmm_var: float, smoothing: float) -> None:
    if bins < 1:
        raise DsreconError(f"--bins must be a positive integer, got {bins}")
    if not gmm_var > 0 or not np.isfinite(gmm_var):
        raise DsreconError(f"--gmm-var must be a positive number (σ² of each mixture component), got {gmm_var}")
    if not smoothing >= 0 or not np.isfinite(smoothing):
        raise DsreconError(f"--smoothing must be >= 0 frequency bins, got {smoothing}")


def _evaluate_target(target: list[str], **kwargs: Any) -> None:
    from dsrecon.cli.evaluate_run import evaluate_target

    evaluate_target(target, **kwargs)


def evaluate_tables(
    generated: Path,
    reference: Path,
    *,
    stsp: str = "auto",
    bins: int = DEFAULT_BINS,
    gmm_var: float = DEFAULT_GMM_VAR,
    smoothing: float = DEFAULT_SMOOTHING,
    seed: int = 0,
    quiet: bool = True,
    gmm_points: str = DEFAULT_GMM_POINTS,
) -> dict[str, Any]:
    """Read two (time, regions) tables and return the metrics record (RESULT_KEYS + seed, versions)."""
    g, _ = read_array(generated)
    r, _ = read_array(reference)
    if g.shape[1] != r.shape[1]:
        raise DataError(f"{generated} has {g.shape[1]} columns but {reference} has {r.shape[1]}; they must match")
    try:
        res = attractor_metrics(g, r, stsp=stsp, bins=bins, gmm_var=gmm_var, smoothing=smoothing, seed=seed, gmm_points=gmm_points)
    except DataError as e:  # e.g. a constant reference column: say which file
        raise DataError(f"{reference}: {e}") from None
    # notes only once the numbers exist, so that an error stays the only line on stderr
    if g.shape[0] != r.shape[0]:
        t = min(g.shape[0], r.shape[0])
        log(f"D_H: generated has {g.shape[0]} rows, reference {r.shape[0]}; spectra use the first {t} of each", quiet)
    if not np.isfinite(res["D_stsp"]):
        log("D_stsp is undefined: no generated point lies inside the binned range of the reference", quiet)
    if not np.isfinite(res["D_H"]):
        log("D_H is undefined: a column is constant in the generated or the reference table", quiet)
    return {**res, "seed": seed, "versions": versions()}


@app.command("evaluate")
def evaluate_cmd(
    target: Optional[list[str]] = typer.Argument(None, help="A run directory (RUN --data TEST.tsv), or 'system NAME'. Omit to compare two tables."),
    generated: Optional[Path] = typer.Option(None, "--generated", "-g", help="Generated trajectory table (time × regions): TSV/CSV/NPY."),
    reference: Optional[Path] = typer.Option(None, "--reference", "-r", help="Reference (true / test) table, same columns."),
    data: Optional[Path] = typer.Option(None, "--data", help="Test data for the RUN form."),
    events: Optional[Path] = typer.Option(None, "--events", help="RUN form: the test data's events file (a model fitted with inputs); fed to PE_n and to the free run."),
    inputs_table: Optional[Path] = typer.Option(None, "--inputs", help="RUN form: the test data's input table (one row per frame)."),
    stsp: StspMethod = typer.Option(StspMethod.auto, "--stsp", help="D_stsp estimator: auto (binned if N < 6, else gmm), binned, gmm."),
    bins: int = typer.Option(DEFAULT_BINS, "--bins", help="Bins per dimension for the binned D_stsp."),
    gmm_var: float = typer.Option(DEFAULT_GMM_VAR, "--gmm-var", help="σ² of each Gaussian of the GMM D_stsp (data units²; 0.3 for BOLD)."),
    gmm_points: GmmPoints = typer.Option(GmmPoints(DEFAULT_GMM_POINTS), "--gmm-points",
                                         help="Which ≤ 10 000 rows of each series the GMM D_stsp keeps: first (the published definition) or even (evenly spaced in time)."),
    smoothing: float = typer.Option(DEFAULT_SMOOTHING, "--smoothing", help="Gaussian σ in frequency bins for D_H (1 for short BOLD series)."),
    seed: int = SeedOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the metrics (with seed and versions) to this JSON file."),
    lyapunov_steps: int = typer.Option(100_000, "--lyapunov-steps", help="RUN / system forms: steps of the Lyapunov spectrum (QR method)."),
    param: list[str] = typer.Option([], "--param", help="System form: override a system parameter, NAME=VALUE (repeatable), e.g. --param rho=36.5."),
    device: str = typer.Option("cpu", "--device", help="RUN form: auto|cpu|cuda for the free run and PE_n (analysis runs on the CPU)."),
    analysis: bool = typer.Option(True, "--analysis/--no-analysis", help="RUN form: also compute the Lyapunov spectrum, dimensions and fixed points."),
    subject: Optional[str] = typer.Option(None, "--subject", help="Group runs (dsrecon fit-group): the subject to evaluate."),
    all_subjects: bool = typer.Option(False, "--all", help="Group runs: every subject on its held-out tail, one row each (D_stsp, D_H, PE, λ_max, regime)."),
) -> None:
    """Compare a generated trajectory with a reference: D_stsp (geometry) and D_H (power spectra).

    Examples:

      dsrecon evaluate --generated gen.tsv --reference test.tsv --json

      dsrecon evaluate run --data test.tsv          (a fitted model: D_stsp, D_H, PE_n, Lyapunov, fixed points)

      dsrecon evaluate run --data test.tsv --events test_events.tsv   (a model fitted with --events)

      dsrecon evaluate system lorenz63               (Lyapunov spectrum of a benchmark ODE)

      dsrecon evaluate system lorenz63 --param rho=36.5   (the same at other parameters)

      dsrecon evaluate group --subject 01            (one subject of a group run; --all: every subject)

    Lower is better for both; identical inputs give 0. See docs/metrics.md.
    """
    _check_options(bins, gmm_var, smoothing)
    if output is not None:  # before any work: the metrics file is none of the inputs, can be written and is not a user's file
        from dsrecon.cli.outputs import check_not_inputs, check_output_files, json_is_ours, run_inputs, table_inputs

        files = table_inputs(data, "the test data given with --data") + table_inputs(inputs_table, "the input table given with --inputs")
        files += table_inputs(generated, "the table given with --generated") + table_inputs(reference, "the table given with --reference")
        files += [(events, "the events file given with --events")] if events is not None else []
        dirs = []
        if target and target[0] != "system":
            files_of_run, dirs = run_inputs(Path(target[0]))
            files += files_of_run
        check_not_inputs([output], files, dirs)
        check_output_files([output], ours=json_is_ours)
    method = stsp.value if isinstance(stsp, StspMethod) else str(stsp)
    points = gmm_points.value if isinstance(gmm_points, GmmPoints) else str(gmm_points)
    if param and not (target and target[0] == "system"):
        raise DsreconError("--param goes with the system form (dsrecon evaluate system NAME --param rho=36.5)")
    if target:
        if generated is not None or reference is not None:
            raise DsreconError("give either a run (TARGET) or --generated/--reference, not both")
        _evaluate_target(
            list(target), data=data, stsp=method, bins=bins, gmm_var=gmm_var, smoothing=smoothing, gmm_points=points,
            seed=seed, as_json=as_json, quiet=quiet, output=output,
            lyapunov_steps=lyapunov_steps if (analysis or target[0] == "system") else None, device=device,
            subject=subject, all_subjects=all_subjects, events=events, inputs_table=inputs_table, params=param,
        )
        return
    if subject is not None or all_subjects:
        raise DsreconError("--subject and --all go with a group run directory (dsrecon evaluate GROUP --subject 01)")
    if events is not None or inputs_table is not None:
        raise DsreconError("--events / --inputs go with a run directory (dsrecon evaluate RUN --data TEST.tsv --events TEST_events.tsv)")
    if data is not None:
        raise DsreconError("--data goes with a run directory (dsrecon evaluate RUN --data TEST.tsv); for two tables use --generated and --reference")
    if generated is None or reference is None:
        missing = "--generated" if generated is None else "--reference"
        raise DsreconError(f"{missing} is required (dsrecon evaluate --generated G.tsv --reference R.tsv)")
    res = evaluate_tables(generated, reference, stsp=method, bins=bins, gmm_var=gmm_var, smoothing=smoothing, seed=seed, quiet=quiet,
                          gmm_points=points)
    if output is not None:
        record = {**res, "generated": str(generated), "reference": str(reference),
                  "options": {"stsp": method, "bins": bins, "gmm_var": gmm_var, "gmm_points": points, "smoothing": smoothing}}
        write_json_atomic(output, record)
        log(f"wrote {output}", quiet)
    if as_json:
        emit(res, True)
    else:
        emit({k: res[k] for k in (*RESULT_KEYS, "seed")}, False, title="Attractor metrics (lower is better)", quiet=quiet)
