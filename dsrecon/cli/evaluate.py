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
from dsrecon.io.tables import read_named_array
from dsrecon.metrics import attractor_metrics
from dsrecon.metrics.connectivity import DEFAULT_FCD_WINDOW_S
from dsrecon.metrics.stsp import DEFAULT_BINS, DEFAULT_GMM_POINTS

#: The keys `--json` always prints (plus "seed" and "versions"; "baselines": {"VAR1", "floor"}, each
#: with the same metric keys or null, "metric_settings", "tr", "notes").
RESULT_KEYS = ("D_stsp", "D_stsp_method", "D_H", "FC_corr", "FC_rmse", "FCD_KS", "n_generated", "n_reference")


class StspMethod(str, Enum):
    auto = "auto"
    binned = "binned"
    gmm = "gmm"


class GmmPoints(str, Enum):
    first = "first"
    even = "even"


def _check_options(bins: int, gmm_var: float | None, smoothing: float | None, fcd_window: float = 30.0, tr: float | None = None) -> None:
    if bins < 1:
        raise DsreconError(f"--bins must be a positive integer, got {bins}")
    if gmm_var is not None and (not gmm_var > 0 or not np.isfinite(gmm_var)):
        raise DsreconError(f"--gmm-var must be a positive number (σ² of each mixture component), got {gmm_var}")
    if smoothing is not None and (not smoothing >= 0 or not np.isfinite(smoothing)):
        raise DsreconError(f"--smoothing must be >= 0 frequency bins, got {smoothing}")
    if not fcd_window > 0 or not np.isfinite(fcd_window):
        raise DsreconError(f"--fcd-window must be a positive number of seconds, got {fcd_window}")
    if tr is not None and (not tr > 0 or not np.isfinite(tr)):
        raise DsreconError(f"--tr must be a positive number of seconds, got {tr}")


def match_columns(g: np.ndarray, g_names: list[str], g_named: bool, generated: Path, r_names: list[str], r_named: bool,
                  reference: Path) -> tuple[np.ndarray, str | None]:
    """``g``'s columns in the order of the reference's (see `evaluate_tables`); returns (g, note)."""
    if not (g_named and r_named):
        if len(g_names) != len(r_names):
            unnamed = " and ".join(str(p) for p, named in ((generated, g_named), (reference, r_named)) if not named)
            raise DataError(f"{generated} has {len(g_names)} columns but {reference} has {len(r_names)}; they must match "
                            f"({unnamed} {'has' if ' and ' not in unnamed else 'have'} no column names, so columns are "
                            "matched by position)")
        return g, None
    if g_names == r_names:
        return g, None
    missing = [n for n in r_names if n not in g_names]
    extra = [n for n in g_names if n not in r_names]
    if missing or extra:
        parts = ([f"{_names(missing)} only in {reference}"] if missing else []) + \
                ([f"{_names(extra)} only in {generated}"] if extra else [])
        raise DataError(f"{generated}: its columns differ from {reference}'s ({len(g_names)} columns, {reference} has "
                        f"{len(r_names)}): {'; '.join(parts)}; compare tables of the same regions")
    idx = [g_names.index(n) for n in r_names]
    return g[:, idx], f"{generated}: columns reordered by name to the order of {reference} ({_names(r_names)})"


def _names(items: list[str], n: int = 6) -> str:
    head = ", ".join(items[:n])
    return head + (f", … ({len(items)} in all)" if len(items) > n else "")


def _evaluate_target(target: list[str], **kwargs: Any) -> None:
    from dsrecon.cli.evaluate_run import evaluate_target

    evaluate_target(target, **kwargs)


def evaluate_tables(
    generated: Path,
    reference: Path,
    *,
    stsp: str = "auto",
    bins: int = DEFAULT_BINS,
    gmm_var: float | None = None,
    smoothing: float | None = None,
    seed: int = 0,
    quiet: bool = True,
    gmm_points: str = DEFAULT_GMM_POINTS,
    train: Path | None = None,
    tr: float | None = None,
    fcd_window_s: float = DEFAULT_FCD_WINDOW_S,
) -> dict[str, Any]:
    """Read two (time, regions) tables and return the metrics record (RESULT_KEYS + seed, versions):
    D_stsp, D_H, FC_corr, FC_rmse, FCD_KS, each beside the VAR(1) baseline and the floor when
    ``train`` (the table the generated series' model was fitted on) is given (else null, with a
    note). ``gmm_var`` / ``smoothing`` None: by the data kind the sidecars name (metric_settings).

    Columns are matched by name when both tables name them (a header, or a sidecar's Columns): the
    same names in another order are reordered to the reference's order (a note on stderr); another
    set of names is an error naming what each file lacks. Tables without names are matched by
    position (they must have as many columns)."""
    g, g_names, g_named = read_named_array(generated)
    r, r_names, r_named = read_named_array(reference)
    g, note = match_columns(g, g_names, g_named, generated, r_names, r_named, reference)
    from dsrecon.cli.evaluate_tables import table_context, table_yardsticks

    ctx = table_context(generated, reference, train, g, tr, gmm_var, smoothing)
    gmm_var, smoothing = ctx["settings"]["gmm_var"], ctx["settings"]["smoothing"]
    try:
        res = attractor_metrics(g, r, stsp=stsp, bins=bins, gmm_var=gmm_var, smoothing=smoothing, seed=seed, gmm_points=gmm_points)
    except DataError as e:  # e.g. a constant reference column: say which file
        raise DataError(f"{reference}: {e}") from None
    res.update(table_yardsticks(g, r, ctx, res, stsp=stsp, bins=bins, seed=seed, gmm_points=gmm_points, fcd_window_s=fcd_window_s))
    # notes only once the numbers exist, so that an error stays the only line on stderr
    if note:
        log(note, quiet)
    if g.shape[0] != r.shape[0]:
        t = min(g.shape[0], r.shape[0])
        log(f"D_H: generated has {g.shape[0]} rows, reference {r.shape[0]}; spectra use the first {t} of each", quiet)
    if not np.isfinite(res["D_stsp"]):
        log("D_stsp is undefined: no generated point lies inside the binned range of the reference", quiet)
    if not np.isfinite(res["D_H"]):
        log("D_H is undefined: a column is constant in the generated or the reference table", quiet)
    for note in res.get("notes", []):
        log(note, quiet)
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
    gmm_var: Optional[float] = typer.Option(None, "--gmm-var", show_default=False,
                                            help="σ² of each Gaussian of the GMM D_stsp (data units²). Default by the data's kind: "
                                                 "0.3 for BOLD, 1.0 otherwise (the choice is recorded in metric_settings)."),
    gmm_points: GmmPoints = typer.Option(GmmPoints(DEFAULT_GMM_POINTS), "--gmm-points",
                                         help="Which ≤ 10 000 rows of each series the GMM D_stsp keeps: first (the published definition) or even (evenly spaced in time)."),
    smoothing: Optional[float] = typer.Option(None, "--smoothing", show_default=False,
                                              help="Gaussian σ in frequency bins for D_H. Default by the data's kind: 1 for BOLD, "
                                                   "20 otherwise (recorded in metric_settings)."),
    train: Optional[Path] = typer.Option(None, "--train", help="Two-table form: the table the generated series' model was fitted on; "
                                         "adds the VAR(1) baseline and the floor beside every metric."),
    tr: Optional[float] = typer.Option(None, "--tr", help="Two-table form: seconds per row, when no sidecar gives RepetitionTime (for FCD)."),
    fcd_window: float = typer.Option(DEFAULT_FCD_WINDOW_S, "--fcd-window", help="FCD sliding-window length in seconds (moved by a sixth of it)."),
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

    Every metric stands beside the linear VAR(1) baseline and the floor (the training data scored
    in place of the model; --train for two tables). FC_corr: higher is better; the others: lower
    is better, identical inputs give 0. See docs/metrics.md.
    """
    _check_options(bins, gmm_var, smoothing, fcd_window, tr)
    if output is not None:  # before any work: the metrics file is none of the inputs, can be written and is not a user's file
        from dsrecon.cli.outputs import check_not_inputs, check_output_files, json_is_ours, run_inputs, table_inputs

        files = table_inputs(data, "the test data given with --data") + table_inputs(inputs_table, "the input table given with --inputs")
        files += table_inputs(generated, "the table given with --generated") + table_inputs(reference, "the table given with --reference")
        files += table_inputs(train, "the table given with --train")
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
        if train is not None or tr is not None:
            raise DsreconError("--train and --tr go with two tables (--generated/--reference); a run knows its training data and TR")
        _evaluate_target(
            list(target), data=data, stsp=method, bins=bins, gmm_var=gmm_var, smoothing=smoothing, gmm_points=points,
            seed=seed, as_json=as_json, quiet=quiet, output=output,
            lyapunov_steps=lyapunov_steps if (analysis or target[0] == "system") else None, device=device,
            subject=subject, all_subjects=all_subjects, events=events, inputs_table=inputs_table, params=param,
            fcd_window_s=fcd_window,
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
                          gmm_points=points, train=train, tr=tr, fcd_window_s=fcd_window)
    if output is not None:
        ms = res["metric_settings"]
        record = {**res, "generated": str(generated), "reference": str(reference), "train": None if train is None else str(train),
                  "options": {"stsp": method, "bins": bins, "gmm_var": ms["gmm_var"], "gmm_points": points, "smoothing": ms["smoothing"],
                              "fcd_window_s": fcd_window}}
        write_json_atomic(output, record)
        log(f"wrote {output}", quiet)
    if as_json:
        emit(res, True)
    else:
        from dsrecon.cli.evaluate_run import print_scorecard

        print_scorecard({k: v for k, v in res.items() if k not in ("versions", "notes")}, "Attractor and connectivity metrics", quiet)
