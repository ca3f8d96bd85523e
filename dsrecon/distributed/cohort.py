"""One model per subject, in parallel (Ray or a local process pool), resumable.

Layout of the output directory ``OUT``::

    OUT/sub-01/               a normal run directory (model.safetensors, config.json, ...)
    OUT/sub-01/cohort_metrics.json   held-out metrics of that fit (D_stsp, D_H, PE, λ_max)
    OUT/failures.tsv          subject, error (one line each; header only when none failed)
    OUT/summary.tsv           one row per subject; OUT/summary.json is its sidecar
    OUT/summary.png           the group figure (one panel per metric, one dot per subject)

A rerun skips subjects whose run is complete and whose metrics were computed with the same
options; a subject whose fit was killed resumes from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dsrecon._util import to_json, versions, write_json_atomic, write_text_atomic
from dsrecon.distributed.executor import one_line, ray_available, run_jobs
from dsrecon.distributed.settings import FitSettings
from dsrecon.io.runs import data_changed, differences, read_config
from dsrecon.distributed.subjects import ABSENT, COMPLETE, PARTIAL, STALE, Subject, discover_subjects, run_state
from dsrecon.errors import DivergenceError, DsreconError

METRICS_FILE = "cohort_metrics.json"
SUMMARY_COLUMNS = ["subject", "status", "D_stsp", "D_H", "PE", "lambda_max", "lambda_max_per_step", "n_recordings", "n_frames",
                   "n_test_frames", "epochs_run", "best_epoch", "fit_seconds", "error"]
METRIC_COLUMNS = ("D_stsp", "D_H", "PE", "lambda_max")


# ------------------------------------------------------------------------------------------ evaluation
def evaluate_fitted(model, recs: list, test_fraction: float, *, lyapunov_steps: int, seed: int, gmm_var: float = 1.0) -> dict:
    """Held-out metrics of a fitted model: D_stsp, D_H, PE (means over the recordings' tails,
    the last ``test_fraction`` of each) and λ_max of the latent map (per second, TR as the step).

    Returns a JSON-friendly dict; metrics that cannot be computed are NaN with a note.
    """
    out: dict[str, Any] = {"notes": []}
    if test_fraction > 0:
        scores = [model.score(r.split(test_fraction)[1], gmm_var=gmm_var, seed=seed) for r in recs]
        out["D_stsp"] = float(np.mean([s["D_stsp"] for s in scores]))
        out["D_stsp_method"] = scores[0]["D_stsp_method"]
        out["D_H"] = float(np.mean([s["D_H"] for s in scores]))
        out["PE"] = float(np.mean([s["PE_n"] for s in scores]))
        out["PE_steps"] = int(scores[0]["n"])
        out["n_test_frames"] = int(sum(s["n_test"] for s in scores))
        out["diverged"] = any(s["diverged"] for s in scores)
    else:
        out.update(D_stsp=float("nan"), D_H=float("nan"), PE=float("nan"), n_test_frames=0, diverged=False)
        out["notes"].append("no held-out tail (--test-fraction 0): D_stsp, D_H and PE not computed")
    out.update(lambda_max=float("nan"), lambda_max_per_step=float("nan"))
    if lyapunov_steps > 0:
        try:
            out.update(largest_lyapunov(model, lyapunov_steps, seed))
        except DivergenceError as e:
            out["notes"].append(f"λ_max not computed: {one_line(e)}")
    return out


def largest_lyapunov(model, n_steps: int, seed: int) -> dict:
    """λ_max of the fitted latent map by the QR method (`dsrecon.metrics.analysis.analyze_model`)."""
    from dsrecon.metrics.analysis import analyze_model

    res = analyze_model(model, lyapunov_steps=int(n_steps), k_max=1, seed=seed)["lyapunov"]
    if "error" in res:
        raise DivergenceError(res["error"])
    return {"lambda_max": float(res["lambda_max_per_second"]), "lambda_max_per_step": float(res["lambda_max_per_step"]),
            "regime": res.get("regime")}


# ------------------------------------------------------------------------------------------ the worker
def fit_subject(job: dict) -> dict:
    """Fit (or resume, or only evaluate) one subject; runs in a worker. Errors propagate (the
    executor records them as this subject's failure)."""
    from dsrecon.estimators.load import load_run
    from dsrecon.io.load import load_inputs

    t_start = time.time()
    s = FitSettings(**job["settings"])
    run = Path(job["run_dir"])
    recs = load_inputs(job["paths"], s.input_spec(job.get("participant")))
    model = s.model()
    state = run_state(run)
    hook = os.environ.get("DSRECON_TEST_FAIL_SUBJECT")  # testing: make one subject fail
    if hook and hook == job["subject"]:
        raise DsreconError(f"{job['subject']}: failure requested by DSRECON_TEST_FAIL_SUBJECT")
    resumed = refit = False
    refit_reason = None
    if state == COMPLETE and not job.get("force"):
        # the one compatibility check of --resume: reuse the finished run only for the same data and options
        diffs = differences(read_config(run), model.plan(recs, list(job["paths"]))[2])
        if diffs and not (data_changed(diffs) and len(diffs) == 1):
            raise DsreconError(f"{run}: finished with different options ({'; '.join(diffs[:3])}); use --force to refit or another -o")
        if diffs:  # the subject's data changed since its fit: its old model describes other data
            refit_reason = diffs[0]
        else:
            model = load_run(run)
    if state != COMPLETE or job.get("force") or refit_reason:
        resume = state == PARTIAL and not job.get("force")
        try:
            model.fit(recs, run, resume=resume, overwrite=not resume and state != ABSENT, inputs=list(job["paths"]))
        except DsreconError as e:
            if resume and "cannot resume" in str(e):
                raise DsreconError(f"{e} (use --force to start this subject over)") from None
            raise
        resumed, refit = resume, True
    t_fit = time.time()
    metrics = evaluate_fitted(model, recs, s.test_fraction, lyapunov_steps=int(job["lyapunov_steps"]), seed=s.seed, gmm_var=s.gmm_var)
    training = model.config.get("training", {})
    node = socket.gethostname()
    try:
        import ray

        if ray.is_initialized():
            node = ray.get_runtime_context().get_node_id()
    except ImportError:
        pass
    rec = {
        "subject": job["subject"], "status": "complete", **metrics,
        "n_recordings": len(recs), "n_frames": int(sum(r.n_frames for r in recs)),
        "epochs_run": training.get("epochs_run"), "best_epoch": training.get("best_epoch"),
        "fit_seconds": t_fit - t_start if refit else None, "eval_seconds": time.time() - t_fit,
        "refit": refit, "refit_reason": refit_reason, "resumed": resumed, "started": t_start, "finished": time.time(), "pid": os.getpid(), "node": node,
        "inputs": list(job["paths"]), "input_fingerprint": input_fingerprint(list(job["paths"])), "settings": s.model_dict(),
        "input_options": _input_options(s), "lyapunov_steps": int(job["lyapunov_steps"]),
        "seed": s.seed, "versions": versions(),
    }
    write_json_atomic(run / METRICS_FILE, rec)
    return rec


# ------------------------------------------------------------------------------------------ the driver
def _finished(run: Path, settings: FitSettings, lyapunov_steps: int) -> dict | None:
    """The recorded metrics of a finished subject fitted with these settings, else None."""
    if run_state(run) != COMPLETE or not (run / METRICS_FILE).exists():
        return None
    try:
        rec = json.loads((run / METRICS_FILE).read_text())
    except (json.JSONDecodeError, OSError):
        return None
    same = json.dumps(rec.get("settings"), sort_keys=True) == json.dumps(json.loads(to_json(settings.model_dict())), sort_keys=True)
    # input files touched since the fit, or other input options (--detrend, --confounds, --atlas …, or
    # none recorded), go to a worker, which compares the data hash (refit if the data it reads changed)
    unchanged = rec.get("input_fingerprint") == input_fingerprint(rec.get("inputs") or []) and \
        json.dumps(rec.get("input_options"), sort_keys=True) == json.dumps(_input_options(settings), sort_keys=True)
    return rec if same and unchanged and rec.get("lyapunov_steps") == lyapunov_steps else None


def _input_options(settings: FitSettings) -> dict:
    """The input options of ``settings`` (those of `InputSpec`), as a subject's metrics record them."""
    from dsrecon.io.load import InputSpec

    names = [f.name for f in dataclasses.fields(InputSpec) if f.metadata.get("cli")]
    return json.loads(to_json({n: getattr(settings, n) for n in names}))


def input_fingerprint(paths: list[str]) -> list[list]:
    """(path, size, mtime_ns) of every file under the inputs: a cheap test of "unchanged since the
    fit". A difference is not a verdict: the worker then compares the data hash itself."""
    out = []
    for p in map(Path, paths):
        files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
        for q in files:
            try:
                st = q.stat()
                out.append([str(q), st.st_size, st.st_mtime_ns])
            except OSError:
                out.append([str(q), None, None])
    return out


def _tsv_cell(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else ("inf" if math.isinf(v) else f"{v:.6g}")
    return str(v).replace("\t", " ").replace("\n", " ")


def write_tsv(path: Path, columns: list[str], rows: list[dict]) -> None:
    lines = ["\t".join(columns)] + ["\t".join(_tsv_cell(r.get(c)) for c in columns) for r in rows]
    write_text_atomic(path, "\n".join(lines) + "\n")


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def group_figure(rows: list[dict], stem: Path) -> list[Path]:
    """One panel per metric (D_stsp, D_H, PE, λ_max): a dot per subject (labelled), the median as a bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dsrecon.plots.figures import save

    ok = [r for r in rows if r.get("status") == "complete"]
    labels = {"D_stsp": "D_stsp (lower is better)", "D_H": "D_H (lower is better)", "PE": "PE (normalised units²)",
              "lambda_max": "λ_max (1/s)"}
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
    rng = np.random.default_rng(0)
    for ax, key in zip(axes, METRIC_COLUMNS):
        vals = np.array([_num(r.get(key)) for r in ok])
        good = np.isfinite(vals)
        x = rng.uniform(-0.15, 0.15, size=vals.size)
        ax.scatter(x[good], vals[good], s=28, color="#1f4e79", zorder=3)
        if len(ok) <= 20:
            for xi, v, r in zip(x[good], vals[good], [r for r, g in zip(ok, good) if g]):
                ax.annotate(r["subject"], (xi, v), fontsize=7, xytext=(4, 0), textcoords="offset points", va="center")
        if good.any():
            med = float(np.median(vals[good]))
            ax.hlines(med, -0.3, 0.3, color="#c0504d", lw=2, zorder=2, label=f"median {med:.3g}")
            ax.legend(fontsize=7, loc="best")
        if key == "lambda_max":
            ax.axhline(0.0, color="grey", lw=0.8, ls=":")
        missing = int((~good).sum())
        ax.set_title(labels[key] + (f"\n({missing} n/a)" if missing else ""), fontsize=9)
        ax.set_xlim(-0.5, 0.8)
        ax.set_xticks([])
    fig.suptitle(f"dsrecon fit-cohort: {len(ok)} subject(s) fitted, {len(rows) - len(ok)} failed", fontsize=10)
    fig.tight_layout()
    return save(fig, stem, formats=("png",))


def fit_cohort(root: str | Path, out: str | Path, settings: FitSettings, *, max_parallel: int | None = None,
               gpus_per_fit: float = 0.0, address: str | None = None, lyapunov_steps: int = 10_000, force: bool = False,
               participant_label: list[str] | None = None, use_ray: bool | None = None,
               log: Callable[[str], None] = lambda s: None) -> dict:
    """Fit every subject of ``root`` into ``out/<subject>/`` and write the summary files.

    Returns the summary object (what ``--json`` prints): counts, executor, paths, one row per subject.
    """
    settings.validate()
    if lyapunov_steps < 0:
        raise DsreconError(f"--lyapunov-steps must be >= 0, got {lyapunov_steps}")
    root, out = Path(root).resolve(), Path(out).resolve()
    subjects = discover_subjects(root, participant_label=participant_label, task=settings.task, session=settings.session,
                                 space=settings.space)
    from dsrecon.io.load import refuse_shared_confounds

    refuse_shared_confounds(len(subjects), settings.input_spec())
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    rows: dict[str, dict] = {}
    jobs = []
    for sub in subjects:
        run = out / sub.name
        rec = None if force else _finished(run, settings, lyapunov_steps)
        if rec is not None:
            rows[sub.name] = rec
            continue
        jobs.append({"subject": sub.name, "paths": sub.paths, "participant": sub.participant, "run_dir": str(run),
                     "settings": settings.to_dict(), "lyapunov_steps": lyapunov_steps, "force": force,
                     "resume_hint": run_state(run)})
    if rows:
        log(f"{len(rows)} subject(s) already finished: skipped ({', '.join(sorted(rows)[:6])}{', …' if len(rows) > 6 else ''})")
    n_resume = sum(j["resume_hint"] == PARTIAL for j in jobs)
    log(f"{len(jobs)} subject(s) to fit" + (f" ({n_resume} resuming from a checkpoint)" if n_resume and not force else "")
        + f" → {out}")
    use_ray = ray_available() if use_ray is None else use_ray
    failures: dict[str, str] = {}
    write_tsv(out / "failures.tsv", ["subject", "error"], [])
    for i, (job, res) in enumerate(run_jobs(fit_subject, jobs, max_parallel=max_parallel, gpus_per_job=gpus_per_fit,
                                            address=address, use_ray=use_ray, log=log), 1):
        name = job["subject"]
        if res.get("status") == "complete":
            rows[name] = res
            how = ("resumed and fitted" if res.get("resumed") else
                   f"refitted ({res['refit_reason']})" if res.get("refit_reason") else ("fitted" if res.get("refit") else "evaluated"))
            log(f"[{i}/{len(jobs)}] {name}: {how} in {res['finished'] - res['started']:.1f} s, D_stsp {_tsv_cell(res.get('D_stsp'))}, "
                f"λ_max {_tsv_cell(res.get('lambda_max'))}/s")
        else:
            failures[name] = res.get("error", "unknown error")
            log(f"[{i}/{len(jobs)}] {name}: FAILED: {failures[name]}")
            write_tsv(out / "failures.tsv", ["subject", "error"], [{"subject": k, "error": v} for k, v in sorted(failures.items())])
    table = []
    for sub in subjects:
        if sub.name in rows:
            r = dict(rows[sub.name])
            r["error"] = ""
        else:
            r = {"subject": sub.name, "status": "failed", "error": failures.get(sub.name, "not run")}
        table.append(r)
    write_tsv(out / "summary.tsv", SUMMARY_COLUMNS, table)
    n_ok = sum(r["status"] == "complete" for r in table)
    summary = {
        "out": str(out), "input": str(root), "n_subjects": len(subjects), "n_complete": n_ok, "n_failed": len(table) - n_ok,
        "n_skipped": len(subjects) - len(jobs), "n_fitted_now": sum(1 for j in jobs if j["subject"] in rows),
        "executor": "ray" if use_ray else "process-pool", "address": address, "max_parallel": max_parallel, "gpus_per_fit": gpus_per_fit,
        "seconds": time.time() - t0, "lyapunov_steps": lyapunov_steps, "seed": settings.seed, "settings": settings.to_dict(),
        "versions": versions(), "files": {"summary": str(out / "summary.tsv"), "failures": str(out / "failures.tsv"),
                                          "figure": str(out / "summary.png")},
        "subjects": [{c: r.get(c) for c in SUMMARY_COLUMNS} for r in table],
    }
    try:
        import ray

        summary["versions"]["ray"] = ray.__version__
    except ImportError:
        pass
    write_json_atomic(out / "summary.json", {
        "Description": "dsrecon fit-cohort summary: one row per subject; metrics on each subject's held-out tail "
                       "(D_stsp, D_H: lower is better; PE: mean squared prediction error in normalised units; "
                       "lambda_max: largest Lyapunov exponent of the fitted latent map per second)",
        "Columns": SUMMARY_COLUMNS, **{k: v for k, v in summary.items() if k != "subjects"},
    })
    group_figure(table, out / "summary")
    return summary
