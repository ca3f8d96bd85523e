"""Parallel scans for linear recurrences, in pure PyTorch (docs/method.md §8).

Solves h_t = a_t ⊙ h_{t−1} + b_t (diagonal, real or complex) and h_t = A_t h_{t−1} + b_t (dense)
for t = 0 … T−1 from h_{−1} = h0, in O(log T) sequential rounds (Hillis–Steele doubling over the
associative operator (a2, b2) ∘ (a1, b1) = (a2 a1, a2 b1 + b2)). Complex values travel as
real/imaginary pairs so the code stays in real dtypes (torch.compile does not lower complex ops).

Every scan has a sequential reference (`*_sequential`) that the tests compare it with.

Shapes: time is dim 1. a, b: (B, T, D) for real diagonal scans; complex diagonal scans take the
pairs (a_re, a_im), (b_re, b_im), each (B, T, D); dense scans take A (B, T, D, D) and b (B, T, D).
h0: (B, D) (or a pair), None meaning zeros. Results: (B, T, D) (or a pair).
"""

from __future__ import annotations

import torch

Pair = tuple[torch.Tensor, torch.Tensor]


def _shift(x: torch.Tensor, k: int, fill: float) -> torch.Tensor:
    """x shifted k steps later in time (dim 1); the first k entries become `fill`."""
    pad = torch.full_like(x[:, :k], fill)
    return torch.cat([pad, x[:, :-k]], dim=1)


def linear_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """Real diagonal scan: h_t = a_t ⊙ h_{t−1} + b_t. a, b: (B, T, D); h0: (B, D) → (B, T, D)."""
    if h0 is not None:
        b = torch.cat([b[:, :1] + a[:, :1] * h0[:, None], b[:, 1:]], dim=1)
    T = a.shape[1]
    k = 1
    while k < T:
        # combine each prefix with the one k steps earlier: (a, b) ← (a · a_prev, a · b_prev + b)
        b = b + a * _shift(b, k, 0.0)
        a = a * _shift(a, k, 1.0)
        k *= 2
    return b


def linear_scan_sequential(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """Reference for `linear_scan`: the plain loop."""
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0
    out = []
    for t in range(a.shape[1]):
        h = a[:, t] * h + b[:, t]
        out.append(h)
    return torch.stack(out, dim=1)


def complex_scan(a: Pair, b: Pair, h0: Pair | None = None) -> Pair:
    """Complex diagonal scan on real/imaginary pairs: h_t = a_t h_{t−1} + b_t (complex products)."""
    ar, ai = a
    br, bi = b
    if h0 is not None:
        hr, hi = h0
        br = torch.cat([br[:, :1] + ar[:, :1] * hr[:, None] - ai[:, :1] * hi[:, None], br[:, 1:]], dim=1)
        bi = torch.cat([bi[:, :1] + ar[:, :1] * hi[:, None] + ai[:, :1] * hr[:, None], bi[:, 1:]], dim=1)
    T = ar.shape[1]
    k = 1
    while k < T:
        pbr, pbi = _shift(br, k, 0.0), _shift(bi, k, 0.0)
        par, pai = _shift(ar, k, 1.0), _shift(ai, k, 0.0)
        br, bi = br + ar * pbr - ai * pbi, bi + ar * pbi + ai * pbr
        ar, ai = ar * par - ai * pai, ar * pai + ai * par
        k *= 2
    return br, bi


def complex_scan_sequential(a: Pair, b: Pair, h0: Pair | None = None) -> Pair:
    """Reference for `complex_scan`: the plain loop with torch complex numbers."""
    ac = torch.complex(*a)
    bc = torch.complex(*b)
    h = torch.zeros_like(bc[:, 0]) if h0 is None else torch.complex(*h0)
    out = []
    for t in range(ac.shape[1]):
        h = ac[:, t] * h + bc[:, t]
        out.append(h)
    o = torch.stack(out, dim=1)
    return o.real, o.imag


def matrix_scan(A: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """Dense scan: h_t = A_t h_{t−1} + b_t. A: (B, T, D, D); b: (B, T, D); h0: (B, D) → (B, T, D).

    Cost O(T D³ log T): meant for the small transitions of a latent model (D up to a few dozen).
    """
    if h0 is not None:
        b = torch.cat([b[:, :1] + (A[:, 0] @ h0[..., None])[..., 0][:, None], b[:, 1:]], dim=1)
    T, D = A.shape[1], A.shape[-1]
    eye = torch.eye(D, dtype=A.dtype, device=A.device)
    k = 1
    while k < T:
        pb = _shift(b, k, 0.0)
        pA = torch.cat([eye.expand(A.shape[0], k, D, D), A[:, :-k]], dim=1)
        b = b + (A @ pb[..., None])[..., 0]
        A = A @ pA
        k *= 2
    return b


def matrix_scan_sequential(A: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """Reference for `matrix_scan`: the plain loop."""
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0
    out = []
    for t in range(A.shape[1]):
        h = (A[:, t] @ h[..., None])[..., 0] + b[:, t]
        out.append(h)
    return torch.stack(out, dim=1)
