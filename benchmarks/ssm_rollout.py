"""Teacher-forced rollout (forward + backward) of the closed-loop SSM backends, with and without
the per-rollout transition cache of s4d/lru (`parameters_fixed`), batch 16 × 200 steps, α 0.15,
one thread. Prints a table (median of 5 repeats after 2 warm-ups).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ssm_rollout.py
"""

from __future__ import annotations

import contextlib
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dsrecon.models.base import get_backend  # noqa: E402


def time_rollout(m, zr: torch.Tensor, teacher: torch.Tensor, reps: int = 5) -> float:
    out = []
    for i in range(reps + 2):
        t = time.perf_counter()
        z = m.rollout(m.init_state(zr), teacher.shape[1], teacher, 0.15)
        z[..., :3].pow(2).mean().backward()
        if i >= 2:
            out.append(time.perf_counter() - t)
    return float(np.median(out))


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    zr, teacher = torch.randn(16, 3), torch.randn(16, 200, 3)
    print("| backend | per-step transition (ms) | once per rollout (ms) | speed-up |")
    print("|---|---:|---:|---:|")
    for name in ("s4d", "lru"):
        m = get_backend(name)(3, hidden_dim=16)
        fast = time_rollout(m, zr, teacher)
        m.parameters_fixed = contextlib.nullcontext  # the old path: discretise at every step
        slow = time_rollout(m, zr, teacher)
        print(f"| {name} | {slow * 1e3:.0f} | {fast * 1e3:.0f} | {slow / fast:.1f}× |")


if __name__ == "__main__":
    main()
