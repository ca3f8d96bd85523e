"""Every metric beside its yardsticks (VAR(1), floor), the settings by data kind and the verdict rule,
against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dsrecon.metrics.baselines import LinearVAR
from dsrecon.metrics.yardsticks import (KIND_SETTINGS, better, compare_to, kind_of_run, kind_of_sidecar, metric_settings, score_series,
                                        spread_of, valid_runs, var_prediction_error, verdict, yardsticks)


@pytest.fixture(scope="module")
def walk():
    """A 6-region random walk, 400 frames (FC and FCD well defined)."""
    return np.random.default_rng(0).standard_normal((400, 6)).cumsum(0)


def test_identical_series_score_perfectly_on_every_metric(walk):
    s = score_series(walk, walk, tr=1.0, stsp="binned")
    assert s["D_stsp"] == 0.0 and s["D_H"] == pytest.approx(0.0, abs=1e-6)
    assert s["FC_corr"] == pytest.approx(1.0) and s["FC_rmse"] == pytest.approx(0.0, abs=1e-12) and s["FCD_KS"] == 0.0


def test_a_diverged_series_scores_inf_and_nan():
    ref = np.random.default_rng(1).standard_normal((100, 3))
    gen = ref.copy()
    gen[50:] = np.nan
    s = score_series(gen, ref, tr=1.0)
    assert s["D_stsp"] == math.inf and math.isnan(s["D_H"]) and math.isnan(s["FC_corr"]) and s["diverged"]


def test_without_a_tr_fcd_is_nan_and_fc_is_still_scored(walk):
    s = score_series(walk, walk, tr=None)
    assert math.isnan(s["FCD_KS"]) and s["FC_corr"] == pytest.approx(1.0)


def test_the_floor_of_training_data_equal_to_the_test_data_is_perfect(walk):
    y = yardsticks([walk], walk, tr=1.0, stsp="binned")
    f = y["floor"]
    assert f["D_stsp"] == 0.0 and f["FC_corr"] == pytest.approx(1.0) and f["FCD_KS"] == 0.0
    assert set(y["VAR1"]) == set(f) and y["info"]["floor"]["frames"] == 400


def test_yardsticks_score_the_var_run_against_the_reference():
    rng = np.random.default_rng(2)
    x = np.zeros((600, 4))
    for t in range(1, 600):  # a stationary AR(1) with mixed regions
        x[t] = 0.9 * x[t - 1] + rng.standard_normal(4) @ np.triu(np.ones((4, 4)))
    train, test = x[:400], x[400:]
    y = yardsticks([train], test, tr=1.0, stsp="binned", seed=3)
    again = score_series(y["series"]["VAR1"], test, tr=1.0, stsp="binned", seed=3)
    assert all(np.isfinite(v) for k, v in again.items() if k not in ("D_stsp_method", "diverged"))
    assert {k: y["VAR1"][k] for k in again if k != "diverged"} == {k: v for k, v in again.items() if k != "diverged"}
    assert y["series"]["VAR1"].shape == test.shape and y["info"]["VAR1"]["burn_in"] == 1000
    np.testing.assert_array_equal(y["series"]["floor"], train[-200:])  # the floor: the training data's last T frames


def test_var_prediction_error_of_an_ar1_by_hand():
    # x_t = a x_{t-1} + e_t, e ~ N(0, 1): the best n-step prediction a^n x_t errs by
    # sum_{k<n} a^k e, variance 1 + a² + … + a^(2(n−1)): 1 for n = 1, 1 + a² for n = 2
    a, T = 0.8, 40_000
    rng = np.random.default_rng(0)
    x = np.zeros((T, 1))
    for t in range(1, T):
        x[t] = a * x[t - 1] + rng.standard_normal()
    var = LinearVAR.fit([x], order=1, ridge=1.0)
    assert var.spectral_radius() == pytest.approx(a, abs=0.01)
    assert var_prediction_error(var, x, 1) == pytest.approx(1.0, rel=0.03)
    assert var_prediction_error(var, x, 2) == pytest.approx(1 + a**2, rel=0.03)


def test_var_prediction_error_skips_censored_targets_and_histories():
    var = LinearVAR(coef=np.array([[0.5]]), intercept=np.zeros(1), noise_cov=np.eye(1), order=1)
    x = np.array([[1.0], [0.5], [99.0], [0.25], [0.125]])
    mask = np.array([True, True, False, True, True])
    # usable pairs (t → t+1): (0 → 1) exact, (3 → 4) exact; the pairs touching frame 2 are left out
    assert var_prediction_error(var, x, 1, mask) == 0.0


def test_valid_runs_split_at_censored_frames():
    x = np.arange(20.0).reshape(10, 2)
    x[4] = np.nan
    x[6] = np.nan
    runs = valid_runs(x, min_len=3)
    assert [r.shape[0] for r in runs] == [4, 3]
    np.testing.assert_array_equal(runs[1][:, 0], [14.0, 16.0, 18.0])


@pytest.mark.parametrize("metric,a,b,want", [
    ("D_stsp", 1.0, 2.0, 1), ("D_stsp", 2.0, 1.0, -1), ("D_stsp", 1.0, 1.04, 0),  # within 5 %: a draw
    ("FC_corr", 0.9, 0.5, 1), ("FC_corr", 0.5, 0.9, -1),  # higher is better
    ("D_stsp", 5.0, math.inf, 1), ("D_stsp", math.inf, 5.0, -1), ("D_H", math.nan, 0.2, None), ("PE_n", None, 0.2, None),
])
def test_better_by_hand(metric, a, b, want):
    assert better(metric, a, b) == want


def test_compare_to_groups_metrics_by_aspect():
    model = {"D_stsp": 1.0, "D_H": 0.5, "FC_corr": 0.9, "FC_rmse": 0.5, "FCD_KS": 0.1}
    var = {"D_stsp": 2.0, "D_H": 0.2, "FC_corr": 0.5, "FC_rmse": 0.2, "FCD_KS": 0.1}
    c = compare_to(model, var)
    # FC: better correlation, worse RMSE → mixed, in neither list; FCD level
    assert c["won"] == ["state space"] and c["lost"] == ["spectra"] and set(c["compared"]) == {"state space", "spectra", "FC", "FCD"}


def test_verdict_collapsed_and_diverged_come_first():
    win = {"D_stsp": 1.0}, {"VAR1": {"D_stsp": 9.0}}
    assert verdict(*win, spread=1e-9)["text"].startswith("collapsed to a fixed point")
    assert verdict(*win, spread=1e-9, diverged=True)["state"] == "diverged"
    assert verdict(*win, spread=0.06, regime="chaotic")["text"] == "bounded and chaotic; beats the linear baseline on every aspect"


@pytest.mark.parametrize("model,want", [
    ({"D_stsp": 1.0, "D_H": 0.1, "FCD_KS": 0.1}, "bounded and chaotic; beats the linear baseline on every aspect"),
    ({"D_stsp": 9.0, "D_H": 0.9, "FCD_KS": 0.9}, "bounded and chaotic; loses to the linear baseline on every aspect"),
    ({"D_stsp": 9.0, "D_H": 0.1, "FCD_KS": 0.1}, "bounded and chaotic; beats the linear baseline on spectra and FCD, loses on state space"),
    ({"D_stsp": 5.0, "D_H": 0.5, "FCD_KS": 0.5}, "bounded and chaotic; level with the linear baseline"),
    ({"D_stsp": 9.0, "D_H": 0.5, "FCD_KS": 0.5}, "bounded and chaotic; loses to the linear baseline on state space"),
])
def test_verdict_against_the_linear_baseline(model, want):
    base = {"VAR1": {"D_stsp": 5.0, "D_H": 0.5, "FCD_KS": 0.5}}
    assert verdict(model, base, regime="chaotic", spread=1.0)["text"] == want


def test_verdict_without_a_baseline_says_so():
    assert verdict({"D_stsp": 1.0}, None, regime="periodic or quasi-periodic", spread=1.0)["text"] == \
        "bounded and periodic or quasi-periodic; no linear baseline to compare with"


def test_spread_is_the_largest_std_of_the_last_quarter():
    x = np.zeros((8, 2))
    x[6:, 1] = [1.0, -1.0]  # last quarter (2 rows) of column 2: std 1
    assert spread_of(x) == 1.0 and math.isnan(spread_of(np.full((4, 2), np.nan)))


@pytest.mark.parametrize("config,kind", [
    ({"kernel": {"kind": "spm"}}, "bold"),
    ({"kernel": {"kind": "glover"}}, "bold"),
    ({"kernel": {"kind": "calcium"}}, "calcium"),
    ({"kernel": {"kind": "none"}}, "generic"),
    ({"kernel": {"kind": "file"}, "provenance": [{"modality": "bold"}]}, "bold"),
    ({"kernel": {"kind": "file"}, "provenance": [{"modality": "calcium"}]}, "calcium"),
])
def test_the_data_kind_of_a_run(config, kind):
    assert kind_of_run(config)[0] == kind


@pytest.mark.parametrize("side,kind", [
    ({"Modality": "bold"}, "bold"), ({"Modality": "calcium"}, "calcium"), ({"kernel": "spm"}, "bold"), ({"kernel": "none"}, "generic"),
    ({"RepetitionTime": 2.0}, "generic"), ({}, "generic"),
])
def test_the_data_kind_of_a_table(side, kind):
    assert kind_of_sidecar(side)[0] == kind


def test_settings_follow_the_kind_unless_given_and_say_why():
    bold = metric_settings("bold", "BOLD (kernel spm)")
    assert (bold["gmm_var"], bold["smoothing"]) == (0.3, 1.0) and bold["data_kind"] == "bold" and "kernel spm" in bold["chosen_by"]
    gen = metric_settings("generic", "kernel none")
    assert (gen["gmm_var"], gen["smoothing"]) == (KIND_SETTINGS["generic"]["gmm_var"], KIND_SETTINGS["generic"]["smoothing"]) == (1.0, 20.0)
    given = metric_settings("bold", "BOLD", smoothing=5.0)
    assert (given["gmm_var"], given["smoothing"]) == (0.3, 5.0) and "--smoothing" in given["chosen_by"]


def test_metrics_where_the_data_do_not_beat_the_baseline_are_left_out_of_the_verdict():
    # D_stsp: the floor (8) is worse than the VAR (5), so beating the VAR there says nothing
    model = {"D_stsp": 1.0, "D_H": 0.9, "PE_n": 0.5}
    base = {"VAR1": {"D_stsp": 5.0, "D_H": 0.5, "PE_n": 1.0}, "floor": {"D_stsp": 8.0, "D_H": 0.1, "PE_n": None}}
    v = verdict(model, base, regime="chaotic", spread=1.0)
    assert v["text"] == "bounded and chaotic; beats the linear baseline on prediction, loses on spectra (state space: uninformative on this test set)"
    assert v["uninformative"] == ["D_stsp"]


def test_every_aspect_is_never_claimed_when_aspects_were_left_out():
    # a 94-region HCP report said "beats the linear baseline on every aspect" with a worse D_H and
    # FC: those were uninformative (the floor no better than the VAR), and the two judged ones won
    model = {"D_stsp": 132.0, "D_H": 0.2547, "PE_n": 0.7397, "FC_corr": 0.8502, "FC_rmse": 0.1276, "FCD_KS": 0.2117}
    var = {"D_stsp": 125.8, "D_H": 0.2413, "PE_n": 0.9584, "FC_corr": 0.89, "FC_rmse": 0.1099, "FCD_KS": 0.2462}
    floor = {"D_stsp": 127.3, "D_H": 0.2483, "PE_n": None, "FC_corr": 0.8885, "FC_rmse": 0.1111, "FCD_KS": 0.2072}
    v = verdict(model, {"VAR1": var, "floor": floor}, regime="chaotic", spread=1.0)
    assert "every aspect" not in v["text"]
    assert v["text"] == ("bounded and chaotic; beats the linear baseline on prediction and FCD "
                         "(state space, spectra and FC: uninformative on this test set)")


def test_when_no_metric_is_informative_the_verdict_says_so():
    base = {"VAR1": {"D_stsp": 5.0}, "floor": {"D_stsp": 5.1}}
    assert verdict({"D_stsp": 1.0}, base, spread=1.0)["text"] == \
        "bounded; no metric here tells it from the linear baseline (the data themselves do no better)"
