# Frozen experiment, not maintained: last ran at 06e4bc2 (2026-12-05; its fits ran at a694df0 and a61f064); results in
# docs/experiments/ensembles.md#the-engines-selection-dsrecon-fit---ensemble-16-on-five-seeds-2026-12-05
# Run from the repository root as PYTHONPATH=benchmarks python benchmarks/experiments/ensemble_select.py ...
# (it imports benchmarks/_common.py and its siblings); no maintained script imports it.
"""Where users live: what `dsrecon fit --ensemble 16` selects on 2 000 frames (issue 15, target 3).

Per data seed: the recording of benchmarks/lorenz_bold.py (Lorenz63 at dt 0.01 per sample, z-scored,
through the SPM HRF at TR 0.2 s, observation noise 0.01; 2 667 frames handed to fit, which trains
on the first 2 000 and validates on the last 667), fitted as `dsrecon fit --ensemble 16 --seed
SEED` fits it (`dsrecon.ensemble.fit_ensemble`, the CLI defaults: `--preset auto` → short, 2 000
epochs with 1 000 teacher-space pretraining epochs, early stopping; member k has seed SEED+k, so
member 0 is lorenz_bold.py's single fit of that seed). Then every member is scored as lorenz_bold.py
scores a fit: the first 3 latent units of a 100 000-step free run (z-scored) against a 100 000-step
true Lorenz63 trajectory (z-scored), D_stsp with 30 bins, and D_pub (the published code's
observation-space score).

Per seed it prints each member (validation D_stsp, latent D_stsp, D_pub) and marks the one the
ensemble selects (lowest validation D_stsp, then D_H: what `dsrecon fit --ensemble` keeps as
`best`). The summary gives the selected member's latent D_stsp per seed and its rank among the
members, whether it is in the best quarter, and the Spearman correlation between the validation
score and latent D_stsp, per seed and over all members (each seed's values pooled as they are).

    NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 nice -n 10 python benchmarks/experiments/ensemble_select.py \\
        --seeds 0 2 4 --out sel_a.json          # and --seeds 1 3 --out sel_b.json beside it
    python benchmarks/experiments/ensemble_select.py --combine sel_a.json sel_b.json
    python benchmarks/experiments/ensemble_select.py --combine l2_a.json l2_b.json --baseline sel_a.json sel_b.json

--baseline compares two settings member by member: the same data seed and member seed (so the same
recording and initialisation seed) under both, with the Wilcoxon signed-rank test of the paired
latent D_stsp.

The JSON (--out) is rewritten after every seed, so a stopped run keeps the seeds it finished.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from lambda_short import progress, write_json  # noqa: E402
from _common import latent_scores, parse_set, published_protocol_dstsp, recording, true_lorenz  # noqa: E402

from dsrecon import Recording, load_run  # noqa: E402
from dsrecon._util import versions  # noqa: E402
from dsrecon.ensemble import fit_ensemble  # noqa: E402

N_FIT = 2667  # frames handed to fit: 2 000 training samples + a 667-frame validation tail
NOISE = 0.01
TR = 0.2


def seed_recording(seed: int) -> Recording:
    """The N_FIT frames of data seed ``seed`` that fit is handed (lorenz_bold.py's recording)."""
    data = recording(seed, N_FIT, NOISE)
    return Recording(data["observed"][:N_FIT], tr=TR, names=data["names"], source=f"lorenz-bold-seed{seed}")


def score_member(run: Path, rec: Recording, ref: np.ndarray, n_gen: int, seed: int) -> dict:
    """Latent D_stsp (lorenz_bold.py's `latent_scores`) and D_pub of a member's run."""
    model = load_run(run)
    s = latent_scores(model, n_gen, seed, ref)
    row = {"latent_D_stsp": s["D_stsp_latent"], "bounded": bool(s["bounded"] and np.isfinite(s["D_stsp_latent"]))}
    if "error" in s:
        row["error"] = s["error"]
    row["D_pub"] = published_protocol_dstsp(model, rec)
    return row


def rank_of(values: list[float], k: int) -> int:
    """1-based rank of values[k] among values (1 = lowest; ties share the better rank)."""
    return 1 + sum(v < values[k] for v in values)


def summarise(doc: dict) -> dict:
    seeds = doc["seeds_done"]
    per = []
    vals, lats, pubs, plats = [], [], [], []
    for s in seeds:
        rows = [r for r in doc["rows"] if r["data_seed"] == s]
        lat = [r["latent_D_stsp"] for r in rows]
        val = [r["val_D_stsp"] if r["val_D_stsp"] is not None else float("inf") for r in rows]
        sel = next(k for k, r in enumerate(rows) if r["selected"])
        rank = rank_of(lat, sel)
        ok = [(v, la) for v, la in zip(val, lat) if np.isfinite(v) and np.isfinite(la)]
        rho = float(spearmanr([o[0] for o in ok], [o[1] for o in ok])[0]) if len(ok) > 2 else float("nan")
        vals += [o[0] for o in ok]
        lats += [o[1] for o in ok]
        # the paper's score as a rule: it sees the recording's test part, so no fit could use it; it
        # bounds what a longer observation-space check would rank
        pub = [r["D_pub"] if r.get("D_pub") is not None and np.isfinite(r["D_pub"]) else float("inf") for r in rows]
        by_pub = int(np.argmin(pub))
        ok = [(v, la) for v, la in zip(pub, lat) if np.isfinite(v) and np.isfinite(la)]
        pubs += [o[0] for o in ok]
        plats += [o[1] for o in ok]
        per.append({"data_seed": s, "members": len(rows), "selected_member": rows[sel]["member"],
                    "selected_latent_D_stsp": lat[sel], "selected_D_pub": rows[sel]["D_pub"], "rank": rank,
                    "best_quarter": bool(rank <= max(1, len(rows) // 4)), "best_latent_D_stsp": float(np.min(lat)),
                    "median_member_latent_D_stsp": float(np.median(lat)), "member0_latent_D_stsp": lat[0],
                    "spearman": rho, "by_D_pub_latent_D_stsp": lat[by_pub],
                    "by_D_pub_best_quarter": bool(rank_of(lat, by_pub) <= max(1, len(rows) // 4))})
    sel = [p["selected_latent_D_stsp"] for p in per]
    pub_sel = [p["by_D_pub_latent_D_stsp"] for p in per]
    return {"per_seed": per, "median_selected": float(np.median(sel)) if sel else float("nan"),
            "max_selected": float(np.max(sel)) if sel else float("nan"),
            "best_quarter_count": int(sum(p["best_quarter"] for p in per)),
            "spearman_all": float(spearmanr(vals, lats)[0]) if len(vals) > 2 else float("nan"),
            "by_D_pub": {"median_selected": float(np.median(pub_sel)) if pub_sel else float("nan"),
                         "max_selected": float(np.max(pub_sel)) if pub_sel else float("nan"),
                         "best_quarter_count": int(sum(p["by_D_pub_best_quarter"] for p in per)),
                         "spearman_all": float(spearmanr(pubs, plats)[0]) if len(pubs) > 2 else float("nan")},
            "median_member0": float(np.median([p["member0_latent_D_stsp"] for p in per])) if per else float("nan")}


def print_summary(doc: dict) -> None:
    s = summarise(doc)
    print(f"\n{'seed':>4s} {'selected':>8s} {'latent':>8s} {'D_pub':>7s} {'rank':>6s} {'best ¼':>6s} {'best':>7s} "
          f"{'median':>7s} {'member 0':>8s} {'Spearman':>8s}")
    for p in s["per_seed"]:
        print(f"{p['data_seed']:4d} {p['selected_member']:8d} {p['selected_latent_D_stsp']:8.3f} {p['selected_D_pub']:7.3f} "
              f"{p['rank']:3d}/{p['members']:<2d} {'yes' if p['best_quarter'] else 'no':>6s} {p['best_latent_D_stsp']:7.3f} "
              f"{p['median_member_latent_D_stsp']:7.3f} {p['member0_latent_D_stsp']:8.3f} {p['spearman']:8.2f}")
    n = len(s["per_seed"])
    print(f"selected member's latent D_stsp: median {s['median_selected']:.3f} (target ≤ 2.5), worst {s['max_selected']:.3f} "
          f"(target ≤ 6); in the best quarter on {s['best_quarter_count']} of {n} seeds (target 4 of 5); "
          f"Spearman(validation D_stsp, latent D_stsp) over all {sum(p['members'] for p in s['per_seed'])} members "
          f"{s['spearman_all']:.2f}; member 0 (the single fit) median {s['median_member0']:.3f}")
    b = s["by_D_pub"]
    chosen = " / ".join(f"{p['by_D_pub_latent_D_stsp']:.2f}" for p in s["per_seed"])
    print(f"had D_pub chosen (it sees the test part; no fit can): per seed {chosen}, median {b['median_selected']:.3f}, "
          f"worst {b['max_selected']:.3f}, best quarter {b['best_quarter_count']} of {n}; "
          f"Spearman(D_pub, latent D_stsp) over all members {b['spearman_all']:.2f}")


def combined(paths: list[Path]) -> dict:
    """The rows and seeds of several --out files of one setup, as one document."""
    docs = [json.loads(p.read_text()) for p in paths]
    if len({json.dumps(d["setup"], sort_keys=True) for d in docs}) != 1:
        raise SystemExit(f"{', '.join(map(str, paths))}: the files have different setups")
    return {"rows": [r for d in docs for r in d["rows"]], "seeds_done": sorted(s for d in docs for s in d["seeds_done"]),
            "setup": docs[0]["setup"]}


def print_paired(new: dict, base: dict) -> None:
    """Member-by-member comparison of two settings on the data seeds both have."""
    from scipy.stats import wilcoxon

    key = {(r["data_seed"], r["member"]): r["latent_D_stsp"] for r in base["rows"]}
    seeds = [s for s in new["seeds_done"] if s in base["seeds_done"]]
    sn, sb = summarise({**new, "seeds_done": seeds}), summarise({**base, "seeds_done": seeds})
    print(f"\npaired against the baseline (extra options {base['setup'].get('extra') or '{}'} → {new['setup'].get('extra') or '{}'}):")
    print(f"{'seed':>4s} {'median member':>15s} {'member 0':>15s} {'selected':>15s} {'best':>15s} {'members better':>14s}")
    pairs = []
    for pn, pb in zip(sn["per_seed"], sb["per_seed"]):
        s = pn["data_seed"]
        pr = [(r["latent_D_stsp"], key[(s, r["member"])]) for r in new["rows"] if r["data_seed"] == s and (s, r["member"]) in key]
        pairs += pr
        print(f"{s:4d} {pb['median_member_latent_D_stsp']:6.3f} → {pn['median_member_latent_D_stsp']:6.3f} "
              f"{pb['member0_latent_D_stsp']:6.3f} → {pn['member0_latent_D_stsp']:6.3f} "
              f"{pb['selected_latent_D_stsp']:6.3f} → {pn['selected_latent_D_stsp']:6.3f} "
              f"{pb['best_latent_D_stsp']:6.3f} → {pn['best_latent_D_stsp']:6.3f} {sum(a < b for a, b in pr):>8d}/{len(pr)}")
    ok = [(a, b) for a, b in pairs if np.isfinite(a) and np.isfinite(b)]
    d = np.array([a - b for a, b in ok])
    p = float(wilcoxon(d)[1]) if len(d) > 5 and np.any(d != 0) else float("nan")
    print(f"all {len(ok)} pairs: {int(np.sum(d < 0))} better, median change {np.median(d):+.3f}, Wilcoxon p {p:.3g}; "
          f"selected median {sb['median_selected']:.3f} → {sn['median_selected']:.3f}, worst {sb['max_selected']:.3f} → "
          f"{sn['max_selected']:.3f}, best quarter {sb['best_quarter_count']} → {sn['best_quarter_count']} of {len(seeds)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="data seeds (member k: seed + k)")
    ap.add_argument("--ensemble", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=None, help="default: the fit default (2000)")
    ap.add_argument("--n-gen", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", nargs="*", default=[], help="extra ConvSSM options KEY=VALUE")
    ap.add_argument("--out", type=Path, default=None, help="JSON results (rewritten after every seed)")
    ap.add_argument("--runs", type=Path, default=None, help="keep the run directories here (default: a temporary directory)")
    ap.add_argument("--combine", type=Path, nargs="+", default=None, help="only print the summary of these --out files")
    ap.add_argument("--baseline", type=Path, nargs="+", default=None,
                    help="with --combine: --out files of another setting, compared member by member")
    a = ap.parse_args()
    if a.combine:
        doc = combined(a.combine)
        print_summary(doc)
        if a.baseline:
            print_paired(doc, combined(a.baseline))
        return
    torch.set_num_threads(a.threads)
    extra = parse_set(a.set)
    doc = {"benchmark": "ensemble_select", "command": " ".join(sys.argv),
           "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "versions": versions(),
           "threads": a.threads, "setup": {"system": "lorenz63", "n_fit": N_FIT, "tr": TR, "noise": NOISE, "kernel": "spm",
                                           "ensemble": a.ensemble, "epochs": a.epochs, "n_gen": a.n_gen, "extra": extra},
           "status": "running", "rows": [], "fits": [], "seeds_done": []}
    tmp = None if a.runs else tempfile.TemporaryDirectory(prefix="ensemble_select_")
    root = a.runs if a.runs else Path(tmp.name)
    print(f"{'seed':>4s} {'member':>6s} {'epochs':>6s} {'best':>5s} {'val D_stsp':>10s} {'latent':>8s} {'D_pub':>7s}", flush=True)
    for seed in a.seeds:
        rec = seed_recording(seed)
        kw = {"seed": seed, **extra}
        if a.epochs is not None:
            kw["epochs"] = a.epochs
        run = root / f"ens_s{seed}"
        t0 = time.perf_counter()
        ens = fit_ensemble(rec, run, a.ensemble, overwrite=True, progress=progress, **kw)
        wall = time.perf_counter() - t0
        doc["fits"].append({"data_seed": seed, "fit_wall_s": wall, "epochs": ens["epochs"], "best_member": ens["best_member"],
                            "selection": ens["selection"]})
        ref = true_lorenz(a.n_gen, seed)
        for m in ens["members"]:
            r = {"data_seed": seed, "member": m["member"], "seed": m["seed"], "epochs_run": m.get("epochs_run"),
                 "best_epoch": m.get("best_epoch"), "val_D_stsp": m.get("best_val_D_stsp"), "val_D_H": m.get("best_val_D_H"),
                 "failed": bool(m["failed"]), "selected": m["member"] == ens["best_member"]}
            if m["failed"]:
                r.update({"latent_D_stsp": float("inf"), "D_pub": float("inf"), "bounded": False})
            else:
                r.update(score_member(run / m["run"], rec, ref, a.n_gen, m["seed"]))
            doc["rows"].append(r)
            v = f"{r['val_D_stsp']:10.3f}" if r["val_D_stsp"] is not None else f"{'—':>10s}"
            print(f"{seed:4d} {m['member']:6d} {str(r['epochs_run']):>6s} {str(r['best_epoch']):>5s} {v} "
                  f"{r['latent_D_stsp']:8.3f} {r['D_pub']:7.3f}{'  ← selected' if r['selected'] else ''}", flush=True)
        doc["seeds_done"].append(seed)
        doc["wall_s"] = sum(f["fit_wall_s"] for f in doc["fits"])
        write_json(a.out, doc)
        print(f"# seed {seed}: fit {wall:.0f} s, {ens['epochs']} epochs", flush=True)
    doc["status"] = "complete"
    write_json(a.out, doc)
    print_summary(doc)
    print(f"command: {doc['command']}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
