"""Task-fMRI benchmark: fits with and without the external inputs (issue 17).

Data (per seed and system): a driven Lorenz63 (dt 0.01 per frame) and a driven Van der Pol
(dt 0.05 per frame), two conditions with a jittered random design (60 events of 2 s per
condition in the 2 000 frames handed to fit, at least 2 s between events), condition A adding
+g and condition B −g to dx/dt of state 0 (`dsrecon simulate system --events --input-gain
--input-dim`), z-scored, through the SPM HRF at TR 0.5 s, noise 0.05. A test segment of 2 000
frames follows, with a different random design (again 60 events per condition: the event-locked
mean of the chaotic data needs that many events to be a stable reference).

Variants: the same convSSM fit (M 3, cshPLRNN) with the events (`inputs`) and without them
(`autonomous`). Reported on the test segment:

- PE10 (10-step prediction error from the deconvolved test teacher; the inputs model is given
  the test design);
- r_A, r_B: correlation between the true and the generated event-locked mean responses per
  condition (window 0–15 s after onset, baseline the frame before the onset, all regions
  concatenated): the true response from the test observations, the generated one from the free
  run driven by the test design (`ConvSSM.score`; the autonomous model runs without inputs);
- r_A_exp, r_B_exp: the same correlation between the *expected* responses, which is what the
  event-locked mean of one chaotic realisation estimates with sampling error: the true one is
  the mean over R (`--replicates`, default 16) independent realisations of the driven system
  under the test design (other initial states, same noise level), the generated one the mean over
  R free runs of the model driven by the test design, each from the state inferred at the end of
  a random prefix of the training data (a different point on the fitted attractor);
- D_stsp: binned (10 bins) between the free run's latent units and the true z-scored states of
  the test segment.

    python benchmarks/inputs.py --seeds 0 1 2 3 4 --epochs 150 --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dsrecon import ConvSSM, Recording
from dsrecon.errors import DsreconError
from dsrecon.io.events import random_design
from dsrecon.metrics.stsp import stsp_binned
from dsrecon.systems import simulate_system

TR = 0.5
N_FIT, N_TEST = 2000, 2000
SYSTEMS = {  # name: (dt per frame, gain g of the input, the state it drives): A adds +g, B −g
    "lorenz63": (0.01, 400.0, 0),
    "van_der_pol": (0.05, 10.0, 1),
}
CONDITIONS = ["A", "B"]
DURATION, GAP = 2.0, 2.0
WINDOW = 30  # frames (15 s) after onset


def make_data(system: str, seed: int) -> dict:
    rng = np.random.default_rng(10_000 + seed)
    ev_fit = random_design(N_FIT * TR, 60, CONDITIONS, DURATION, rng, min_gap=GAP)
    ev_test = random_design(N_TEST * TR, 60, CONDITIONS, DURATION, rng, min_gap=GAP)
    events = ev_fit + [(o + N_FIT * TR, d, c, m) for o, d, c, m in ev_test]
    from dsrecon.io.events import write_events, events_to_inputs
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "events.tsv"
        write_events(p, events)
        s, names = events_to_inputs(p, N_FIT + N_TEST, TR)
    dt, g, dim = SYSTEMS[system]
    res = simulate_system(system, N_FIT + N_TEST, dt, TR, kernel="spm", noise=0.05, seed=seed, inputs=s,
                          input_gain=[g, -g], input_dim=[dim], input_names=names)
    return {"x": res["observed"], "latent": res["latent"], "inputs": s, "names": res["names"], "ev_test": ev_test, "names_in": names}


def event_locked(x: np.ndarray, events: list, cond: str) -> np.ndarray:
    """Mean over the condition's events of x[onset frame + 0 … WINDOW) − x[onset frame − 1] → (WINDOW, N)."""
    segs = []
    for o, _, c, _ in events:
        f = int(o // TR)
        if c == cond and f >= 1 and f + WINDOW <= x.shape[0]:
            segs.append(x[f : f + WINDOW] - x[f - 1])
    return np.mean(segs, axis=0)


def zscore(a: np.ndarray) -> np.ndarray:
    return (a - a.mean(0)) / np.maximum(a.std(0), 1e-12)


def true_realisation(system: str, seed: int, d: dict, r: int) -> np.ndarray:
    """Replicate r of the driven system's observed test segment: another initial state (and noise),
    the same test design, gains and observation noise as the data."""
    dt, g, dim = SYSTEMS[system]
    return simulate_system(system, N_TEST, dt, TR, kernel="spm", noise=0.05, seed=100_000 + 1_000 * seed + r, inputs=d["inputs"][N_FIT:],
                           input_gain=[g, -g], input_dim=[dim], input_names=d["names_in"])["observed"]


def response_pair(x: np.ndarray, gen: np.ndarray, events: list, cond: str) -> float:
    """Correlation of two event-locked mean responses (regions concatenated); a flat generated
    response (no deflection at all, e.g. a run on a fixed point) has no correlation: 0."""
    return corr_or_zero(event_locked(x, events, cond), event_locked(gen, events, cond))


def expected_responses(system: str, seed: int, d: dict, model: ConvSSM, train: Recording, with_inputs: bool,
                       replicates: int) -> tuple[np.ndarray, np.ndarray]:
    """(true, generated) event-locked means per condition, (C, WINDOW, N), each averaged over
    ``replicates`` realisations: the driven system from other initial states, the model from the
    ends of random prefixes of the training data, both driven by the test design."""
    rng = np.random.default_rng(20_000 + seed)
    n_total = int(np.ceil(1.25 * N_TEST))
    drive = np.concatenate([np.zeros((n_total - N_TEST, 2)), d["inputs"][N_FIT:]]) if with_inputs else None
    true, gen = [], []
    for r in range(replicates):
        xr = model.norm_.apply(true_realisation(system, seed, d, r))
        end = int(rng.integers(N_FIT // 4, N_FIT + 1))
        prefix = Recording(train.data[:end], tr=TR, names=train.names, source=train.source)
        try:
            gr = model.simulate(n_total, data=prefix, inputs=drive)["observed_normalised"][-N_TEST:]
        except DsreconError:  # a diverging run: no response (counted flat below)
            gr = np.zeros_like(xr)
        true.append([event_locked(xr, d["ev_test"], c) for c in CONDITIONS])
        gen.append([event_locked(gr, d["ev_test"], c) for c in CONDITIONS])
    return np.mean(true, axis=0), np.mean(gen, axis=0)


def corr_or_zero(a: np.ndarray, b: np.ndarray) -> float:
    if not np.isfinite(b).all() or b.std() < 1e-9:
        return 0.0
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def run_one(system: str, seed: int, variant: str, epochs: int, batches: int, replicates: int = 16) -> dict:
    d = make_data(system, seed)
    with_inputs = variant == "inputs"
    mk = lambda sl: Recording(d["x"][sl], tr=TR, names=d["names"], source=f"{system}-s{seed}",  # noqa: E731
                              inputs=d["inputs"][sl] if with_inputs else None, input_names=CONDITIONS if with_inputs else [])
    train, test = mk(slice(0, N_FIT)), mk(slice(N_FIT, None))
    t0 = time.perf_counter()
    model = ConvSSM(latent_dim=3, epochs=epochs, batches_per_epoch=batches, seed=seed, learning_rate=3e-3, lr_end=3e-4,
                    val_every=max(epochs // 6, 1)).fit(train)
    wall = time.perf_counter() - t0
    sc = model.score(test, seed=seed)
    n_total = int(np.ceil(1.25 * N_TEST))  # the free run of score(): from the end of the training data, the last N_TEST compared
    drive = np.concatenate([np.zeros((n_total - N_TEST, 2)), test.inputs]) if with_inputs else None
    out = model.simulate(n_total, inputs=drive)
    gen, lat_gen = out["observed_normalised"][-N_TEST:], out["latent"][-N_TEST:]
    x = model.norm_.apply(test.data)
    row = {"system": system, "seed": seed, "variant": variant, "epochs": epochs, "PE10": sc["PE_n"], "wall_s": wall}
    for c in CONDITIONS:
        row[f"r_{c}"] = response_pair(x, gen, d["ev_test"], c)
    if replicates:
        true_e, gen_e = expected_responses(system, seed, d, model, train, with_inputs, replicates)
        for i, c in enumerate(CONDITIONS):
            row[f"r_{c}_exp"] = corr_or_zero(true_e[i], gen_e[i])
    true_lat = d["latent"][N_FIT:]
    k = true_lat.shape[1]
    row["D_stsp"] = float(stsp_binned(zscore(lat_gen[:, :k]), zscore(true_lat), bins=10)) if lat_gen is not None and np.isfinite(lat_gen).all() else float("nan")
    return row


def ceiling(system: str, seed: int, replicates: int) -> dict:
    """How well one realisation's event-locked means can agree with the truth at all (no model):
    the observed test responses against those of an independent realisation of the same driven
    system (what the single-realisation r of a perfect model would score), and against the mean
    of ``replicates`` realisations (the expected response)."""
    d = make_data(system, seed)
    x = zscore(d["x"][N_FIT:])
    reps = [zscore(true_realisation(system, seed, d, r)) for r in range(replicates)]
    row = {"system": system, "seed": seed}
    for c in CONDITIONS:
        obs = event_locked(x, d["ev_test"], c)
        row[f"r_{c}_other_realisation"] = corr_or_zero(obs, event_locked(reps[0], d["ev_test"], c))
        row[f"r_{c}_expected"] = corr_or_zero(obs, np.mean([event_locked(r, d["ev_test"], c) for r in reps], axis=0))
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS))
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--batches-per-epoch", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", nargs="+", default=["inputs", "autonomous"], choices=["inputs", "autonomous"])
    ap.add_argument("--gain", type=float, default=None, help="Override the input gain g of every system.")
    ap.add_argument("--input-dim", type=int, default=None, help="Override the state the inputs drive.")
    ap.add_argument("--replicates", type=int, default=16, help="Realisations averaged for the expected responses (0: skip).")
    ap.add_argument("--rows", type=Path, default=None, help="Append each result as a JSON line here.")
    ap.add_argument("--ceiling", action="store_true", help="No fits: how well the observed test responses agree with an "
                    "independent realisation and with the expected response of the true system.")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    for k, (dt, g, dim) in list(SYSTEMS.items()):
        SYSTEMS[k] = (dt, g if a.gain is None else a.gain, dim if a.input_dim is None else a.input_dim)
    if a.ceiling:
        rows = [ceiling(system, seed, a.replicates or 16) for system in a.systems for seed in a.seeds]
        print("| system | seed | r_A / r_B vs another realisation | r_A / r_B vs the expected response |")
        print("|---|---|---|---|")
        for r in rows:
            print(f"| {r['system']} | {r['seed']} | {r['r_A_other_realisation']:.3f} / {r['r_B_other_realisation']:.3f} | "
                  f"{r['r_A_expected']:.3f} / {r['r_B_expected']:.3f} |")
        return 0
    rows = []
    for system in a.systems:
        for seed in a.seeds:
            for variant in a.variants:
                r = run_one(system, seed, variant, a.epochs, a.batches_per_epoch, a.replicates)
                rows.append(r)
                print(json.dumps(r), flush=True)
                if a.rows is not None:
                    with open(a.rows, "a") as f:
                        f.write(json.dumps(r) + "\n")
    print(table(rows))
    return 0


def table(rows: list[dict]) -> str:
    """Markdown: per system and variant, medians over seeds (and the per-seed PE10 ratio)."""
    out = ["| system | variant | seeds | PE10 median | r_A median | r_B median | min r | r_A_exp median | r_B_exp median | min r_exp | D_stsp median | s/fit |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for system in dict.fromkeys(r["system"] for r in rows):
        for variant in ("inputs", "autonomous"):
            rs = [r for r in rows if r["system"] == system and r["variant"] == variant]
            if not rs:
                continue
            med = lambda k: float(np.nanmedian([r[k] for r in rs]))  # noqa: E731
            mn = min(min(r["r_A"], r["r_B"]) for r in rs)
            mne = min(min(r.get("r_A_exp", np.nan), r.get("r_B_exp", np.nan)) for r in rs)
            mede = lambda k: float(np.nanmedian([r.get(k, np.nan) for r in rs]))  # noqa: E731
            out.append(f"| {system} | {variant} | {len(rs)} | {med('PE10'):.4f} | {med('r_A'):.3f} | {med('r_B'):.3f} | {mn:.3f} | "
                       f"{mede('r_A_exp'):.3f} | {mede('r_B_exp'):.3f} | {mne:.3f} | {med('D_stsp'):.3f} | {med('wall_s'):.0f} |")
    out.append("")
    out.append("| system | seed | PE10 inputs | PE10 autonomous | reduction | r_A / r_B inputs | r_A / r_B autonomous | r_exp A / B inputs | r_exp A / B autonomous |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for system in dict.fromkeys(r["system"] for r in rows):
        for seed in dict.fromkeys(r["seed"] for r in rows):
            a = [r for r in rows if (r["system"], r["seed"], r["variant"]) == (system, seed, "inputs")]
            b = [r for r in rows if (r["system"], r["seed"], r["variant"]) == (system, seed, "autonomous")]
            if a and b:
                a, b = a[0], b[0]
                out.append(f"| {system} | {seed} | {a['PE10']:.4f} | {b['PE10']:.4f} | {100 * (1 - a['PE10'] / b['PE10']):.0f} % | "
                           f"{a['r_A']:.3f} / {a['r_B']:.3f} | {b['r_A']:.3f} / {b['r_B']:.3f} | "
                           f"{a.get('r_A_exp', np.nan):.3f} / {a.get('r_B_exp', np.nan):.3f} | {b.get('r_A_exp', np.nan):.3f} / {b.get('r_B_exp', np.nan):.3f} |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
