"""Ensembles: K convSSMs trained at once by the one engine, each written as an ordinary run.

`fit_ensemble(recordings, run_dir, K, seed=s, …)` trains members s, s+1, …, s+K−1 (member k is the
plain fit with seed s+k and its α) and writes run_dir/member-XX/ (each loadable with
`dsrecon.load_run`), run_dir/ensemble.json (the members, and the best by validation) and
run_dir/best (a relative symlink to it). The run is built in a staging directory like a single
fit (`dsrecon.io.runs`); an interrupted ensemble keeps its checkpoint there for ``resume=True``.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import time
from pathlib import Path
from typing import Callable

import torch

from dsrecon._util import array_hash, seed_everything, versions
from dsrecon.api import ConvSSM, _interrupted, _write_dataset_description
from dsrecon.errors import DataError, DsreconError
from dsrecon.io.recording import Recording
from dsrecon.io.runs import (ENSEMBLE_FILE, LOG_FILE, StagedRun, check_resumable, read_config, read_staged_config, read_teacher_cache,
                             resume_checkpoint, write_config, write_teacher_cache)
from dsrecon.signal.kernels import make_kernel
from dsrecon.training.memory import check_fit_memory
from dsrecon.training.prepare import prepare
from dsrecon.models.decoders import default_latent_dim
from dsrecon.models.noise import estimate as estimate_noise
from dsrecon.training.hooks import Interrupted
from dsrecon.training.trainer import Trainer


def member_seeds(seed: int, size: int) -> list[int]:
    """Member k trains with seed + k: member 0 is the single fit with --seed seed."""
    return [int(seed) + k for k in range(int(size))]


def member_alphas(alphas: list[str] | None, size: int, default: str | None) -> list[str | None]:
    """α of member k: alphas[k mod len(alphas)] (so K = len·n gives n seeds per α), else the default
    (None: the preset's)."""
    if not alphas:
        return [None if default is None else str(default)] * size
    return [str(alphas[k % len(alphas)]) for k in range(size)]


def fit_ensemble(recordings, run_dir, size: int, *, seeds: list[int] | None = None, alphas: list[str] | None = None,
                 resume: bool = False, overwrite: bool = False, progress: Callable[[int, int, str], None] | None = None,
                 log: Callable[[str], None] | None = None, inputs: list[str] | None = None, **convssm_kwargs) -> dict:
    """Fit `size` convSSMs in one computation and write each as its own run directory (module docstring).

    The best member is the lowest validation D_stsp, then D_H (by final training loss when there is
    no held-out tail). convssm_kwargs: the `dsrecon.ConvSSM` arguments (seed: of member 0; alpha:
    the default α). Returns the content of ensemble.json."""
    recs = [recordings] if isinstance(recordings, Recording) else list(recordings)
    if not recs:
        raise DataError("no recordings to fit")
    size = int(size)
    if size < 1:
        raise DsreconError(f"--ensemble must be at least 1, got {size}")
    base_seed = int(convssm_kwargs.pop("seed", 0))
    seeds = member_seeds(base_seed, size) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != size or len(set(seeds)) != size:
        raise DsreconError(f"--ensemble {size}: need {size} distinct seeds, got {seeds}")
    al = member_alphas(alphas, size, convssm_kwargs.pop("alpha", None))
    models = [ConvSSM(seed=s, alpha=a, **convssm_kwargs) for s, a in zip(seeds, al)]
    models = [m.resolved(recs, log if k == 0 else None) for k, m in enumerate(models)]  # kernel, sequence length, device
    run = Path(run_dir)
    with StagedRun(run, resume=resume, force=overwrite, log=log) as st:
        if st.complete:  # the ensemble had finished, its commit had not: check the options, put it in place
            _check_staged(st.dir, run, recs, models, inputs)
            st.commit()
        else:
            _fit_staged(st, recs, run, models, base_seed, time.perf_counter(), progress, log, inputs)
    return read_config(run, ENSEMBLE_FILE)


def _check_staged(staging: Path, run: Path, recs, models: list[ConvSSM], inputs) -> None:
    """A finished ensemble left in staging (its commit failed) is put in place by --resume only for the
    same data and options: its members, seeds and α, and a written member's record."""
    old = read_staged_config(staging, ENSEMBLE_FILE)
    seeds, al = [m.seed for m in models], [m.train_options.alpha for m in models]
    if [old.get("seeds"), old.get("alphas")] != [seeds, al]:
        raise DsreconError(f"{run}: cannot resume: the ensemble was fitted with seeds {old.get('seeds')}, α {old.get('alphas')}; "
                           "resume with its options, or start over with --force")
    done = [e for e in old.get("members") or [] if isinstance(e, dict) and not e.get("failed")]
    if not done:
        raise DsreconError(f"{staging / ENSEMBLE_FILE}: damaged (no member); run the command without --resume to start over")
    k = int(done[0]["member"])
    m = models[k]
    kern = make_kernel(m.kernel, recs[0].tr, tau_decay=m.tau_decay, tau_rise=m.tau_rise)
    check_resumable(run, read_staged_config(staging / str(done[0]["run"])),
                    m._config(recs, kern, array_hash(*[r.data for r in recs], *[r.mask for r in recs]), inputs))


def _fit_staged(st: StagedRun, recs, run: Path, models: list[ConvSSM], base_seed: int, t_start: float, progress, log, inputs) -> None:
    """Train the members into the staging directory ``st.dir`` (resuming its checkpoint), write them, commit."""
    size, seeds, al = len(models), [m.seed for m in models], [m.train_options.alpha for m in models]
    m0 = models[0]
    kern = make_kernel(m0.kernel, recs[0].tr, tau_decay=m0.tau_decay, tau_rise=m0.tau_rise)
    data_hash = array_hash(*[r.data for r in recs], *[r.mask for r in recs])
    plan = {"format": "dsrecon-ensemble/1", "status": "training", "size": size, "seeds": seeds, "alphas": al,
            "config": m0._config(recs, kern, data_hash, inputs)}
    cache = None
    if not st.fresh:
        old = read_staged_config(st.dir, ENSEMBLE_FILE)
        if not isinstance(old.get("config"), dict):
            raise DsreconError(f"{st.dir / ENSEMBLE_FILE}: damaged (no 'config'); the interrupted fit cannot be resumed: "
                               "run the command without --resume to start over")
        check_resumable(run, old["config"], plan["config"])
        if [old["size"], old["seeds"], old["alphas"]] != [size, seeds, al]:
            raise DsreconError(f"{run}: cannot resume: the ensemble was started with {old['size']} members, seeds {old['seeds']}, "
                               f"α {old['alphas']}; resume with its options, or start over with --force")
        cache = read_teacher_cache(st.dir, len(recs), run)
    N = recs[0].n_regions  # refuse at once what cannot fit in memory (E times the batch of one fit)
    check_fit_memory([r.n_frames for r in recs], N, m0.latent_dim or default_latent_dim(N, m0.decoder), m0.hidden_dim, kern.K, m0.train_options,
                     m0.device, recs[0].source, members=size)
    data = prepare(recs, kern, m0.train_options.test_fraction, teacher_cache=cache)
    n_reg = 0 if recs[0].regressors is None else recs[0].regressors.shape[1]
    nets = []
    for m in models:  # exactly what ConvSSM.fit does before training, member by member
        seed_everything(m.seed)
        nets.append(m._build(len(data.names), n_reg, kern, torch.Generator().manual_seed(m.seed), len(data.input_names))
                    .fit_axes(data.train).to(m.device))
    trainer = Trainer(nets, data, [m.train_options for m in models], seeds, st.dir, progress, log)
    if st.fresh:
        write_teacher_cache(st.dir, data, recs)
        write_config(st.dir, plan, ENSEMBLE_FILE)
    else:
        resume_checkpoint(trainer, st.dir)
    try:
        summaries = trainer.fit()
    except Interrupted:
        raise
    except KeyboardInterrupt as e:
        raise _interrupted(trainer, e, st.dir, m0.train_options.epochs) from None

    members = []
    for k, (m, net, summ) in enumerate(zip(models, nets, summaries)):
        name = f"member-{k:02d}" if size <= 100 else f"member-{k:03d}"
        members.append({"member": k, "run": name, "seed": m.seed, "alpha": m.train_options.alpha, **summ})
        if summ["failed"]:
            continue
        net = net.cpu()
        net.register_buffer("z_init", net.state_from_last_reliable(data.train[-1].teacher).detach()[0])
        net.set_noise(estimate_noise(net, data.train))
        config = m._config(recs, kern, data_hash, inputs)
        config.update({"normalisation": data.norm.to_dict(), "data": data.info, "latent_dim": net.M,
                       "backend_kwargs": net.dynamics.extra_config(), "status": "complete", "training": summ,
                       "noise": None if net.noise is None else net.noise.summary(),
                       "ensemble": {"size": size, "member": k, "seeds": seeds, "alphas": al, "directory": str(run),
                                    "engine": trainer.stack.engine if trainer.stack.fused else f"vmap ({trainer.device})"}})
        m.net_, m.config_, m.run_dir_, m.history_ = net, config, run / name, trainer.members[k].rows
        mdir = st.dir / name
        mdir.mkdir(exist_ok=True)
        write_teacher_cache(mdir, data, recs)
        _write_dataset_description(mdir)
        m.save(mdir, m.history_)
    ok = [e for e in members if not e["failed"]]
    fin = lambda v: v if v is not None and math.isfinite(v) else float("inf")  # noqa: E731
    if any(e["best_val_D_stsp"] is not None for e in ok):
        best = min(ok, key=lambda e: (fin(e["best_val_D_stsp"]), fin(e["best_val_D_H"])))
        selection = "lowest validation D_stsp on the held-out tail, then D_H"
    else:
        best = min(ok, key=lambda e: fin(e["final_loss"]))
        selection = "lowest final training loss (no held-out tail: --test-fraction 0)"
    write_config(st.dir, {
        "format": "dsrecon-ensemble/1", "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(), "size": size, "seed": base_seed, "seeds": seeds, "alphas": al, "backend": m0.backend,
        "selection": selection, "best_member": best["member"], "best_run": best["run"], "members": members, "epochs": trainer.epoch,
        "seconds": time.perf_counter() - t_start, "device": str(trainer.device), "data_hash": data_hash,
    }, ENSEMBLE_FILE)
    try:
        os.symlink(best["run"], st.dir / "best", target_is_directory=True)
    except FileExistsError:
        pass
    except OSError:  # filesystems without symlinks: ensemble.json's best_run names it
        pass
    (st.dir / LOG_FILE).unlink(missing_ok=True)  # the live log of the fit (each member's run has its own)
    st.commit()


def convssm_kwargs(model: ConvSSM) -> dict:
    """The constructor arguments of a (not yet fitted) `dsrecon.ConvSSM`, for `fit_ensemble`."""
    kw = {k: getattr(model, k) for k in ("backend", "latent_dim", "hidden_dim", "kernel", "tau_decay", "tau_rise", "decoder",
                                         "backend_options", "seed", "device")}
    kw.update(model.train_options.public())
    return kw
