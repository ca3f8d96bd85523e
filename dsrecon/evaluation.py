"""A fitted model's scorecard: its scores on test data beside the linear baseline and the floor,
the metric settings its data kind calls for, the fit's warnings and the one-line verdict.

`dsrecon evaluate RUN`, `dsrecon report` and `dsrecon demo` all call :func:`model_scorecard`, so
the three show the same numbers. The numerics are in `dsrecon.metrics.yardsticks`.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from dsrecon.errors import DataError, DsreconError
from dsrecon.io.recording import Recording
from dsrecon.metrics.yardsticks import COMPARED, kind_of_run, metric_settings, spread_of, verdict, yardsticks

#: the note when a run cannot give its training data (the baseline and floor are then null)
NO_TRAINING_NOTE = ("no baseline or floor: {why}; a run fitted with this version keeps its training split "
                    "(teacher/*_desc-train_timeseries.tsv), refit to get them")


def training_split_of(model: Any) -> tuple[list[np.ndarray] | None, str]:
    """The model's training data, normalised, one array per recording (NaN at censored frames),
    and where they came from: the run's teacher cache (kept at fit time), else the training inputs
    named in config.json re-read and split as the fit did. (None, why) when neither is there."""
    from dsrecon.io.runs import read_training_split

    cfg = getattr(model, "config", None) or {}
    run = getattr(model, "run_dir", None)
    subject = cfg.get("subject")
    if run is not None:
        try:
            segs = read_training_split(run, subject)
        except DataError as e:
            return None, f"the run's training split is unreadable ({e})"
        if segs:
            return segs, f"the training split kept in {run}/teacher"
    data = getattr(model, "data_", None)  # a model fitted in this process
    if data is not None and getattr(data, "train", None):
        return [np.where(p.mask[:, None], p.x, np.nan).astype(np.float64) for p in data.train], "the training split of this fit"
    inputs = cfg.get("inputs") or []
    if not inputs or subject is not None:
        return None, "the run keeps no training split"
    try:
        recs = _reload_inputs(model)
    except (DataError, DsreconError, OSError, KeyError, TypeError):
        return None, f"the run keeps no training split and its training inputs ({inputs[0]}{', …' if len(inputs) > 1 else ''}) are not readable"
    frac = float(cfg.get("train_options", {}).get("test_fraction", 0.0))
    out = []
    for r in recs:
        trn = r.split(frac)[0]
        x = model.norm_.apply(trn.data, trn.source, trn.names)
        out.append(np.where(trn.mask[:, None], x, np.nan))
    return out, f"the training inputs re-read ({', '.join(map(str, inputs[:2]))}{', …' if len(inputs) > 2 else ''}), split as the fit did"


def _reload_inputs(model: Any) -> list[Recording]:
    """The recordings a run was fitted on, read again as the fit read them (tables, NIfTI, …)."""
    from dsrecon.io.load import InputSpec, load_inputs

    cfg = model.config
    prov = (cfg.get("provenance") or [{}])[0] or {}
    files = [f for f in (cfg.get("input_files") or []) if f]
    as_events = cfg.get("input_kind") == "events"
    spec = InputSpec(tr=model.tr, tr_label="the model's TR", quiet=True,
                     events=files if as_events else [], input_tables=[] if (as_events or not files) else files,
                     drop_columns=list(prov.get("dropped_columns") or []),
                     regressor_columns=list(prov.get("regressor_columns") or []))
    recs = load_inputs(list(cfg["inputs"]), spec)
    if any(r.n_regions != len(model.names) for r in recs):
        raise DataError("the training inputs no longer have the model's regions")
    return recs


def fit_warnings(config: dict, long_run: dict | None = None) -> list[str]:
    """The fit's warnings, one line each, from what the run records (config.json's ``training``)
    and the long-run check after the fit (`ConvSSM.long_run`, recomputed: it is deterministic)."""
    t = config.get("training") or {}
    out = []
    if t.get("failed"):
        out.append(f"the fit failed: {t['failed']}")
    if t.get("divergence_restarts"):
        n = int(t["divergence_restarts"])
        out.append(f"training diverged {n} time{'s' if n > 1 else ''} (non-finite loss): restarted from the last good state with a halved learning rate")
    if t.get("collapse_restores"):
        n = int(t["collapse_restores"])
        out.append(f"the free run collapsed {n} time{'s' if n > 1 else ''} during training: the best model was restored")
    if t.get("stopped_early"):
        out.append(f"training stopped early after {t.get('epochs_run')} epochs (no validation improvement); "
                   f"the model of epoch {t.get('best_epoch')} was kept")
    if long_run:
        if long_run.get("diverged"):
            out.append(f"the fitted model's free run diverges within {long_run['steps']} steps (the check after the fit)")
        elif long_run.get("settles"):
            out.append(f"the fitted model's free run settles on a fixed point (spread {long_run['spread']:.2g} in z-units over the last "
                       f"quarter of {long_run['steps']} steps; the check after the fit): it does not reproduce the data's oscillation")
    return out


def model_scorecard(model: Any, test: Recording, *, stsp: str = "auto", bins: int = 30, gmm_var: float | None = None,
                    smoothing: float | None = None, seed: int = 0, gmm_points: str = "first", fcd_window_s: float = 30.0,
                    regime: str | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Score ``model`` on ``test`` (`ConvSSM.score`) with the settings of its data kind (unless
    given), beside the VAR(1) baseline and the floor from its training data, with the fit's
    warnings and the verdict. ``regime``: the Lyapunov regime when the caller has analysed the
    model. Returns the record `evaluate --json` prints (plus the arrays under ``"series"``)."""
    settings = metric_settings(*kind_of_run(model.config), gmm_var=gmm_var, smoothing=smoothing)
    res = model.score(test, stsp=stsp, bins=bins, gmm_var=settings["gmm_var"], smoothing=settings["smoothing"], seed=seed,
                      gmm_points=gmm_points, fcd_window_s=fcd_window_s, keep_series=True)
    gen, x = res.pop("generated_test_period"), res.pop("test_normalised")
    out: dict[str, Any] = {k: res[k] for k in ("D_stsp", "D_stsp_method", "D_H", "PE_n", "FC_corr", "FC_rmse", "FCD_KS")}
    out.update({f"PE{res['n']}": res["PE_n"], "n_pe": res["n"], "FCD_window_s": res["FCD_window_s"], "n_test": res["n_test"],
                "n_generated": res["n_generated"], "diverged": res["diverged"]})
    train, source = training_split_of(model)
    baselines: dict[str, Any] = {"VAR1": None, "floor": None}
    notes: list[str] = []
    info = var_series = None
    if train is None:
        notes.append(NO_TRAINING_NOTE.format(why=source))
    else:
        try:
            y = yardsticks(train, x, tr=float(model.tr), n_frames=x.shape[0], mask=test.mask, n_pe=res["n"], seed=seed,
                           stsp=stsp, bins=bins, gmm_var=settings["gmm_var"], smoothing=settings["smoothing"],
                           gmm_points=gmm_points, fcd_window_s=fcd_window_s)
            baselines = {"VAR1": {k: y["VAR1"].get(k) for k in (*COMPARED, "D_stsp_method")},
                         "floor": {k: y["floor"].get(k) for k in (*COMPARED, "D_stsp_method")}}
            info = {**y["info"], "training_data": source}
            var_series = y["series"]["VAR1"]
        except DataError as e:
            notes.append(f"no baseline or floor: {e}")
    long_run = None
    if not model.config.get("n_inputs") and hasattr(model, "long_run"):
        long_run = model.long_run()
    spread = long_run["spread"] if long_run is not None else spread_of(gen)
    v = verdict(out, baselines if baselines["VAR1"] else None, regime=regime, spread=spread,
                diverged=bool(res["diverged"] or (long_run or {}).get("diverged")))
    for n in notes:
        if log is not None:
            log(n)
    out.update({"baselines": baselines, "baselines_info": info, "verdict": v["text"], "verdict_detail": v,
                "metric_settings": settings, "long_run": long_run,
                "warnings": fit_warnings(model.config, long_run), "notes": notes,
                "series": {"generated": gen, "test": x, "train": train, "VAR1": var_series}})
    return out


def public(card: dict[str, Any]) -> dict[str, Any]:
    """The scorecard without its arrays (for JSON)."""
    return {k: v for k, v in card.items() if k not in ("series", "verdict_detail")}


def with_regime(card: dict[str, Any], regime: str | None) -> dict[str, Any]:
    """The scorecard's verdict again, now that the Lyapunov regime is known (in place; returned)."""
    lr = card.get("long_run")
    spread = lr["spread"] if lr is not None else spread_of(card["series"]["generated"])
    v = verdict(card, card["baselines"] if card["baselines"].get("VAR1") else None, regime=regime, spread=spread,
                diverged=bool(card["diverged"] or (lr or {}).get("diverged")))
    card.update(verdict=v["text"], verdict_detail=v)
    return card
