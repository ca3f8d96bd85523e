"""Hyperparameter sweeps: the product of ``--grid`` values × seeds, on Ray Tune (or a process pool).

Each trial fits one model (its own run directory under ``OUT/trials/``) and is scored on the
held-out tail (D_stsp, D_H, PE). With ``asha=True`` Tune's ASHA scheduler stops poor trials early
on the validation D_stsp that each trial reports at its validation epochs (the best value so far,
which is the model the trial would keep if stopped there).

Outputs: ``OUT/results.tsv`` (one row per trial, sidecar ``results.json``) and
``OUT/best_config.json`` (the grid point with the lowest D_stsp averaged over its seeds).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dsrecon._util import versions, write_json_atomic
from dsrecon.distributed.cohort import evaluate_fitted, write_tsv
from dsrecon.distributed.executor import init_ray, limit_threads, one_line, ray_available, run_jobs
from dsrecon.distributed.settings import FitSettings
from dsrecon.errors import DsreconError
from dsrecon.options import PRESETS

_BEST = re.compile(r"best D_stsp (\S+)@(\d+)")


def best_validation(status: str) -> float | None:
    """The best validation D_stsp so far from the trainer's progress status string, or None
    before the first validation ("loss 0.1 α 0.15 best D_stsp 0.42@50" → 0.42)."""
    m = _BEST.search(status)
    if not m:
        return None
    try:
        return float(m.group(1))
    except ValueError:
        return None


def n_validations(epochs: int, val_every: int) -> int:
    """How many validations a full fit runs (every val_every epochs, and at the last epoch)."""
    return epochs // val_every + (1 if epochs % val_every else 0)


def trial_name(params: dict, seed: int) -> str:
    parts = [f"{k}-{v}" for k, v in params.items()] + [f"seed-{seed}"]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(parts))


def run_trial(settings: FitSettings, paths: list[str], run_dir: str, report: Callable[[dict], None] | None = None) -> dict:
    """Fit and score one trial. ``report`` receives {"val_D_stsp", "epoch", "wall_seconds"} at every
    validation epoch but the last, then the final metrics (same keys plus D_stsp, D_H, PE, …)."""
    from dsrecon.io.load import load_inputs

    t0 = time.time()
    recs = load_inputs(list(paths), settings.input_spec())
    model = settings.model()
    s = settings

    def progress(epoch: int, total: int, status: str) -> None:
        if report is not None and epoch % s.val_every == 0 and epoch < total:
            v = best_validation(status)
            if v is not None:
                report({"val_D_stsp": v, "epoch": epoch, "wall_seconds": time.time() - t0, "final": False})

    model.fit(recs, run_dir, overwrite=True, progress=progress, inputs=list(paths))
    m = evaluate_fitted(model, recs, s.test_fraction, lyapunov_steps=0, seed=s.seed, gmm_var=s.gmm_var)
    training = model.config.get("training", {})
    best = training.get("best_val_D_stsp")
    out = {"val_D_stsp": float("inf") if best is None else float(best), "D_stsp": m["D_stsp"], "D_H": m["D_H"], "PE": m["PE"],
           "epoch": training.get("epochs_run"), "epochs_run": training.get("epochs_run"), "best_epoch": training.get("best_epoch"),
           "wall_seconds": time.time() - t0, "final": True, "run": run_dir}
    if report is not None:
        report(out)
    return out


def _pool_trial(job: dict) -> dict:
    res = run_trial(FitSettings(**job["settings"]), job["paths"], job["run_dir"])
    return {**res, "status": "complete"}


def _tune_trial(config: dict, base: dict, paths: list[str], trials_dir: str) -> None:
    """Ray Tune function trainable: one grid point × seed."""
    from ray import tune

    limit_threads()
    params = {k: v for k, v in config.items() if k != "seed"}
    s = FitSettings(**{**base, **params, "seed": int(config["seed"])})
    run_trial(s, paths, str(Path(trials_dir) / trial_name(params, int(config["seed"]))), report=tune.report)


def _fmt(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def run_sweep(data: list[str], out: str | Path, base: FitSettings, grid: dict[str, list], *, seeds: int = 1, asha: bool = False,
              asha_grace: int = 1, max_parallel: int | None = None, gpus_per_trial: float = 0.0, address: str | None = None,
              use_ray: bool | None = None, log: Callable[[str], None] = lambda s: None) -> dict:
    """Run the sweep and write results.tsv and best_config.json under ``out``. Returns the summary object."""
    base.validate()
    if seeds < 1:
        raise DsreconError(f"--seeds must be at least 1, got {seeds}")
    if base.test_fraction <= 0:
        raise DsreconError("--test-fraction must be > 0 for a sweep (trials are scored on the held-out tail)")
    if asha_grace < 1:
        raise DsreconError(f"--asha-grace must be at least 1, got {asha_grace}")
    from dsrecon.io.load import load_inputs, refuse_unused_queries

    paths = [str(Path(p).resolve()) for p in data]
    refuse_unused_queries(list(data), base.input_spec())
    load_inputs(paths, base.input_spec(quiet=False))  # bad data fails here, once, with one line
    for point in itertools.product(*grid.values()):  # bad combinations fail before anything runs
        base.replace(**dict(zip(grid, point))).validate()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    trials_dir = out / "trials"
    seed_values = [base.seed + i for i in range(seeds)]
    keys = list(grid)
    n_trials = math.prod(len(v) for v in grid.values()) * seeds
    use_ray = ray_available() if use_ray is None else use_ray
    log(f"sweep: {n_trials} trial(s) ({' × '.join(f'{k} {len(v)}' for k, v in grid.items()) or 'no grid'} × {seeds} seed(s)) → {out}")
    t0 = time.time()
    rows: list[dict] = []
    if use_ray:
        rows = _sweep_ray(paths, base, grid, seed_values, trials_dir, asha, asha_grace, max_parallel, gpus_per_trial, address, log)
    else:
        if asha:
            log("--asha needs Ray Tune: every trial runs to completion")
        jobs = []
        for point in itertools.product(*grid.values()):
            params = dict(zip(keys, point))
            for sd in seed_values:
                s = base.replace(**params, seed=sd)
                jobs.append({"params": params, "seed": sd, "settings": s.to_dict(), "paths": paths,
                             "run_dir": str(trials_dir / trial_name(params, sd))})
        for job, res in run_jobs(_pool_trial, jobs, max_parallel=max_parallel, gpus_per_job=gpus_per_trial, use_ray=False, log=log):
            rows.append({"trial": trial_name(job["params"], job["seed"]), **job["params"], "seed": job["seed"], **res})
            log(f"[{len(rows)}/{len(jobs)}] {rows[-1]['trial']}: {res.get('status')} D_stsp {res.get('D_stsp', float('nan')):.4g}"
                if res.get("status") == "complete" else f"[{len(rows)}/{len(jobs)}] {rows[-1]['trial']}: FAILED: {res.get('error')}")
    rows.sort(key=lambda r: r["trial"])
    for r in rows:
        r["error"] = r.get("error") or ""
    columns = ["trial", *keys, "seed", "status", "D_stsp", "D_H", "PE", "val_D_stsp", "epochs_run", "best_epoch", "wall_seconds", "run", "error"]
    write_tsv(out / "results.tsv", columns, rows)
    best = _best_config(rows, keys)
    meta = {"grid": grid, "seeds": seed_values, "asha": asha, "asha_grace": asha_grace, "executor": "ray-tune" if use_ray else "process-pool",
            "address": address, "data": paths, "base_settings": base.to_dict(), "seed": base.seed, "versions": _versions()}
    write_json_atomic(out / "results.json", {
        "Description": "dsrecon sweep: one row per trial; D_stsp, D_H, PE on the held-out tail (lower is better); "
                       "val_D_stsp: best validation D_stsp reported to the scheduler; status 'stopped' = stopped early by ASHA",
        "Columns": columns, **meta})
    if best is None:
        raise DsreconError(f"{out}: no trial finished (see {out / 'results.tsv'})")
    write_json_atomic(out / "best_config.json", {**best, **meta})
    return {"out": str(out), "n_trials": len(rows), "n_complete": sum(r["status"] == "complete" for r in rows),
            "n_stopped": sum(r["status"] == "stopped" for r in rows), "n_failed": sum(r["status"] == "failed" for r in rows),
            "best": best, "seconds": time.time() - t0, "results": str(out / "results.tsv"), **meta}


def _versions() -> dict:
    v = versions()
    try:
        import ray

        v["ray"] = ray.__version__
    except ImportError:
        pass
    return v


def _best_config(rows: list[dict], keys: list[str]) -> dict | None:
    """The grid point with the lowest mean held-out D_stsp over its completed seeds (ties: lower D_H)."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r["status"] == "complete":
            groups.setdefault(repr([r[k] for k in keys]), []).append(r)
    scored = []
    for rs in groups.values():
        d = np.array([float(r["D_stsp"]) if r["D_stsp"] is not None else np.inf for r in rs])
        h = np.array([float(r["D_H"]) if r["D_H"] is not None and np.isfinite(r["D_H"]) else np.inf for r in rs])
        scored.append((float(np.mean(d)), float(np.mean(h)), rs))
    if not scored:
        return None
    d, h, rs = min(scored, key=lambda t: (t[0], t[1]))
    return {"params": {k: _fmt(rs[0][k]) for k in keys}, "mean_D_stsp": d, "mean_D_H": h,
            "per_seed": [{"seed": r["seed"], "D_stsp": r["D_stsp"], "D_H": r["D_H"], "PE": r["PE"], "run": r.get("run")} for r in rs],
            "selection": "lowest mean held-out D_stsp over seeds (ties broken by D_H)"}


def _sweep_ray(paths, base, grid, seed_values, trials_dir, asha, asha_grace, max_parallel, gpus, address, log) -> list[dict]:
    import ray
    from ray import tune

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    started = init_ray(address, log)
    try:
        space: dict[str, Any] = {k: tune.grid_search(list(v)) for k, v in grid.items()}
        space["seed"] = tune.grid_search(list(seed_values))
        trainable = tune.with_resources(
            tune.with_parameters(_tune_trial, base=base.to_dict(), paths=paths, trials_dir=str(trials_dir)), {"cpu": 1, "gpu": gpus})
        sched = None
        if asha:
            from ray.tune.schedulers import ASHAScheduler

            max_t = n_validations(base.epochs or PRESETS["short"]["epochs"], base.val_every)  # (unset: the preset decides per subject)
            sched = ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=min(asha_grace, max_t), reduction_factor=2)
        tuner = tune.Tuner(
            trainable, param_space=space,
            tune_config=tune.TuneConfig(metric="val_D_stsp", mode="min", scheduler=sched, max_concurrent_trials=max_parallel),
            run_config=tune.RunConfig(name="tune", storage_path=str(trials_dir.parent / "tune"), verbose=0),
        )
        with contextlib.redirect_stdout(sys.stderr):  # Tune prints tables: stdout is for --json
            results = tuner.fit()
        rows = []
        keys = list(grid)
        for res in results:
            cfg = res.config or {}
            params = {k: cfg.get(k) for k in keys}
            seed = cfg.get("seed")
            m = res.metrics or {}
            row = {"trial": trial_name(params, seed), **params, "seed": seed}
            if res.error is not None:
                row.update(status="failed", error=one_line(res.error))
            elif m.get("final"):
                row.update(status="complete", **{k: m.get(k) for k in ("D_stsp", "D_H", "PE", "val_D_stsp", "epochs_run", "best_epoch",
                                                                       "wall_seconds", "run")})
            else:
                row.update(status="stopped", val_D_stsp=m.get("val_D_stsp"), epochs_run=m.get("epoch"), wall_seconds=m.get("wall_seconds"),
                           run=str(trials_dir / trial_name(params, seed)))
            log(f"{row['trial']}: {row['status']}" + (f" D_stsp {row['D_stsp']:.4g}" if row["status"] == "complete" else ""))
            rows.append(row)
        return rows
    finally:
        if started:
            ray.shutdown()
