"""`dsrecon evaluate RUN --data TEST.tsv`, `dsrecon evaluate GROUP --all` and `dsrecon evaluate system NAME`
(routed from cli/evaluate.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dsrecon._util import versions, write_json_atomic
from dsrecon.cli.common import emit, err_console, log
from dsrecon.errors import DataError, DsreconError


def evaluate_target(target: list[str], *, data: Path | None, stsp: str, bins: int, gmm_var: float | None, smoothing: float | None,
                    seed: int, as_json: bool, quiet: bool, output: Path | None, gmm_points: str = "first", **extra: Any) -> None:
    if target[0] == "system":
        if len(target) != 2:
            raise DsreconError("usage: dsrecon evaluate system NAME")
        from dsrecon.cli.evaluate_system import evaluate_system
        from dsrecon.cli.simulate import parse_params

        res = evaluate_system(target[1], lyapunov_steps=int(extra.get("lyapunov_steps") or 100_000), seed=seed, quiet=quiet,
                              params=parse_params(extra.get("params") or []))
        title = f"dsrecon evaluate system {target[1]}"
    else:
        if len(target) != 1:
            raise DsreconError(f"expected one run directory, got {len(target)} arguments: {' '.join(target)}")
        kw = dict(stsp=stsp, bins=bins, gmm_var=gmm_var, smoothing=smoothing, seed=seed, quiet=quiet, gmm_points=gmm_points,
                  lyapunov_steps=extra.get("lyapunov_steps"), device=extra.get("device") or "cpu",
                  fcd_window_s=float(extra.get("fcd_window_s") or 30.0))
        if extra.get("all_subjects"):
            return evaluate_all(Path(target[0]), data, subject=extra.get("subject"), as_json=as_json, output=output, **kw)
        res = evaluate_run(Path(target[0]), data, subject=extra.get("subject"), events=extra.get("events"),
                           inputs_table=extra.get("inputs_table"), **kw)
        title = f"dsrecon evaluate {target[0]}{'' if extra.get('subject') is None else ' --subject ' + str(extra['subject'])}"
    res = {**res, "seed": seed, "versions": versions()}
    if output is not None:
        write_json_atomic(output, res)
        log(f"wrote {output}", quiet)
    if as_json or target[0] == "system":
        emit(res, as_json, title=title, quiet=quiet)
    else:
        print_scorecard(res, title, quiet)


def print_scorecard(res: dict, title: str, quiet: bool) -> None:
    """The human-readable result: the verdict, each metric beside its VAR(1) baseline and floor,
    then the other scalars (the JSON has them all)."""
    from rich.table import Table

    from dsrecon.cli.common import out_console
    from dsrecon.metrics.yardsticks import COMPARED, HIGHER_IS_BETTER

    if quiet:
        return
    if res.get("verdict"):
        out_console.print(f"verdict: {res['verdict']}", markup=False, highlight=False)
    for w in res.get("warnings") or []:
        out_console.print(f"warning: {w}", markup=False, highlight=False)
    base = res.get("baselines") or {}
    var, floor = base.get("VAR1") or {}, base.get("floor") or {}
    t = Table(title=title, header_style="bold")
    for c, j in (("metric", "left"), ("model", "right"), ("VAR(1)", "right"), ("floor", "right"), ("better", "left")):
        t.add_column(c, justify=j)
    fmt = lambda v: "—" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    shown = set()
    for k in COMPARED:
        if k not in res:
            continue
        name = f"PE{res['n_pe']}" if k == "PE_n" and "n_pe" in res else k
        t.add_row(name, fmt(res[k]), fmt(var.get(k)), fmt(floor.get(k)), "higher" if k in HIGHER_IS_BETTER else "lower")
        shown.update({k, name})
    out_console.print(t)
    rest = {k: v for k, v in res.items() if k not in shown and k not in ("verdict", "warnings", "notes", "versions")
            and not isinstance(v, (dict, list))}
    emit(rest, False, title="details", quiet=quiet)
    if not base.get("VAR1"):
        for n in res.get("notes") or []:
            log(n, quiet)


def evaluate_run(run: Path, data: Path | None, *, stsp: str, bins: int, gmm_var: float | None, smoothing: float | None, seed: int,
                 quiet: bool, lyapunov_steps: int | None = None, device: str = "cpu", gmm_points: str = "first", subject: str | None = None,
                 model=None, events: Path | None = None, inputs_table: Path | None = None, fcd_window_s: float = 30.0) -> dict:
    """§6 protocol: generate 1.25·T, drop 0.25·T, compare with the test data; PE_n from its teacher.
    Every comparison metric beside the VAR(1) baseline and the floor (`dsrecon.evaluation`), the
    metric settings of the run's data kind unless ``gmm_var`` / ``smoothing`` are given, the
    fit's warnings and the verdict. A group run's subject: ``subject`` (or a loaded ``model``)."""
    from dsrecon.estimators.load import load_run
    from dsrecon.estimators.load import select_subject
    from dsrecon.io.load import InputSpec, load_inputs

    from dsrecon.cli.common import resolve_device

    model = (select_subject(load_run(run), subject, run) if model is None else model).to(resolve_device(device))
    src = events if events is not None else inputs_table
    if src is not None and not model.input_names:
        raise DsreconError(f"{src}: the model {run} was fitted without inputs; it takes no --events / --inputs")
    if data is not None and src is None and model.input_names:
        raise DsreconError(f"{data}: the model {run} was fitted with inputs ({', '.join(model.input_names)}); "
                           "give the test data's design with --events TEST_events.tsv (or --inputs)")
    if data is None and src is not None:
        raise DsreconError(f"{src}: --events / --inputs describe test data: give it with --data TEST.tsv")
    if data is not None:
        from dsrecon.io.matching import load_matched

        test, notes = load_matched(data, model)
        for note in notes:
            if not quiet:
                err_console.print(note, soft_wrap=True, markup=False, highlight=False)
        source = str(data)
        if src is not None:
            from dsrecon.io.events import attach_inputs

            test = attach_inputs(test, events=events, table=inputs_table, names=model.input_names,
                                 warn=lambda m: log(m, quiet))
    else:
        # default: the held-out tail of the training inputs, when they are still where they were
        prov = (model.config.get("provenance") or [{}])[0] or {}
        files = [f for f in (model.config.get("input_files") or [])[:1] if f]
        as_events = model.config.get("input_kind") == "events"
        cleaning = prov.get("cleaning") if isinstance(prov.get("cleaning"), dict) else {}
        spec = InputSpec(tr=model.tr, tr_label="the model's TR", quiet=True,
                         events=files if as_events else [], input_tables=[] if as_events else files,
                         drop_columns=list(prov.get("dropped_columns") or []),
                         regressor_columns=list(prov.get("regressor_columns") or []),
                         # the training data as the fit read them: cleaned alike, the same confounds table regressed out
                         detrend=bool(cleaning.get("detrend")), standardize=bool(cleaning.get("standardize")),
                         low_pass=cleaning.get("low_pass"), high_pass=cleaning.get("high_pass"),
                         confounds=prov.get("confounds_file") if prov.get("confounds") == "file" else "none")
        try:
            recs = load_inputs(list(model.config["inputs"][:1]), spec)
        except DataError:
            raise DsreconError(f"{run}: the training inputs are not readable any more; give test data with --data TEST.tsv") from None
        frac = model.config["train_options"]["test_fraction"]
        if frac <= 0:
            raise DsreconError(f"{run}: fitted without a held-out tail (--test-fraction 0); give test data with --data TEST.tsv")
        test = recs[0].split(frac)[1]
        source = f"held-out tail of {model.config['inputs'][0]}"
    if test.n_regions != len(model.names):
        raise DataError(f"{source}: {test.n_regions} columns, the model was fitted on {len(model.names)} regions")
    log(f"evaluating {run} on {source} ({test.n_frames} frames)", quiet)
    from dsrecon.evaluation import model_scorecard, public, with_regime

    card = model_scorecard(model, test, stsp=stsp, bins=bins, gmm_var=gmm_var, smoothing=smoothing, seed=seed, gmm_points=gmm_points,
                           fcd_window_s=fcd_window_s, log=lambda m: log(m, quiet))
    out = {**public(card), "run": str(run), "data": source}
    if model.config.get("subject") is not None:
        out["subject"] = model.config["subject"]
    if lyapunov_steps:
        try:
            from dsrecon.metrics.analysis import analyze_model, fixed_point_counts
        except ImportError:
            analyze_model = None
        if analyze_model is not None:
            log(f"analysing the model: Lyapunov spectrum ({int(lyapunov_steps)} steps), correlation dimension, fixed points and cycles", quiet)
            model.to("cpu")
            an = analyze_model(model, lyapunov_steps=int(lyapunov_steps), seed=seed)
            ly = an.get("lyapunov", {})
            with_regime(card, ly.get("regime"))
            out["verdict"] = card["verdict"]
            fixed = card["verdict_detail"]["state"] == "collapsed" or ly.get("regime") == "fixed point"
            out.update({
                "regime": ly.get("regime"),
                "lambda_max_per_step": ly.get("lambda_max_per_step"),
                "lambda_max_per_second": ly.get("lambda_max_per_second"),
                "kaplan_yorke_dimension": ly.get("kaplan_yorke_dimension"),
                # a fixed point has no attractor to measure: no correlation dimension (docs/metrics.md)
                "correlation_dimension": None if fixed else (an.get("correlation_dimension") or {}).get("generated_latent"),
                **fixed_point_counts((an.get("fixed_points") or {}).get("n_by_period", {})),
                "analysis": an,
            })
    return out


def evaluate_all(run: Path, data: Path | None, *, subject: str | None, as_json: bool, output: Path | None, quiet: bool, seed: int,
                 **kw) -> None:
    """`dsrecon evaluate GROUP --all`: every subject on its own held-out tail, one row each."""
    from rich.table import Table

    from dsrecon.cli.common import out_console
    from dsrecon.estimators.group import GroupConvSSM
    from dsrecon.estimators.load import load_run

    if subject is not None:
        raise DsreconError("give --subject or --all, not both")
    if data is not None:
        raise DsreconError("--all evaluates every subject on its own held-out tail; --data goes with --subject")
    g = load_run(run)
    if not isinstance(g, GroupConvSSM):
        raise DsreconError(f"--all: {run} is not a group run (written by dsrecon fit, not dsrecon fit-group)")
    rows = []
    for sid in g.subjects:
        r = evaluate_run(run, None, model=g.subject(sid), quiet=quiet, seed=seed, **kw)
        rows.append({"subject": sid, "D_stsp": r["D_stsp"], "D_H": r["D_H"], f"PE{r['n_pe']}": r["PE_n"], "PE_n": r["PE_n"], "n_pe": r["n_pe"],
                     "FC_corr": r["FC_corr"], "FC_rmse": r["FC_rmse"], "FCD_KS": r["FCD_KS"], "baselines": r["baselines"],
                     "lambda_max_per_second": r.get("lambda_max_per_second"), "regime": r.get("regime"), "diverged": r["diverged"],
                     "verdict": r.get("verdict"), "data": r["data"]})
    res = {"run": str(run), "subjects": rows, "seed": seed, "versions": versions()}
    if output is not None:
        write_json_atomic(output, res)
        log(f"wrote {output}", quiet)
    if as_json:
        emit(res, True)
        return
    if quiet:
        return
    t = Table(title=f"dsrecon evaluate {run} --all (lower is better)", header_style="bold")
    for c in ("subject", "D_stsp", "D_H", f"PE{rows[0]['n_pe']}" if rows else "PE", "λ_max /s", "regime"):
        t.add_column(c, justify="left" if c in ("subject", "regime") else "right")
    fmt = lambda v: "—" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    for r in rows:
        t.add_row(r["subject"], fmt(r["D_stsp"]), fmt(r["D_H"]), fmt(r["PE_n"]), fmt(r["lambda_max_per_second"]), fmt(r["regime"]))
    out_console.print(t)
