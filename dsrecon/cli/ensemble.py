"""`dsrecon fit --ensemble K [--ensemble-alpha a1,a2,…]`: train, write OUT/member-XX + ensemble.json, report."""

from __future__ import annotations

import time

import typer

from dsrecon.errors import DsreconError, FitInterrupted


def fit_ensemble_cli(model, recs, output, size: int, alphas: str | None, *, resume: bool, force: bool, quiet: bool,
                     as_json: bool, inputs: list[str]) -> None:
    from dsrecon.cli.common import check_long_run, emit, log, progress_bar
    from dsrecon.cli.main import report_interrupt
    from dsrecon.estimators.ensemble import convssm_kwargs, fit_ensemble

    al = [a.strip() for a in alphas.split(",") if a.strip()] if alphas else None
    if alphas is not None and not al:
        raise DsreconError(f"--ensemble-alpha expects comma-separated numbers, got '{alphas}'")
    kw = convssm_kwargs(model)
    log(f"ensemble of {size}: seeds {kw['seed']}…{kw['seed'] + size - 1}" + (f", α cycling over {', '.join(al)}" if al else ""), quiet)
    t0 = time.perf_counter()
    with progress_bar(quiet) as prog:
        task_id = prog.add_task("fit", total=kw["epochs"], status="")

        def on_epoch(epoch: int, total: int, status: str) -> None:
            prog.update(task_id, completed=epoch, total=total, status=status)

        try:
            summary = fit_ensemble(recs, output, size, alphas=al, resume=resume, overwrite=force, progress=on_epoch,
                                   log=lambda s: log(s, quiet), inputs=inputs, **kw)
        except FitInterrupted as e:  # one line: the epoch, the checkpoint, the exact --resume command
            prog.stop()
            raise typer.Exit(report_interrupt(e)) from None
    best = summary["members"][summary["best_member"]]
    result = {"run": str(output), "seconds": time.perf_counter() - t0, "size": size, "seed": kw["seed"], "versions": summary["versions"],
              "best_member": summary["best_member"], "best_run": str(output / summary["best_run"]),
              "best_val_D_stsp": best["best_val_D_stsp"], "best_val_D_H": best["best_val_D_H"],
              "members": [{k: m[k] for k in ("run", "seed", "alpha", "best_val_D_stsp", "best_val_D_H", "final_loss", "epochs_run", "failed")}
                          for m in summary["members"]]}
    if not best.get("failed"):
        from dsrecon.estimators.load import load_run

        long_run = check_long_run(load_run(output / summary["best_run"]), "the best member's free run",
                                  "try --alpha-end 0.02, another --seed or a larger --ensemble")
        if long_run is not None:
            result["long_run"] = long_run
    log(f"wrote {output}/member-XX (one run each), ensemble.json, best → {summary['best_run']}", quiet)
    emit(result, as_json, title=f"dsrecon fit --ensemble {size} → {output}", quiet=quiet)
