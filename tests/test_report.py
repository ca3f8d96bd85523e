"""`dsrecon report` and analyze_model: a self-contained HTML report that a real browser opens cleanly."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from dsrecon.metrics.analysis import analyze_model
from dsrecon.plots.html import html_is_self_contained

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run_and_data(tmp_path_factory):
    """A tiny fitted run on Lorenz63-through-HRF data (quality irrelevant: the report is tested)."""
    import dsrecon
    from dsrecon.io.tables import read_table, write_table
    from dsrecon.signal.kernels import convolve_valid, spm_hrf
    from dsrecon.systems import get_system, integrate

    d = tmp_path_factory.mktemp("report")
    x = integrate(get_system("lorenz63"), 700, 0.01, rng=np.random.default_rng(0))
    y = convolve_valid((x - x.mean(0)) / x.std(0), spm_hrf(0.2))
    write_table(d / "x.tsv", y, ["a", "b", "c"], sidecar={"RepetitionTime": 0.2})
    model = dsrecon.ConvSSM(hidden_dim=10, seed=0, epochs=2, batches_per_epoch=3, sequence_length=180, val_every=1)
    model.fit(read_table(d / "x.tsv"), run_dir=d / "run")
    return d / "run", d / "x.tsv"


def test_report_cli_writes_one_self_contained_html(cli, run_and_data, tmp_path):
    run, data = run_and_data
    out = tmp_path / "r.html"
    r = cli("report", run, "--data", data, "-o", out, "--lyapunov-steps", 3000, "--k-max", 2, "--json", "--quiet")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert res["report"] == str(out) and res["seed"] == 0
    assert np.isfinite(res["lambda_max_per_second"]) and "D_stsp" in res
    text = out.read_text()
    assert html_is_self_contained(text)
    assert text.count('src="data:image/png;base64,') >= 7  # 6 analysis figures + training curves
    for needle in ("D_stsp", "λ_max per second", "Kaplan–Yorke dimension", "correlation dimension", "fixed points and cycles", "Model configuration", "Data provenance", "Versions", "torch"):
        assert needle in text, needle
    assert not list(tmp_path.glob(".*.tmp"))


def test_report_errors_are_one_line(cli, run_and_data, tmp_path):
    run, _ = run_and_data
    r = cli("report", tmp_path / "nope", "-o", tmp_path / "r.html")
    assert r.code == 1 and r.err.strip().count("\n") == 0 and "not a run directory" in r.err
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\n1\t2\n3\t4\n5\t6\n")
    r = cli("report", run, "--data", bad, "-o", tmp_path / "r.html")
    assert r.code == 1 and "2 columns" in r.err and not (tmp_path / "r.html").exists()
    assert cli("report", run, "--lyapunov-steps", 0).code == 1


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium browser installed")
def test_report_opens_in_headless_chromium_without_console_errors(cli, run_and_data, tmp_path):
    run, data = run_and_data
    out = tmp_path / "r.html"
    assert cli("report", run, "--data", data, "-o", out, "--lyapunov-steps", 2000, "--k-max", 1, "--quiet").code == 0

    def render(page):
        args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
                "--dump-dom", page.as_uri()]
        p = subprocess.run(args, capture_output=True, text=True, timeout=120)
        return p.returncode, p.stdout, [ln for ln in p.stderr.splitlines() if ":CONSOLE" in ln]

    # the detector itself: a page with a script error is caught
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>undefinedFunction();</script></body></html>")
    assert render(bad)[2], "console errors are not detected by this chromium; the check below would be vacuous"
    code, dom, console = render(out)
    assert code == 0
    assert console == []
    assert "<table>" in dom and len(re.findall(r"<img ", dom)) >= 6


class _Decay(torch.nn.Module):
    """A non-PLRNN map z' = 0.5 z + 0.3 tanh(z) + 0.1 (one fixed point, stable)."""

    M = 2
    state_dim = 2

    def step(self, z):
        return 0.5 * z + 0.3 * torch.tanh(z) + 0.1

    def jacobian(self, z):
        return torch.diag_embed(0.5 + 0.3 / torch.cosh(z) ** 2)


class _FakeModel:
    tr = 2.0
    names = ["a", "b"]

    def __init__(self):
        self.dynamics = _Decay()

    def simulate(self, n_steps, seed=0, data=None):
        z = torch.tensor([[1.0, -1.0]])
        out = []
        for _ in range(n_steps):
            z = self.dynamics.step(z)
            out.append(z[0].numpy().copy())
        lat = np.array(out, dtype=np.float64) + np.random.default_rng(seed).normal(0, 1e-3, (n_steps, 2))
        return {"observed": lat, "latent": lat}


def test_analyze_model_on_a_generic_backend_uses_root_finding():
    res = analyze_model(_FakeModel(), lyapunov_steps=2000, k_max=3, seed=0)
    json.dumps(res)  # plain JSON types only
    ly = res["lyapunov"]
    assert ly["regime"] == "fixed point" and ly["kaplan_yorke_dimension"] == 0.0
    assert ly["lambda_max_per_second"] == pytest.approx(ly["lambda_max_per_step"] / 2.0)
    fp = res["fixed_points"]
    assert fp["method"] == "root" and len(fp["cycles"]) == 1 and fp["cycles"][0]["stability"] == "stable"
    z = np.array(fp["cycles"][0]["points"][0])
    # at the fixed point, λ per step = log of the Jacobian's largest eigenvalue
    assert 0.5 * z + 0.3 * np.tanh(z) + 0.1 == pytest.approx(z, abs=1e-6)
    assert ly["lambda_max_per_step"] == pytest.approx(np.log(np.max(0.5 + 0.3 / np.cosh(z) ** 2)), abs=1e-3)


def test_analyze_model_on_a_fitted_plrnn_uses_scyfi(run_and_data):
    import dsrecon

    model = dsrecon.load_run(run_and_data[0])
    res = analyze_model(model, lyapunov_steps=2000, k_max=2, seed=0)
    assert res["fixed_points"]["method"] == "scyfi"
    pw = model.dynamics.piecewise_linear_params()
    from dsrecon.metrics.fixed_points import pwl_from_params

    pwl = pwl_from_params(pw)
    for c in res["fixed_points"]["cycles"]:
        pts = np.array(c["points"])
        np.testing.assert_allclose(pwl.step(pts), np.roll(pts, -1, axis=0), atol=1e-8)
        # the torch model's own step agrees with the SCYFI parameter form
        with torch.no_grad():
            nxt = model.dynamics.step(torch.as_tensor(pts, dtype=torch.float32)).double().numpy()
        np.testing.assert_allclose(nxt, np.roll(pts, -1, axis=0), atol=1e-4)
