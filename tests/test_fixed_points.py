"""SCYFI fixed points and cycles on hand-computed PLRNNs; brute-force enumeration as a slow path."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dsrecon.metrics.fixed_points import (
    _solve_cycle,
    classify,
    cycles_to_json,
    find_cycles,
    find_fixed_points_generic,
    pwl_from_params,
)


def _by_period(cycles, k):
    return [c for c in cycles if c["period"] == k]


def test_hand_computed_fixed_points_of_a_decoupled_shplrnn():
    # z_i' = 0.5 z_i + relu(z_i) − 0.2 per coordinate: z_i* = 0.4 (slope 1.5) or −0.4 (slope 0.5)
    p = {"kind": "shplrnn", "A": [0.5, 0.5], "W1": np.eye(2), "W2": np.eye(2), "h1": [-0.2, -0.2], "h2": [0.0, 0.0]}
    fps = _by_period(find_cycles(p, k_max=1, n_init=60, seed=0), 1)
    got = {tuple(np.round(c["points"][0], 10)): c["stability"] for c in fps}
    assert got == {(-0.4, -0.4): "stable", (0.4, 0.4): "unstable", (0.4, -0.4): "saddle", (-0.4, 0.4): "saddle"}
    for c in fps:
        assert sorted(np.round(np.abs(c["eigenvalues"]), 10)) == sorted(0.5 + (c["points"][0] > 0))


def test_hand_computed_2_cycle():
    # z' = 0.5 z − 2 relu(z) + 1: slope −1.5 for z > 0, 0.5 for z ≤ 0.
    # fixed point 0.4 (unstable); 2-cycle z1 = 6/7 > 0, z2 = −2/7 ≤ 0 with multiplier −0.75 (stable).
    p = {"kind": "shplrnn", "A": [0.5], "W1": [[-2.0]], "W2": [[1.0]], "h1": [1.0], "h2": [0.0]}
    cycles = find_cycles(p, k_max=4, n_init=40, seed=1)
    fp = _by_period(cycles, 1)
    assert len(fp) == 1 and fp[0]["points"][0, 0] == pytest.approx(0.4) and fp[0]["stability"] == "unstable"
    two = _by_period(cycles, 2)
    assert len(two) == 1  # the two cyclic shifts are one cycle
    assert sorted(two[0]["points"][:, 0]) == pytest.approx([-2 / 7, 6 / 7])
    assert two[0]["eigenvalues"][0].real == pytest.approx(-0.75)
    assert two[0]["stability"] == "stable"
    # a 4-cycle would be the 2-cycle twice: not reported as period 4
    assert not _by_period(cycles, 4)
    # the free run converges onto it
    pwl = pwl_from_params(p)
    z = np.array([3.0])
    for _ in range(200):
        z = pwl.step(z)
    assert min(abs(z[0] - 6 / 7), abs(z[0] + 2 / 7)) < 1e-8


def test_plrnn_kind_with_linear_units_matches_its_map():
    # ALRNN-like: unit 0 linear, unit 1 relu
    p = {"kind": "plrnn", "A": [0.5, 0.3], "W": [[0.0, 0.4], [0.2, 0.0]], "h": [0.1, -0.3], "relu": [False, True]}
    pwl = pwl_from_params(p)
    z = np.array([[0.3, 0.7], [-1.0, -2.0]])
    phi = np.c_[z[:, 0], np.maximum(z[:, 1], 0)]
    np.testing.assert_allclose(pwl.step(z), np.array(p["A"]) * z + phi @ np.array(p["W"]).T + p["h"])
    fps = find_cycles(p, k_max=1, n_init=20)
    assert len(fps) == 1
    z = fps[0]["points"][0]
    np.testing.assert_allclose(pwl.step(z), z, atol=1e-12)


def _brute_force_cycles(pwl, k):
    """Slow path: try every pattern sequence, keep the self-consistent ones (as sets of points)."""
    L = pwl.W2.shape[0]
    pats = [np.array(b, dtype=bool) for b in itertools.product([False, True], repeat=L)]
    found = []
    for seq in itertools.product(pats, repeat=k):
        sol = _solve_cycle(pwl, np.array(seq))
        if sol is None:
            continue
        pts, _ = sol
        if np.array_equal(pwl.pattern(pts), np.array(seq)):
            found.append(pts)
    return found


def test_scyfi_finds_what_brute_force_enumeration_finds():
    rng = np.random.default_rng(8)  # a seed whose map has two fixed points and a 2-cycle
    M, L = 2, 3
    p = {"kind": "shplrnn", "A": rng.uniform(-0.5, 0.9, M), "W1": rng.normal(0, 1.5, (M, L)), "W2": rng.normal(0, 1, (L, M)), "h1": rng.normal(0, 0.5, M), "h2": rng.normal(0, 0.5, L)}
    pwl = pwl_from_params(p)
    cycles = find_cycles(p, k_max=2, n_init=300, seed=0, init_scale=3.0)
    for k in (1, 2):
        brute = _brute_force_cycles(pwl, k)
        # brute force lists each k-cycle k times (shifts) and fixed points again at k = 2
        brute_min = [b for b in brute if k == 1 or np.abs(b[0] - b[1]).max() > 1e-9]
        uniq = {tuple(np.round(np.sort(b[:, 0]), 8)) for b in brute_min}
        mine = {tuple(np.round(np.sort(c["points"][:, 0]), 8)) for c in _by_period(cycles, k)}
        assert mine == uniq
        assert len(uniq) >= 1


def test_classify():
    assert classify(np.array([0.5, -0.9 + 0.1j])) == "stable"
    assert classify(np.array([1.5, -2.0])) == "unstable"
    assert classify(np.array([1.5, 0.2])) == "saddle"


def test_generic_root_finding_matches_scyfi():
    p = {"kind": "shplrnn", "A": [0.5, 0.5], "W1": np.eye(2), "W2": np.eye(2), "h1": [-0.2, -0.2], "h2": [0.0, 0.0]}
    pwl = pwl_from_params(p)
    jac = lambda z: np.array([np.diag(0.5 + (zz > 0)) for zz in z])  # noqa: E731
    gen = find_fixed_points_generic(pwl.step, jac, 2, n_init=60, seed=0)
    scy = find_cycles(p, k_max=1, n_init=60, seed=0)
    key = lambda cs: {(tuple(np.round(c["points"][0], 8)), c["stability"]) for c in cs}  # noqa: E731
    assert key(gen) == key(scy) and len(gen) == 4


def test_cycles_to_json_is_plain():
    import json

    p = {"kind": "shplrnn", "A": [0.5], "W1": [[-2.0]], "W2": [[1.0]], "h1": [1.0], "h2": [0.0]}
    js = cycles_to_json(find_cycles(p, k_max=2, n_init=20))
    json.dumps(js)
    assert {c["period"] for c in js} == {1, 2}


def test_unknown_kind_is_a_user_error():
    from dsrecon.errors import DsreconError

    with pytest.raises(DsreconError, match="unknown kind"):
        find_cycles({"kind": "lstm"})
