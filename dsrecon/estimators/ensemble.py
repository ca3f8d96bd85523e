"""Ensembles: K convSSMs trained at once by the one engine, each written as an ordinary run.

`fit_ensemble(recordings, run_dir, K, seed=s, …)` trains members s, s+1, …, s+K−1 (member k is the
plain fit with seed s+k and its α) and writes run_dir/member-XX/ (each loadable with
`dsrecon.load_run`), run_dir/ensemble.json (the members, and the best by validation) and
run_dir/best (a relative symlink to it). The run goes through the one fit skeleton
(`dsrecon.estimators.session.FitSession` with `EnsembleFit`): staged, locked, resumable.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import time
from pathlib import Path
from typing import Callable

import torch

from dsrecon._util import seed_everything, versions
from dsrecon.errors import DataError, DsreconError, OptionError
from dsrecon.estimators.convssm import ConvSSM
from dsrecon.estimators.record import run_record
from dsrecon.estimators.session import FitMode, FitSession, data_hash
from dsrecon.io.recording import Recording
from dsrecon.io.runs import (ENSEMBLE_FILE, LOG_FILE, check_resumable, read_config, read_staged_config, read_teacher_cache, write_config,
                             write_run_description, write_teacher_cache)
from dsrecon.models.decoders import default_latent_dim
from dsrecon.models.noise import estimate as estimate_noise
from dsrecon.training.prepare import prepare
from dsrecon.training.trainer import Trainer

ENSEMBLE_FORMAT = "dsrecon-ensemble/1"


def member_seeds(seed: int, size: int) -> list[int]:
    """Member k trains with seed + k: member 0 is the single fit with --seed seed."""
    return [int(seed) + k for k in range(int(size))]


def member_alphas(alphas: list[str] | None, size: int, default: str | None) -> list[str | None]:
    """α of member k: alphas[k mod len(alphas)] (so K = len·n gives n seeds per α), else the default
    (None: the preset's)."""
    if not alphas:
        return [None if default is None else str(default)] * size
    return [str(alphas[k % len(alphas)]) for k in range(size)]


def convssm_kwargs(model: ConvSSM) -> dict:
    """The constructor arguments of a (not yet fitted) `dsrecon.ConvSSM`, for `fit_ensemble`: every
    option (`get_params`), so that none can be dropped on the way to the members."""
    return dict(model.get_params())


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
        raise OptionError(f"`size` must be at least 1 (members), got {size}")
    options = ConvSSM(**convssm_kwargs).get_params()  # every option, checked by name once
    base_seed = int(options.pop("seed") or 0)
    seeds = member_seeds(base_seed, size) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != size or len(set(seeds)) != size:
        raise OptionError(f"`size` {size}: need {size} distinct seeds, got {seeds}")
    al = member_alphas(alphas, size, options.pop("alpha"))
    models = [ConvSSM(**options, seed=s, alpha=a) for s, a in zip(seeds, al)]
    models = [m.resolved(recs, log if k == 0 else None) for k, m in enumerate(models)]  # kernel, sequence length, device
    run = Path(run_dir)
    FitSession(run, resume=resume, overwrite=overwrite, progress=progress, log=log).run(
        EnsembleFit(models, recs, inputs, run, base_seed, time.perf_counter()))
    return read_config(run, ENSEMBLE_FILE)


def select_best(members: list[dict]) -> tuple[dict, str]:
    """The best of the members that trained, and how it was chosen."""
    ok = [e for e in members if not e["failed"]]
    fin = lambda v: v if v is not None and math.isfinite(v) else float("inf")  # noqa: E731
    if any(e["best_val_D_stsp"] is not None for e in ok):
        return min(ok, key=lambda e: (fin(e["best_val_D_stsp"]), fin(e["best_val_D_H"]))), \
            "lowest validation D_stsp on the held-out tail, then D_H"
    return min(ok, key=lambda e: fin(e["final_loss"])), "lowest final training loss (no held-out tail: --test-fraction 0)"


class EnsembleFit(FitMode):
    """The steps of an ensemble's fit (`FitMode`): K nets, one `Trainer`, ensemble.json + member runs."""

    record_file = ENSEMBLE_FILE
    describe = False  # each member's run has its own dataset_description.json

    def __init__(self, models: list[ConvSSM], recs: list[Recording], inputs, target: Path, base_seed: int, t_start: float):
        self.models, self.recs, self.inputs, self.target, self.base_seed, self.t_start = models, recs, inputs, target, base_seed, t_start
        self.size, self.seeds, self.alphas = len(models), [m.seed for m in models], [m.train_options.alpha for m in models]
        self.m0 = models[0]
        self.kern = self.m0.kernel_for(recs[0].tr)
        self.hash = data_hash(recs)

    def plan(self, log) -> dict:
        return {"format": ENSEMBLE_FORMAT, "status": "training", "size": self.size, "seeds": self.seeds, "alphas": self.alphas,
                "config": self.member_record(0)}

    def member_record(self, k: int) -> dict:
        return run_record(self.models[k], self.recs, self.kern, self.hash, self.inputs)

    def check_resume(self, old: dict, new: dict, target) -> None:
        if not isinstance(old.get("config"), dict):
            raise DsreconError(f"{target}: damaged staged {ENSEMBLE_FILE} (no 'config'); the interrupted fit cannot be resumed: "
                               "run the command without --resume to start over")
        check_resumable(target, old["config"], new["config"])
        if [old.get("size"), old.get("seeds"), old.get("alphas")] != [self.size, self.seeds, self.alphas]:
            raise DsreconError(f"{target}: cannot resume: the ensemble was started with {old.get('size')} members, seeds {old.get('seeds')}, "
                               f"α {old.get('alphas')}; resume with its options, or start over with --force")

    def adopt(self, staging: Path, record: dict, target: Path, log) -> None:
        """A finished ensemble is put in place only for the same data and options: its members, seeds
        and α, and a written member's record."""
        old = read_staged_config(staging, ENSEMBLE_FILE)
        if [old.get("seeds"), old.get("alphas")] != [self.seeds, self.alphas]:
            raise DsreconError(f"{target}: cannot resume: the ensemble was fitted with seeds {old.get('seeds')}, α {old.get('alphas')}; "
                               "resume with its options, or start over with --force")
        done = [e for e in old.get("members") or [] if isinstance(e, dict) and not e.get("failed")]
        if not done:
            raise DsreconError(f"{staging / ENSEMBLE_FILE}: damaged (no member); run the command without --resume to start over")
        check_resumable(target, read_staged_config(staging / str(done[0]["run"])), self.member_record(int(done[0]["member"])))

    def read_teachers(self, run: Path, target):
        return read_teacher_cache(run, len(self.recs), target)

    def memory(self) -> dict:
        m0, N = self.m0, self.recs[0].n_regions  # E times the batch of one fit
        return dict(n_frames=[r.n_frames for r in self.recs], n_regions=N, latent_dim=m0.latent_dim or default_latent_dim(N, m0.decoder),
                    hidden_dim=m0.hidden_dim, kernel_taps=self.kern.K, opts=m0.train_options, device=m0.device,
                    source=self.recs[0].source, members=self.size)

    def prepare(self, teachers):
        return prepare(self.recs, self.kern, self.m0.train_options.test_fraction, teacher_cache=teachers)

    def seed(self) -> int:
        return self.m0.seed

    def epochs(self) -> int:
        return self.m0.train_options.epochs

    def build(self, data) -> list:
        n_reg = 0 if self.recs[0].regressors is None else self.recs[0].regressors.shape[1]
        self.nets = []
        for m in self.models:  # exactly what ConvSSM.fit does before training, member by member
            seed_everything(m.seed)
            self.nets.append(m.build_net(len(data.names), n_reg, self.kern, torch.Generator().manual_seed(m.seed), len(data.input_names))
                             .fit_axes(data.train).to(m.device))
        return self.nets

    def engine(self, nets, data, run, progress, log):
        return Trainer(nets, data, [m.train_options for m in self.models], self.seeds, run, progress, log)

    def write_teachers(self, run: Path, data) -> None:
        write_teacher_cache(run, data, self.recs)

    def finish(self, trainer, summaries, data, record, run) -> None:
        self.data, self.members = data, []
        engine = trainer.stack.engine if trainer.stack.fused else f"vmap ({trainer.device})"
        for k, (m, net, summ) in enumerate(zip(self.models, self.nets, summaries)):
            name = f"member-{k:02d}" if self.size <= 100 else f"member-{k:03d}"
            self.members.append({"member": k, "run": name, "seed": m.seed, "alpha": m.train_options.alpha, **summ})
            if summ["failed"]:
                continue
            net = net.cpu()
            net.register_buffer("z_init", net.state_from_last_reliable(data.train[-1].teacher).detach()[0])
            net.set_noise(estimate_noise(net, data.train))
            config = self.member_record(k)
            config.update({"normalisation": data.norm.to_dict(), "data": data.info, "latent_dim": net.M,
                           "backend_kwargs": net.dynamics.extra_config(), "status": "complete", "training": summ,
                           "noise": None if net.noise is None else net.noise.summary(),
                           "ensemble": {"size": self.size, "member": k, "seeds": self.seeds, "alphas": self.alphas,
                                        "directory": str(self.target), "engine": engine}})
            m.net_, m.config_, m.run_dir_, m.history_ = net, config, self.target / name, trainer.members[k].rows
        best, selection = select_best(self.members)
        self.summary = {
            "format": ENSEMBLE_FORMAT, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": versions(), "size": self.size, "seed": self.base_seed, "seeds": self.seeds, "alphas": self.alphas,
            "backend": self.m0.backend, "selection": selection, "best_member": best["member"], "best_run": best["run"],
            "members": self.members, "epochs": trainer.epoch, "seconds": time.perf_counter() - self.t_start,
            "device": str(trainer.device), "data_hash": self.hash}

    def save(self, run: Path) -> None:
        for e, m in zip(self.members, self.models):
            if e["failed"]:
                continue
            mdir = run / e["run"]
            mdir.mkdir(exist_ok=True)
            write_teacher_cache(mdir, self.data, self.recs)
            write_run_description(mdir)
            m.save(mdir, m.history_)
        write_config(run, self.summary, ENSEMBLE_FILE)
        try:
            os.symlink(self.summary["best_run"], run / "best", target_is_directory=True)
        except OSError:  # it exists already; or a filesystem without symlinks: ensemble.json's best_run names it
            pass
        (run / LOG_FILE).unlink(missing_ok=True)  # the live log of the fit (each member's run has its own)
