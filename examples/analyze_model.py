"""Analyse a fitted run: Lyapunov spectrum, correlation dimension, fixed points and cycles, report.

    python examples/analyze_model.py RUN_DIR [TEST.tsv]

Prints what kind of dynamical system the model found and writes RUN_DIR/report.html.
"""

from __future__ import annotations

import sys
from pathlib import Path

import dsrecon
from dsrecon.io.tables import read_table
from dsrecon.plots.report import build_report


def main(run: str, test: str | None = None) -> None:
    model = dsrecon.load_run(run)
    data = read_table(test, tr=model.tr) if test else None
    res = build_report(model, Path(run) / "report.html", data=data, lyapunov_steps=100_000, k_max=10, seed=0)
    an = res["analysis"]
    ly = an["lyapunov"]
    print(f"regime: {ly.get('regime')}")
    print(f"λ_max: {ly.get('lambda_max_per_step'):.4g} per step = {ly.get('lambda_max_per_second'):.4g} per second (TR {model.tr} s)")
    print(f"Kaplan–Yorke dimension: {ly.get('kaplan_yorke_dimension'):.3f}")
    print(f"correlation dimension of the generated latent trajectory: {an['correlation_dimension']['generated_latent']:.3f}")
    for c in an["fixed_points"]["cycles"]:
        print(f"  period {c['period']:2d}  {c['stability']:8s}  max|eig| = {c['max_abs_eigenvalue']:.3f}")
    if res["scores"]:
        print(f"D_stsp = {res['scores']['D_stsp']:.3f}, D_H = {res['scores']['D_H']:.3f}")
    print(f"report: {res['report']}")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    main(*sys.argv[1:])
