"""One self-contained HTML report for a fitted run: figures embedded as base64 PNG, no external
URLs, stylesheets or scripts, so it can be mailed to a colleague and opened anywhere. The page's
HTML pieces are dsrecon.plots.html; a group run's report is dsrecon.plots.group_report."""

from __future__ import annotations

import datetime as _dt
import html
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dsrecon._util import versions, write_text_atomic
from dsrecon.io.recording import Recording
from dsrecon.plots.html import cycles_table, details, figure_html, fmt_value, page_head, page_tail, quantity_table

def metrics_rows(scores: dict[str, Any] | None, analysis: dict[str, Any], collapsed: bool = False) -> list[tuple[str, Any, str]]:
    """(quantity, value, note) rows of the report's dynamics table (the scores have their own
    table, beside their baselines: `score_rows`). A collapsed model gets no correlation dimension."""
    rows: list[tuple[str, Any, str]] = []
    ly = analysis.get("lyapunov", {})
    if "error" in ly:
        rows.append(("Lyapunov spectrum", ly["error"], ""))
    else:
        rows.append(("regime", ly.get("regime"), "from the sign of λ_max"))
        rows.append(("λ_max per step", ly.get("lambda_max_per_step"), f"{ly.get('n_steps')} steps, QR method"))
        rows.append(("λ_max per second", ly.get("lambda_max_per_second"), f"per step / TR ({analysis.get('tr')} s)"))
        rows.append(("Kaplan–Yorke dimension", ly.get("kaplan_yorke_dimension"), ""))
    cd = analysis.get("correlation_dimension", {})
    if collapsed:
        rows.append(("correlation dimension (model)", None, "not reported: the free run is a fixed point, there is no attractor to measure"))
    elif ly.get("regime") == "fixed point":
        rows.append(("correlation dimension (model)", None, "not reported: λ_max < 0, the model's attractor is a fixed point (its "
                     "run is still approaching it: a dimension would measure the transient)"))
    else:
        rows.append(("correlation dimension (model, latent)", cd.get("generated_latent"), "Grassberger–Procaccia"))
        rows.append(("correlation dimension (model, observed)", cd.get("generated_observed"), ""))
    rows.append(("correlation dimension (data)", cd.get("observed"), ""))
    fp = analysis.get("fixed_points", {})
    by: dict[str, dict[str, int]] = {}
    for c in fp.get("cycles", []):
        by.setdefault(str(c["period"]), {}).setdefault(c["stability"], 0)
        by[str(c["period"])][c["stability"]] += 1
    desc = "; ".join(f"period {k}: " + ", ".join(f"{n} {s}" for s, n in sorted(v.items())) for k, v in sorted(by.items(), key=lambda t: int(t[0])))
    rows.append(("fixed points and cycles", desc or "none found", f"method: {fp.get('method', '')}, k ≤ {analysis.get('k_max')}"))
    return rows


#: what each compared metric measures, for the scores table (docs/metrics.md explains the scales)
SCORE_NOTES = {
    "D_stsp": ("test D_stsp", "state space: where the free run goes (KL divergence, nats)"),
    "D_H": ("test D_H", "spectra: Hellinger distance of power spectra, 0–1"),
    "PE_n": ("PE{n}", "{n}-step prediction error from the data (z-units²)"),
    "FC_corr": ("FC_corr", "functional connectivity: correlation of the FC matrices' upper triangles"),
    "FC_rmse": ("FC_rmse", "FC: root-mean-square difference of the FC entries"),
    "FCD_KS": ("FCD_KS", "FC dynamics: KS distance of the FCD distributions, 0–1"),
}


def score_rows(card: dict[str, Any]) -> str:
    """The scores table: each metric of the model beside the VAR(1) baseline and the floor."""
    from dsrecon.metrics.yardsticks import COMPARED, HIGHER_IS_BETTER, better, informative

    e = html.escape
    base = card.get("baselines") or {}
    var, floor = base.get("VAR1") or {}, base.get("floor") or {}
    n = card.get("n_pe")
    out = ['<table><tr><th>metric</th><th>model</th><th>VAR(1)</th><th>floor</th><th>better</th><th>vs VAR(1)</th><th>what it measures</th></tr>']
    for k in COMPARED:
        if k not in card:
            continue
        name, note = SCORE_NOTES[k]
        name, note = name.format(n=n), note.format(n=n)
        c = better(k, card.get(k), var.get(k)) if var else None
        mark, cls = {1: ("better", "win"), -1: ("worse", "loss"), 0: ("level", "")}.get(c, ("—", ""))
        if c is not None and not informative(k, var, floor):
            mark, cls = f"{mark}, uninformative", ""  # the data themselves do not beat the VAR(1) here: left out of the verdict
        out.append(f"<tr><td>{e(name)}</td><td class=\"num\">{e(fmt_value(card.get(k)))}</td><td class=\"num\">{e(fmt_value(var.get(k)))}</td>"
                   f"<td class=\"num\">{e(fmt_value(floor.get(k)))}</td><td>{'higher' if k in HIGHER_IS_BETTER else 'lower'}</td>"
                   f"<td class=\"{cls}\">{mark}</td><td class=\"muted\">{e(note)}</td></tr>")
    out.append("</table>")
    info = card.get("baselines_info") or {}
    vi = info.get("VAR1") or {}
    if var:
        out.append(f'<p class="muted">VAR(1): a linear autoregression (ridge {vi.get("ridge")}, Gaussian innovations, spectral radius '
                   f'{fmt_value(vi.get("spectral_radius"))}) fitted to the same training data ({e(str(info.get("training_data", "")))}), run '
                   f'freely for {vi.get("frames")} frames after {vi.get("burn_in")} burn-in frames and scored exactly as the model. '
                   'Floor: the training data\'s own last frames in place of the model (two stretches of one recording): about as good '
                   'as a model can get. A prediction error has no floor (0 is ideal). "Uninformative": the floor does not beat the '
                   'VAR(1) on that metric, so on this test set it cannot tell real dynamics from linear noise; the verdict leaves it out.</p>')
    for note in card.get("notes") or []:
        out.append(f'<p class="muted">{e(note)}</p>')
    ms = card.get("metric_settings") or {}
    out.append(f'<p class="muted">Test data: {card.get("n_test")} frames; the model\'s free run: {card.get("n_generated")} frames, the '
               f'first quarter dropped. D_stsp by {e(str(card.get("D_stsp_method")))} (σ² {ms.get("gmm_var"):g} for the mixture), D_H '
               f'smoothing {ms.get("smoothing"):g} bins, FCD windows {card.get("FCD_window_s"):g} s; settings for {e(str(ms.get("data_kind")))} '
               f'data ({e(str(ms.get("chosen_by")))}).</p>')
    return "\n".join(out)


def _filled(x: np.ndarray) -> np.ndarray:
    """Censored frames (NaN rows) set to 0 (the training mean in z-units), for spectra and figures."""
    return np.where(np.isfinite(x), x, 0.0)


def data_latent(model: Any, x: np.ndarray | None) -> np.ndarray | None:
    """The latent states the model infers from normalised data x (T, N): the deconvolved teacher
    mapped to latent states as training does (`ConvSSMNet.init_state`); None when not available."""
    if x is None:
        return None
    try:
        import torch

        from dsrecon.signal.deconvolution import wiener_deconvolve

        d = wiener_deconvolve(_filled(x), model.kernel_.taps)
        d = d[np.isfinite(d).all(1)]
        net = model._net()
        with torch.no_grad():
            z = net.init_state(torch.as_tensor(d, dtype=torch.float32))[:, : net.M]
        return z.double().numpy()
    except Exception:  # a model without the ConvSSM internals (e.g. a test double): no reference
        return None


def build_report(
    model: Any,
    output: str | Path,
    *,
    data: Recording | None = None,
    lyapunov_steps: int = 100_000,
    k_max: int = 10,
    seed: int = 0,
    lead: list[tuple[str, str]] | Callable[[dict, dict | None], list[tuple[str, str]]] | None = None,
) -> dict[str, Any]:
    """Analyse ``model`` (a loaded run), draw the figures and write the HTML report atomically.

    data: a test Recording for the scores (each beside the VAR(1) baseline and the floor) and the
    data-vs-model figures (optional). ``lead``: (heading, HTML) sections shown first, after the
    verdict (the demo's latent-vs-truth comparison), or a function of (analysis, scorecard) giving
    them. Returns {"report", "scores" (the scorecard without arrays, or None), "analysis",
    "verdict", "warnings", "lead"}.
    """
    from dsrecon.evaluation import fit_warnings, model_scorecard, public, with_regime
    from dsrecon.metrics.analysis import analyze_model_full
    from dsrecon.metrics.yardsticks import spread_of, verdict
    from dsrecon.plots import figures as F

    card = None
    if data is not None and hasattr(model, "score"):
        card = model_scorecard(model, data, seed=seed)
    analysis, arrays = analyze_model_full(model, data=data, lyapunov_steps=lyapunov_steps, k_max=k_max, seed=seed)
    ly = analysis.get("lyapunov", {})
    regime = ly.get("regime")
    config = dict(getattr(model, "config", {}) or {})
    tr = float(model.tr)
    names = list(model.names)
    norm = getattr(model, "norm_", None)
    z = (lambda a: norm.apply(a)) if norm is not None else (lambda a: np.asarray(a, dtype=np.float64))  # noqa: E731
    if card is not None:
        with_regime(card, regime)
        v = card["verdict_detail"]
        warnings, long_run = card["warnings"], card["long_run"]
    else:
        long_run = model.long_run() if hasattr(model, "long_run") and not config.get("n_inputs") else None
        spread = long_run["spread"] if long_run else spread_of(z(arrays["generated"]))
        v = verdict(None, None, regime=regime, spread=spread, diverged=bool((long_run or {}).get("diverged")) or "error" in ly)
        if v["state"] not in ("collapsed", "diverged"):
            v = {**v, "text": f"{v['state']}; no test data given (--data TEST.tsv), so no scores beside the baselines"}
        warnings = fit_warnings(config, long_run)
    collapsed = v["state"] == "collapsed"
    kind = (card or {}).get("metric_settings", {}).get("data_kind")
    smoothing = (card or {}).get("metric_settings", {}).get("smoothing", 0.0)
    x = card["series"]["test"] if card is not None else None
    mask = data.mask if data is not None else None
    gen_long = z(arrays["generated"])
    n_show = min(len(gen_long), 2000 if x is None else len(x))
    figs: list[tuple[str, Path, str]] = []  # (section, png, caption)
    run_dir = getattr(model, "run_dir", None)
    with tempfile.TemporaryDirectory(prefix="dsrecon-report-") as tmp:
        t = Path(tmp)
        if card is not None:
            figs += _comparison_figures(card, t, tr, names, mask, kind, smoothing)
        ts_gen = card["series"]["generated"] if card is not None else gen_long[-n_show:]
        F.time_series(None if x is None else _filled(x), ts_gen, t / "timeseries", tr=tr, names=names, min_span=4.0)
        k = len(F.shown_regions(len(names), 8))
        figs.append(("Time series and state space", t / "timeseries.png",
                     f"Data (blue) and the model (red), {'all ' + str(len(names)) + ' regions' if k == len(names) else f'{k} of {len(names)} regions, evenly spaced'}, "
                     "in z-units of the training data, one scale for every panel. The red trace is a free run of the model (from the end of "
                     "its training data), not a prediction: it is not expected to track the data frame by frame; compare amplitude, rhythm "
                     "and how the regions move together."))
        obs_a = None if x is None else _filled(x)
        for dims in (2, 3):
            F.attractor(obs_a, gen_long[-n_show:], t / f"attractor{dims}d", dims=dims, names=names, min_span=0.0 if obs_a is not None else 4.0)
            figs.append(("Time series and state space", t / f"attractor{dims}d.png",
                         f"{dims}-D projection of data and model (PCA of the data when N > {dims}), both panels on the same axes."))
        F.fixed_points_on_attractor(arrays["latent"], arrays["cycles"], t / "fixedpoints",
                                    reference=data_latent(model, x if x is not None else _train_tail(card, model)))
        figs.append(("Dynamics", t / "fixedpoints.png", "Fixed points and cycles (circle stable, cross unstable, diamond saddle) on the "
                     "model's latent free run (red), over the latent states the model infers from the data (light blue), on one scale."))
        lyap = arrays["lyapunov"]
        if lyap is not None and len(lyap.running_steps):
            F.lyapunov_convergence(lyap.running_steps, lyap.running, t / "lyapunov", unit="1/s")
            figs.append(("Dynamics", t / "lyapunov.png", "Convergence of the Lyapunov spectrum (per second)"))
        log_path = Path(run_dir) / "training_log.tsv" if run_dir else None
        if log_path is not None and log_path.exists():
            F.training_curves(log_path, t / "training")
            figs.append(("Training", t / "training.png", "Training curves: loss, forcing α, and the validation D_stsp and D_H (the "
                         "training's own check: a long free run against all observed frames; not the test scores above)."))
        if card is not None and data is not None and data.inputs is not None:
            from dsrecon.io.events import event_locked_mean, onsets_of

            window = max(2, min(int(round(20.0 / tr)), data.n_frames // 4))  # 20 s after each onset
            g = card["series"]["generated"]
            obs_r, gen_r = {}, {}
            for name, ons in zip(model.input_names, onsets_of(data.inputs)):
                o = event_locked_mean(x, ons, window)
                if o is not None:
                    obs_r[name], gen_r[name] = o, event_locked_mean(g, ons, window)
            if obs_r:
                F.event_locked(obs_r, gen_r, t / "eventlocked", tr=tr, names=names)
                figs.append(("Time series and state space", t / "eventlocked.png", "Event-locked mean response per condition (z-scored, "
                             "minus the frame before the onset): observed (blue) vs the model driven by the same events (red)"))
        provenance = {
            "run": str(run_dir) if run_dir else None,
            "training_inputs": config.get("inputs"),
            "training_provenance": config.get("provenance"),
            "data_hash": config.get("data_hash"),
            "test_data": None if data is None else {"source": data.source, "frames": data.n_frames, "regions": data.n_regions, "tr": data.tr},
            "seed": seed,
        }
        name = Path(run_dir).name if run_dir else "model"
        if callable(lead):
            lead = lead(analysis, card)
        text = _render_run_report(name, v["text"], card, warnings, config, analysis, figs, provenance, collapsed, data, lead)
    write_text_atomic(output, text)
    return {"report": str(output), "scores": None if card is None else public(card), "analysis": analysis, "verdict": v["text"],
            "warnings": warnings, "card": card}


def _train_tail(card: Any, model: Any) -> np.ndarray | None:
    """The last 2 000 frames of the model's training data (normalised), for figures without test data."""
    from dsrecon.evaluation import training_split_of

    segs = training_split_of(model)[0] if card is None else card["series"].get("train")
    if not segs:
        return None
    return np.concatenate(segs)[-2000:]


def _comparison_figures(card: dict, t: Path, tr: float, names: list[str], mask, kind: str | None, smoothing: float) -> list[tuple[str, Path, str]]:
    """FC, FCD, spectra and per-region D_H of data, model and VAR(1)."""
    from dsrecon.errors import DataError
    from dsrecon.metrics.connectivity import fc_matrix, fcd_values, fcd_window, window_fcs
    from dsrecon.metrics.spectrum import hellinger_per_dim
    from dsrecon.plots import figures as F

    out: list[tuple[str, Path, str]] = []
    x, g, var = card["series"]["test"], card["series"]["generated"], card["series"].get("VAR1")
    m = np.ones(x.shape[0], bool) if mask is None else np.asarray(mask, bool)
    base = card.get("baselines") or {}
    vb, fl = base.get("VAR1") or {}, base.get("floor") or {}

    def beside(k: str) -> str:
        return f"{k} {fmt_value(card.get(k))}" + (f" (VAR(1) {fmt_value(vb.get(k))}, floor {fmt_value(fl.get(k))})" if vb else "")

    N = x.shape[1]
    if N >= 2 and np.isfinite(g).all():
        F.fc_matrices(fc_matrix(x[m]), fc_matrix(g[m]), t / "fc", names=names, title=f"{beside('FC_corr')}; {beside('FC_rmse')}")
        out.append(("Connectivity", t / "fc.png", f"Functional connectivity (Pearson correlation of every pair of the {N} regions) of the "
                    "test data and of the model's free run, and their difference; one colour scale, −1 to 1. FC_corr compares the "
                    "patterns (1 = the same), FC_rmse the values (0 = identical)."))
        window_s = float(card.get("FCD_window_s") or 30.0)
        try:
            w, step = fcd_window(tr, window_s)
            xs, gs = x[m], g[m]
            with np.errstate(invalid="ignore", divide="ignore"):  # a constant run's window FCs are all equal
                mats = {k: np.corrcoef(window_fcs(a, w, step)) for k, a in (("data", xs), ("model", gs))}
            vals = {"data": fcd_values(xs, w, step), "model": fcd_values(gs, w, step)}
            if var is not None and np.isfinite(var).all():
                vals["VAR(1)"] = fcd_values(var[m], w, step)
            F.fcd_panels({k: np.nan_to_num(v) for k, v in mats.items()}, vals, t / "fcd", window_s, title=beside("FCD_KS"))
            out.append(("Connectivity", t / "fcd.png", f"Functional connectivity dynamics: FC in {window_s:g}-s windows ({w} frames, moved "
                        f"by {step}); each matrix holds the correlation between the FCs of two windows, and the histograms the values "
                        "FCD_KS compares (KS distance: 0 = same distribution, 1 = disjoint)."))
        except DataError as e:
            card.setdefault("notes", []).append(f"no FCD figure: {e}")
    band = F.BOLD_BAND if kind == "bold" else None
    F.power_spectra(_filled(x), g, t / "spectra", tr=tr, names=names, smoothing=smoothing, baseline=var, band=band)
    out.append(("Spectra", t / "spectra.png", "Power spectra as D_H compares them (each region z-scored, smoothed by "
                f"{smoothing:g} frequency bins, normalised) on log-log axes"
                + (f"; the shaded band is {band[0]:g}–{band[1]:g} Hz, where resting-state BOLD fluctuations live" if band else "")
                + (f". {N} regions: the median over regions with the quartile band" if N > 4 else "")
                + ". A constant model run has no spectrum and is not drawn."))
    dh = hellinger_per_dim(g, _filled(x), smoothing=smoothing) if np.isfinite(g).all() else np.full(N, np.nan)
    dv = hellinger_per_dim(var, _filled(x), smoothing=smoothing) if var is not None and np.isfinite(var).all() else None
    F.region_dh(dh, names, t / "region_dh", baseline=dv)
    out.append(("Spectra", t / "region_dh.png", f"D_H of each of the {N} regions, sorted from the best to the worst, with the VAR(1)'s "
                "D_H of the same region (grey)" + ("; the worst six are named" if N > 30 else "") + ". Test D_H is their mean."))
    return out


def _render_run_report(name: str, verdict_text: str, card: dict | None, warnings: list[str], config: dict, analysis: dict,
                       figs: list[tuple[str, Path, str]], provenance: dict, collapsed: bool, data: Recording | None,
                       lead: list[tuple[str, str]] | None) -> str:
    e = html.escape
    headline = verdict_text[:1].upper() + verdict_text[1:]
    parts = page_head(f"{name}: {verdict_text} (dsrecon report)")
    parts.append(f'<h1 id="verdict">{e(headline)}</h1>')
    what = f"dsrecon report of {name}"
    if data is not None:
        what += f" · test data {data.source} ({data.n_frames} frames, {data.n_regions} regions, TR {data.tr:g} s)"
    parts.append(f'<p class="muted">{e(what)} · generated {e(_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))} '
                 f'by dsrecon {e(versions().get("dsrecon", ""))}</p>')
    msgs = config.get("fit_messages") or []
    if warnings:
        parts.append('<div class="warn"><b>Warnings from the fit</b><ul>' + "".join(f"<li>{e(w)}</li>" for w in warnings) + "</ul></div>")
    for head, body in lead or []:
        parts += [f"<h2>{e(head)}</h2>", body]
    if card is not None:
        parts += ["<h2>Scores on the test data, beside their yardsticks</h2>", score_rows(card)]
    parts += ["<h2>Dynamics of the model</h2>", quantity_table(metrics_rows(card, analysis, collapsed=collapsed))]
    t = config.get("training") or {}
    if t.get("best_val_D_stsp") is not None:
        parts.append(f'<p class="muted">Validation D_stsp {fmt_value(t.get("best_val_D_stsp"))} (epoch {t.get("best_epoch")}): the fit\'s own '
                     "check, a long free run against every observed frame of the training data; it picks the model kept and is not "
                     "comparable with the test D_stsp above.</p>")
    section = None
    for sec, png, cap in figs:
        if sec != section:
            parts.append(f"<h2>{e(sec)}</h2>")
            section = sec
        parts.append(figure_html(png, cap))
    cycles = analysis.get("fixed_points", {}).get("cycles") or []
    if cycles:
        parts.append(details(f"Fixed points and cycles: the table ({len(cycles)} found)", cycles_table(cycles)))
    if msgs:
        parts.append(details(f"The fit's messages ({len(msgs)})", "<pre>" + e("\n".join(msgs)) + "</pre>"))
    parts += page_tail(config, provenance)
    return "\n".join(parts) + "\n"


__all__ = ["build_report", "metrics_rows", "score_rows", "data_latent"]
