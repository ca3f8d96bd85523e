# Frozen experiment, not maintained: last ran at 20f669a (2026-12-05, round 5); results in
# docs/experiments/lambda-max-short-data.md#round-5-2026-12-05-the-clis-2-000-epochs
# Run from the repository root as PYTHONPATH=benchmarks python benchmarks/experiments/lambda_short.py ...
# (it imports benchmarks/_common.py and its siblings); no maintained script imports it.
"""Short data: the paper's λ_max experiment (issue 15, target 2).

S independent Lorenz63-BOLD series of 1 000 frames (Lorenz63 at dt 0.01 per sample, z-scored,
through the SPM HRF at TR 0.2 s, observation noise 0.01 — the setup of benchmarks/lorenz_bold.py),
each fitted with the ensemble engine (`dsrecon.ensemble.fit_ensemble`, E members, default options
unless --set gives others; fit keeps its last 25 % for validation as `dsrecon fit` does). Variants:

- ``default``: the convSSM (SPM measurement kernel);
- ``kernel_none``: the standard SSM (``--kernel none``) fitted to the same observed BOLD series.

For every member that training did not mark failed: a 5 000-step free run from the fitted initial
state (a DivergenceError, or a Lyapunov run that diverges, counts as *unbounded*), then the Lyapunov
spectrum of the latent map (`dsrecon.metrics.lyapunov.dynamics_lyapunov`, QR/Benettin, float64)
from the end of that run. One model step is one sample, i.e. 0.01 Lorenz time units, so
λ per Lorenz time = λ per step / 0.01 (as benchmarks/lorenz_analysis.py computes it). The regime is
`dsrecon.metrics.analysis.regime_of` (chaotic: λ_max > 1e-3 per step = 0.1 per Lorenz time).

Per variant it prints: models, bounded, median λ_max with its interquartile range (over bounded
models), the share of all models that are chaotic + bounded + within 25 % of 0.9056, the share
that are fixed points and periodic, and wall time. The JSON (--out) is rewritten after every
ensemble, so a stopped run still has its numbers.

    NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 nice -n 10 python benchmarks/experiments/lambda_short.py \\
        --series 8 --ensemble 8 --variants default kernel_none --out lambda_short.json

Runs split over processes (``--seed 0 --series 2``, ``--seed 2 --series 2``, …: series seed … seed+1)
are pooled by ``--combine a.json b.json …``, which prints the same table over all their models.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dsrecon import Recording, load_run
from dsrecon._util import versions
from dsrecon.ensemble import fit_ensemble
from dsrecon.errors import DivergenceError
from dsrecon.metrics.analysis import regime_of, state_from_latent
from dsrecon.metrics.lyapunov import dynamics_lyapunov
from dsrecon.systems import simulate_system

LORENZ_DT = 0.01  # Lorenz time units per sample (= per model step)
LORENZ_LMAX = 0.9056  # λ_max of Lorenz63 per Lorenz time unit
TR = 0.2
NOISE = 0.01
N_FRAMES = 1000

VARIANTS = {"default": {}, "kernel_none": {"kernel": "none"}}


def parse_set(items: list[str]) -> dict:
    extra: dict = {}
    for kv in items:
        k, v = kv.split("=", 1)
        for cast in (int, float):
            try:
                extra[k] = cast(v)
                break
            except ValueError:
                continue
        else:
            extra[k] = v
    return extra


def series(s: int, seed: int) -> tuple[Recording, int]:
    """Series s: data seed = seed + s (independent initial conditions and noise)."""
    data_seed = seed + s
    d = simulate_system("lorenz63", N_FRAMES, LORENZ_DT, TR, kernel="spm", noise=NOISE, seed=data_seed)
    return Recording(d["observed"], tr=TR, names=d["names"], source=f"lorenz63-bold-s{data_seed}"), data_seed


def analyse_member(run: Path, lyap_steps: int, seed: int) -> dict:
    model = load_run(run)
    row: dict = {}
    try:
        lat = model.simulate(5000, seed=seed)["latent"].astype(np.float64)
        if not np.isfinite(lat).all() or np.abs(lat).max() > 1e4:
            raise DivergenceError("free run left the bounded regime")
        t0 = time.perf_counter()
        res = dynamics_lyapunov(model.dynamics, state_from_latent(model.dynamics, lat[-1]), n_steps=lyap_steps,
                                transient=1000, dt=LORENZ_DT)
        row.update({"bounded": True, "lambda_max_per_step": float(res.exponents[0]),
                    "lambda_max": float(res.exponents[0]) / LORENZ_DT,
                    "exponents_per_lorenz_time": [float(v) for v in res.per_second],
                    "kaplan_yorke": float(res.kaplan_yorke), "regime": regime_of(res.exponents),
                    "lyapunov_s": time.perf_counter() - t0})
    except DivergenceError as e:
        row.update({"bounded": False, "regime": "unbounded", "error": str(e)})
    if row["bounded"]:
        row["good"] = bool(row["regime"] == "chaotic" and abs(row["lambda_max"] - LORENZ_LMAX) <= 0.25 * LORENZ_LMAX)
    else:
        row["good"] = False
    return row


def summarise(rows: list[dict]) -> dict:
    n = len(rows)
    lam = np.array([r["lambda_max"] for r in rows if r.get("bounded")], dtype=float)
    share = lambda pred: float(np.mean([pred(r) for r in rows])) if n else float("nan")  # noqa: E731
    q = np.percentile(lam, [25, 50, 75]) if lam.size else [float("nan")] * 3
    med = float(q[1])
    return {"n_models": n, "n_bounded": int(lam.size), "median_lambda_max": med,
            "iqr": [float(q[0]), float(q[2])], "median_error_pct": 100 * (med - LORENZ_LMAX) / LORENZ_LMAX,
            "median_within_10pct": bool(abs(med - LORENZ_LMAX) <= 0.10 * LORENZ_LMAX),
            "share_good": share(lambda r: r["good"]),
            "share_chaotic": share(lambda r: r["regime"] == "chaotic"),
            "share_fixed_point": share(lambda r: r["regime"] == "fixed point"),
            "share_periodic": share(lambda r: r["regime"] == "periodic or quasi-periodic"),
            "share_unbounded": share(lambda r: r["regime"] in ("unbounded", "failed"))}


def write_json(path: Path | None, doc: dict) -> None:
    if path is None:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)


def print_table(doc: dict) -> None:
    print(f"\n{'variant':12s} {'models':>6s} {'bounded':>7s} {'median λmax':>11s} {'IQR':>15s} {'err %':>7s} "
          f"{'good %':>6s} {'chaotic %':>9s} {'fixed pt %':>10s} {'periodic %':>10s} {'fit wall s':>10s}")
    for v, s in doc["summary"].items():
        print(f"{v:12s} {s['n_models']:6d} {s['n_bounded']:7d} {s['median_lambda_max']:11.3f} "
              f"{s['iqr'][0]:7.3f}–{s['iqr'][1]:<7.3f} {s['median_error_pct']:+7.1f} {100 * s['share_good']:6.1f} "
              f"{100 * s['share_chaotic']:9.1f} {100 * s['share_fixed_point']:10.1f} {100 * s['share_periodic']:10.1f} "
              f"{s['fit_wall_s']:10.0f}")
    print(f"good = chaotic, bounded and λ_max within 25 % of {LORENZ_LMAX}; λ in 1/(Lorenz time), = per step / {LORENZ_DT}")


def combine(paths: list[Path]) -> dict:
    """The rows of several --out files pooled per variant (one setup: the same options, epochs and
    Lyapunov steps; distinct data series), as one document with a summary."""
    docs = [json.loads(Path(p).read_text()) for p in paths]
    setups = {json.dumps(d["setup"], sort_keys=True) for d in docs}
    if len(setups) != 1:
        raise SystemExit(f"--combine: the files have different setups: {sorted(setups)}")
    rows = [r for d in docs for r in d["rows"]]
    keys = [(r["variant"], r["data_seed"], r["member"]) for r in rows]
    if len(set(keys)) != len(keys):
        raise SystemExit("--combine: a series appears in more than one file")
    summary = {}
    for v in dict.fromkeys(r["variant"] for r in rows):
        rv = [r for r in rows if r["variant"] == v]
        walls = [e["fit_wall_s"] for d in docs for e in d["ensembles"] if e["variant"] == v]
        summary[v] = {**summarise(rv), "fit_wall_s": float(sum(walls)), "series_done": len({r["data_seed"] for r in rv})}
    for v, s in summary.items():
        print(f"# {v}: series {sorted({r['data_seed'] for r in rows if r['variant'] == v})}, λ_max per model: "
              + ", ".join(f"{r['lambda_max']:.2f}" if r.get("bounded") else "unbounded" for r in rows if r["variant"] == v))
    return {"setup": docs[0]["setup"], "rows": rows, "summary": summary}


_last_epoch_printed: list[int | None] = [None]


def progress(epoch: int, total: int, status: str) -> None:
    """One line per 100 epochs (the engine also reports within an epoch, e.g. during pretraining)."""
    if epoch % 100 == 0 and epoch != _last_epoch_printed[0]:
        _last_epoch_printed[0] = epoch
        print(f"  epoch {epoch}/{total} {time.strftime('%H:%M:%S')}", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--series", type=int, default=8, help="independent series (data seeds seed … seed+S−1)")
    ap.add_argument("--ensemble", type=int, default=8, help="members per fit")
    ap.add_argument("--epochs", type=int, default=None, help="default: the fit default (2000)")
    ap.add_argument("--variants", nargs="+", default=["default", "kernel_none"], choices=list(VARIANTS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="series s uses data seed seed+s and member seeds 1000·(seed+s)+k")
    ap.add_argument("--lyap-steps", type=int, default=100_000)
    ap.add_argument("--set", nargs="*", default=[], help="extra ConvSSM options KEY=VALUE")
    ap.add_argument("--out", type=Path, default=None, help="JSON results (rewritten after every ensemble)")
    ap.add_argument("--runs", type=Path, default=None, help="keep the run directories here (default: a temporary directory)")
    ap.add_argument("--combine", type=Path, nargs="+", default=None,
                    help="only print the pooled table of these --out files (runs of one setup over other --seed values)")
    a = ap.parse_args()
    if a.combine:
        print_table(combine(a.combine))
        return
    torch.set_num_threads(a.threads)
    extra = parse_set(a.set)
    doc = {"benchmark": "lambda_short", "command": " ".join(sys.argv), "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "versions": versions(), "threads": a.threads, "numba_threads": os.environ.get("NUMBA_NUM_THREADS"),
           "setup": {"system": "lorenz63", "frames": N_FRAMES, "dt": LORENZ_DT, "tr": TR, "kernel": "spm", "noise": NOISE,
                     "lambda_true": LORENZ_LMAX, "lyap_steps": a.lyap_steps, "epochs": a.epochs, "extra": extra},
           "seed": a.seed, "series": a.series, "ensemble": a.ensemble, "status": "running", "rows": [], "ensembles": [], "summary": {}}
    tmp = None if a.runs else tempfile.TemporaryDirectory(prefix="lambda_short_")
    root = a.runs if a.runs else Path(tmp.name)
    fit_wall = {v: 0.0 for v in a.variants}
    t_all = time.perf_counter()
    print(f"{'variant':12s} {'series':>6s} {'member':>6s} {'seed':>6s} {'epochs':>6s} {'regime':>10s} {'λmax':>8s} {'good':>4s}", flush=True)
    for s in range(a.series):  # variants interleaved per series: a stopped run has both
        rec, data_seed = series(s, a.seed)
        for v in a.variants:
            kw = {"seed": 1000 * data_seed, **VARIANTS[v], **extra}
            if a.epochs is not None:
                kw["epochs"] = a.epochs
            run = root / f"{v}_s{data_seed}"
            t0 = time.perf_counter()
            ens = fit_ensemble(rec, run, a.ensemble, overwrite=True, progress=progress, **kw)
            wall = time.perf_counter() - t0
            fit_wall[v] += wall
            doc["ensembles"].append({"variant": v, "data_seed": data_seed, "seeds": ens["seeds"], "epochs": ens["epochs"],
                                     "fit_wall_s": wall, "options": {k: val for k, val in kw.items() if k != "seed"}})
            for m in ens["members"]:
                base = {"variant": v, "data_seed": data_seed, "member": m["member"], "seed": m["seed"],
                        "epochs_run": m.get("epochs_run"), "best_epoch": m.get("best_epoch")}
                if m["failed"]:
                    r = {**base, "bounded": False, "regime": "failed", "good": False}
                else:
                    r = {**base, **analyse_member(run / m["run"], a.lyap_steps, m["seed"])}
                doc["rows"].append(r)
                lam = f"{r['lambda_max']:8.3f}" if r.get("bounded") else f"{'—':>8s}"
                print(f"{v:12s} {data_seed:6d} {m['member']:6d} {m['seed']:6d} {str(r['epochs_run']):>6s} "
                      f"{r['regime'][:10]:>10s} {lam} {'yes' if r['good'] else 'no':>4s}", flush=True)
            doc["summary"] = {vv: {**summarise([r for r in doc["rows"] if r["variant"] == vv]), "fit_wall_s": fit_wall[vv],
                                   "series_done": len({r["data_seed"] for r in doc["rows"] if r["variant"] == vv})}
                              for vv in a.variants if any(r["variant"] == vv for r in doc["rows"])}
            doc["wall_s"] = time.perf_counter() - t_all
            write_json(a.out, doc)
            print(f"# {v} series {data_seed}: fit {wall:.0f} s, {ens['epochs']} epochs; total {doc['wall_s']:.0f} s", flush=True)
    doc["status"] = "complete"
    doc["wall_s"] = time.perf_counter() - t_all
    write_json(a.out, doc)
    print_table(doc)
    print(f"wall time {doc['wall_s']:.0f} s; command: {doc['command']}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
