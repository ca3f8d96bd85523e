"""Speed of the attractor metrics at their target sizes; prints a table (best of --repeat runs).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/metrics_speed.py

Targets (each under 1 s on a 2-core CPU): binned D_stsp on 100 000 × 3 points, GMM D_stsp on
10 000 × 20 (1 000 Monte-Carlo samples), D_H on 100 000 × 20.
"""

from __future__ import annotations

import argparse
import os
import time

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy loads
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

from dsrecon._util import cpu_name  # noqa: E402
from dsrecon.metrics import hellinger_spectral, stsp_binned, stsp_gmm  # noqa: E402
from dsrecon.metrics.lyapunov import lyapunov_spectrum  # noqa: E402

TARGET_S = 1.0


def _best(fn, repeat: int) -> tuple[float, float]:
    times, value = [], float("nan")
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return min(times), value


def _m20_plrnn(seed: int = 0):
    """A bounded (clipped) shPLRNN, M = 20, L = 50, with vectorised closed-form Jacobians."""
    rng = np.random.default_rng(seed)
    M, L = 20, 50
    a = rng.uniform(0.5, 0.9, M)
    W1 = rng.normal(0, 0.8, (M, L))
    W2 = rng.normal(0, 1 / np.sqrt(M), (L, M))
    h2 = rng.normal(0, 0.5, L)

    def step(z):
        pre = z @ W2.T
        return a * z + (np.maximum(pre + h2, 0) - np.maximum(pre, 0)) @ W1.T

    def jac(z):
        pre = z @ W2.T
        d = (pre + h2 > 0).astype(float) - (pre > 0)
        J = ((W1[None] * d[:, None, :]).reshape(z.shape[0] * M, L) @ W2).reshape(z.shape[0], M, M)
        J[:, np.arange(M), np.arange(M)] += a
        return J

    return step, jac, rng.normal(size=M)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    # Two different point clouds per case so that nothing short-circuits on identical inputs.
    r3, g3 = rng.standard_normal((100_000, 3)), 1.1 * rng.standard_normal((100_000, 3))
    r20, g20 = rng.standard_normal((10_000, 20)), rng.standard_normal((10_000, 20)) + 0.2
    t = np.arange(100_000) * 0.01
    rs = np.sin(np.outer(t, np.linspace(1, 3, 20))) + 0.1 * rng.standard_normal((100_000, 20))
    gs = np.sin(np.outer(t, np.linspace(1.1, 3.2, 20))) + 0.1 * rng.standard_normal((100_000, 20))
    step, jac, z0 = _m20_plrnn()
    lyapunov_spectrum(step, jac, z0, n_steps=100, transient=0)  # numba compilation, not timed
    cases = [
        ("D_stsp binned (k=30)", "100000 x 3", lambda: stsp_binned(g3, r3), TARGET_S),
        ("D_stsp GMM (1000 MC samples)", "10000 x 20", lambda: stsp_gmm(g20, r20), TARGET_S),
        ("D_H (smoothing 20)", "100000 x 20", lambda: hellinger_spectral(gs, rs), TARGET_S),
        # (the target a unit test used to assert; timings belong here, not in the tests)
        ("Lyapunov spectrum (M=20 shPLRNN)", "100000 steps",
         lambda: float(lyapunov_spectrum(step, jac, z0, n_steps=100_000, transient=100).exponents[0]), 10.0),
    ]
    print(f"# {cpu_name()}, {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, best of {args.repeat}")
    print(f"| {'metric':<32} | {'size':<12} | {'seconds':>8} | {'value':>10} | target | met |")
    print(f"|{'-' * 34}|{'-' * 14}|{'-' * 9}:|{'-' * 11}:|{'-' * 7}:|{'-' * 5}|")
    ok = True
    for name, size, fn, target in cases:
        sec, val = _best(fn, args.repeat)
        ok &= sec < target
        print(f"| {name:<32} | {size:<12} | {sec:8.3f} | {val:10.4g} | < {target:g} s | {'yes' if sec < target else 'NO':<3} |")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
