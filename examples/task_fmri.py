"""Task fMRI with the Python API: a driven Van der Pol through the SPM HRF, fitted with its events.

Makes two random designs (two conditions A and B, 2 s events), simulates Van der Pol driven by
them (condition A adds +10, B −10 to dy/dt; TR 0.5 s, noise 0.05), fits a convSSM with the
training events, scores it on the test segment with the test design, and generates the
response to the test design. Writes the tables, events files, the run directory and
event-locked responses into the output directory.

    python examples/task_fmri.py                 # a new temporary directory, 150 epochs
    python examples/task_fmri.py out_dir 300     # out_dir, 300 epochs
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from dsrecon import ConvSSM
from dsrecon.io.events import attach_inputs, event_locked_mean, events_to_inputs, onsets_of, random_design, write_events
from dsrecon.io.recording import Recording
from dsrecon.io.tables import write_table
from dsrecon.systems import simulate_system

TR = 0.5


def main(out: Path, epochs: int) -> None:
    rng = np.random.default_rng(0)
    for name, n, k in (("train", 2000, 60), ("test", 1000, 30)):
        write_events(out / f"{name}_events.tsv", random_design(n * TR, k, ["A", "B"], 2.0, rng, min_gap=2.0))
        s, conds = events_to_inputs(out / f"{name}_events.tsv", n, TR)
        res = simulate_system("van_der_pol", n, None, TR, kernel="spm", noise=0.05, seed=0 if name == "train" else 1,
                              inputs=s, input_gain=[10.0, -10.0], input_dim=[1], input_names=conds)
        write_table(out / f"{name}.tsv", res["observed"], res["names"], sidecar=res["sidecar"])
    mk = lambda name: attach_inputs(Recording(np.loadtxt(out / f"{name}.tsv", skiprows=1), tr=TR, names=["x", "y"],  # noqa: E731
                                              source=str(out / f"{name}.tsv")), events=out / f"{name}_events.tsv")
    train, test = mk("train"), mk("test")
    model = ConvSSM(latent_dim=3, epochs=epochs, batches_per_epoch=30, learning_rate=3e-3, lr_end=3e-4, seed=0)
    model.fit(train, run_dir=out / "run", overwrite=True)
    print("inputs:", model.input_names)
    scores = model.score(test)
    print({k: v for k, v in scores.items() if k in ("PE_n", "D_stsp", "D_H")})
    # the model's response to the test design, event-locked, next to the data's
    x, gen = model.norm_.apply(test.data), scores["generated_test_period"]
    for cond, ons in zip(model.input_names, onsets_of(test.inputs)):
        o, g = event_locked_mean(x, ons, 30), event_locked_mean(gen, ons, 30)
        print(f"condition {cond}: correlation of the event-locked responses {np.corrcoef(o.ravel(), g.ravel())[0, 1]:.3f}")
        write_table(out / f"eventlocked_{cond}.tsv", np.hstack([o, g]), ["x_observed", "y_observed", "x_model", "y_model"])
    print(f"wrote {out}")


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="dsrecon-task-"))
    target.mkdir(parents=True, exist_ok=True)
    main(target, int(sys.argv[2]) if len(sys.argv) > 2 else 150)
