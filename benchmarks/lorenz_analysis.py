"""λ_max (in Lorenz time) and SCYFI fixed points of a fitted Lorenz63-BOLD run directory.

    python benchmarks/lorenz_bold.py --seeds 0 --variants default --epochs 3000 --set patience=0 --out runs
    python benchmarks/lorenz_analysis.py runs/default_s0

Prints the Lyapunov spectrum per Lorenz time unit (dt 0.01 per sample), the error of λ_max against
0.9056, the Kaplan–Yorke dimension, and each fixed point with its stability.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from dsrecon import load_run
from dsrecon.metrics.fixed_points import find_cycles
from dsrecon.metrics.lyapunov import dynamics_lyapunov

LORENZ_DT = 0.01
LORENZ_LMAX = 0.9056


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    torch.set_num_threads(1)
    model = load_run(sys.argv[1])
    lat = model.simulate(20_000)["latent"]
    res = dynamics_lyapunov(model.dynamics, lat[-1].astype(np.float64), n_steps=100_000, transient=2000, dt=LORENZ_DT)
    print("lambda per Lorenz time:", np.round(res.per_second, 3), " KY dimension:", round(res.kaplan_yorke, 3))
    print(f"lambda_max error vs {LORENZ_LMAX}: {100 * abs(res.per_second[0] - LORENZ_LMAX) / LORENZ_LMAX:.1f} %")
    for c in find_cycles(model.dynamics.piecewise_linear_params(), k_max=1, init_states=lat[::10], n_init=200):
        print("fixed point", np.round(c["points"][0], 3), c["stability"], "|eig|", np.round(np.abs(c["eigenvalues"]), 4))


if __name__ == "__main__":
    main()
