"""`dsrecon evaluate` (two tables and runs): FC_corr, FC_rmse, FCD_KS beside the VAR(1) baseline and the
floor, the metric settings by data kind, the verdict, and how a run without its training data is handled."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from dsrecon.io.tables import write_table

METRICS = {"D_stsp", "D_H", "FC_corr", "FC_rmse", "FCD_KS"}


def _ar(T, n, seed, a=0.9):
    rng = np.random.default_rng(seed)
    mix = np.triu(np.ones((n, n))) / np.sqrt(n)
    x = np.zeros((T, n))
    for t in range(1, T):
        x[t] = a * x[t - 1] + rng.standard_normal(n) @ mix
    return x


@pytest.fixture
def tables(tmp_path):
    """train / test / gen tables of a 4-region AR(1), TR 1 s in BOLD sidecars."""
    x = _ar(900, 4, 0)
    side = {"RepetitionTime": 1.0, "Modality": "bold"}
    names = ["a", "b", "c", "d"]
    write_table(tmp_path / "train.tsv", x[:500], names, sidecar=side)
    write_table(tmp_path / "test.tsv", x[500:700], names, sidecar=side)
    write_table(tmp_path / "gen.tsv", _ar(200, 4, 5), names)
    return tmp_path


def _json(cli, *args):
    r = cli("evaluate", *args, "--json")
    assert r.code == 0, r.err
    return json.loads(r.out), r


def test_two_region_fc_by_hand(cli, tmp_path):
    # reference a = 1 2 3, b = 1 3 2 (r = +0.5), generated b = 3 1 2 (r = −0.5), the 3-row pattern
    # repeated 20 times (means and correlations unchanged): FC_rmse = |−0.5 − 0.5| = 1; one pair has
    # no correlation across pairs (FC_corr null) and two regions have no FCD (FCD_KS null)
    ref = np.tile([[1.0, 1.0], [2.0, 3.0], [3.0, 2.0]], (20, 1))
    gen = np.tile([[1.0, 3.0], [2.0, 1.0], [3.0, 2.0]], (20, 1))
    write_table(tmp_path / "r.tsv", ref, sidecar={"RepetitionTime": 1.0})
    write_table(tmp_path / "g.tsv", gen)
    res, _ = _json(cli, "-g", tmp_path / "g.tsv", "-r", tmp_path / "r.tsv", "-q")
    assert res["FC_rmse"] == pytest.approx(1.0) and res["FC_corr"] is None and res["FCD_KS"] is None


def test_identical_tables_give_fc_corr_1_and_fcd_ks_0(cli, tables):
    res, _ = _json(cli, "-g", tables / "test.tsv", "-r", tables / "test.tsv", "-q")
    assert res["FC_corr"] == pytest.approx(1.0) and res["FC_rmse"] == pytest.approx(0.0, abs=1e-12) and res["FCD_KS"] == 0.0
    assert res["tr"] == 1.0 and res["FCD_window_s"] == 30.0


def test_train_adds_the_var1_baseline_and_the_floor_with_the_same_keys(cli, tables):
    res, _ = _json(cli, "-g", tables / "gen.tsv", "-r", tables / "test.tsv", "--train", tables / "train.tsv", "-q")
    base = res["baselines"]
    assert METRICS <= set(res) and set(base) == {"VAR1", "floor"}
    for k in ("VAR1", "floor"):
        assert METRICS <= set(base[k]) and all(np.isfinite(base[k][m]) for m in METRICS), base[k]
    info = res["baselines_info"]
    assert info["VAR1"]["order"] == 1 and info["VAR1"]["ridge"] == 1.0 and info["VAR1"]["frames"] == 200
    assert res["verdict"].startswith("bounded; ")


def test_the_floor_of_a_training_table_equal_to_the_reference_is_perfect(cli, tables):
    res, _ = _json(cli, "-g", tables / "gen.tsv", "-r", tables / "test.tsv", "--train", tables / "test.tsv", "--stsp", "binned", "-q")
    f = res["baselines"]["floor"]
    assert f["D_stsp"] == 0.0 and f["FC_corr"] == pytest.approx(1.0) and f["FCD_KS"] == 0.0 and f["D_H"] == pytest.approx(0, abs=1e-6)


def test_without_train_the_baselines_are_null_and_one_note_says_how(cli, tables):
    res, r = _json(cli, "-g", tables / "gen.tsv", "-r", tables / "test.tsv")
    assert res["baselines"] == {"VAR1": None, "floor": None}
    notes = [ln for ln in r.err.splitlines() if "--train" in ln]
    assert len(notes) == 1 and "baselines: none" in notes[0]


def test_settings_follow_the_sidecar_and_are_recorded(cli, tables, tmp_path):
    bold, _ = _json(cli, "-g", tables / "gen.tsv", "-r", tables / "test.tsv", "-q")
    assert bold["metric_settings"]["data_kind"] == "bold"
    assert (bold["metric_settings"]["gmm_var"], bold["metric_settings"]["smoothing"]) == (0.3, 1.0)
    write_table(tmp_path / "plain.tsv", np.loadtxt(tables / "test.tsv", skiprows=1), ["a", "b", "c", "d"])  # no sidecar: generic settings
    plain, _ = _json(cli, "-g", tables / "gen.tsv", "-r", tmp_path / "plain.tsv", "-q")
    assert (plain["metric_settings"]["gmm_var"], plain["metric_settings"]["smoothing"]) == (1.0, 20.0)
    given, _ = _json(cli, "-g", tables / "gen.tsv", "-r", tables / "test.tsv", "--gmm-var", "0.5", "-q", "-o", tmp_path / "m.json")
    assert given["metric_settings"]["gmm_var"] == 0.5 and "--gmm-var" in given["metric_settings"]["chosen_by"]
    assert json.loads((tmp_path / "m.json").read_text())["options"]["gmm_var"] == 0.5


def test_a_tr_that_contradicts_a_sidecar_is_one_line(cli, tables):
    r = cli("evaluate", "-g", tables / "gen.tsv", "-r", tables / "test.tsv", "--tr", "2")
    assert r.code == 1 and len(r.err.strip().splitlines()) == 1 and "test.tsv" in r.err and "--tr" in r.err


def test_a_missing_train_table_is_one_line(cli, tables):
    r = cli("evaluate", "-g", tables / "gen.tsv", "-r", tables / "test.tsv", "--train", tables / "nope.tsv")
    assert r.code == 1 and len(r.err.strip().splitlines()) == 1 and "nope.tsv" in r.err


def test_train_goes_with_two_tables_only(cli, tables):
    r = cli("evaluate", "run", "--train", tables / "train.tsv")
    assert r.code == 1 and "--train" in r.err


# ------------------------------------------------------------------------------------ the RUN form
TINY = ["--epochs", "3", "--batches-per-epoch", "2", "--batch-size", "4", "--hidden-dim", "8", "--sequence-length", "60",
        "--val-every", "1", "--quiet"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A tiny fit of a 5-region table (kernel spm: BOLD settings)."""
    from dsrecon.cli.main import main

    d = tmp_path_factory.mktemp("evalrun")
    x = _ar(500, 5, 1)
    names = [f"r{i}" for i in range(5)]
    write_table(d / "train.tsv", x[:400], names, sidecar={"RepetitionTime": 1.0})
    write_table(d / "test.tsv", x[400:], names, sidecar={"RepetitionTime": 1.0})
    assert main(["fit", str(d / "train.tsv"), "-o", str(d / "run"), *TINY]) == 0
    return d


def test_run_form_reports_fc_fcd_beside_var1_and_floor(cli, fitted):
    res, _ = _json(cli, fitted / "run", "--data", fitted / "test.tsv", "--no-analysis", "-q")
    assert METRICS | {"PE_n"} <= set(res)
    assert set(res["baselines"]["VAR1"]) == set(res["baselines"]["floor"]) >= METRICS | {"PE_n"}
    assert res["baselines"]["floor"]["PE_n"] is None and np.isfinite(res["baselines"]["VAR1"]["PE_n"])
    assert res["metric_settings"]["data_kind"] == "bold" and res["metric_settings"]["gmm_var"] == 0.3
    assert "teacher" in res["baselines_info"]["training_data"]  # the split the run kept at fit time
    assert isinstance(res["verdict"], str) and res["verdict"] and isinstance(res["warnings"], list)


def test_run_form_settings_can_be_given(cli, fitted):
    res, _ = _json(cli, fitted / "run", "--data", fitted / "test.tsv", "--no-analysis", "--smoothing", "3", "-q")
    assert res["metric_settings"]["smoothing"] == 3.0 and res["metric_settings"]["gmm_var"] == 0.3


def test_a_run_without_its_training_split_reads_its_inputs_again(cli, fitted, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(fitted / "run", run)
    idx = json.loads((run / "teacher" / "index.json").read_text())
    for f in idx.pop("train_files"):  # as a run written before the split was kept
        (run / "teacher" / f).unlink()
    (run / "teacher" / "index.json").write_text(json.dumps(idx))
    res, _ = _json(cli, run, "--data", fitted / "test.tsv", "--no-analysis", "-q")
    assert res["baselines"]["VAR1"] is not None and "re-read" in res["baselines_info"]["training_data"]


def test_a_run_without_its_training_data_has_null_baselines_and_a_note(cli, fitted, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(fitted / "run", run)
    idx = json.loads((run / "teacher" / "index.json").read_text())
    idx.pop("train_files")
    (run / "teacher" / "index.json").write_text(json.dumps(idx))
    cfg = json.loads((run / "config.json").read_text())
    cfg["inputs"] = [str(tmp_path / "gone.tsv")]
    (run / "config.json").write_text(json.dumps(cfg))
    res, r = _json(cli, run, "--data", fitted / "test.tsv", "--no-analysis")
    assert res["baselines"] == {"VAR1": None, "floor": None} and "FC_corr" in res and res["D_stsp"] is not None
    assert any("refit" in n for n in res["notes"]) and "no baseline or floor" in r.err


@pytest.mark.parametrize("opts,needle", [(["--fcd-window", "0"], "--fcd-window"), (["--tr", "-1"], "--tr")])
def test_bad_window_or_tr_is_one_line(cli, tables, opts, needle):
    r = cli("evaluate", "-g", tables / "gen.tsv", "-r", tables / "test.tsv", *opts)
    assert r.code == 1 and len(r.err.strip().splitlines()) == 1 and needle in r.err


def test_a_train_table_with_other_columns_names_it(cli, tables, tmp_path):
    write_table(tmp_path / "t3.tsv", np.random.default_rng(0).standard_normal((50, 3)))
    r = cli("evaluate", "-g", tables / "gen.tsv", "-r", tables / "test.tsv", "--train", tmp_path / "t3.tsv")
    assert r.code == 1 and len(r.err.strip().splitlines()) == 1 and "t3.tsv" in r.err and "3 columns" in r.err
