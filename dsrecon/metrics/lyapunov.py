"""Lyapunov spectra by the QR (Benettin) method (docs/method.md §6).

Two entry points:

- :func:`lyapunov_spectrum` for a discrete map x_{t+1} = F(x_t) given ``step`` and ``jacobian``
  callables (a fitted model's latent dynamics, or any numpy map). Exponents are per step; divide
  by the step's duration (``dt``, e.g. the TR in seconds) to get them per second.
- :func:`flow_lyapunov` / :func:`system_lyapunov` for an ODE dx/dt = f(x): the state and the
  tangent vectors (variational equation dQ/dt = J(x) Q) are integrated together with RK4 and
  re-orthonormalised every ``qr_every`` steps. Exponents are per unit of system time.

The QR recursion Q_t R_t = J_t Q_{t−1} is sequential; it runs in a numba loop over Jacobians
computed in batches, so a 100 000-step spectrum of an M = 20 map takes about a second.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numba
import numpy as np

from dsrecon._util import check_interrupt
from dsrecon.errors import DivergenceError, DsreconError

#: Lorenz63 (σ=10, ρ=28, β=8/3) largest exponent per unit time (docs/method.md §6).
LORENZ63_LAMBDA_MAX = 0.9056


@dataclass
class LyapunovResult:
    """A Lyapunov spectrum and how it converged.

    exponents: (n_exponents,) per step, sorted descending. per_second: exponents / dt (per second
    when dt is the TR in seconds; per unit system time for an ODE). running: (n_records,
    n_exponents) running estimate per second after ``running_steps`` steps (for the convergence
    figure). kaplan_yorke: Kaplan–Yorke dimension of the spectrum.
    """

    exponents: np.ndarray
    per_second: np.ndarray
    dt: float
    n_steps: int
    transient: int
    running_steps: np.ndarray
    running: np.ndarray
    kaplan_yorke: float
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def lambda_max(self) -> float:
        """Largest exponent per second (per unit of ``dt``)."""
        return float(self.per_second[0])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lambda_max_per_step"] = float(self.exponents[0])
        d["lambda_max_per_second"] = self.lambda_max
        d.pop("running")
        d.pop("running_steps")
        return d


def kaplan_yorke_dimension(exponents: np.ndarray) -> float:
    """Kaplan–Yorke dimension D = j + Σ_{i≤j} λ_i / |λ_{j+1}|, j the largest index with Σ_{i≤j} λ_i ≥ 0.

    The exponents are sorted descending first (any units: the ratio is unit-free). Returns 0 when
    λ_1 < 0 and n when the whole sum is non-negative (the formula is undefined there).
    """
    lam = np.sort(np.asarray(exponents, dtype=np.float64))[::-1]
    if lam.size == 0 or not np.all(np.isfinite(lam)):
        return float("nan")
    csum = np.cumsum(lam)
    if csum[0] < 0:
        return 0.0
    j = int(np.max(np.nonzero(csum >= 0)[0]))  # 0-based: j+1 exponents sum to ≥ 0
    if j == lam.size - 1:
        return float(lam.size)
    return float((j + 1) + csum[j] / abs(lam[j + 1]))


# --- the QR recursion (numba) ----------------------------------------------------------------


@numba.njit(cache=True)
def _qr_diag_inplace(Y: np.ndarray, logs: np.ndarray) -> None:
    """Modified Gram–Schmidt on the columns of Y (D, k): Y ← Q, logs += log|diag R|."""
    D, k = Y.shape
    for j in range(k):
        for i in range(j):
            dot = 0.0
            for r in range(D):
                dot += Y[r, i] * Y[r, j]
            for r in range(D):
                Y[r, j] -= dot * Y[r, i]
        nrm = 0.0
        for r in range(D):
            nrm += Y[r, j] * Y[r, j]
        nrm = math.sqrt(nrm)
        logs[j] += math.log(nrm) if nrm > 0 else -np.inf
        if nrm > 0:
            for r in range(D):
                Y[r, j] /= nrm


@numba.njit(cache=True)
def _qr_accumulate(Js: np.ndarray, Q: np.ndarray, sums: np.ndarray, qr_every: int, phase: int) -> int:
    """Push Q through the Jacobians Js (T, D, D); orthonormalise every ``qr_every`` products.

    Q: (D, k) updated in place; sums: (k,) running Σ log|R_ii|. ``phase`` counts products since
    the last QR (carried across chunks); the new phase is returned.
    """
    T = Js.shape[0]
    D, k = Q.shape
    tmp = np.empty((D, k))
    for t in range(T):
        J = Js[t]
        for r in range(D):
            for c in range(k):
                acc = 0.0
                for s in range(D):
                    acc += J[r, s] * Q[s, c]
                tmp[r, c] = acc
        Q[:, :] = tmp
        phase += 1
        if phase >= qr_every:
            _qr_diag_inplace(Q, sums)
            phase = 0
    return phase


def _finish_qr(Q: np.ndarray, sums: np.ndarray, phase: int) -> None:
    if phase:
        _qr_diag_inplace(Q, sums)


# --- discrete maps ---------------------------------------------------------------------------


def lyapunov_spectrum(
    step: Callable[[np.ndarray], np.ndarray],
    jacobian: Callable[[np.ndarray], np.ndarray],
    x0: np.ndarray,
    n_steps: int = 100_000,
    transient: int = 1000,
    dt: float = 1.0,
    n_exponents: int | None = None,
    record_every: int | None = None,
    qr_every: int = 1,
    chunk: int = 5000,
) -> LyapunovResult:
    """Lyapunov spectrum of the map x_{t+1} = step(x_t) by the QR method.

    step: (1, D) float64 array → (1, D) (one map step; batched shape as for LatentDynamics).
    jacobian: (B, D) → (B, D, D), ∂step/∂x at each row. x0: (D,) initial state.
    n_steps: steps averaged over, after ``transient`` discarded steps. dt: duration of one step
    (e.g. TR in seconds) for ``per_second``. qr_every: Jacobian products between
    re-orthonormalisations (1 is exact Benettin; larger is faster but overflows for strongly
    expanding maps). record_every: spacing of the running estimate (default n_steps/200).
    Raises DivergenceError when the orbit becomes non-finite.
    """
    t0 = time.perf_counter()
    x = np.asarray(x0, dtype=np.float64).reshape(1, -1)
    D = x.shape[1]
    k = D if n_exponents is None else int(n_exponents)
    if not 1 <= k <= D:
        raise DsreconError(f"n_exponents must be in 1…{D}, got {n_exponents}")
    if n_steps < 1:
        raise DsreconError(f"n_steps must be positive, got {n_steps}")
    record_every = max(1, int(record_every or max(1, n_steps // 200)))
    for _ in range(int(transient)):
        x = np.asarray(step(x), dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise DivergenceError("Lyapunov spectrum: the orbit diverged during the transient")
    Q = np.ascontiguousarray(np.eye(D)[:, :k])
    sums = np.zeros(k)
    phase = 0
    rec_steps, rec_vals = [], []
    done = 0
    traj = np.empty((chunk, D))
    while done < n_steps:
        check_interrupt()  # Ctrl-C stops a long spectrum between chunks, even if numba swallowed it
        n = min(chunk, n_steps - done)
        # the Jacobian at x_t maps the tangent space at t to t+1: collect x_t … x_{t+n−1}
        for i in range(n):
            traj[i] = x[0]
            x = np.asarray(step(x), dtype=np.float64)
        if not np.all(np.isfinite(traj[:n])):
            raise DivergenceError(f"Lyapunov spectrum: the orbit became non-finite near step {done + n}")
        Js = np.ascontiguousarray(np.asarray(jacobian(traj[:n]), dtype=np.float64))
        # record the running estimate at multiples of record_every inside this chunk
        pos = 0
        while pos < n:
            nxt = min(n, pos + record_every - ((done + pos) % record_every))
            phase = _qr_accumulate(Js[pos:nxt], Q, sums, qr_every, phase)
            pos = nxt
            if (done + pos) % record_every == 0:
                # a finished estimate needs an up-to-date QR of the pending products
                if phase:
                    _qr_diag_inplace(Q, sums)
                    phase = 0
                rec_steps.append(done + pos)
                rec_vals.append(sums / (done + pos))
        done += n
    _finish_qr(Q, sums, phase)
    lam = sums / n_steps
    if not np.all(np.isfinite(lam)):
        raise DivergenceError("Lyapunov spectrum: non-finite exponents (degenerate Jacobians or overflow; try qr_every=1)")
    order = np.argsort(lam)[::-1]
    lam = lam[order]
    running = np.array(rec_vals)[:, order] / dt if rec_vals else np.zeros((0, k))
    return LyapunovResult(
        exponents=lam,
        per_second=lam / dt,
        dt=float(dt),
        n_steps=int(n_steps),
        transient=int(transient),
        running_steps=np.array(rec_steps, dtype=np.int64),
        running=running,
        kaplan_yorke=kaplan_yorke_dimension(lam) if k == D else float("nan"),
        seconds=time.perf_counter() - t0,
    )


def dynamics_lyapunov(
    dynamics: Any,
    z0: np.ndarray,
    n_steps: int = 100_000,
    transient: int = 1000,
    dt: float = 1.0,
    n_exponents: int | None = None,
    chunk: int = 5000,
) -> LyapunovResult:
    """Lyapunov spectrum of a torch LatentDynamics (``.step``, ``.jacobian`` on (B, S)), in float64.

    z0: (S,) initial state. dt: seconds per step (the TR) for ``per_second``.
    """
    import copy

    import torch

    dyn = copy.deepcopy(dynamics).to(device="cpu", dtype=torch.float64).eval()

    def step(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return dyn.step(torch.from_numpy(x)).numpy()

    def jac(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return dyn.jacobian(torch.from_numpy(np.ascontiguousarray(x))).detach().numpy()

    with torch.no_grad():
        return lyapunov_spectrum(step, jac, z0, n_steps=n_steps, transient=transient, dt=dt, n_exponents=n_exponents, chunk=chunk)


# --- flows (ODEs) ----------------------------------------------------------------------------


def flow_lyapunov(
    rhs: Callable[[np.ndarray], np.ndarray],
    jacobian: Callable[[np.ndarray], np.ndarray],
    x0: np.ndarray,
    n_steps: int = 100_000,
    dt: float = 0.01,
    transient: int = 5000,
    qr_every: int = 10,
    record_every: int | None = None,
) -> LyapunovResult:
    """Lyapunov spectrum of dx/dt = rhs(x) from the variational equation, RK4 with step ``dt``.

    rhs: (D,) → (D,); jacobian: (D,) → (D, D) (∂rhs/∂x). x0: (D,) initial state. The state and
    the tangent matrix Q (D, D) are advanced together by RK4; Q is re-orthonormalised every
    ``qr_every`` steps. n_steps steps of ``dt`` (system time units) are averaged after
    ``transient`` steps. Exponents per unit system time are in ``per_second``; ``exponents``
    holds them per integration step (λ·dt).
    """
    t0 = time.perf_counter()
    x = np.asarray(x0, dtype=np.float64).copy()
    D = x.size
    f = rhs
    h = float(dt)
    for _ in range(int(transient)):
        k1 = f(x)
        k2 = f(x + 0.5 * h * k1)
        k3 = f(x + 0.5 * h * k2)
        k4 = f(x + h * k3)
        x = x + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
    if not np.all(np.isfinite(x)):
        raise DivergenceError("flow Lyapunov: the orbit diverged during the transient")
    Q = np.eye(D)
    sums = np.zeros(D)
    record_every = max(1, int(record_every or max(qr_every, (n_steps // 200) // qr_every * qr_every)))
    rec_steps, rec_vals = [], []
    for n in range(1, n_steps + 1):
        J1 = jacobian(x)
        k1 = f(x)
        q1 = J1 @ Q
        x2 = x + 0.5 * h * k1
        J2 = jacobian(x2)
        k2 = f(x2)
        q2 = J2 @ (Q + 0.5 * h * q1)
        x3 = x + 0.5 * h * k2
        J3 = jacobian(x3)
        k3 = f(x3)
        q3 = J3 @ (Q + 0.5 * h * q2)
        x4 = x + h * k3
        J4 = jacobian(x4)
        k4 = f(x4)
        q4 = J4 @ (Q + h * q3)
        x = x + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
        Q = Q + (h / 6.0) * (q1 + 2 * q2 + 2 * q3 + q4)
        if n % qr_every == 0 or n == n_steps:
            Q = np.ascontiguousarray(Q)
            _qr_diag_inplace(Q, sums)
            if n % record_every == 0:
                rec_steps.append(n)
                rec_vals.append(sums / (n * h))
    if not np.all(np.isfinite(x)):
        raise DivergenceError("flow Lyapunov: the orbit became non-finite")
    lam_t = sums / (n_steps * h)
    order = np.argsort(lam_t)[::-1]
    lam_t = lam_t[order]
    return LyapunovResult(
        exponents=lam_t * h,
        per_second=lam_t,
        dt=h,
        n_steps=int(n_steps),
        transient=int(transient),
        running_steps=np.array(rec_steps, dtype=np.int64),
        running=np.array(rec_vals)[:, order] if rec_vals else np.zeros((0, D)),
        kaplan_yorke=kaplan_yorke_dimension(lam_t),
        seconds=time.perf_counter() - t0,
    )


def system_lyapunov(
    name: str,
    n_steps: int = 100_000,
    dt: float | None = None,
    transient: int = 5000,
    seed: int = 0,
    qr_every: int = 10,
    dim: int | None = None,
    params: dict[str, float] | None = None,
) -> LyapunovResult:
    """Lyapunov spectrum of a benchmark system (``dsrecon.systems``) from its ODE Jacobian.

    dt: integration step in system time (default: the system's ``default_dt``, capped at 0.01
    for RK4 accuracy). transient: steps discarded first. dim/params: passed to ``get_system``
    (e.g. dysts' parameters). Exponents per unit system time are in ``per_second``.
    """
    from dsrecon.systems import get_system

    sys_ = get_system(name, dim=dim, **(params or {}))
    h = float(dt if dt is not None else min(sys_.default_dt, 0.01))
    x0 = np.asarray(sys_.initial_state(np.random.default_rng(seed)), dtype=np.float64)
    res = flow_lyapunov(sys_.rhs, sys_.jacobian, x0, n_steps=n_steps, dt=h, transient=transient, qr_every=qr_every)
    res.extra.update(system=sys_.name, params=dict(sys_.params), dim=sys_.dim)
    return res
