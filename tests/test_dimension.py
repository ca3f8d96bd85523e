"""Grassberger–Procaccia correlation dimension on sets of known dimension."""

from __future__ import annotations

import numpy as np
import pytest

from dsrecon.errors import DataError
from dsrecon.metrics.dimension import correlation_dimension


def test_uniform_square_is_2():
    x = np.random.default_rng(0).random((4000, 2))
    assert correlation_dimension(x) == pytest.approx(2.0, abs=0.1)


def test_line_in_3d_is_1():
    t = np.random.default_rng(1).random(4000)
    assert correlation_dimension(np.c_[t, 2 * t, -t + 3]) == pytest.approx(1.0, abs=0.05)


def test_lorenz63_is_about_2_05():
    from dsrecon.systems import get_system, integrate

    x = integrate(get_system("lorenz63"), 30_000, 0.01, rng=np.random.default_rng(0))
    assert correlation_dimension(x) == pytest.approx(2.05, abs=0.1)


def test_fixed_point_gives_nan_and_curve_is_returned():
    x = np.ones((100, 3))
    assert np.isnan(correlation_dimension(x))
    d, curve = correlation_dimension(np.random.default_rng(2).random((500, 2)), return_curve=True)
    assert curve["r"].shape == curve["C"].shape and np.all(np.diff(curve["C"]) >= 0)


def test_too_few_points_is_a_data_error():
    with pytest.raises(DataError, match="at least 50"):
        correlation_dimension(np.zeros((10, 2)))
