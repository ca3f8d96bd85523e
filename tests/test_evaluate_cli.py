"""`dsrecon evaluate --generated G --reference R`: results, output file, and one-line errors."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from dsrecon.io.tables import write_table
from dsrecon.metrics import hellinger_spectral, stsp_binned, stsp_gmm

KEYS = {"D_stsp", "D_stsp_method", "D_H", "FC_corr", "FC_rmse", "FCD_KS", "n_generated", "n_reference"}
#: what the record adds around the metrics (docs/metrics.md, "evaluate --json")
CONTEXT = {"seed", "versions", "baselines", "baselines_info", "metric_settings", "tr", "FCD_window_s", "verdict", "notes"}


@pytest.fixture
def pair(tmp_path):
    t = np.arange(600) * 0.05
    ref = np.c_[np.sin(t), np.cos(1.3 * t), np.sin(0.7 * t)]
    gen = np.c_[np.sin(1.2 * t), np.cos(1.3 * t + 0.2), np.sin(0.5 * t)][:500]
    write_table(tmp_path / "ref.tsv", ref)
    write_table(tmp_path / "gen.tsv", gen)
    return tmp_path / "gen.tsv", tmp_path / "ref.tsv"


def _read(path):
    return np.loadtxt(path, skiprows=1, delimiter="\t", ndmin=2)


def test_json_has_the_metric_keys_and_matches_the_library(cli, pair):
    gen, ref = pair
    r = cli("evaluate", "--generated", gen, "--reference", ref, "--json")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert KEYS <= set(res) and set(res) - KEYS <= CONTEXT
    g, x = _read(gen), _read(ref)
    assert res["D_stsp_method"] == "binned"
    assert res["D_stsp"] == pytest.approx(stsp_binned(g, x), rel=1e-12)
    assert res["D_H"] == pytest.approx(hellinger_spectral(g, x), rel=1e-12)
    assert (res["n_generated"], res["n_reference"]) == (500, 600)
    assert res["seed"] == 0 and "numpy" in res["versions"]
    assert "first 500" in r.err  # the length difference is reported on stderr


def test_identical_tables_give_zero(cli, pair):
    _, ref = pair
    res = json.loads(cli("evaluate", "-g", ref, "-r", ref, "--json", "--quiet").out)
    assert res["D_stsp"] == 0.0 and res["D_H"] < 1e-6


def test_gmm_options_are_used(cli, pair):
    gen, ref = pair
    r = cli("evaluate", "-g", gen, "-r", ref, "--stsp", "gmm", "--gmm-var", "0.3", "--seed", "4", "--json", "-q")
    res = json.loads(r.out)
    assert res["D_stsp_method"] == "gmm" and res["seed"] == 4
    assert res["D_stsp"] == pytest.approx(stsp_gmm(_read(gen), _read(ref), var=0.3, seed=4), rel=1e-12)
    assert r.err == ""


def test_smoothing_and_bins_are_used(cli, pair):
    gen, ref = pair
    res = json.loads(cli("evaluate", "-g", gen, "-r", ref, "--bins", "5", "--smoothing", "1", "--json", "-q").out)
    g, x = _read(gen), _read(ref)
    assert res["D_stsp"] == pytest.approx(stsp_binned(g, x, bins=5), rel=1e-12)
    assert res["D_H"] == pytest.approx(hellinger_spectral(g, x, smoothing=1), rel=1e-12)


def test_table_output(cli, pair):
    gen, ref = pair
    r = cli("evaluate", "-g", gen, "-r", ref)
    assert r.code == 0
    for k in KEYS:
        assert k in r.out


def test_output_file_has_seed_versions_and_inputs(cli, pair, tmp_path):
    gen, ref = pair
    out = tmp_path / "sub" / "metrics.json"
    r = cli("evaluate", "-g", gen, "-r", ref, "-o", out, "--seed", "7", "--json", "-q")
    assert r.code == 0
    rec = json.loads(out.read_text())
    assert KEYS <= set(rec) and rec["seed"] == 7 and "scipy" in rec["versions"]
    assert rec["generated"] == str(gen) and rec["options"]["bins"] == 30
    assert json.loads(r.out)["D_H"] == rec["D_H"]
    assert [p.name for p in out.parent.iterdir()] == ["metrics.json"]  # no temporary left


def test_help_has_an_example(cli):
    r = cli("evaluate", "--help")
    assert r.code == 0 and "dsrecon evaluate --generated" in r.out


def test_gmm_points_first_is_the_default_and_even_is_an_option(cli, tmp_path):
    # 12 000 rows: the first 10 000 of the two tables agree, the last 2 000 differ. The published
    # definition (first 10 000 points, the default) sees identical sets; evenly spaced points do not.
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((12_000, 2))
    gen = np.r_[ref[:10_000], rng.standard_normal((2_000, 2)) + 4.0]
    write_table(tmp_path / "ref.tsv", ref)
    write_table(tmp_path / "gen.tsv", gen)
    g, r = _read(tmp_path / "gen.tsv"), _read(tmp_path / "ref.tsv")
    base = ("evaluate", "-g", tmp_path / "gen.tsv", "-r", tmp_path / "ref.tsv", "--stsp", "gmm", "--json", "-q")
    first = json.loads(cli(*base).out)
    assert first["D_stsp"] == 0.0
    assert json.loads(cli(*base, "--gmm-points", "first").out)["D_stsp"] == 0.0
    even = json.loads(cli(*base, "--gmm-points", "even").out)
    assert even["D_stsp"] == pytest.approx(stsp_gmm(g, r, points="even"), rel=1e-12) and even["D_stsp"] > 0.1
    out = tmp_path / "m.json"
    assert cli(*base, "--gmm-points", "even", "-o", out).code == 0
    assert json.loads(out.read_text())["options"]["gmm_points"] == "even"


def test_unknown_gmm_points_is_a_usage_error(cli, pair):
    gen, ref = pair
    r = cli("evaluate", "-g", gen, "-r", ref, "--gmm-points", "last")
    assert r.code == 2 and "--gmm-points" in r.err


# ---------------------------------------------------------------- the RUN form
def test_run_form_is_passed_through(cli, monkeypatch, tmp_path):
    seen = {}
    fake = types.ModuleType("dsrecon.cli.evaluate_run")
    fake.evaluate_target = lambda target, **kw: seen.update(target=target, **kw)
    monkeypatch.setitem(sys.modules, "dsrecon.cli.evaluate_run", fake)
    r = cli("evaluate", "system", "lorenz63", "--data", tmp_path / "t.tsv", "--bins", "12", "--json")
    assert r.code == 0, r.err
    assert seen["target"] == ["system", "lorenz63"] and seen["bins"] == 12 and seen["as_json"] is True
    assert seen["data"] == tmp_path / "t.tsv" and seen["stsp"] == "auto" and seen["gmm_points"] == "first"


# ---------------------------------------------------------------- bad input: exit 1, one line
def _one_line_error(r, *needles):
    assert r.code == 1, (r.code, r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.err
    assert "Traceback" not in r.err
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])


BAD_TABLES = {
    "ragged": ("a\tb\n1\t2\n3\n4\t5\n", "ragged"),
    "non_numeric": ("a\tb\n1\t2\n3\tfoo\n", "non-numeric"),
    "nan": ("a\tb\n1\t2\nnan\t3\n", "NaN"),
    "inf": ("a\tb\n1\t2\n3\tinf\n", "Inf"),
    "one_row": ("a\tb\n1\t2\n", "1 row"),
}


@pytest.mark.parametrize("kind", sorted(BAD_TABLES))
@pytest.mark.parametrize("side", ["generated", "reference"])
def test_bad_table(cli, pair, tmp_path, kind, side):
    text, needle = BAD_TABLES[kind]
    bad = tmp_path / f"bad_{kind}.tsv"
    bad.write_text(text)
    good_g, good_r = pair
    write_table(good_g, _read(good_g)[:, :2])  # two columns like the bad tables
    write_table(good_r, _read(good_r)[:, :2])
    g, r_ = (bad, good_r) if side == "generated" else (good_g, bad)
    out = tmp_path / "m.json"
    r = cli("evaluate", "-g", g, "-r", r_, "-o", out, "--json")
    _one_line_error(r, bad, needle)
    assert not out.exists()
    assert json.loads(r.out) == {"error": r.err.strip().removeprefix("error: "), "exit_code": 1}  # --json: the failure as JSON


def test_missing_file(cli, pair, tmp_path):
    gen, _ = pair
    out = tmp_path / "m.json"
    r = cli("evaluate", "-g", gen, "-r", tmp_path / "nope.tsv", "-o", out)
    _one_line_error(r, tmp_path / "nope.tsv", "not found")
    assert not out.exists()


def test_column_count_mismatch_names_both_files_and_counts(cli, pair, tmp_path):
    gen, ref = pair
    write_table(gen, _read(gen)[:, :2])
    out = tmp_path / "m.json"
    r = cli("evaluate", "-g", gen, "-r", ref, "-o", out)
    _one_line_error(r, gen, ref, "2 columns", "has 3")
    assert not out.exists()


def test_constant_reference_column_names_the_file(cli, pair, tmp_path):
    gen, ref = pair
    x = _read(ref)
    x[:, 1] = 1.0
    write_table(ref, x)
    _one_line_error(cli("evaluate", "-g", gen, "-r", ref, "--stsp", "binned"), ref, "column 2 is constant")


@pytest.mark.parametrize(
    "opts,needle",
    [
        (["--bins", "0"], "--bins"),
        (["--gmm-var", "0"], "--gmm-var"),
        (["--gmm-var", "-1"], "--gmm-var"),
        (["--smoothing", "-2"], "--smoothing"),
    ],
)
def test_bad_option_values(cli, pair, tmp_path, opts, needle):
    gen, ref = pair
    out = tmp_path / "m.json"
    r = cli("evaluate", "-g", gen, "-r", ref, "-o", out, *opts)
    _one_line_error(r, needle)
    assert not out.exists()


def test_unknown_stsp_method_is_a_usage_error(cli, pair):
    gen, ref = pair
    r = cli("evaluate", "-g", gen, "-r", ref, "--stsp", "foo")
    assert r.code == 2 and "--stsp" in r.err


@pytest.mark.parametrize(
    "args,needle",
    [
        (["-g", "G"], "--reference is required"),
        (["-r", "R"], "--generated is required"),
        (["-g", "G", "-r", "R", "--data", "T"], "--data"),
        (["run", "-g", "G"], "not both"),
    ],
)
def test_missing_or_conflicting_options(cli, args, needle):
    _one_line_error(cli("evaluate", *args), needle)


def test_undefined_metrics_are_null_in_json_with_a_note(cli, pair):
    gen, ref = pair
    g = _read(gen) + 100.0  # no generated point inside the reference range
    g[:, 2] = 0.5  # and a collapsed (constant) dimension
    write_table(gen, g)
    r = cli("evaluate", "-g", gen, "-r", ref, "--json")
    assert r.code == 0
    res = json.loads(r.out)
    assert res["D_stsp"] is None and res["D_H"] is None
    assert "D_stsp is undefined" in r.err and "D_H is undefined" in r.err


def test_system_form_with_parameter_overrides(cli):
    """`evaluate system lorenz63 --param rho=36.5`: the spectrum at that ρ (what the group benchmark's
    true λ_max per subject needs), equal to system_lyapunov at those parameters; the default-parameter
    references (dysts, literature) are left out; --param elsewhere is refused in one line."""
    from dsrecon.metrics.lyapunov import system_lyapunov

    r = cli("evaluate", "system", "lorenz63", "--param", "rho=36.5", "--lyapunov-steps", 3000, "--json", "--quiet")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert res["params"]["rho"] == 36.5 and res["params"]["sigma"] == 10.0
    want = system_lyapunov("lorenz63", n_steps=3000, seed=0, params={"rho": 36.5}).lambda_max
    assert res["lambda_max"] == pytest.approx(want, rel=1e-12)
    assert not any(k.startswith(("dysts", "literature")) for k in res)
    base = json.loads(cli("evaluate", "system", "lorenz63", "--lyapunov-steps", 3000, "--json", "--quiet").out)
    assert base["lambda_max"] != res["lambda_max"] and "literature_lambda_max" in base
    _one_line_error(cli("evaluate", "system", "lorenz63", "--param", "rhoo=1"), "rhoo")
    _one_line_error(cli("evaluate", "-g", "a.tsv", "-r", "b.tsv", "--param", "rho=1"), "--param")
