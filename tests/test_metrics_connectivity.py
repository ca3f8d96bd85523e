"""FC, FCD and the linear baselines against hand-computed cases and slow, obviously correct twins."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import solve_discrete_lyapunov
from scipy.stats import ks_2samp

from dsrecon.errors import DataError
from dsrecon.metrics.baselines import IIDGaussian, LinearVAR, r2_score
from dsrecon.metrics.connectivity import (connectivity_metrics, fc_matrix, fc_scores, fcd_ks, fcd_values, fcd_window, ks_statistic,
                                          window_fcs)


def test_fc_of_two_regions_by_hand():
    # a = 1 2 3, b = 1 3 2: deviations (−1 0 1), (−1 1 0); covariance 1, variances 2 → r = 0.5
    x = np.array([[1.0, 1.0], [2.0, 3.0], [3.0, 2.0]])
    np.testing.assert_allclose(fc_matrix(x), [[1.0, 0.5], [0.5, 1.0]])


def test_fc_rmse_by_hand():
    ref = np.array([[1.0, 1.0], [2.0, 3.0], [3.0, 2.0]])  # r = +0.5
    gen = np.array([[1.0, 3.0], [2.0, 1.0], [3.0, 2.0]])  # deviations (−1 0 1), (1 −1 0): r = −0.5
    assert fc_scores(gen, ref)["FC_rmse"] == pytest.approx(1.0)


def test_identical_series_score_perfectly():
    x = np.random.default_rng(0).standard_normal((400, 6)).cumsum(0)
    m = connectivity_metrics(x, x, tr=0.72, window_s=30)
    assert m["FC_corr"] == pytest.approx(1.0) and m["FC_rmse"] == pytest.approx(0.0, abs=1e-12)
    assert m["FCD_KS"] == 0.0


def test_fc_corr_ignores_a_common_scale_but_not_a_sign():
    rng = np.random.default_rng(1)
    mix = rng.standard_normal((5, 5))
    x = rng.standard_normal((2000, 5)) @ mix
    assert fc_scores(x, x * 3.0 + 1.0)["FC_corr"] == pytest.approx(1.0)
    assert fc_scores(x, x * np.array([1, -1, 1, 1, 1]))["FC_corr"] < 0.9


def test_window_fcs_and_fcd_by_hand():
    # window 1: a = b = (1 2 3), c = (3 2 1) → (r12, r13, r23) = (1, −1, −1)
    # window 2: a = c = (1 2 3), b = (3 2 1) → (−1, 1, −1); the two vectors correlate −0.5
    x = np.array([[1, 1, 3], [2, 2, 2], [3, 3, 1], [1, 3, 1], [2, 2, 2], [3, 1, 3]], dtype=float)
    np.testing.assert_allclose(window_fcs(x, 3, 3), [[1, -1, -1], [-1, 1, -1]])
    np.testing.assert_allclose(fcd_values(x, 3, 3), [-0.5])


def test_fcd_values_match_a_slow_twin():
    x = np.random.default_rng(2).standard_normal((120, 4)).cumsum(0)
    w, s = 20, 5
    fcs = [np.corrcoef(x[a : a + w].T)[np.triu_indices(4, 1)] for a in range(0, 120 - w + 1, s)]
    slow = np.corrcoef(np.array(fcs))[np.triu_indices(len(fcs), 1)]
    np.testing.assert_allclose(fcd_values(x, w, s), slow, atol=1e-12)


def test_fcd_window_from_the_tr():
    assert fcd_window(0.72, 30.0) == (42, 7)  # 41.7 → 42 frames, a sixth → 7
    assert fcd_window(2.0, 30.0) == (15, 2)
    with pytest.raises(DataError):
        fcd_window(0.0)


def test_ks_statistic_by_hand_and_against_scipy():
    assert ks_statistic([1, 2, 3], [2, 3, 4]) == pytest.approx(1 / 3)
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal(300), rng.standard_normal(200) + 0.3
    assert ks_statistic(a, b) == pytest.approx(ks_2samp(a, b).statistic)


def test_fcd_ks_pools_reference_length_segments_of_a_long_run():
    rng = np.random.default_rng(4)
    ref = rng.standard_normal((300, 5))
    long = np.concatenate([ref, ref, ref])  # three copies: the pooled distribution is the reference's
    assert fcd_ks(long, ref, tr=1.0, window_s=30) == 0.0


def test_fcd_ks_separates_slow_from_fast_connectivity_changes():
    rng = np.random.default_rng(5)
    T, N = 600, 6
    ref = rng.standard_normal((T, N)) @ rng.standard_normal((N, N))  # one coupling: window FCs all alike
    mix = np.repeat(rng.standard_normal((T // 100, N, N)), 100, axis=0)  # the coupling switches every 100 frames
    gen = np.einsum("tij,tj->ti", mix, rng.standard_normal((T, N)))
    assert fcd_ks(gen, ref, tr=1.0, window_s=30) > 0.5
    assert fcd_ks(ref, ref[::-1].copy(), tr=1.0, window_s=30) < 0.2


def test_fcd_is_nan_for_two_regions():
    x = np.random.default_rng(6).standard_normal((200, 2))
    assert np.isnan(connectivity_metrics(x, x, tr=1.0)["FCD_KS"])


def test_var_without_ridge_is_least_squares():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((300, 3)).cumsum(0) * 0.1
    m = LinearVAR.fit(x, order=2, ridge=0.0)
    X = np.concatenate([x[1:-1], x[:-2], np.ones((298, 1))], axis=1)  # [x_{t−1}, x_{t−2}, 1]
    B, *_ = np.linalg.lstsq(X, x[2:], rcond=None)
    np.testing.assert_allclose(m.coef, B[:6], atol=1e-8)
    np.testing.assert_allclose(m.intercept, B[6], atol=1e-8)


def test_var_recovers_a_known_system_and_its_stationary_covariance():
    rng = np.random.default_rng(8)
    A = np.array([[0.8, 0.1], [-0.2, 0.7]])
    x = np.zeros((20000, 2))
    for t in range(1, x.shape[0]):
        x[t] = A @ x[t - 1] + rng.standard_normal(2)
    m = LinearVAR.fit(x, order=1, ridge=0.0)
    np.testing.assert_allclose(m.coef.T, A, atol=0.02)
    np.testing.assert_allclose(m.noise_cov, np.eye(2), atol=0.05)
    assert m.spectral_radius() == pytest.approx(np.max(np.abs(np.linalg.eigvals(A))), abs=0.02)
    sim = m.simulate(50000, seed=0)
    np.testing.assert_allclose(np.cov(sim.T), solve_discrete_lyapunov(A, np.eye(2)), atol=0.15)


def test_var_segments_are_not_joined():
    rng = np.random.default_rng(9)
    a, b = rng.standard_normal((50, 2)), rng.standard_normal((50, 2)) + 100.0
    joined = LinearVAR.fit(np.concatenate([a, b]), ridge=0.0)
    separate = LinearVAR.fit([a, b], ridge=0.0)
    assert not np.allclose(joined.coef, separate.coef)
    X = np.concatenate([a[:-1], b[:-1]])
    Y = np.concatenate([a[1:], b[1:]])
    B, *_ = np.linalg.lstsq(np.c_[X, np.ones(len(X))], Y, rcond=None)
    np.testing.assert_allclose(separate.coef, B[:2], atol=1e-8)


def test_var_prediction_iterates_the_mean_map():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((100, 3))
    m = LinearVAR.fit(x, order=1, ridge=1.0)
    p1, t1 = m.predict(x, 1)
    np.testing.assert_allclose(p1, m.intercept + x[:-1] @ m.coef)
    np.testing.assert_array_equal(t1, np.arange(1, 100))
    p3, t3 = m.predict(x, 3)
    step = lambda v: m.intercept + v @ m.coef  # noqa: E731
    np.testing.assert_allclose(p3, step(step(step(x[:-3]))))
    np.testing.assert_array_equal(t3, np.arange(3, 100))


def test_iid_gaussian_has_the_training_covariance_and_no_memory():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((5000, 3)) @ np.array([[1, 0.5, 0], [0, 1, 0.3], [0, 0, 1]])
    sim = IIDGaussian.fit(x).simulate(20000, seed=1)
    np.testing.assert_allclose(np.cov(sim.T), np.cov(x.T), atol=0.05)
    lag1 = np.corrcoef(sim[1:, 0], sim[:-1, 0])[0, 1]
    assert abs(lag1) < 0.03


def test_r2_by_hand():
    y = np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]])
    assert r2_score(y, y) == 1.0
    assert r2_score(np.tile(y.mean(0), (3, 1)), y) == pytest.approx(0.0)
    # region 0: SSE 3, SST 2 → −0.5; region 1: perfect → 1; mean 0.25
    assert r2_score(np.array([[2.0, 2.0], [3.0, 4.0], [4.0, 6.0]]), y) == pytest.approx(0.25)
