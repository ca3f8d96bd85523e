"""A small cohort end to end: simulate 6 "subjects" (Lorenz-63 through the SPM HRF, TR 1 s),
fit one convSSM per subject in parallel (Ray if installed, else a process pool), and read the
summary. Tiny settings so that it runs in a minute or two on a laptop.

    python examples/cohort.py [OUT_DIR]
"""

import sys
from pathlib import Path

from dsrecon.distributed import FitSettings, fit_cohort
from dsrecon.io.tables import write_table
from dsrecon.systems import simulate_system


def main(out: Path) -> None:
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    for i in range(6):  # one table per subject, TR in the JSON sidecar
        sim = simulate_system("lorenz63", 600, 0.02, 1.0, noise=0.05, seed=i)
        write_table(data / f"sub-{i + 1:02d}_task-rest_bold.tsv", sim["observed"], sim["names"], sidecar={"RepetitionTime": 1.0})
    settings = FitSettings(hidden_dim=16, epochs=40, batches_per_epoch=10, sequence_length=120, val_every=10, seed=0)
    res = fit_cohort(data, out / "cohort", settings, max_parallel=2, lyapunov_steps=5000, log=print)
    print(f"\n{res['n_complete']} of {res['n_subjects']} subjects fitted with {res['executor']}; rerunning skips them all")
    print((out / "cohort" / "summary.tsv").read_text())
    print(f"group figure: {out / 'cohort' / 'summary.png'}")


if __name__ == "__main__":  # needed: the process pool (no Ray) re-imports this module in its workers
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("cohort_example"))
