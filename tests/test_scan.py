"""Parallel scans (dsrecon/models/backends/scan.py) against their sequential loops, and every
backend whose teacher-forced rollout uses a scan against repeated `step` (4 096 steps, float32)."""

from __future__ import annotations

import math

import pytest
import torch

from dsrecon.models.backends.scan import (
    complex_scan,
    complex_scan_sequential,
    linear_scan,
    linear_scan_sequential,
    matrix_scan,
    matrix_scan_sequential,
)
from dsrecon.models.base import LatentDynamics, get_backend

torch.set_num_threads(1)
T_LONG = 4096
TOL = 1e-5


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_real_diagonal_scan_matches_loop():
    g = _gen(0)
    a = 0.5 + 0.49 * torch.rand(3, T_LONG, 7, generator=g)  # |a| up to 0.99: long memory
    b = torch.randn(3, T_LONG, 7, generator=g) * torch.sqrt(1 - a**2)  # LRU-style γ keeps h O(1)
    h0 = torch.randn(3, 7, generator=g)
    fast, slow = linear_scan(a, b, h0), linear_scan_sequential(a, b, h0)
    assert fast.shape == (3, T_LONG, 7)
    assert (fast - slow).abs().max() < TOL


def test_complex_scan_matches_complex_loop():
    g = _gen(1)
    r = 0.5 + 0.49 * torch.rand(2, T_LONG, 5, generator=g)
    th = 2 * math.pi * torch.rand(2, T_LONG, 5, generator=g)
    a = (r * torch.cos(th), r * torch.sin(th))
    scale = torch.sqrt(1 - r**2)
    b = (torch.randn(2, T_LONG, 5, generator=g) * scale, torch.randn(2, T_LONG, 5, generator=g) * scale)
    h0 = (torch.randn(2, 5, generator=g), torch.randn(2, 5, generator=g))
    fr, fi = complex_scan(a, b, h0)
    sr, si = complex_scan_sequential(a, b, h0)  # torch complex64 arithmetic: an independent path
    assert max((fr - sr).abs().max(), (fi - si).abs().max()) < TOL


def test_matrix_scan_matches_loop():
    g = _gen(2)
    D = 4
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=g))
    A = (0.97 * Q).expand(2, T_LONG, D, D) * (1 + 0.02 * torch.rand(2, T_LONG, 1, 1, generator=g)) / 1.02
    b = 0.3 * torch.randn(2, T_LONG, D, generator=g)
    h0 = torch.randn(2, D, generator=g)
    fast, slow = matrix_scan(A, b, h0), matrix_scan_sequential(A, b, h0)
    assert (fast - slow).abs().max() < TOL


def test_scan_hand_computed_case():
    a = torch.tensor([[[2.0], [3.0], [0.5]]])
    b = torch.tensor([[[1.0], [1.0], [4.0]]])
    # h0 = 1: h = 2·1+1 = 3, 3·3+1 = 10, 0.5·10+4 = 9
    assert linear_scan(a, b, torch.tensor([[1.0]])).flatten().tolist() == [3.0, 10.0, 9.0]


def _forced_setup(model: LatentDynamics, T: int, alpha, g: torch.Generator, nan_frac: float = 0.0):
    B = 2
    z0 = torch.randn(B, model.M, generator=g)
    state0 = model.init_state(z0)
    teacher = torch.randn(B, T, model.M, generator=g)
    if nan_frac:
        teacher[torch.rand(teacher.shape, generator=g) < nan_frac] = float("nan")
    return state0, teacher


# backends whose rollout uses a scan, and the forcing under which it is exact
SCANNED = [
    ("linear", {"transition": "dense"}, 0.15),
    ("linear", {"transition": "diag"}, 0.15),
    ("s4d", {"hidden_dim": 8, "state_size": 8}, 1.0),
    ("s4d", {"hidden_dim": 8, "state_size": 8, "real": True, "init": "real"}, 1.0),
    ("s4d", {"hidden_dim": 8, "state_size": 4, "init": "inv", "transition": "block", "block": 4}, 1.0),
    ("lru", {"hidden_dim": 8, "state_size": 8}, 1.0),
    ("lru", {"hidden_dim": 8, "state_size": 4, "transition": "dense"}, 1.0),
    ("mamba", {"hidden_dim": 8, "state_size": 4}, 1.0),
]


@pytest.mark.parametrize("name,opts,alpha", SCANNED, ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items())}" for n, o, _ in SCANNED])
def test_backend_scan_rollout_matches_repeated_step(name, opts, alpha):
    g = _gen(3)
    model = get_backend(name)(3, generator=g, **opts)
    state0, teacher = _forced_setup(model, T_LONG, alpha, g, nan_frac=0.1 if name == "linear" else 0.0)
    with torch.no_grad():
        fast = model.rollout(state0, T_LONG, teacher, alpha)
        slow = LatentDynamics.rollout(model, state0, T_LONG, teacher, alpha)  # the reference loop
    assert fast.shape == slow.shape == (2, T_LONG, model.state_dim)
    assert torch.isfinite(slow).all()
    assert (fast - slow).abs().max() < TOL


def test_scan_is_used_only_when_exact():
    """With α < 1 the fed-back input depends on the output: the SSM rollout must fall back to steps."""
    g = _gen(4)
    model = get_backend("lru")(3, hidden_dim=8, state_size=4, generator=g)
    state0, teacher = _forced_setup(model, 50, 0.3, g)
    calls = []
    model._scan = lambda u, h: calls.append(1)  # would be wrong here; must not be called
    with torch.no_grad():
        out = model.rollout(state0, 50, teacher, 0.3)
        ref = LatentDynamics.rollout(model, state0, 50, teacher, 0.3)
    assert not calls
    assert torch.equal(out, ref)


def test_scan_rollout_gradients_match_loop():
    g = _gen(5)
    model = get_backend("s4d")(3, hidden_dim=6, state_size=4, generator=g)
    state0, teacher = _forced_setup(model, 64, 1.0, g)
    state0 = state0.detach()
    grads = []
    for fn in (model.rollout, lambda *a: LatentDynamics.rollout(model, *a)):
        model.zero_grad()
        fn(state0, 64, teacher, 1.0)[..., :3].pow(2).mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5, rtol=1e-4)
