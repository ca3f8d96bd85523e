"""Integrate benchmark systems and turn them into synthetic recordings (docs/method.md §7).

Convention: integrate ``length + K − 1`` samples (one every ``dt`` system-time units, after a
transient), z-score each state, convolve causally with the kernel sampled at TR (valid part,
``length`` rows), add Gaussian noise of std ``noise × std(clean column)``. Row j of the latent
table is the z-scored state at the same time index as row j of the observations:
observed[j] = Σ_k h_k latent_full[j + K − 1 − k], i.e. the state of row j convolved with its
K − 1 predecessors.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.integrate import odeint

from dsrecon._util import dsrecon_version, versions
from dsrecon.errors import DivergenceError, DsreconError, OptionError
from dsrecon.signal.kernels import convolve_valid, make_kernel
from dsrecon.systems.flows import System
from dsrecon.systems.registry import get_system

#: Integrator tolerances (LSODA via scipy.integrate.odeint; relative and absolute).
RTOL = 1e-9
ATOL = 1e-9
#: States beyond this magnitude count as diverged.
DIVERGENCE_BOUND = 1e8


def integrate(
    system: System,
    n_samples: int,
    dt: float | None = None,
    transient: float | None = None,
    rng: np.random.Generator | None = None,
    x0: np.ndarray | None = None,
    drive: np.ndarray | None = None,
) -> np.ndarray:
    """Integrate ``system`` and sample it every ``dt`` system-time units.

    Starts from ``x0`` (D,) or a random state from the system's initial-condition box (drawn
    with ``rng``; default seed 0), discards ``transient`` system-time units (default: the
    system's ``default_transient``), then returns ``n_samples`` states: array (n_samples, D),
    row i at time transient + i·dt. LSODA (scipy odeint) with rtol = atol = 1e-9 and the
    analytic Jacobian, evaluated exactly on the sample grid.

    ``drive`` (n_samples, D): an external input added to dx/dt, constant over each sampling
    interval: row i acts on the interval that ends at sample i (row 0 is unused); the
    vector field itself (and the Jacobian) is unchanged.
    """
    n_samples = int(n_samples)
    if n_samples < 1:
        raise DsreconError(f"number of samples must be >= 1, got {n_samples}")
    dt = system.default_dt if dt is None else float(dt)
    if not (math.isfinite(dt) and dt > 0):
        raise OptionError(f"`dt` must be positive, got {dt}")
    transient = system.default_transient if transient is None else float(transient)
    if not (math.isfinite(transient) and transient >= 0):
        raise OptionError(f"`transient` must be >= 0, got {transient}")
    if x0 is None:
        x0 = system.initial_state(np.random.default_rng(0) if rng is None else rng)
    x0 = np.asarray(x0, dtype=np.float64)
    if x0.shape != (system.dim,) or not np.all(np.isfinite(x0)):
        raise DsreconError(f"{system.name}: initial state must be {system.dim} finite numbers, got shape {x0.shape}")

    grid = transient + dt * np.arange(n_samples)
    if drive is not None and np.any(drive[1:] != 0):
        return _integrate_driven(system, x0, grid, transient, np.asarray(drive, dtype=np.float64))
    t = grid if transient == 0 else np.concatenate([[0.0], grid])
    with np.errstate(over="ignore", invalid="ignore"):
        sol, info = odeint(
            lambda y, _t: system._rhs(y),
            x0,
            t,
            Dfun=lambda y, _t: system._jac(y),
            rtol=RTOL,
            atol=ATOL,
            mxstep=1_000_000,
            full_output=True,
        )
    if transient != 0:
        sol = sol[1:]
    if info.get("message") != "Integration successful." or not np.all(np.isfinite(sol)) or np.abs(sol).max() > DIVERGENCE_BOUND:
        raise DivergenceError(
            f"{system.name}: integration failed or diverged ({info.get('message', 'non-finite states')}); check the parameters and --dt"
        )
    return sol


def _integrate_driven(system: System, x0: np.ndarray, grid: np.ndarray, transient: float, drive: np.ndarray) -> np.ndarray:
    """`integrate` with a piecewise-constant input: one LSODA call per run of equal drive rows."""
    def solve(y0, t, u):
        with np.errstate(over="ignore", invalid="ignore"):
            sol, info = odeint(lambda y, _t: system._rhs(y) + u, y0, t, Dfun=lambda y, _t: system._jac(y),
                               rtol=RTOL, atol=ATOL, mxstep=1_000_000, full_output=True)
        if info.get("message") != "Integration successful." or not np.all(np.isfinite(sol)) or np.abs(sol).max() > DIVERGENCE_BOUND:
            raise DivergenceError(f"{system.name}: integration of the driven system failed or diverged "
                                  f"({info.get('message', 'non-finite states')}); check --input-gain and --dt")
        return sol

    y = x0 if transient == 0 else solve(x0, np.array([0.0, grid[0]]), np.zeros(system.dim))[-1]
    out = np.empty((grid.size, system.dim))
    out[0] = y
    i, n = 1, grid.size
    while i < n:
        j = i
        while j + 1 < n and np.array_equal(drive[j + 1], drive[i]):
            j += 1
        sol = solve(out[i - 1], grid[i - 1 : j + 1], drive[i])  # samples i … j under drive row i
        out[i : j + 1] = sol[1:]
        i = j + 1
    return out


def simulate_system(
    name: str,
    length: int,
    dt: float | None,
    tr: float,
    kernel: str = "spm",
    noise: float = 0.0,
    transient: float | None = None,
    seed: int = 0,
    dim: int | None = None,
    tau_decay: float = 0.4,
    tau_rise: float | None = None,
    params: dict[str, float] | None = None,
    inputs: np.ndarray | None = None,
    input_gain: list[float] | None = None,
    input_dim: list[int] | None = None,
    input_names: list[str] | None = None,
) -> dict:
    """Simulate a benchmark system observed through a measurement kernel.

    Arguments: ``length`` samples (rows) to return; ``dt`` system time per sample (None: the
    system's default); ``tr`` seconds per sample (the kernel's grid); ``kernel`` spm|glover|
    calcium|none or a file of taps; ``noise`` observation-noise std as a fraction of each clean
    column's std; ``transient`` system time discarded first (None: system default); ``params``
    parameter overrides.

    Returns a dict: ``observed`` (length, D) noisy convolved signal, ``latent`` (length, D)
    z-scored states aligned row by row with ``observed`` (see module doc), ``names`` (D state
    names), ``sidecar`` and ``latent_sidecar`` (JSON-ready provenance), ``kernel`` (Kernel),
    ``system`` (System).

    ``inputs`` (length, C): external inputs on the observation grid (row j: the design at observed
    row j, e.g. `dsrecon.io.events.events_to_inputs`); channel c is added, times ``input_gain[c]``,
    to dx/dt of state ``input_dim[c]`` (one value: every channel), constant over each sampling
    interval, so driven benchmark data come with their ground truth. Row j drives the interval
    ending at the state of latent row j (the K − 1 states before row 0 are undriven).
    """
    length = int(length)
    if length < 1:
        raise OptionError(f"`length` must be >= 1, got {length}")
    if not (math.isfinite(float(tr)) and tr > 0):
        raise OptionError(f"`tr` must be positive (seconds per sample), got {tr}")
    if not (math.isfinite(float(noise)) and noise >= 0):
        raise OptionError(f"`noise` must be >= 0 (fraction of the signal std), got {noise}")
    system = get_system(name, dim=dim, **(params or {}))
    dt = system.default_dt if dt is None else float(dt)
    transient = system.default_transient if transient is None else float(transient)
    kern = make_kernel(kernel, float(tr), tau_decay=tau_decay, tau_rise=tau_rise)
    K = kern.K

    drive, input_info = None, {}
    if inputs is not None:
        drive, input_info = _drive(system, np.asarray(inputs, dtype=np.float64), length, K, input_gain, input_dim, input_names)
    ic_seed, noise_seed = np.random.SeedSequence(int(seed)).spawn(2)
    states = integrate(system, length + K - 1, dt, transient, rng=np.random.default_rng(ic_seed), drive=drive)
    mean, std = states.mean(axis=0), states.std(axis=0)
    flat = np.flatnonzero(std < 1e-12 * np.maximum(1.0, np.abs(mean)))
    if flat.size:
        raise DivergenceError(
            f"{system.name}: state '{system.state_names[flat[0]]}' is constant over the simulation (a fixed point?); cannot z-score it"
        )
    z = (states - mean) / std  # (length + K − 1, D)
    clean = convolve_valid(z, kern.taps)  # (length, D)
    signal_std = clean.std(axis=0)
    noise_draw = np.random.default_rng(noise_seed).standard_normal(clean.shape)
    observed = clean + float(noise) * signal_std * noise_draw
    latent = z[K - 1 :]

    common = {
        "system": system.name,
        "description": system.description,
        "parameters": dict(system.params),
        "dim": system.dim,
        "state_names": list(system.state_names),
        "dysts_name": system.dysts_name,
        "dt": dt,
        "transient": transient,
        "RepetitionTime": float(tr),
        "seed": int(seed),
        "length": length,
        "kernel": kern.kind,
        "kernel_params": kern.params,
        "kernel_taps": K,
        "state_mean": mean.tolist(),
        "state_std": std.tolist(),
        "dsrecon_version": dsrecon_version(),
        "versions": versions(),
        **input_info,
    }
    sidecar = {
        **common,
        "content": "observed",
        "noise": float(noise),
        "noise_std": (float(noise) * signal_std).tolist(),
        "convention": "states sampled every dt after the transient, z-scored per state, causally convolved with the "
        "kernel sampled at RepetitionTime (valid part), plus Gaussian noise of std noise x std(clean column)",
    }
    latent_sidecar = {
        **common,
        "content": "latent",
        "noise": float(noise),
        "convention": "z-scored states; row j is the state at the time of observed row j "
        "(observed[j] = sum_k h_k latent[j-k]; the first K-1 rows' history is not in the file)",
    }
    return {
        "observed": observed,
        "latent": latent,
        "names": list(system.state_names),
        "sidecar": sidecar,
        "latent_sidecar": latent_sidecar,
        "kernel": kern,
        "system": system,
        "inputs": None if inputs is None else np.asarray(inputs, dtype=np.float64),
    }


def _drive(system: System, inputs: np.ndarray, length: int, K: int, gain, dims, names) -> tuple[np.ndarray, dict]:
    """The (length + K − 1, D) drive of the ODE for inputs (length, C) on the observation grid."""
    if inputs.ndim == 1:
        inputs = inputs[:, None]
    C = inputs.shape[1]
    if inputs.shape[0] != length:
        raise OptionError(f"`inputs`: {inputs.shape[0]} rows for `length` {length}")
    gain = [1.0] if not gain else [float(g) for g in gain]
    dims = [0] if not dims else [int(d) for d in dims]
    for what, v in (("`input_gain`", gain), ("`input_dim`", dims)):
        if len(v) not in (1, C):
            raise OptionError(f"{what}: give one value or one per input channel ({C}), got {len(v)}")
    gain, dims = gain * C if len(gain) == 1 else gain, dims * C if len(dims) == 1 else dims
    bad = [d for d in dims if not 0 <= d < system.dim]
    if bad:
        raise OptionError(f"`input_dim` {bad[0]}: {system.name} has states 0 … {system.dim - 1}")
    if not all(math.isfinite(g) for g in gain):
        raise OptionError("`input_gain` must be finite")
    drive = np.zeros((length + K - 1, system.dim))
    for c in range(C):
        drive[K - 1 :, dims[c]] += gain[c] * inputs[:, c]
    return drive, {"input_names": list(names or [f"input{c + 1}" for c in range(C)]), "input_gain": gain, "input_dim": dims,
                   "input_states": [system.state_names[d] for d in dims]}
