"""Speed of the attractor metrics at their target sizes; prints a table (best of --repeat runs).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/metrics_speed.py

Targets (each under 1 s on a 2-core CPU): binned D_stsp on 100 000 × 3 points, GMM D_stsp on
10 000 × 20 (1 000 Monte-Carlo samples), D_H on 100 000 × 20.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy loads
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

from dsrecon.metrics import hellinger_spectral, stsp_binned, stsp_gmm  # noqa: E402

TARGET_S = 1.0


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _best(fn, repeat: int) -> tuple[float, float]:
    times, value = [], float("nan")
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return min(times), value


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
    cases = [
        ("D_stsp binned (k=30)", "100000 x 3", lambda: stsp_binned(g3, r3)),
        ("D_stsp GMM (1000 MC samples)", "10000 x 20", lambda: stsp_gmm(g20, r20)),
        ("D_H (smoothing 20)", "100000 x 20", lambda: hellinger_spectral(gs, rs)),
    ]
    print(f"# {_cpu_name()}, {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, best of {args.repeat}")
    print(f"| {'metric':<30} | {'size':<12} | {'seconds':>8} | {'value':>10} | < {TARGET_S:g} s |")
    print(f"|{'-' * 32}|{'-' * 14}|{'-' * 9}:|{'-' * 11}:|{'-' * 7}|")
    ok = True
    for name, size, fn in cases:
        sec, val = _best(fn, args.repeat)
        ok &= sec < TARGET_S
        print(f"| {name:<30} | {size:<12} | {sec:8.3f} | {val:10.4g} | {'yes' if sec < TARGET_S else 'NO':<5} |")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
