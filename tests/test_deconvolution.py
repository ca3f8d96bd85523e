"""Wiener deconvolution (docs/method.md §3): noise level, VisuShrink denoising, kernel inversion."""

import math

import numpy as np
import pytest
import pywt

from dsrecon.errors import DataError
from dsrecon.signal.deconvolution import edge_mask_counts, noise_level, wavelet_denoise, wiener_deconvolve
from dsrecon.signal.kernels import convolve_valid, make_kernel, spm_hrf
from dsrecon.systems import get_system, integrate


@pytest.fixture(scope="module")
def lorenz_bold():
    """z-scored Lorenz63 x (dt 0.01) through spm_hrf(0.2) + noise (1 % of signal std)."""
    h = spm_hrf(0.2)
    K, T = len(h), 2400
    states = integrate(get_system("lorenz63"), T + K - 1, 0.01, transient=20.0, rng=np.random.default_rng(11))
    z = (states[:, 0] - states[:, 0].mean()) / states[:, 0].std()
    clean = convolve_valid(z, h)
    x = clean + 0.01 * clean.std() * np.random.default_rng(12).standard_normal(T)
    return x, z[K - 1 :], h


def test_noise_level_of_white_noise():
    x = 0.3 * np.random.default_rng(0).standard_normal(4000)
    assert noise_level(x) == pytest.approx(0.3, rel=0.15)


def test_noise_level_hand_computed_mad():
    x = np.random.default_rng(1).standard_normal(256)
    _, d1 = pywt.dwt(x, "sym5")
    expected = np.median(np.abs(d1 - np.median(d1))) / 0.6745
    assert noise_level(x) == pytest.approx(expected)


def test_noise_level_odd_length_uses_even_prefix_and_floor():
    x = np.random.default_rng(2).standard_normal(501)
    assert noise_level(x) == noise_level(x[:500])
    assert noise_level(np.ones(100)) == 1e-5  # noiseless: the floor


def test_wavelet_denoise_levels_and_effect():
    T = 1024
    t = np.arange(T)
    clean = np.sin(2 * np.pi * t / 128)
    noisy = clean + 0.3 * np.random.default_rng(3).standard_normal(T)
    den = wavelet_denoise(noisy, noise_level(noisy))
    assert den.shape == (T,)
    assert np.std(den - clean) < 0.5 * np.std(noisy - clean)
    # levels = min(#times T divides by 2, 6), at least 1
    from dsrecon.signal.deconvolution import _n_levels

    assert [_n_levels(n) for n in (1024, 3000, 1000, 999, 96)] == [6, 3, 3, 1, 5]
    odd = wavelet_denoise(noisy[:999], 0.3)
    assert odd.shape == (999,) and np.all(np.isfinite(odd))


def test_wavelet_denoise_threshold_zero_is_identity():
    x = np.random.default_rng(4).standard_normal(512)
    np.testing.assert_allclose(wavelet_denoise(x, 0.0), x, atol=1e-10)


def test_deconvolved_lorenz_correlates_with_latent(lorenz_bold):
    x, latent, h = lorenz_bold
    d = wiener_deconvolve(x, h)
    assert d.shape == (len(x), 1) and d.dtype == np.float64
    ok = ~np.isnan(d[:, 0])
    r = np.corrcoef(d[ok, 0], latent[ok])[0, 1]
    assert r > 0.9, r
    # plain observations lag the latent by the HRF delay: far worse teacher signals
    assert np.corrcoef(x[ok], latent[ok])[0, 1] < r - 0.1


@pytest.mark.parametrize("tr,start,end", [(0.2, 41, 81), (2.0, 5, 9)])
def test_edge_masking_counts(lorenz_bold, tr, start, end):
    h = spm_hrf(tr)
    assert edge_mask_counts(len(h)) == (math.ceil(0.25 * len(h)), math.ceil(0.5 * len(h))) == (start, end)
    d = wiener_deconvolve(lorenz_bold[0], h)[:, 0]
    nan = np.isnan(d)
    assert nan[:start].all() and nan[len(d) - end :].all() and not nan[start : len(d) - end].any()
    assert not np.isnan(wiener_deconvolve(lorenz_bold[0], h, mask_edges=False)).any()


def test_identity_kernel_masks_nothing_and_returns_the_series():
    t = np.arange(1001)
    x = np.sin(2 * np.pi * t / 100) + 0.01 * np.random.default_rng(5).standard_normal(t.size)
    d = wiener_deconvolve(x, make_kernel("none", 1.0).taps)
    assert edge_mask_counts(1) == (0, 0) and not np.isnan(d).any()
    assert np.corrcoef(d[:, 0], x)[0, 1] > 0.999
    np.testing.assert_allclose(d[:, 0], x, atol=0.05)


def test_noiseless_circular_convolution_is_inverted():
    # x = h ⊛ z (circular) with a smooth z: the regulariser is tiny where the signal has power
    T = 512
    z = np.sin(2 * np.pi * np.arange(T) / 64) + 0.5 * np.cos(2 * np.pi * np.arange(T) / 32)
    h = spm_hrf(2.0)
    x = np.real(np.fft.ifft(np.fft.fft(z) * np.fft.fft(h, n=T)))
    d = wiener_deconvolve(x, h, mask_edges=False)[:, 0]
    np.testing.assert_allclose(d, z, atol=1e-3)


def test_columns_are_independent_and_odd_length():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((301, 3))
    h = spm_hrf(2.0)
    d = wiener_deconvolve(x, h)
    assert d.shape == (301, 3)
    np.testing.assert_array_equal(d[:, 1], wiener_deconvolve(x[:, 1], h)[:, 0])


def test_kernel_object_deconvolve():
    k = make_kernel("spm", 2.0)
    x = np.random.default_rng(7).standard_normal((100, 2))
    np.testing.assert_array_equal(k.deconvolve(x), wiener_deconvolve(x, k.taps))


def test_bad_inputs():
    h = spm_hrf(0.2)
    with pytest.raises(DataError, match="shorter than the kernel"):
        wiener_deconvolve(np.zeros(100), h)
    x = np.ones(300)
    x[5] = np.nan
    with pytest.raises(DataError, match="NaN"):
        wiener_deconvolve(x, spm_hrf(2.0))
    with pytest.raises(DataError, match="taps"):
        wiener_deconvolve(np.ones(300), np.zeros(3))
