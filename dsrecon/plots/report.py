"""One self-contained HTML report for a fitted run: figures embedded as base64 PNG, no external
URLs, stylesheets or scripts, so it can be mailed to a colleague and opened anywhere."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from dsrecon._util import to_json, versions, write_text_atomic
from dsrecon.io.recording import Recording

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ccc;padding:.3em .7em;text-align:left}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;border:1px solid #eee;margin:.4em 0}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em;border:1px solid #e5e5e5}
.muted{color:#666;font-size:.9em}
"""


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, (float, np.floating)):
        return "NaN" if not np.isfinite(v) else f"{float(v):.4g}"
    return str(v)


def _img(png: Path, alt: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption class="muted">{html.escape(alt)}</figcaption></figure>'


def metrics_rows(scores: dict[str, Any] | None, analysis: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """(quantity, value, note) rows of the report's metrics table."""
    rows: list[tuple[str, Any, str]] = []
    if scores:
        rows.append(("D_stsp", scores.get("D_stsp"), f"state-space divergence ({scores.get('D_stsp_method', '')}), lower is better"))
        rows.append(("D_H", scores.get("D_H"), "Hellinger distance of power spectra, lower is better"))
        n = scores.get("n")
        if "PE_n" in scores:
            rows.append((f"PE{n}", scores.get("PE_n"), f"{n}-step prediction error"))
    ly = analysis.get("lyapunov", {})
    if "error" in ly:
        rows.append(("Lyapunov spectrum", ly["error"], ""))
    else:
        rows.append(("λ_max per step", ly.get("lambda_max_per_step"), f"{ly.get('n_steps')} steps, QR method"))
        rows.append(("λ_max per second", ly.get("lambda_max_per_second"), f"per step / TR ({analysis.get('tr')} s)"))
        rows.append(("Kaplan–Yorke dimension", ly.get("kaplan_yorke_dimension"), ""))
        rows.append(("regime", ly.get("regime"), "from the sign of λ_max"))
    cd = analysis.get("correlation_dimension", {})
    rows.append(("correlation dimension (generated, latent)", cd.get("generated_latent"), "Grassberger–Procaccia"))
    rows.append(("correlation dimension (generated, observed)", cd.get("generated_observed"), ""))
    rows.append(("correlation dimension (data)", cd.get("observed"), ""))
    fp = analysis.get("fixed_points", {})
    by: dict[str, dict[str, int]] = {}
    for c in fp.get("cycles", []):
        by.setdefault(str(c["period"]), {}).setdefault(c["stability"], 0)
        by[str(c["period"])][c["stability"]] += 1
    desc = "; ".join(f"period {k}: " + ", ".join(f"{n} {s}" for s, n in sorted(v.items())) for k, v in sorted(by.items(), key=lambda t: int(t[0])))
    rows.append(("fixed points and cycles", desc or "none found", f"method: {fp.get('method', '')}, k ≤ {analysis.get('k_max')}"))
    return rows


def render_html(
    title: str,
    rows: list[tuple[str, Any, str]],
    figures: list[tuple[Path, str]],
    config: dict[str, Any],
    provenance: dict[str, Any],
    cycles: list[dict[str, Any]] | None = None,
) -> str:
    """The report as one HTML string (figures as (png path, caption))."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta name="generator" content="dsrecon {e(versions().get("dsrecon", ""))}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f'<p class="muted">generated {e(_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))} by dsrecon {e(versions().get("dsrecon", ""))}</p>',
        "<h2>Metrics</h2><table><tr><th>quantity</th><th>value</th><th>note</th></tr>",
    ]
    for q, v, note in rows:
        cls = ' class="num"' if isinstance(v, (int, float, np.floating)) else ""
        parts.append(f"<tr><td>{e(q)}</td><td{cls}>{e(_fmt(v))}</td><td class=\"muted\">{e(note)}</td></tr>")
    parts.append("</table>")
    if cycles:
        parts.append("<h2>Fixed points and cycles</h2><table><tr><th>period</th><th>stability</th><th>max |eigenvalue|</th><th>first point (latent)</th></tr>")
        for c in cycles[:50]:
            pt = ", ".join(f"{x:.3g}" for x in np.asarray(c["points"])[0][:6])
            parts.append(f"<tr><td class=\"num\">{c['period']}</td><td>{e(c['stability'])}</td><td class=\"num\">{c['max_abs_eigenvalue']:.4g}</td><td>({e(pt)}{', …' if np.asarray(c['points']).shape[1] > 6 else ''})</td></tr>")
        parts.append("</table>")
        if len(cycles) > 50:
            parts.append(f'<p class="muted">{len(cycles) - 50} more not shown.</p>')
    parts.append("<h2>Figures</h2>")
    parts.extend(_img(p, cap) for p, cap in figures)
    parts.append("<h2>Data provenance</h2>")
    parts.append(f"<pre>{e(to_json(provenance))}</pre>")
    parts.append("<h2>Model configuration</h2>")
    parts.append(f"<pre>{e(to_json(config))}</pre>")
    parts.append("<h2>Versions</h2><table>")
    for k, v in versions().items():
        parts.append(f"<tr><td>{e(k)}</td><td>{e(str(v))}</td></tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts) + "\n"


def build_report(
    model: Any,
    output: str | Path,
    *,
    data: Recording | None = None,
    lyapunov_steps: int = 100_000,
    k_max: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """Analyse ``model`` (a loaded run), draw the figures and write the HTML report atomically.

    data: a test Recording for D_stsp / D_H and the observed-vs-generated figures (optional).
    Returns {"report": path, "scores", "analysis"}.
    """
    from dsrecon.metrics.analysis import analyze_model_full
    from dsrecon.plots import figures as F

    scores = None
    if data is not None and hasattr(model, "score"):
        scores = model.score(data, seed=seed)
    analysis, arrays = analyze_model_full(model, data=data, lyapunov_steps=lyapunov_steps, k_max=k_max, seed=seed)
    tr = float(model.tr)
    gen = arrays["generated"]
    obs = arrays["observed"]
    n_show = min(len(gen), 2000 if obs is None else len(obs))
    gen_show = gen[-n_show:]
    figs: list[tuple[Path, str]] = []
    with tempfile.TemporaryDirectory(prefix="dsrecon-report-") as tmp:
        t = Path(tmp)
        F.time_series(obs, gen_show, t / "timeseries", tr=tr, names=list(model.names))
        figs.append((t / "timeseries.png", "Observed (blue) vs generated (red) time series per region"))
        F.attractor(obs, gen_show, t / "attractor2d", dims=2)
        figs.append((t / "attractor2d.png", "2-D attractor projection (PCA on the data when N > 2)"))
        F.attractor(obs, gen_show, t / "attractor3d", dims=3)
        figs.append((t / "attractor3d.png", "3-D attractor projection (PCA on the data when N > 3)"))
        F.power_spectra(obs, gen_show, t / "spectra", tr=tr)
        figs.append((t / "spectra.png", "Power spectra of data and model"))
        run_dir = getattr(model, "run_dir", None)
        log_path = Path(run_dir) / "training_log.tsv" if run_dir else None
        if log_path is not None and log_path.exists():
            F.training_curves(log_path, t / "training")
            figs.append((t / "training.png", "Training curves (loss, forcing α, validation D_stsp and D_H)"))
        lyap = arrays["lyapunov"]
        if lyap is not None and len(lyap.running_steps):
            F.lyapunov_convergence(lyap.running_steps, lyap.running, t / "lyapunov", unit="1/s")
            figs.append((t / "lyapunov.png", "Convergence of the Lyapunov spectrum (per second)"))
        if scores is not None and data is not None and data.inputs is not None and "generated_test_period" in scores:
            from dsrecon.io.events import event_locked_mean, onsets_of

            window = max(2, min(int(round(20.0 / tr)), data.n_frames // 4))  # 20 s after each onset
            x = model.norm_.apply(data.data)
            g = scores["generated_test_period"]
            obs_r, gen_r = {}, {}
            for name, ons in zip(model.input_names, onsets_of(data.inputs)):
                o = event_locked_mean(x, ons, window)
                if o is not None:
                    obs_r[name], gen_r[name] = o, event_locked_mean(g, ons, window)
            if obs_r:
                F.event_locked(obs_r, gen_r, t / "eventlocked", tr=tr, names=list(model.names))
                figs.append((t / "eventlocked.png", "Event-locked mean response per condition (z-scored, minus the frame before the "
                             "onset): observed (blue) vs the model driven by the same events (red)"))
        F.fixed_points_on_attractor(arrays["latent"], arrays["cycles"], t / "fixedpoints")
        figs.append((t / "fixedpoints.png", "Fixed points and cycles on the latent attractor (circle stable, cross unstable, diamond saddle)"))
        config = dict(getattr(model, "config", {}) or {})
        provenance = {
            "run": str(run_dir) if run_dir else None,
            "training_inputs": config.get("inputs"),
            "training_provenance": config.get("provenance"),
            "data_hash": config.get("data_hash"),
            "test_data": None if data is None else {"source": data.source, "frames": data.n_frames, "regions": data.n_regions, "tr": data.tr},
            "seed": seed,
        }
        title = f"dsrecon report: {Path(run_dir).name if run_dir else 'model'}"
        text = render_html(title, metrics_rows(scores, analysis), figs, config, provenance, analysis["fixed_points"]["cycles"])
    write_text_atomic(output, text)
    return {"report": str(output), "scores": scores, "analysis": analysis}


def read_participants(path: str | Path, column: str | None) -> dict[str, str]:
    """participants.tsv → {subject id (no 'sub-'): value of ``column``}; a DataError naming the
    file when it cannot be read or has no such column."""
    from dsrecon.errors import DataError

    p = Path(path)
    try:
        lines = [ln.rstrip("\r\n") for ln in p.read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    if not lines:
        raise DataError(f"{p}: empty (expected a participants.tsv with a participant_id column)")
    head = lines[0].split("\t")
    if "participant_id" not in head:
        raise DataError(f"{p}: no participant_id column (columns: {', '.join(head)})")
    if column is not None and column not in head:
        raise DataError(f"{p}: --color-by {column}: no such column (columns: {', '.join(head)})")
    i, j = head.index("participant_id"), head.index(column) if column is not None else None
    out = {}
    for ln in lines[1:]:
        cells = ln.split("\t")
        sid = cells[i][4:] if cells[i].startswith("sub-") else cells[i]
        out[sid] = cells[j] if j is not None and j < len(cells) else ""
    return out


def build_group_report(group: Any, output: str | Path, *, participants: dict[str, str] | None = None, color_by: str | None = None,
                       lyapunov_steps: int = 20_000, seed: int = 0) -> dict[str, Any]:
    """The report of a group run (`dsrecon fit-group`): the subjects in the feature space (coloured
    by a participants.tsv column when given), a table per subject (features, λ_max, regime), the
    training curves and the configuration. Returns {"report", "subjects": [rows]}."""
    from dsrecon.errors import DivergenceError
    from dsrecon.metrics.analysis import _regime, _state_from_latent
    from dsrecon.metrics.lyapunov import dynamics_lyapunov
    from dsrecon.plots import figures as F

    ids = group.subjects
    feats = np.asarray(group.features_)
    rows_out = []
    for i, sid in enumerate(ids):
        m = group.subject(sid)
        row = {"subject": sid, **{f"f{k + 1}": float(feats[i, k]) for k in range(feats.shape[1])}}
        if color_by is not None:
            row[color_by] = (participants or {}).get(sid)
        try:
            lat = m.simulate(2000, seed=seed)["latent"]
            ly = dynamics_lyapunov(m.dynamics, _state_from_latent(m.dynamics, lat[-1]), n_steps=lyapunov_steps,
                                   transient=min(1000, lyapunov_steps), dt=m.tr)
            row.update(lambda_max_per_second=ly.lambda_max, regime=_regime(ly.exponents))
        except DivergenceError:
            row.update(lambda_max_per_second=None, regime="diverged")
        rows_out.append(row)
    figs: list[tuple[Path, str]] = []
    e = html.escape
    with tempfile.TemporaryDirectory(prefix="dsrecon-report-") as tmp:
        t = Path(tmp)
        color = [r.get(color_by) for r in rows_out] if color_by is not None else None
        F.feature_scatter(feats, ids, t / "features", color=color, color_label=color_by)
        figs.append((t / "features.png", "Subjects in the feature space" + (f", coloured by {color_by} (participants.tsv)" if color_by else "")))
        run_dir = getattr(group, "run_dir", None)
        log_path = Path(run_dir) / "training_log.tsv" if run_dir else None
        if log_path is not None and log_path.exists():
            F.training_curves(log_path, t / "training")
            figs.append((t / "training.png", "Training curves (mean loss over subjects, α, mean validation D_stsp and D_H)"))
        cfg = dict(group.config)
        title = f"dsrecon group report: {Path(run_dir).name if run_dir else 'group'}"
        rows = [("subjects", len(ids), ""), ("features F", int(cfg.get("features", 0)), cfg.get("scheme", "")),
                ("backend", cfg.get("backend"), f"latent dim {cfg.get('latent_dim')}")]
        text = render_html(title, rows, figs, {k: v for k, v in cfg.items() if k != "subjects"},
                           {"run": str(run_dir) if run_dir else None, "subjects": cfg.get("subjects"), "seed": seed})
    cols = list(rows_out[0]) if rows_out else ["subject"]
    table = ["<h2>Subjects</h2><table><tr>" + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr>"]
    for r in rows_out:
        table.append("<tr>" + "".join(f'<td class="num">{e(_fmt(r.get(c)))}</td>' if isinstance(r.get(c), float)
                                      else f"<td>{e(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>")
    table.append("</table>")
    text = text.replace("<h2>Figures</h2>", "\n".join(table) + "\n<h2>Figures</h2>", 1)
    write_text_atomic(output, text)
    return {"report": str(output), "subjects": rows_out}


def html_is_self_contained(text: str) -> bool:
    """No external resource references (http(s)://, //host, <link>, <script src>)."""
    low = text.lower()
    return not any(s in low for s in ('src="http', "src='http", 'href="http', "<link", "<script", 'src="//', "url(http"))


__all__ = ["build_report", "build_group_report", "read_participants", "render_html", "metrics_rows", "html_is_self_contained"]
