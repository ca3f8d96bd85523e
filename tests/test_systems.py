"""Benchmark systems: registry, right-hand sides, analytic Jacobians, integration, simulation."""

import json
from importlib import resources

import numpy as np
import pytest

from dsrecon.errors import DsreconError
from dsrecon.signal.kernels import convolve_valid, spm_hrf
from dsrecon.systems import get_system, integrate, list_systems, simulate_system

ALL = [
    "chen", "chua", "fitzhugh_nagumo", "hindmarsh_rose", "jansen_rit", "lorenz63",
    "lorenz96", "rossler", "rucklidge", "thomas", "van_der_pol",
]


def test_registry_lists_every_system():
    assert list_systems() == ALL


def test_systems_json_is_package_data_with_required_fields():
    specs = json.loads(resources.files("dsrecon.systems").joinpath("systems.json").read_text())
    for name, spec in specs.items():
        for key in ("params", "dim", "state_names", "default_dt", "default_transient", "ic_box", "dysts_name"):
            assert key in spec, (name, key)


def test_lorenz63_parameters_and_dysts_name():
    s = get_system("lorenz63")
    assert s.params == {"sigma": 10.0, "rho": 28.0, "beta": pytest.approx(8 / 3)}
    assert (s.name, s.dim, s.state_names, s.default_dt, s.dysts_name) == ("lorenz63", 3, ["x", "y", "z"], 0.01, "Lorenz")


def test_dysts_names_exist_in_dysts_reference_table():
    dysts = pytest.importorskip("dysts")  # dev extra; the reference JSON ships in its wheel
    from pathlib import Path

    table = json.loads((Path(dysts.__file__).parent / "data" / "chaotic_attractors.json").read_text())
    for name in ALL:
        s = get_system(name)
        if s.dysts_name is not None:
            assert s.dysts_name in table
            ref = table[s.dysts_name]["parameters"]
            for k, v in ref.items():  # same system, same parameters (dysts rounds 8/3 to 2.667)
                key = {"f": "F"}.get(k, k)
                assert s.params[key] == pytest.approx(v, rel=1e-3), (name, k)


def test_unknown_system_is_a_one_line_user_error():
    with pytest.raises(DsreconError, match=r"unknown system 'nope' \(available: chen, chua, .*van_der_pol\)"):
        get_system("nope")


def test_parameter_overrides_and_bad_parameters():
    assert get_system("lorenz63", rho=99).params["rho"] == 99.0
    with pytest.raises(DsreconError, match="no parameter 'gamma'"):
        get_system("lorenz63", gamma=1.0)


def test_dim_only_for_variable_size_systems():
    assert get_system("lorenz96").dim == 10
    s = get_system("lorenz96", dim=6)
    assert s.dim == 6 and s.state_names == [f"x{i}" for i in range(6)] and s.params["F"] == 8.0
    assert get_system("lorenz63", dim=3).dim == 3
    with pytest.raises(DsreconError, match="`dim`"):
        get_system("lorenz63", dim=5)
    with pytest.raises(DsreconError, match="`dim`"):
        get_system("lorenz96", dim=3)


def test_lorenz63_rhs_hand_computed():
    # (1, 2, 3): σ(y−x) = 10, x(ρ−z)−y = 23, xy − βz = 2 − 8 = −6
    np.testing.assert_allclose(get_system("lorenz63").rhs(np.array([1.0, 2.0, 3.0])), [10.0, 23.0, -6.0])


def test_lorenz96_rhs_hand_computed():
    s = get_system("lorenz96", dim=5)
    x = np.arange(1.0, 6.0)  # x0..x4 = 1..5
    # i=0: (x1 − x3) x4 − x0 + 8 = (2 − 4)·5 − 1 + 8 = −3
    # i=2: (x3 − x0) x1 − x2 + 8 = (4 − 1)·2 − 3 + 8 = 11
    out = s.rhs(x)
    assert out[0] == pytest.approx(-3.0) and out[2] == pytest.approx(11.0)


def _attractor_states(name, n=5, seed=0):
    s = get_system(name)
    traj = integrate(s, 400, transient=None, rng=np.random.default_rng(seed))
    return s, traj[np.random.default_rng(seed + 1).choice(len(traj), n, replace=False)]


@pytest.mark.parametrize("name", ALL)
def test_jacobian_matches_central_differences(name):
    s, states = _attractor_states(name)
    for x in states:
        if name == "chua" and np.min(np.abs(np.abs(x[0]) - 1.0)) < 1e-3:
            continue  # g(x) has kinks at |x| = 1
        J = s.jacobian(x)
        assert J.shape == (s.dim, s.dim)
        scale = np.maximum(np.abs(x), 1.0)
        num = np.empty_like(J)
        for j in range(s.dim):
            e = np.zeros(s.dim)
            e[j] = 1e-6 * scale[j]
            num[:, j] = (s.rhs(x + e) - s.rhs(x - e)) / (2 * e[j])
        np.testing.assert_allclose(J, num, rtol=1e-5, atol=1e-6 * np.abs(num).max())


@pytest.mark.parametrize("name", ALL)
def test_rhs_batched_equals_rowwise(name):
    s, states = _attractor_states(name, n=4)
    batched = s.rhs(states)
    assert batched.shape == states.shape
    np.testing.assert_allclose(batched, np.stack([s.rhs(x) for x in states]), rtol=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_every_system_integrates_finite_bounded_and_moving(name):
    s = get_system(name)
    x = integrate(s, 2000, rng=np.random.default_rng(3))
    assert x.shape == (2000, s.dim)
    assert np.all(np.isfinite(x)) and np.abs(x).max() < 1e4
    assert np.all(x[1000:].std(axis=0) > 1e-3)  # still moving after the transient, not at a fixed point


def _rk4(f, x0, h, n_steps, every):
    out, x = [x0.copy()], x0.copy()
    for i in range(1, n_steps + 1):
        k1 = f(x)
        k2 = f(x + h / 2 * k1)
        k3 = f(x + h / 2 * k2)
        k4 = f(x + h * k3)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        if i % every == 0:
            out.append(x.copy())
    return np.array(out)


def test_integrate_matches_fixed_step_rk4_on_sample_grid():
    # independent slow path: classical RK4 with 1/50 of the sampling step
    s = get_system("lorenz63")
    x0 = np.array([1.0, 1.0, 20.0])
    fast = integrate(s, 101, 0.01, transient=0.0, x0=x0)
    slow = _rk4(s.rhs, x0, 0.0002, 5000, 50)
    np.testing.assert_allclose(fast[0], x0)
    np.testing.assert_allclose(fast, slow, atol=1e-5)


def test_integrate_transient_and_seed():
    s = get_system("rossler")
    a = integrate(s, 50, 0.05, transient=10.0, rng=np.random.default_rng(7))
    b = integrate(s, 50, 0.05, transient=10.0, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    x0 = s.initial_state(np.random.default_rng(7))
    full = integrate(s, 250, 0.05, transient=0.0, x0=x0)
    np.testing.assert_allclose(a, full[200:], atol=1e-6)  # transient 10 = 200 samples of 0.05


def test_lorenz63_attractor_mean_z():
    x = integrate(get_system("lorenz63"), 20000, 0.01, rng=np.random.default_rng(0))
    assert x[:, 2].mean() == pytest.approx(23.5, abs=0.7)
    assert abs(x[:, 0].mean()) < 1.5  # both wings visited


def test_simulate_system_convention_noiseless():
    r = simulate_system("lorenz63", 500, 0.01, 0.2, noise=0.0, seed=4, transient=20.0)
    K = 161
    obs, lat = r["observed"], r["latent"]
    assert obs.shape == lat.shape == (500, 3) and r["names"] == ["x", "y", "z"]
    # rebuild the z-scored states and check observed[j] = Σ_k h_k z[j + K − 1 − k]
    s = get_system("lorenz63")
    ic_seed = np.random.SeedSequence(4).spawn(2)[0]
    states = integrate(s, 500 + K - 1, 0.01, 20.0, rng=np.random.default_rng(ic_seed))
    z = (states - states.mean(0)) / states.std(0)
    np.testing.assert_allclose(lat, z[K - 1 :], atol=1e-12)
    h = spm_hrf(0.2)
    j = 123
    np.testing.assert_allclose(obs[j], sum(h[k] * z[j + K - 1 - k] for k in range(K)), atol=1e-10)
    np.testing.assert_allclose(convolve_valid(lat, h), obs[K - 1 :], atol=1e-10)
    assert r["sidecar"]["kernel_taps"] == K and r["sidecar"]["RepetitionTime"] == 0.2


def test_simulate_system_noise_scale_and_identity_kernel():
    clean = simulate_system("rossler", 3000, None, 1.0, kernel="none", noise=0.0, seed=2)
    np.testing.assert_allclose(clean["observed"], clean["latent"])  # 1 tap: observation = state
    noisy = simulate_system("rossler", 3000, None, 1.0, kernel="none", noise=0.1, seed=2)
    resid = noisy["observed"] - clean["observed"]
    np.testing.assert_allclose(resid.std(0) / clean["observed"].std(0), 0.1, rtol=0.08)
    np.testing.assert_allclose(noisy["latent"], clean["latent"])  # noise stream separate from the states


def test_simulate_system_bad_inputs():
    with pytest.raises(DsreconError, match="`tr`"):
        simulate_system("lorenz63", 10, 0.01, 0.0)
    with pytest.raises(DsreconError, match="`noise`"):
        simulate_system("lorenz63", 10, 0.01, 1.0, noise=-1)
    with pytest.raises(DsreconError, match="unknown system"):
        simulate_system("lorenz64", 10, 0.01, 1.0)
