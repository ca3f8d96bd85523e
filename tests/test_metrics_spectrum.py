"""D_H (spectral Hellinger distance) against hand-computed cases and a slow DFT/loop path."""

from __future__ import annotations

import cmath
import math

import numpy as np
import pytest

from dsrecon.errors import DataError
from dsrecon.metrics import hellinger_per_dim, hellinger_spectral, power_spectra


# ---------------------------------------------------------------- slow reference path
def slow_spectrum(col, sigma):
    """z-score, O(T²) DFT, Gaussian smoothing by explicit loops with reflected edges, normalise."""
    t = len(col)
    mean = sum(col) / t
    sd = math.sqrt(sum((v - mean) ** 2 for v in col) / t)
    z = [(v - mean) / sd for v in col]
    f = t // 2 + 1
    pw = [abs(sum(z[n] * cmath.exp(-2j * math.pi * k * n / t) for n in range(t))) ** 2 for k in range(f)]
    if sigma > 0:
        radius = int(4.0 * sigma + 0.5)  # scipy.ndimage truncates the kernel at 4σ
        w = [math.exp(-(i * i) / (2 * sigma * sigma)) for i in range(-radius, radius + 1)]
        wsum = sum(w)

        def at(i):  # 'reflect' boundary: d c b a | a b c d | d c b a
            while i < 0 or i >= f:
                i = -i - 1 if i < 0 else 2 * f - i - 1
            return pw[i]

        pw = [sum(w[j + radius] * at(k + j) for j in range(-radius, radius + 1)) / wsum for k in range(f)]
    pw = [max(v, 0.0) for v in pw]
    s = sum(pw)
    return [v / s for v in pw]


def slow_hellinger(gen, ref, sigma):
    t = min(len(gen), len(ref))
    hs = []
    for j in range(ref.shape[1]):
        p = slow_spectrum(list(gen[:t, j]), sigma)
        q = slow_spectrum(list(ref[:t, j]), sigma)
        hs.append(math.sqrt(max(0.0, 1 - sum(math.sqrt(a * b) for a, b in zip(p, q)))))
    return sum(hs) / len(hs)


# ---------------------------------------------------------------- hand cases
def _cos(freq_bin, t=8):
    return np.cos(2 * np.pi * freq_bin * np.arange(t) / t)


def test_spectrum_of_a_pure_cosine_is_one_bin():
    p = power_spectra(_cos(2), smoothing=0)
    np.testing.assert_allclose(p[:, 0], [0, 0, 1, 0, 0], atol=1e-12)


def test_hand_case_disjoint_and_half_overlapping_spectra():
    # cos at bin 2 vs cos at bin 1: disjoint spectra → H = 1.
    assert hellinger_spectral(_cos(2), _cos(1), smoothing=0) == pytest.approx(1.0, abs=1e-12)
    # cos at bin 2 vs cos1 + cos2 (equal power at bins 1 and 2): Σ sqrt(pq) = sqrt(1 · 0.5).
    mixed = _cos(1) + _cos(2)
    expected = math.sqrt(1 - math.sqrt(0.5))
    assert hellinger_spectral(_cos(2), mixed, smoothing=0) == pytest.approx(expected, rel=1e-12)


def test_identical_series_give_zero():
    x = np.random.default_rng(0).standard_normal((1000, 3)).cumsum(axis=0)
    assert hellinger_spectral(x, x) < 1e-6


def test_sines_of_different_frequency_are_close_to_one():
    t = np.arange(4000) * 0.01
    a = np.sin(2 * np.pi * 1.0 * t)[:, None]
    b = np.sin(2 * np.pi * 7.0 * t)[:, None]  # 240 frequency bins apart
    assert hellinger_spectral(a, b, smoothing=20) > 0.99


def test_scale_and_offset_do_not_matter():
    x = np.random.default_rng(1).standard_normal((500, 2))
    assert hellinger_spectral(3 * x + 7, x) < 1e-6


def test_spectra_shape_and_normalisation():
    p = power_spectra(np.random.default_rng(2).standard_normal((101, 4)))
    assert p.shape == (51, 4)
    np.testing.assert_allclose(p.sum(axis=0), 1.0, rtol=1e-12)
    assert (p >= 0).all()


# ---------------------------------------------------------------- slow path
@pytest.mark.parametrize("t,sigma", [(64, 0), (96, 1), (128, 5), (200, 20)])
def test_matches_slow_dft_path(t, sigma):
    rng = np.random.default_rng(t)
    gen = rng.standard_normal((t, 2)).cumsum(axis=0)
    ref = np.c_[np.sin(np.arange(t) * 0.3), rng.standard_normal(t)] + 0.1 * rng.standard_normal((t, 2))
    fast = hellinger_spectral(gen, ref, smoothing=sigma)
    assert fast == pytest.approx(slow_hellinger(gen, ref, sigma), rel=1e-6)
    assert 0 < fast < 1


def test_per_dim_average_is_the_score():
    rng = np.random.default_rng(3)
    g, r = rng.standard_normal((300, 3)), rng.standard_normal((300, 3)).cumsum(axis=0)
    per = hellinger_per_dim(g, r, smoothing=2)
    assert per.shape == (3,)
    assert hellinger_spectral(g, r, smoothing=2) == pytest.approx(per.mean(), rel=1e-14)


# ---------------------------------------------------------------- edge cases
def test_different_lengths_are_cut_to_the_shorter():
    rng = np.random.default_rng(4)
    g, r = rng.standard_normal((700, 2)), rng.standard_normal((500, 2)).cumsum(axis=0)
    assert hellinger_spectral(g, r) == hellinger_spectral(g[:500], r)
    assert hellinger_spectral(r, g) == hellinger_spectral(r, g[:500])


def test_constant_column_gives_nan_for_that_dimension_and_the_average():
    rng = np.random.default_rng(5)
    r = rng.standard_normal((200, 2))
    g = r.copy()
    g[:, 1] = 4.2  # a generated dimension collapsed to a fixed point
    per = hellinger_per_dim(g, r)
    assert per[0] < 1e-6 and math.isnan(per[1])
    assert math.isnan(hellinger_spectral(g, r))
    assert np.isnan(power_spectra(g)[:, 1]).all()


def test_nonfinite_column_gives_nan():
    r = np.random.default_rng(6).standard_normal((100, 1))
    g = r.copy()
    g[10, 0] = np.inf
    assert math.isnan(hellinger_spectral(g, r))


def test_errors():
    x = np.random.default_rng(7).standard_normal((50, 2))
    with pytest.raises(DataError, match="2 columns but reference has 3"):
        hellinger_spectral(x, np.ones((50, 3)))
    with pytest.raises(DataError, match="smoothing"):
        power_spectra(x, smoothing=-1)
    with pytest.raises(DataError, match="at least 2 time points"):
        hellinger_spectral(x[:1], x[:1])


def test_segment_averaged_spectrum_of_a_long_run():
    """average_segments: the mean of the reference-length segments' spectra (by hand for two segments);
    without it only the first segment counts."""
    import numpy as np

    from dsrecon.metrics.spectrum import hellinger_per_dim, power_spectra

    rng = np.random.default_rng(0)
    ref, gen = rng.standard_normal((64, 2)), rng.standard_normal((128, 2))
    p = (power_spectra(gen[:64], 1.0) + power_spectra(gen[64:], 1.0)) / 2
    q = power_spectra(ref, 1.0)
    want = np.sqrt(np.clip(1 - np.sum(np.sqrt(p * q), axis=0), 0, None))
    np.testing.assert_allclose(hellinger_per_dim(gen, ref, 1.0, average_segments=True), want)
    np.testing.assert_allclose(hellinger_per_dim(gen, ref, 1.0), hellinger_per_dim(gen[:64], ref, 1.0))
