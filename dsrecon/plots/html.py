"""The HTML of dsrecon's reports: one page with its stylesheet inline and figures embedded as base64
PNG (no external URLs, stylesheets or scripts), and the pieces the run and group reports share."""

from __future__ import annotations

import base64
import datetime as _dt
import html
from pathlib import Path
from typing import Any

import numpy as np

from dsrecon._util import to_json, versions

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ccc;padding:.3em .7em;text-align:left}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;border:1px solid #eee;margin:.4em 0}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em;border:1px solid #e5e5e5;max-height:30em}
.muted{color:#666;font-size:.9em}
.warn{background:#fff4e5;border-left:4px solid #e08a00;padding:.5em 1em;margin:1em 0}
.warn li{margin:.2em 0}
td.win{color:#1b7f3b} td.loss{color:#b3261e}
details{margin:.6em 0} summary{cursor:pointer;font-weight:600}
"""


def fmt_value(v: Any) -> str:
    """A value as the report shows it (4 significant digits; — for none)."""
    if v is None:
        return "—"
    if isinstance(v, (float, np.floating)):
        return "NaN" if np.isnan(v) else ("inf" if not np.isfinite(v) else f"{float(v):.4g}")
    return str(v)


def figure_html(png: Path, alt: str) -> str:
    """A PNG embedded as a captioned <figure>."""
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption class="muted">{html.escape(alt)}</figcaption></figure>'


def quantity_table(rows: list[tuple[str, Any, str]]) -> str:
    e = html.escape
    parts = ["<table><tr><th>quantity</th><th>value</th><th>note</th></tr>"]
    for q, v, note in rows:
        cls = ' class="num"' if isinstance(v, (int, float, np.floating)) else ""
        parts.append(f"<tr><td>{e(q)}</td><td{cls}>{e(fmt_value(v))}</td><td class=\"muted\">{e(note)}</td></tr>")
    parts.append("</table>")
    return "\n".join(parts)


def details(summary: str, body: str) -> str:
    return f"<details><summary>{html.escape(summary)}</summary>\n{body}\n</details>"


def cycles_table(cycles: list[dict[str, Any]]) -> str:
    e = html.escape
    parts = ["<table><tr><th>period</th><th>stability</th><th>max |eigenvalue|</th><th>first point (latent)</th></tr>"]
    for c in cycles[:50]:
        pt = ", ".join(f"{x:.3g}" for x in np.asarray(c["points"])[0][:6])
        parts.append(f"<tr><td class=\"num\">{c['period']}</td><td>{e(c['stability'])}</td><td class=\"num\">{c['max_abs_eigenvalue']:.4g}</td><td>({e(pt)}{', …' if np.asarray(c['points']).shape[1] > 6 else ''})</td></tr>")
    parts.append("</table>")
    if len(cycles) > 50:
        parts.append(f'<p class="muted">{len(cycles) - 50} more not shown.</p>')
    return "\n".join(parts)


def page_head(title: str) -> list[str]:
    e = html.escape
    return ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
            f'<meta name="generator" content="dsrecon {e(versions().get("dsrecon", ""))}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{e(title)}</title><style>{_CSS}</style></head><body>"]


def page_tail(config: dict[str, Any], provenance: dict[str, Any]) -> list[str]:
    """Provenance, configuration and versions, each in a collapsed section: out of the main flow."""
    e = html.escape
    vers = "<table>" + "".join(f"<tr><td>{e(k)}</td><td>{e(str(v))}</td></tr>" for k, v in versions().items()) + "</table>"
    return ["<h2>Provenance</h2>",
            details("Data provenance", f"<pre>{e(to_json(provenance))}</pre>"),
            details("Model configuration (config.json)", f"<pre>{e(to_json(config))}</pre>"),
            details("Versions", vers), "</body></html>"]


def render_html(
    title: str,
    rows: list[tuple[str, Any, str]],
    figures: list[tuple[Path, str]],
    config: dict[str, Any],
    provenance: dict[str, Any],
    cycles: list[dict[str, Any]] | None = None,
) -> str:
    """A plain report as one HTML string (figures as (png path, caption)): title, metrics table,
    cycles, figures; provenance, configuration and versions in collapsed sections."""
    e = html.escape
    parts = page_head(title) + [
        f"<h1>{e(title)}</h1>",
        f'<p class="muted">generated {e(_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))} by dsrecon {e(versions().get("dsrecon", ""))}</p>',
        "<h2>Metrics</h2>", quantity_table(rows)]
    if cycles:
        parts += ["<h2>Fixed points and cycles</h2>", cycles_table(cycles)]
    parts.append("<h2>Figures</h2>")
    parts.extend(figure_html(p, cap) for p, cap in figures)
    parts += page_tail(config, provenance)
    return "\n".join(parts) + "\n"


def html_is_self_contained(text: str) -> bool:
    """No external resource references (http(s)://, //host, <link>, <script src>)."""
    low = text.lower()
    return not any(s in low for s in ('src="http', "src='http", 'href="http', "<link", "<script", 'src="//', "url(http"))
