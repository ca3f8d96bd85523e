"""D_stsp (binned and GMM) against hand-computed cases and slow, obviously-correct paths."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.special import logsumexp

import dsrecon.metrics.stsp as stsp
from dsrecon.errors import DataError
from dsrecon.metrics import state_space_divergence, stsp_binned, stsp_gmm


# ---------------------------------------------------------------- slow reference paths
def slow_edges(ref: np.ndarray, k: int) -> list[list[float]]:
    out = []
    for j in range(ref.shape[1]):
        col = [float(v) for v in ref[:, j]]
        mean = sum(col) / len(col)
        sd = math.sqrt(sum((v - mean) ** 2 for v in col) / len(col))
        lo, hi = min(col) - 0.1 * sd, max(col) + 0.1 * sd
        out.append([float(e) for e in np.linspace(lo, hi, k + 1)])
    return out


def slow_cell(point, edges, k):
    """Bin tuple of one point by scanning the edges; None when outside the range."""
    cell = []
    for v, e in zip(point, edges):
        if v < e[0] or v > e[-1]:
            return None
        b = k - 1
        for i in range(k):
            if e[i] <= v < e[i + 1]:
                b = i
                break
        cell.append(b)
    return tuple(cell)


def slow_binned_dense(gen, ref, k=30, alpha=1e-5):
    """Dense k^N histogram (N <= 3), KL summed over every cell with plain loops."""
    n = ref.shape[1]
    edges = slow_edges(ref, k)
    hr = np.zeros((k,) * n)
    hg = np.zeros((k,) * n)
    for p in ref:
        hr[slow_cell(p, edges, k)] += 1
    for p in gen:
        if np.all(np.isfinite(p)):
            c = slow_cell(p, edges, k)
            if c is not None:
                hg[c] += 1
    if hg.sum() == 0:
        return float("nan")
    kl = 0.0
    for c in itertools.product(range(k), repeat=n):
        pc = (hr[c] + alpha) / (hr.sum() + alpha * k**n)
        qc = (hg[c] + alpha) / (hg.sum() + alpha * k**n)
        kl += pc * math.log(pc / qc)
    return kl


def slow_binned_dict(gen, ref, k=30, alpha=1e-5):
    """Cells in a dict; the cells empty in both sets summed in closed form (any N)."""
    n = ref.shape[1]
    edges = slow_edges(ref, k)
    cr, cg = {}, {}
    for p in ref:
        c = slow_cell(p, edges, k)
        cr[c] = cr.get(c, 0) + 1
    for p in gen:
        c = slow_cell(p, edges, k)
        if c is not None:
            cg[c] = cg.get(c, 0) + 1
    big_k = float(k) ** n
    zr = len(ref) + alpha * big_k
    zg = sum(cg.values()) + alpha * big_k
    kl = 0.0
    cells = set(cr) | set(cg)
    for c in cells:
        pc = (cr.get(c, 0) + alpha) / zr
        qc = (cg.get(c, 0) + alpha) / zg
        kl += pc * math.log(pc / qc)
    p0, q0 = alpha / zr, alpha / zg
    return kl + (big_k - len(cells)) * p0 * math.log(p0 / q0)


def slow_gmm(gen, ref, var, n_samples, rng):
    """Direct sums of Gaussian densities (no log-sum-exp), own sampling of the true mixture."""
    n = ref.shape[1]
    norm = (2 * math.pi * var) ** (n / 2)
    vals = []
    for _ in range(n_samples):
        s = ref[rng.integers(len(ref))] + math.sqrt(var) * rng.standard_normal(n)
        p = np.sum(np.exp(-np.sum((ref - s) ** 2, axis=1) / (2 * var))) / (len(ref) * norm)
        q = np.sum(np.exp(-np.sum((gen - s) ** 2, axis=1) / (2 * var))) / (len(gen) * norm)
        vals.append(math.log(p) - math.log(q))
    vals = np.array(vals)
    vals = vals[np.isfinite(vals)]
    return vals.mean(), vals.std() / math.sqrt(len(vals))


# ---------------------------------------------------------------- binned: hand cases
def _hand_case():
    # sd of [0, 0, 3, 3] is 1.5 → range [-0.15, 3.15], three bins of width 1.1:
    # [-0.15, 0.95) [0.95, 2.05) [2.05, 3.15]. Reference counts (2, 0, 2).
    ref = np.array([[0.0], [0.0], [3.0], [3.0]])
    # generated: 0 → bin 0, 1 and 1.5 → bin 1, 3 → bin 2, 10 is outside → dropped. Counts (1, 2, 1).
    gen = np.array([[0.0], [1.0], [1.5], [3.0], [10.0]])
    return gen, ref


def test_binned_hand_case_large_alpha():
    gen, ref = _hand_case()
    # alpha = 0.5: p = (2.5, 0.5, 2.5)/5.5, q = (1.5, 2.5, 1.5)/5.5
    expected = 2 * (2.5 / 5.5) * math.log(2.5 / 1.5) + (0.5 / 5.5) * math.log(0.5 / 2.5)
    assert stsp_binned(gen, ref, bins=3, alpha=0.5) == pytest.approx(expected, rel=1e-12)


def test_binned_hand_case_default_alpha():
    gen, ref = _hand_case()
    a = 1e-5
    z = 4 + 3 * a  # both sets have 4 points in range
    p = [(2 + a) / z, a / z, (2 + a) / z]
    q = [(1 + a) / z, (2 + a) / z, (1 + a) / z]
    expected = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    assert stsp_binned(gen, ref, bins=3) == pytest.approx(expected, rel=1e-12)


def test_binned_identical_inputs_is_zero():
    x = np.random.default_rng(0).standard_normal((500, 3))
    assert stsp_binned(x, x) == 0.0


def test_binned_all_generated_outside_range_is_nan():
    ref = np.random.default_rng(1).standard_normal((100, 2))
    assert math.isnan(stsp_binned(ref + 100.0, ref))


def test_binned_drops_nonfinite_generated_rows():
    rng = np.random.default_rng(2)
    ref, gen = rng.standard_normal((300, 2)), rng.standard_normal((200, 2))
    bad = gen.copy()
    bad[::7, 0] = np.nan
    bad[3, 1] = np.inf
    keep = np.isfinite(bad).all(axis=1)
    assert stsp_binned(bad, ref) == stsp_binned(gen[keep], ref)


@pytest.mark.parametrize("n,k", [(1, 30), (2, 30), (3, 30), (3, 7)])
def test_binned_matches_dense_slow_path(n, k):
    rng = np.random.default_rng(10 + n)
    ref = rng.standard_normal((400, n))
    gen = 1.3 * rng.standard_normal((300, n)) + 0.2  # some points fall outside the range
    fast = stsp_binned(gen, ref, bins=k)
    assert fast == pytest.approx(slow_binned_dense(gen, ref, k), rel=1e-6)
    assert fast > 0


def test_binned_sparse_path_matches_dense_path(monkeypatch):
    rng = np.random.default_rng(3)
    ref, gen = rng.standard_normal((500, 3)), rng.standard_normal((400, 3)) * 0.8
    dense = stsp_binned(gen, ref)
    monkeypatch.setattr(stsp, "_DENSE_CELLS", 0)  # force np.unique over occupied cells
    assert stsp_binned(gen, ref) == pytest.approx(dense, rel=1e-12)
    assert dense == pytest.approx(slow_binned_dense(gen, ref, 30), rel=1e-6)


@pytest.mark.parametrize("n,k", [(5, 6), (14, 30)])  # 30^14 cells overflow int64 → row codes
def test_binned_high_dim_matches_dict_slow_path(n, k):
    rng = np.random.default_rng(20 + n)
    ref = rng.standard_normal((300, n))
    gen = np.vstack([ref[:100] + 0.01, rng.standard_normal((150, n))])
    fast = stsp_binned(gen, ref, bins=k)
    assert fast == pytest.approx(slow_binned_dict(gen, ref, k), rel=1e-6)


def test_binned_constant_reference_column_is_a_data_error():
    ref = np.c_[np.linspace(0, 1, 50), np.full(50, 2.0)]
    with pytest.raises(DataError, match="column 2 is constant"):
        stsp_binned(ref, ref)


@pytest.mark.parametrize("kw", [{"bins": 0}, {"bins": 2.5}, {"alpha": 0.0}])
def test_binned_rejects_bad_parameters(kw):
    x = np.random.default_rng(0).standard_normal((20, 2))
    with pytest.raises(DataError):
        stsp_binned(x, x, **kw)


def test_column_mismatch_is_a_data_error():
    rng = np.random.default_rng(0)
    with pytest.raises(DataError, match="2 columns but reference has 3"):
        stsp_binned(rng.standard_normal((20, 2)), rng.standard_normal((20, 3)))


# ---------------------------------------------------------------- GMM
def test_logsumexp_rows_matches_scipy():
    a = np.random.default_rng(0).standard_normal((50, 300)) * 40 - 500
    expected = logsumexp(a, axis=1)
    np.testing.assert_allclose(stsp._logsumexp_rows_inplace(a.copy()), expected, rtol=1e-12)


def test_mixture_logpdf_matches_direct_sum():
    rng = np.random.default_rng(4)
    pts, cen, var = rng.standard_normal((30, 3)), rng.standard_normal((40, 3)) * 2, 0.7
    direct = [
        math.log(sum(math.exp(-sum((p[i] - c[i]) ** 2 for i in range(3)) / (2 * var)) for c in cen) / (40 * (2 * math.pi * var) ** 1.5))
        for p in pts
    ]
    np.testing.assert_allclose(stsp.mixture_logpdf(pts, cen, var), direct, rtol=1e-10)


def test_mixture_logpdf_chunking_does_not_change_result(monkeypatch):
    rng = np.random.default_rng(5)
    pts, cen = rng.standard_normal((100, 4)), rng.standard_normal((70, 4))
    whole = stsp.mixture_logpdf(pts, cen, 1.0)
    monkeypatch.setattr(stsp, "_CHUNK_ENTRIES", 150)  # two samples per chunk
    np.testing.assert_allclose(stsp.mixture_logpdf(pts, cen, 1.0), whole, rtol=1e-13)


@pytest.mark.parametrize("d,var", [(1.5, 0.5), (3.0, 1.0)])
def test_gmm_single_points_closed_form(d, var):
    # One Gaussian each: KL(N(0, σ²) ‖ N(d, σ²)) = d²/(2σ²). Estimator SE = d/(σ sqrt(n)).
    n = 4000
    est = stsp_gmm(np.array([[d]]), np.array([[0.0]]), var=var, n_samples=n, seed=1)
    se = d / math.sqrt(var) / math.sqrt(n)
    assert abs(est - d**2 / (2 * var)) < 4 * se


def test_gmm_identical_inputs_is_zero():
    x = np.random.default_rng(6).standard_normal((300, 4))
    assert stsp_gmm(x, x) == 0.0


def test_gmm_matches_direct_sum_slow_path_within_mc_error():
    rng = np.random.default_rng(7)
    ref = rng.standard_normal((150, 2))
    gen = rng.standard_normal((120, 2)) * 1.5 + 0.5
    n = 3000
    fast = stsp_gmm(gen, ref, var=0.5, n_samples=n, seed=3)
    s = stsp.mixture_logpdf  # SE of the fast estimate from its own per-sample terms
    r2 = np.random.default_rng(3)
    pick = r2.integers(0, len(ref), size=n)
    smp = ref[pick] + math.sqrt(0.5) * r2.standard_normal((n, 2))
    terms = s(smp, ref, 0.5) - s(smp, gen, 0.5)
    assert terms.mean() == pytest.approx(fast, rel=1e-12)  # same samples → same number
    slow, slow_se = slow_gmm(gen, ref, 0.5, n, np.random.default_rng(99))
    se = math.hypot(terms.std() / math.sqrt(n), slow_se)
    assert abs(fast - slow) < 4 * se
    assert fast > 10 * se  # clearly positive for different distributions


def test_gmm_is_seeded():
    rng = np.random.default_rng(8)
    ref, gen = rng.standard_normal((200, 3)), rng.standard_normal((200, 3)) + 1
    assert stsp_gmm(gen, ref, seed=5) == stsp_gmm(gen, ref, seed=5)
    assert stsp_gmm(gen, ref, seed=5) != stsp_gmm(gen, ref, seed=6)


def test_subsample_even_keeps_ends_and_count():
    x = np.arange(25_000, dtype=float)[:, None]
    s = stsp.subsample_even(x, 10_000)
    assert s.shape == (10_000, 1) and s[0, 0] == 0 and s[-1, 0] == 24_999
    assert np.all(np.diff(s[:, 0]) >= 2)  # evenly spread, no repeats
    assert stsp.subsample_even(x[:50], 100).shape == (50, 1)


def test_gmm_max_points_uses_the_subsample():
    rng = np.random.default_rng(9)
    ref, gen = rng.standard_normal((400, 2)), rng.standard_normal((300, 2)) + 0.5
    a = stsp_gmm(gen, ref, max_points=100, seed=1, points="even")
    b = stsp_gmm(stsp.subsample_even(gen, 100), stsp.subsample_even(ref, 100), seed=1)
    assert a == b


def test_subsample_first_keeps_the_first_rows():
    x = np.arange(25_000, dtype=float)[:, None]
    s = stsp.subsample_first(x, 10_000)
    assert s.shape == (10_000, 1) and s[0, 0] == 0 and s[-1, 0] == 9_999
    assert stsp.subsample_first(x[:50], 100).shape == (50, 1)
    assert np.array_equal(stsp.subsample(x, 7, "first")[:, 0], np.arange(7))
    # even: round(linspace(0, 24 999, 5)) = round(0, 6 249.75, 12 499.5, 18 749.25, 24 999); .5 rounds to even
    assert np.array_equal(stsp.subsample(x, 5, "even")[:, 0], [0, 6_250, 12_500, 18_749, 24_999])


def test_gmm_default_is_the_first_points():
    # 10 rows: the first half at 0, the second at 5 (reference) or 9 (generated). The first 5 rows
    # are identical in both, so `first` (the default) gives exactly 0; `even` keeps rows
    # 0, 2, 4, 7, 9 (round(linspace(0, 9, 5)) = 0, 2, 4 (4.5 → even), 7, 9) and sees the difference.
    ref = np.r_[np.zeros(5), np.full(5, 5.0)][:, None]
    gen = np.r_[np.zeros(5), np.full(5, 9.0)][:, None]
    assert stsp_gmm(gen, ref, max_points=5) == 0.0
    assert stsp_gmm(gen, ref, max_points=5, points="first") == 0.0
    even = stsp_gmm(gen, ref, max_points=5, points="even", n_samples=4000, seed=2)
    # `even` keeps 3 centres at 0 and 2 at 5 (resp. 9): p = 0.6 N(0, 1) + 0.4 N(5, 1), q = 0.6 N(0, 1)
    # + 0.4 N(9, 1); KL(p ‖ q) by quadrature is 2.4274. Monte-Carlo SE with 4 000 samples ≈ 0.04.
    from scipy.integrate import quad
    from scipy.stats import norm

    p = lambda t: 0.6 * norm.pdf(t) + 0.4 * norm.pdf(t - 5)  # noqa: E731
    q = lambda t: 0.6 * norm.pdf(t) + 0.4 * norm.pdf(t - 9)  # noqa: E731
    kl = quad(lambda t: p(t) * math.log(p(t) / q(t)), -15, 20, points=[0, 5, 9], limit=200)[0]
    assert kl == pytest.approx(2.4274, abs=1e-4)
    assert abs(even - kl) < 0.2
    assert stsp_gmm(gen, ref, max_points=10) > 1.0  # all points: the halves differ either way


def test_gmm_first_points_closed_form():
    # the first point of each series is a single Gaussian: KL(N(0, σ²) ‖ N(d, σ²)) = d²/(2σ²);
    # the rest (far away, and different) must not enter with max_points=1.
    d, var, n = 1.5, 0.5, 4000
    ref = np.array([[0.0], [50.0], [-50.0]])
    gen = np.array([[d], [-80.0], [80.0]])
    est = stsp_gmm(gen, ref, var=var, max_points=1, n_samples=n, seed=1)
    assert abs(est - d**2 / (2 * var)) < 4 * d / math.sqrt(var) / math.sqrt(n)
    assert est == stsp_gmm(gen[:1], ref[:1], var=var, n_samples=n, seed=1)


def test_gmm_points_go_through_state_space_divergence():
    rng = np.random.default_rng(12)
    ref = rng.standard_normal((300, 6))
    gen = np.r_[ref[:100], rng.standard_normal((200, 6)) + 3.0]
    first, _ = state_space_divergence(gen, ref, method="gmm", seed=1)
    assert first == stsp_gmm(gen, ref, seed=1, points="first")
    even, _ = state_space_divergence(gen, ref, method="gmm", seed=1, gmm_points="even")
    assert even == stsp_gmm(gen, ref, seed=1, points="even")
    # with ≤ max_points rows both keep everything
    assert first == even


def test_gmm_max_points_with_first_uses_the_head():
    rng = np.random.default_rng(13)
    ref, gen = rng.standard_normal((400, 2)), rng.standard_normal((300, 2)) + 0.5
    assert stsp_gmm(gen, ref, max_points=100, seed=1) == stsp_gmm(gen[:100], ref[:100], seed=1)


def test_gmm_nonfinite_generated_is_nan():
    ref = np.random.default_rng(0).standard_normal((50, 2))
    assert math.isnan(stsp_gmm(np.full((10, 2), np.nan), ref))


@pytest.mark.parametrize("kw", [{"var": 0.0}, {"var": -1.0}, {"n_samples": 0}, {"max_points": 0}, {"points": "last"}])
def test_gmm_rejects_bad_parameters(kw):
    x = np.random.default_rng(0).standard_normal((20, 2))
    with pytest.raises(DataError):
        stsp_gmm(x, x, **kw)


# ---------------------------------------------------------------- method choice
def test_auto_bins_below_six_dims_and_uses_gmm_from_six():
    rng = np.random.default_rng(11)
    r5, g5 = rng.standard_normal((200, 5)), rng.standard_normal((200, 5))
    assert state_space_divergence(g5, r5) == (stsp_binned(g5, r5), "binned")
    r6, g6 = rng.standard_normal((200, 6)), rng.standard_normal((200, 6))
    assert state_space_divergence(g6, r6, seed=2) == (stsp_gmm(g6, r6, seed=2), "gmm")
    assert state_space_divergence(g6, r6, method="binned", bins=4)[1] == "binned"


def test_unknown_method_is_a_data_error():
    x = np.zeros((10, 2)) + np.arange(10)[:, None]
    with pytest.raises(DataError, match="auto, binned or gmm"):
        state_space_divergence(x, x, method="kde")
