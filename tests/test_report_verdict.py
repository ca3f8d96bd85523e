"""The report tells the truth: the verdict first, data and model on one scale (a collapsed model is drawn
as collapsed), the fit's warnings, and a page that stays readable at 94 regions (headless chromium)."""

from __future__ import annotations

import base64
import html as htmlmod
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from dsrecon.plots.figures import read_axes_metadata

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TINY = ["--epochs", "3", "--batches-per-epoch", "2", "--batch-size", "4", "--hidden-dim", "8", "--sequence-length", "60",
        "--val-every", "1", "--quiet"]
#: the stated size of a 94-region report: bytes on disk and rendered height at 1200 px wide
MAX_BYTES_94 = 2_000_000
MAX_HEIGHT_94 = 9_000


def figures(text: str) -> dict[str, bytes]:
    """caption → PNG bytes of every figure embedded in a report."""
    out = {}
    for alt, data in re.findall(r'<figure><img alt="([^"]*)" src="data:image/png;base64,([^"]+)">', text):
        out[htmlmod.unescape(alt)] = base64.b64decode(data)
    return out


def figure(text: str, starts: str) -> list[dict]:
    hits = [png for cap, png in figures(text).items() if cap.startswith(starts)]
    assert len(hits) == 1, (starts, list(figures(text)))
    return read_axes_metadata(hits[0])


@pytest.fixture(scope="module")
def collapsed(tmp_path_factory):
    """A tiny fit whose latent map is then made contracting (W1 = W2 = 0, A halved): its free run
    collapses onto a fixed point, as a failed fit's does; the report must show it as such."""
    import dsrecon
    from dsrecon.io.tables import read_table, write_table
    from dsrecon.signal.kernels import convolve_valid, spm_hrf
    from dsrecon.systems import get_system, integrate

    d = tmp_path_factory.mktemp("collapsed")
    x = integrate(get_system("lorenz63"), 700, 0.01, rng=np.random.default_rng(0))
    y = convolve_valid((x - x.mean(0)) / x.std(0), spm_hrf(0.2))
    write_table(d / "x.tsv", y, ["x", "y", "z"], sidecar={"RepetitionTime": 0.2})
    model = dsrecon.ConvSSM(hidden_dim=8, seed=0, epochs=2, batches_per_epoch=2, sequence_length=180, val_every=1)
    model.fit(read_table(d / "x.tsv"), run_dir=d / "run")
    dyn = model.dynamics
    with torch.no_grad():
        dyn.W1.zero_()
        dyn.W2.zero_()
        dyn.A.mul_(0.5)
    model.save(d / "run")
    return d


@pytest.fixture(scope="module")
def collapsed_report(collapsed):
    from dsrecon.cli.main import main

    out = collapsed / "report.html"
    assert main(["report", str(collapsed / "run"), "--data", str(collapsed / "x.tsv"), "-o", str(out), "--lyapunov-steps", "1000",
                 "--k-max", "1", "--quiet"]) == 0
    return out.read_text()


def test_a_collapsed_model_report_opens_with_the_verdict(collapsed_report):
    body = collapsed_report.split("<body>", 1)[1]
    first = re.search(r"<(\w+)[^>]*>(.*?)</\1>", body, re.S)
    assert first.group(1) == "h1" and first.group(2).startswith("Collapsed to a fixed point"), first.group(0)
    assert re.search(r"<title>run: collapsed to a fixed point", collapsed_report)


def test_a_collapsed_model_is_drawn_on_the_datas_axes(collapsed_report):
    for dims in ("2-D", "3-D"):
        axes = {a["title"]: a for a in figure(collapsed_report, f"{dims} projection")}
        data, model = axes["data"], axes["model"]
        for lim in ("xlim", "ylim") + (("zlim",) if dims == "3-D" else ()):
            assert data[lim] == model[lim], (dims, lim, data[lim], model[lim])
            assert model[lim][1] - model[lim][0] > 1.0  # the data's scale (z-units), not the collapsed run's ~1e-9
        assert any("collapsed" in t for t in model.get("texts", []))


def test_time_series_panels_share_one_scale(collapsed_report):
    axes = figure(collapsed_report, "Data (blue) and the model (red)")
    assert len({tuple(a["ylim"]) for a in axes}) == 1 and axes[0]["ylim"][1] - axes[0]["ylim"][0] >= 4.0


def test_a_collapsed_run_has_no_spectrum_and_no_correlation_dimension(collapsed_report):
    texts = [t for a in figure(collapsed_report, "Power spectra") for t in a.get("texts", [])]
    assert any("no spectrum, the run is constant" in t for t in texts)
    assert "not reported: the free run is a fixed point" in collapsed_report
    assert not re.search(r"correlation dimension \(model, latent\)", collapsed_report)


def test_the_fixed_point_figure_keeps_the_datas_scale(collapsed_report):
    (ax,) = figure(collapsed_report, "Fixed points and cycles")
    assert ax["xlim"][1] - ax["xlim"][0] > 0.5 and any("the free run is a point" in t for t in ax.get("texts", []))


def test_the_report_carries_the_fits_warnings(collapsed_report):
    box = re.search(r'<div class="warn">(.*?)</div>', collapsed_report, re.S)
    assert box and "settles on a fixed point" in box.group(1)


def test_every_score_stands_beside_the_baseline_and_the_floor(collapsed_report):
    table = re.search(r"<h2>Scores on the test data, beside their yardsticks</h2>\s*<table>(.*?)</table>", collapsed_report, re.S).group(1)
    assert "<th>VAR(1)</th><th>floor</th>" in table
    for name in ("test D_stsp", "test D_H", "FC_corr", "FC_rmse", "FCD_KS"):
        assert f"<td>{name}</td>" in table


# ------------------------------------------------------------------------- 94 regions in a real browser
@pytest.fixture(scope="module")
def report94(tmp_path_factory):
    """A tiny fit of a 94-region table (Lorenz96 through the HRF, atlas-like names) and its report."""
    from dsrecon.cli.main import main
    from dsrecon.io.tables import write_table
    from dsrecon.systems import simulate_system

    d = tmp_path_factory.mktemp("r94")
    sim = simulate_system("lorenz96", 400, 0.05, 1.0, dim=94, noise=0.05, seed=0)
    names = [f"{h}_ROI{i:02d}" for h in ("L", "R") for i in range(1, 48)]
    write_table(d / "train.tsv", sim["observed"][:300], names, sidecar={"RepetitionTime": 1.0})
    write_table(d / "test.tsv", sim["observed"][300:], names, sidecar={"RepetitionTime": 1.0})
    assert main(["fit", str(d / "train.tsv"), "-o", str(d / "run"), *TINY]) == 0
    out = d / "report.html"
    assert main(["report", str(d / "run"), "--data", str(d / "test.tsv"), "-o", str(out), "--lyapunov-steps", "300", "--k-max", "1",
                 "--quiet"]) == 0
    return out


def test_a_94_region_report_is_under_its_stated_size(report94):
    assert report94.stat().st_size < MAX_BYTES_94


def test_a_94_region_report_names_regions_one_way(report94):
    text = report94.read_text()
    axes = figure(text, "Data (blue) and the model (red)")
    assert [a["title"] for a in axes][:2] == ["L_ROI01", "L_ROI14"]  # 8 of 94, evenly spaced, by the table's names
    assert "8 of 94 regions, evenly spaced" in text


def test_a_94_region_report_summarises_spectra_on_a_log_axis_and_sorts_d_h_per_region(report94):
    text = report94.read_text()
    (spec,) = figure(text, "Power spectra")
    assert spec["xscale"] == "log" and spec["title"] == "all 94 regions: median and quartiles"
    (dh,) = figure(text, "D_H of each of the 94 regions")
    assert dh["xlim"][1] >= 94 and dh["texts"]  # the worst regions by name, or why there is no D_H (a collapsed tiny fit)


def test_per_region_d_h_names_the_worst_regions_at_400(tmp_path):
    from dsrecon.plots.figures import region_dh

    v = np.linspace(0.1, 0.9, 400)
    names = [f"ROI{i:03d}" for i in range(400)]
    png = region_dh(v, names, tmp_path / "dh")[0]
    (ax,) = read_axes_metadata(png)
    assert ax["texts"][0].startswith("worst: ROI399 0.90, ROI398") and ax["xlim"][1] >= 400


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium browser installed")
def test_a_94_region_report_renders_in_headless_chromium(report94, tmp_path):
    # a copy with a probe script (the report itself carries none): it writes what the browser
    # rendered into the title, which --dump-dom prints
    probe = ("<script>const imgs=[...document.images];document.title=JSON.stringify({height:document.documentElement.scrollHeight,"
             "loaded:imgs.filter(i=>i.complete&&i.naturalWidth>0).map(i=>i.alt.slice(0,40)),n:imgs.length,"
             "config:document.body.innerText.includes('\"normalisation\"'),provenance:document.body.innerText.includes('\"data_hash\"'),"
             "open:document.querySelectorAll('details[open]').length});</script>")
    page = tmp_path / "probe.html"
    page.write_text(report94.read_text().replace("</body></html>", probe + "</body></html>"))
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,900",
            "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri()]
    p = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0
    assert [ln for ln in p.stderr.splitlines() if ":CONSOLE" in ln] == []
    got = json.loads(htmlmod.unescape(re.search(r"<title>(.*?)</title>", p.stdout, re.S).group(1)))
    assert got["n"] == len(got["loaded"]) >= 8  # every figure decoded
    assert any(a.startswith("Functional connectivity (") for a in got["loaded"])
    assert any(a.startswith("Functional connectivity dynamics") for a in got["loaded"])
    assert got["height"] < MAX_HEIGHT_94
    assert not got["config"] and not got["provenance"] and got["open"] == 0  # configuration and provenance stay folded away


def test_the_demo_report_leads_with_the_latent_comparison_beside_its_yardsticks(collapsed, tmp_path):
    import dsrecon
    from dsrecon.cli.demo import TRUE_LAMBDA_MAX, demo_lead
    from dsrecon.io.tables import read_table
    from dsrecon.plots.report import build_report

    latent = {"steps": 1000, "latent_D_stsp": 2.5, "latent_D_H": 0.3, "floor_D_stsp": 0.2, "floor_D_H": 0.05, "VAR1_D_stsp": 3.0,
              "VAR1_D_H": 0.6, "VAR1_lambda_max_per_step": -0.004}
    out = tmp_path / "r.html"
    build_report(dsrecon.load_run(collapsed / "run"), out, data=read_table(collapsed / "x.tsv"), lyapunov_steps=500, k_max=1,
                 lead=lambda an, card: demo_lead(latent, an))
    text = out.read_text()
    heads = re.findall(r"<h2>(.*?)</h2>", text)
    assert heads[0] == "Latent attractor against the true Lorenz63" and heads[1].startswith("Scores on the test data")
    lead = text.split("<h2>Latent attractor against the true Lorenz63</h2>", 1)[1].split("</table>", 1)[0]
    assert "<th>VAR(1)</th><th>floor / truth</th>" in lead
    assert re.search(r"<td>latent D_stsp</td><td class=\"num\">2\.5</td><td class=\"num\">3</td><td class=\"num\">0\.2</td>", lead)
    assert f'<td class="num">{TRUE_LAMBDA_MAX:g}</td>' in lead
