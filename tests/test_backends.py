"""Every latent-dynamics backend: fits, free-runs bounded, closed-form/autograd Jacobians agree,
and the CLI lists and selects them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dsrecon import ConvSSM, Recording
from dsrecon.models.base import LatentDynamics, available_backends, get_backend
from dsrecon.systems import simulate_system

torch.set_num_threads(1)

ALL = ["plrnn", "shplrnn", "cshplrnn", "alrnn", "dendplrnn", "s4d", "lru", "mamba", "chimera", "linear"]
SMALL = {"s4d": {"state_size": 4}, "lru": {"state_size": 4}, "mamba": {"state_size": 4}, "chimera": {"state_size": 4}}


@pytest.fixture(scope="module")
def lorenz():
    out = simulate_system("lorenz63", 600, 0.01, 0.5, kernel="spm", noise=0.01, seed=0)
    return Recording(out["observed"], tr=0.5, names=out["names"], source="lorenz")


def test_registry_has_every_backend():
    assert set(ALL) <= set(available_backends())


@pytest.mark.parametrize("name", ALL)
def test_backend_fits_and_free_runs_10000_finite_steps(name, lorenz, monkeypatch):
    # validation's free run is shortened (50 000 → 4 000 steps): a stepped SSM backend spends
    # ~20 s of this test in it, and validation's length is tested in test_fit.py
    from dsrecon.training import validation

    monkeypatch.setattr(validation, "VAL_MIN_STEPS", 2_000)
    monkeypatch.setattr(validation, "VAL_HORIZON", 4_000)
    model = ConvSSM(backend=name, epochs=2, batches_per_epoch=2, batch_size=4, hidden_dim=8, val_every=2, sequence_length=80,
                    backend_options=SMALL.get(name, {}), seed=0).fit(lorenz)
    assert model.config["training"]["epochs_run"] == 2
    sim = model.simulate(10_000)
    assert sim["latent"].shape == (10_000, 3) and np.isfinite(sim["latent"]).all()
    assert np.isfinite(sim["observed"]).all()


def test_scan_path_trains_with_full_forcing(lorenz):
    """α = 1 on all units makes the SSM inputs known: training goes through the parallel scan."""
    model = ConvSSM(backend="s4d", epochs=2, batches_per_epoch=2, batch_size=4, hidden_dim=8, alpha="1",
                    backend_options={"state_size": 4}, seed=0).fit(lorenz)
    assert np.isfinite(model.simulate(500)["latent"]).all()


def _autograd_jacobian(model: LatentDynamics, state: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.autograd.functional.jacobian(lambda s: model.step(s[None])[0], s) for s in state])


JAC = [("plrnn", {}), ("shplrnn", {"hidden_dim": 7}), ("cshplrnn", {"hidden_dim": 7}), ("alrnn", {"pwl_units": 2}),
       ("dendplrnn", {"bases": 6}), ("linear", {}), ("linear", {"transition": "diag"}),
       ("s4d", {"hidden_dim": 5, "state_size": 3}), ("s4d", {"hidden_dim": 5, "state_size": 3, "transition": "dense"}),
       ("lru", {"hidden_dim": 5, "state_size": 3}), ("mamba", {"hidden_dim": 5, "state_size": 3}),
       ("chimera", {"hidden_dim": 5, "state_size": 3})]


@pytest.mark.parametrize("name,opts", JAC, ids=[f"{n}{'-' + '-'.join(map(str, o.values())) if o else ''}" for n, o in JAC])
def test_jacobian_matches_autograd(name, opts):
    g = torch.Generator().manual_seed(1)
    model = get_backend(name)(4, generator=g, **opts).double()
    with torch.no_grad():  # move parameters off their init so every term is exercised
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    state = model.init_state(torch.randn(6, 4, generator=g, dtype=torch.float64)).detach()
    state = state + 0.1 * torch.randn(state.shape, generator=g, dtype=torch.float64)
    J = model.jacobian(state)
    assert J.shape == (6, model.state_dim, model.state_dim)
    assert torch.allclose(J, _autograd_jacobian(model, state), atol=1e-10)


def test_dendplrnn_step_hand_computed():
    m = get_backend("dendplrnn")(2, bases=2)
    with torch.no_grad():
        m.A.copy_(torch.tensor([0.5, 0.9]))
        m.W.copy_(torch.tensor([[7.0, 2.0], [-1.0, 7.0]]))  # diagonal is ignored
        m.h0.copy_(torch.tensor([0.1, -0.1]))
        m.alpha.copy_(torch.tensor([1.0, 0.5]))
        m.thresholds.copy_(torch.tensor([[0.0, 0.0], [1.0, -1.0]]))
    z = torch.tensor([[2.0, -0.5]])
    # φ = 1·relu(z − 0) + 0.5·relu(z − (1, −1)) = (2 + 0.5, 0 + 0.25) = (2.5, 0.25)
    # z' = (0.5·2 + 2·0.25 + 0.1, 0.9·(−0.5) − 1·2.5 − 0.1) = (1.6, −3.05)
    assert torch.allclose(m.step(z), torch.tensor([[1.6, -3.05]]))


def test_alrnn_only_last_units_are_piecewise_linear():
    m = get_backend("alrnn")(4, pwl_units=2)
    assert m.relu_mask.tolist() == [False, False, True, True]
    with pytest.raises(ValueError, match="`pwl_units`"):
        get_backend("alrnn")(3, pwl_units=4)


def test_s4d_inits_and_real_variant():
    lin = get_backend("s4d")(3, state_size=4, init="lin")
    inv = get_backend("s4d")(3, state_size=4, init="inv")
    assert torch.allclose(lin.A_im, torch.pi * torch.arange(4.0))
    assert torch.allclose(inv.A_im, (4 / torch.pi) * (4 / (2 * torch.arange(4.0) + 1) - 1))
    real = get_backend("s4d")(3, state_size=4, init="real", real=True)
    assert real.hidden_size == 4 and lin.hidden_size == 8
    assert torch.allclose(-torch.exp(real.log_neg_re), -(torch.arange(4.0) + 1))
    # ZOH: Ā = exp(ΔA), B̄ = (Ā − 1)/A · B, checked with torch complex arithmetic
    lr, li, Br, Bi = lin.discrete()
    A = torch.complex(-torch.exp(lin.log_neg_re), lin.A_im)
    Ab = torch.exp(torch.exp(lin.log_dt) * A)
    Bb = ((Ab - 1) / A)[:, None] * torch.complex(lin.B_re, lin.B_im)
    assert torch.allclose(torch.complex(lr, li), Ab) and torch.allclose(torch.complex(Br, Bi), Bb, atol=1e-6)


def test_lru_ring_init_and_gamma():
    m = get_backend("lru")(3, state_size=64, r_min=0.5, r_max=0.8)
    lr, li, _, _ = m.discrete()
    mod = torch.sqrt(lr**2 + li**2)
    assert mod.min() >= 0.5 - 1e-6 and mod.max() <= 0.8 + 1e-6
    assert torch.allclose(torch.exp(m.gamma_log), torch.sqrt(1 - mod**2), atol=1e-6)


@pytest.mark.parametrize("name", ["s4d", "lru", "mamba"])
def test_init_state_is_the_steady_state_for_constant_input(name):
    m = get_backend(name)(3, hidden_dim=6, state_size=4).double()
    z0 = torch.randn(2, 3, dtype=torch.float64)
    s0 = m.init_state(z0)
    s1 = m.step(s0)
    assert torch.allclose(s1[:, 3:], s0[:, 3:], atol=1e-10)  # hidden part is a fixed point for input z0


def test_mamba_step_cache_equals_causal_conv():
    """The conv cache in `step` reproduces a depthwise causal conv over the input history."""
    m = get_backend("mamba")(2, hidden_dim=3, state_size=2, d_conv=3).double()
    u = torch.randn(1, 6, 2, dtype=torch.float64)
    state = torch.zeros(1, m.state_dim, dtype=torch.float64)
    x = u @ m.W_x.T  # (1, 6, E)
    for t in range(6):
        state = torch.cat([u[:, t], state[:, 2:]], dim=1)
        state = m.step(state)
        cache = state[:, 2 : 2 + 2 * 3].view(2, 3)
        expect = torch.stack([x[0, t - 1] if t >= 1 else torch.zeros(3, dtype=torch.float64), x[0, t]])
        assert torch.allclose(cache, expect)


def test_cli_lists_backends_with_description_and_parameters(cli):
    r = cli("backends", "--json")
    assert r.code == 0, r.err
    rows = json.loads(r.out)["backends"]
    for name in ALL:
        assert rows[name]["description"], name
    assert "pwl_units" in rows["alrnn"]["parameters"] and "bases" in rows["dendplrnn"]["parameters"]
    assert {"init", "real", "transition"} <= set(rows["s4d"]["parameters"])
    assert {"r_min", "r_max"} <= set(rows["lru"]["parameters"])


def test_cli_fit_selects_backend_and_options(cli, tmp_path):
    x = tmp_path / "x.tsv"
    assert cli("simulate", "system", "lorenz63", "--length", "500", "--tr", "0.5", "--dt", "0.01", "--noise", "0.01", "-o", x).code == 0
    run = tmp_path / "run"
    r = cli("fit", x, "-o", run, "--backend", "s4d", "--backend-option", "real=true", "--backend-option", "state_size=3",
            "--epochs", "1", "--batches-per-epoch", "1", "--hidden-dim", "4", "--json", "--quiet")
    assert r.code == 0, r.err
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["backend"] == "s4d" and cfg["backend_options"]["real"] is True
    r = cli("fit", x, "-o", tmp_path / "bad", "--backend", "s4d", "--backend-option", "init=bogus", "--epochs", "1")
    assert r.code == 1 and "init must be lin, inv or real" in r.err and "Traceback" not in r.err


@pytest.mark.parametrize("name,opts", [("s4d", {}), ("s4d", {"real": True}), ("lru", {}), ("lru", {"transition": "dense"})])
def test_rollout_with_parameters_fixed_equals_plain_steps(name, opts):
    """A forced rollout computes the discretised transition once; values and gradients must equal
    a loop of `step` + forcing that recomputes it at every step."""
    from dsrecon.models.base import force

    torch.manual_seed(0)
    m = get_backend(name)(3, hidden_dim=8, state_size=4, **opts).double()
    if opts.get("transition") == "dense":
        with torch.no_grad():
            m.Q.normal_(0, 0.05)
    z0 = m.init_state(torch.randn(4, 3, dtype=torch.float64)).detach()
    teacher = torch.randn(4, 30, 3, dtype=torch.float64)
    teacher[1, 5:9] = float("nan")  # missing teacher values: no forcing there

    out = m.rollout(z0, 30, teacher, 0.3)
    g_fast = torch.autograd.grad(out.square().sum(), list(m.parameters()), allow_unused=True)
    z, ref = z0, []
    for t in range(30):
        z = m.step(z)
        ref.append(z)
        z = force(z, teacher[:, t], torch.tensor(0.3, dtype=torch.float64))
    ref = torch.stack(ref, 1)
    g_ref = torch.autograd.grad(ref.square().sum(), list(m.parameters()), allow_unused=True)
    assert m._discrete_cache is None
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(g_fast, g_ref):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
