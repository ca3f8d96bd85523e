# Frozen experiment, not maintained: last ran at f668c18 (2026-12-01); results in
# docs/metrics.md#d_stsp-gaussian-mixture-stsp_gmm---stsp-gmm
# Run from the repository root as PYTHONPATH=benchmarks python benchmarks/experiments/gmm_points.py ...
# (it imports benchmarks/_common.py and its siblings); no maintained script imports it.
"""GMM D_stsp with the first 10 000 points (published definition, the default) against 10 000 evenly
spaced points (`--gmm-points even`), on 20 000-point series. Prints a table.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/experiments/gmm_points.py [--seeds 0 1 2]

Pairs (latent states, z-scored, σ² 1, 1 000 Monte-Carlo samples, MC seeds --seeds):
  * Lorenz63 against an independent Lorenz63 run (dt 0.01: 20 000 points = 200 time units);
  * Lorenz63 against Lorenz63 with ρ = 35 (a wrong model);
  * Lorenz63 against the same system with ρ drifting from 28 to 40 over the run (a non-stationary
    generated series: its second half differs from its first).
"""

from __future__ import annotations

import argparse
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy loads
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402

from dsrecon.metrics import stsp_gmm  # noqa: E402

N = 20_000
DT = 0.01


def lorenz(seed: int, rho=lambda t: 28.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal(3) + np.array([1.0, 1.0, 25.0])
    t_trans = 50.0
    f = lambda t, u: [10.0 * (u[1] - u[0]), u[0] * (rho(max(t - t_trans, 0.0)) - u[2]) - u[1], u[0] * u[1] - 8.0 / 3.0 * u[2]]  # noqa: E731
    t_eval = t_trans + DT * np.arange(N)
    sol = solve_ivp(f, (0.0, t_eval[-1]), x0, t_eval=t_eval, rtol=1e-9, atol=1e-9, method="LSODA")
    return sol.y.T


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a = ap.parse_args()
    ref = lorenz(0)
    mu, sd = ref.mean(0), ref.std(0)
    span = DT * N
    pairs = {
        "independent Lorenz63 run": lorenz(1),
        "Lorenz63 with rho 35": lorenz(1, rho=lambda t: 35.0),
        "rho drifting 28 -> 40": lorenz(1, rho=lambda t: 28.0 + 12.0 * t / span),
    }
    print(f"{N} points each, z-scored with the reference's statistics, σ² 1, 1 000 MC samples; mean ± sd over MC seeds {a.seeds}")
    print("| generated | D_stsp first 10 000 (default) | D_stsp 10 000 evenly spaced | (even − first)/first |")
    print("|---|---:|---:|---:|")
    r = (ref - mu) / sd
    for name, g in pairs.items():
        g = (g - mu) / sd
        fs = [stsp_gmm(g, r, points="first", seed=s) for s in a.seeds]
        es = [stsp_gmm(g, r, points="even", seed=s) for s in a.seeds]
        first, even = np.mean(fs), np.mean(es)
        print(f"| {name} | {first:.4f} ± {np.std(fs):.4f} | {even:.4f} ± {np.std(es):.4f} | {100 * (even - first) / first:+.0f} % |", flush=True)


if __name__ == "__main__":
    main()
