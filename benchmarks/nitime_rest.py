"""Real data: nitime's resting-state ROI table (250 frames × 31 columns, TR 1.89 s).

The WM/Vent/Brain columns are nuisance signals: either dropped or used as regressors
(`--decoder regressor`). Reports D_stsp (GMM, σ² 0.3 as for BOLD), D_H (smoothing 1: short
series) and PE10 on the held-out tail (25 %), and whether the free run stays bounded.

    python benchmarks/nitime_rest.py [--epochs 1500] [--seeds 0 1 2] [--mode drop regressors]
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib import resources

import numpy as np
import torch

from dsrecon import ConvSSM
from dsrecon.io.load import InputSpec, load_inputs

NUISANCE = ["WM", "Vent", "Brain"]


def table_path() -> str:
    return str(resources.files("nitime") / "data" / "fmri_timeseries.csv")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=1500)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--mode", nargs="+", default=["drop", "regressors"], choices=["drop", "regressors"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sequence-length", type=int, default=60)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"{'mode':11s} {'seed':>4s} {'N':>3s} {'epochs':>6s} {'D_stsp(gmm)':>11s} {'D_H':>6s} {'PE10':>7s} {'bounded':>8s} {'wall_s':>7s}")
    for mode in a.mode:
        spec = InputSpec(tr=1.89, drop_columns=NUISANCE if mode == "drop" else [], regressor_columns=NUISANCE if mode == "regressors" else [])
        rec = load_inputs([table_path()], spec)[0]
        train, test = rec.split(0.25)
        for seed in a.seeds:
            t0 = time.perf_counter()
            m = ConvSSM(decoder="regressor" if mode == "regressors" else "identity", seed=seed, epochs=a.epochs,
                        sequence_length=a.sequence_length, gmm_var=0.3, smoothing=1.0, val_every=25, test_fraction=0.25)
            m.fit(rec)
            wall = time.perf_counter() - t0
            sc = m.score(test, stsp="gmm", gmm_var=0.3, smoothing=1.0, n_pe=10, seed=seed)
            try:
                m.simulate(100_000, seed=seed)
                bounded = True
            except Exception:
                bounded = False
            print(f"{mode:11s} {seed:4d} {rec.n_regions:3d} {m.config['training']['epochs_run']:6d} {sc['D_stsp']:11.3f} {sc['D_H']:6.3f} {sc['PE10']:7.3f} {str(bounded):>8s} {wall:7.1f}", flush=True)
    print(f"command: {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
