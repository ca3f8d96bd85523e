"""The report of a group run (`dsrecon report GROUP`): the subjects in the feature space, a table per
subject, the training curves and the configuration, as one self-contained HTML page."""

from __future__ import annotations

import html
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from dsrecon._util import write_text_atomic
from dsrecon.plots.html import fmt_value, render_html


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
    from dsrecon.metrics.analysis import regime_of, state_from_latent
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
            ly = dynamics_lyapunov(m.dynamics, state_from_latent(m.dynamics, lat[-1]), n_steps=lyapunov_steps,
                                   transient=min(1000, lyapunov_steps), dt=m.tr)
            row.update(lambda_max_per_second=ly.lambda_max, regime=regime_of(ly.exponents))
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
        table.append("<tr>" + "".join(f'<td class="num">{e(fmt_value(r.get(c)))}</td>' if isinstance(r.get(c), float)
                                      else f"<td>{e(fmt_value(r.get(c)))}</td>" for c in cols) + "</tr>")
    table.append("</table>")
    text = text.replace("<h2>Figures</h2>", "\n".join(table) + "\n<h2>Figures</h2>", 1)
    write_text_atomic(output, text)
    return {"report": str(output), "subjects": rows_out}
