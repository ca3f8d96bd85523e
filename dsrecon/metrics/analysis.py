"""What kind of dynamical system did the model find? Lyapunov spectrum, dimensions, fixed points.

:func:`analyze_model` is what ``dsrecon evaluate RUN`` and ``dsrecon report RUN`` call; it returns
a JSON-friendly dict. :func:`analyze_model_full` also returns the arrays the figures need.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dsrecon.errors import DivergenceError
from dsrecon.io.recording import Recording

#: Free-run length used for dimensions and fixed-point initial states (steps).
DEFAULT_TRAJECTORY_STEPS = 5000


def _latent_trajectory(model: Any, n_steps: int, seed: int, data: Recording | None) -> dict[str, np.ndarray]:
    sim = model.simulate(n_steps, seed=seed, data=data)
    return {k: np.asarray(v, dtype=np.float64) for k, v in sim.items()}


def state_from_latent(dynamics: Any, z: np.ndarray) -> np.ndarray:
    """A full backend state (S,) from a latent z (M,): backends with memory pad after M."""
    S = int(getattr(dynamics, "state_dim", z.size))
    if S == z.size:
        return z
    return np.concatenate([z, np.zeros(S - z.size)])


def fixed_points_of(dynamics: Any, init_states: np.ndarray | None, k_max: int, seed: int) -> tuple[str, list[dict]]:
    """SCYFI for PLRNN-family dynamics (k ≤ k_max), root finding for the rest. Returns (method, cycles)."""
    import torch

    from dsrecon.metrics.fixed_points import find_cycles, find_fixed_points_generic

    if hasattr(dynamics, "piecewise_linear_params"):
        return "scyfi", find_cycles(dynamics.piecewise_linear_params(), k_max=k_max, seed=seed, init_states=init_states)
    dyn = dynamics
    S = int(getattr(dyn, "state_dim", dyn.M))

    def step(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return dyn.step(torch.as_tensor(x, dtype=torch.float32)).double().numpy()

    def jac(x: np.ndarray) -> np.ndarray:
        return dyn.jacobian(torch.as_tensor(x, dtype=torch.float32)).detach().double().numpy()

    if init_states is not None and init_states.shape[1] != S:
        init_states = np.stack([state_from_latent(dyn, z) for z in init_states])
    return "root", find_fixed_points_generic(step, jac, S, n_init=100, init_states=init_states, seed=seed, tol=1e-5)


def analyze_model_full(
    model: Any,
    *,
    data: Recording | None = None,
    lyapunov_steps: int = 100_000,
    k_max: int = 10,
    seed: int = 0,
    trajectory_steps: int = DEFAULT_TRAJECTORY_STEPS,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Analyse a fitted model; returns (summary dict, arrays for figures).

    summary: {"lyapunov": {exponents per step, per second (TR), λ_max, KY dimension, ...},
    "correlation_dimension": {"generated_latent", "generated_observed", "observed"},
    "fixed_points": {"method", "n_by_period", "cycles": [...]}, "tr", "seed"}.
    arrays: {"generated" (T, N), "latent" (T, M), "observed" (T, N) or None, "lyapunov"
    (LyapunovResult), "cycles" (raw list)}.
    """
    from dsrecon.metrics.dimension import correlation_dimension
    from dsrecon.metrics.fixed_points import cycles_to_json
    from dsrecon.metrics.lyapunov import dynamics_lyapunov

    tr = float(model.tr)
    out: dict[str, Any] = {"tr": tr, "seed": int(seed), "lyapunov_steps": int(lyapunov_steps), "k_max": int(k_max)}
    sim = _latent_trajectory(model, trajectory_steps, seed, data)
    latent = sim["latent"]
    generated = sim["observed"]
    dyn = model.dynamics
    z0 = state_from_latent(dyn, latent[-1])
    try:
        lyap = dynamics_lyapunov(dyn, z0, n_steps=lyapunov_steps, transient=min(1000, lyapunov_steps), dt=tr)
        out["lyapunov"] = {
            "exponents_per_step": lyap.exponents.tolist(),
            "exponents_per_second": lyap.per_second.tolist(),
            "lambda_max_per_step": float(lyap.exponents[0]),
            "lambda_max_per_second": lyap.lambda_max,
            "kaplan_yorke_dimension": lyap.kaplan_yorke,
            "n_steps": lyap.n_steps,
            "seconds": lyap.seconds,
            "regime": regime_of(lyap.exponents),
        }
    except DivergenceError as e:
        lyap = None
        out["lyapunov"] = {"error": str(e)}
    burn = latent.shape[0] // 5
    out["correlation_dimension"] = {
        "generated_latent": correlation_dimension(latent[burn:], seed=seed),
        "generated_observed": correlation_dimension(generated[burn:], seed=seed),
        "observed": None if data is None else correlation_dimension(data.data[data.mask], seed=seed),
    }
    method, cycles = fixed_points_of(dyn, latent[burn:], k_max, seed)
    counts: dict[str, int] = {}
    for c in cycles:
        counts[str(c["period"])] = counts.get(str(c["period"]), 0) + 1
    out["fixed_points"] = {"method": method, "n_by_period": counts, **fixed_point_counts(counts), "cycles": cycles_to_json(cycles)}
    arrays = {"generated": generated, "latent": latent, "observed": None if data is None else data.data, "lyapunov": lyap, "cycles": cycles}
    return out, arrays


def fixed_point_counts(n_by_period: dict[str, int]) -> dict[str, int]:
    """The one definition `evaluate` and `report` both print: fixed points are the period-1 orbits,
    cycles the orbits of period 2 or more (a fixed point is not a cycle)."""
    return {"n_fixed_points": int(n_by_period.get("1", 0)),
            "n_cycles": int(sum(v for k, v in n_by_period.items() if k != "1"))}


def analyze_model(model: Any, *, data: Recording | None = None, lyapunov_steps: int = 100_000, k_max: int = 10, seed: int = 0) -> dict[str, Any]:
    """JSON-friendly analysis of a fitted model (see :func:`analyze_model_full`)."""
    return analyze_model_full(model, data=data, lyapunov_steps=lyapunov_steps, k_max=k_max, seed=seed)[0]


def regime_of(exponents_per_step: np.ndarray, tol: float = 1e-3) -> str:
    """'chaotic' (λ_max > tol), 'periodic or quasi-periodic' (|λ_max| ≤ tol), 'fixed point' (< −tol)."""
    lam = float(exponents_per_step[0])
    if lam > tol:
        return "chaotic"
    if lam >= -tol:
        return "periodic or quasi-periodic"
    return "fixed point"
