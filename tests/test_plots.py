"""Figures: each writes a non-empty PNG and SVG from arrays, including degenerate inputs."""

from __future__ import annotations

import numpy as np
import pytest

from dsrecon.plots import figures as F


def _check(paths, stem):
    assert [p.suffix for p in paths] == [".png", ".svg"]
    png, svg = paths
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
    assert svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text()
    assert not list(stem.parent.glob(".*.tmp"))  # atomic writes leave no temporaries


@pytest.fixture
def series():
    t = np.arange(400) * 0.1
    obs = np.c_[np.sin(t), np.cos(t), np.sin(0.5 * t), np.cos(0.3 * t)]
    gen = obs[::-1] + 0.05
    return obs, gen


def test_time_series_and_spectra(tmp_path, series):
    obs, gen = series
    _check(F.time_series(obs, gen, tmp_path / "ts", tr=0.1, names=list("abcd")), tmp_path / "ts")
    _check(F.power_spectra(obs, gen, tmp_path / "ps", tr=0.1), tmp_path / "ps")


def test_spectra_of_a_constant_model_do_not_fail(tmp_path, series):
    obs, _ = series
    _check(F.power_spectra(obs, np.ones_like(obs), tmp_path / "ps"), tmp_path / "ps")


@pytest.mark.parametrize("dims", [2, 3])
def test_attractor_projections_use_pca_when_n_exceeds_dims(tmp_path, series, dims):
    obs, gen = series
    _check(F.attractor(obs, gen, tmp_path / f"a{dims}", dims=dims), tmp_path / f"a{dims}")
    _check(F.attractor(None, gen[:, :2], tmp_path / "b", dims=dims), tmp_path / "b")


def test_pca_projection_recovers_the_principal_axis():
    rng = np.random.default_rng(0)
    x = np.c_[rng.normal(0, 5, 500), rng.normal(0, 0.1, 500)] @ np.array([[0.6, 0.8], [-0.8, 0.6]])
    _, basis, _ = F.pca_project(x, 1)
    assert abs(abs(basis[:, 0] @ np.array([0.6, 0.8])) - 1) < 1e-3


def test_training_curves_from_a_log_with_missing_validation(tmp_path):
    log = tmp_path / "training_log.tsv"
    log.write_text("epoch\tloss\talpha\tval_D_stsp\tval_D_H\n1\t1.0\t0.15\t\t\n2\t0.5\t0.15\t3.0\t0.4\n3\t0.3\t0.15\tnan\tnan\n")
    _check(F.training_curves(log, tmp_path / "tc"), tmp_path / "tc")


def test_lyapunov_convergence_and_fixed_points(tmp_path):
    steps = np.arange(1, 51) * 100
    running = np.c_[0.9 + 1 / steps, -14.5 + 0 * steps]
    _check(F.lyapunov_convergence(steps, running, tmp_path / "ly"), tmp_path / "ly")
    lat = np.random.default_rng(0).normal(size=(300, 3))
    cycles = [{"period": 1, "points": np.zeros((1, 3)), "stability": "saddle"}, {"period": 2, "points": np.ones((2, 3)), "stability": "stable"}]
    _check(F.fixed_points_on_attractor(lat, cycles, tmp_path / "fp"), tmp_path / "fp")
    _check(F.fixed_points_on_attractor(lat[:, :1], cycles, tmp_path / "fp1"), tmp_path / "fp1")


@pytest.mark.parametrize("n_regions", [3, 4])
def test_3d_attractor_without_data_labels_the_empty_panel(tmp_path, series, n_regions):
    """`dsrecon report RUN` without --data draws the 3-D projection of a model of 3+ regions with an
    empty data panel (Axes3D.text needs x, y, z: the label must be placed with text2D)."""
    _, gen = series
    _check(F.attractor(None, gen[:, :n_regions], tmp_path / "c", dims=3), tmp_path / "c")
