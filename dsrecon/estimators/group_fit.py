"""The steps of a group fit (`GroupFit`, a `dsrecon.estimators.session.FitMode`): every subject
resolved with the group's preset and its own kernel, one sequence length, one net per subject
generated from the group vector and the subject features, trained by `GroupTrainer`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dsrecon._util import array_hash, to_json
from dsrecon.errors import DataError, DsreconError
from dsrecon.estimators.group_run import GROUP_FORMAT, SUBJECT_KEYS, group_train_frames, run_feature_decay
from dsrecon.estimators.record import run_record
from dsrecon.estimators.session import FitMode, data_hash
from dsrecon.io.runs import check_resumable, read_staged_config, read_teacher_cache, write_teacher_cache
from dsrecon.models.group import GroupLayout, init_features
from dsrecon.models.noise import estimate as estimate_noise
from dsrecon.training.batches import DEFAULT_SEQUENCE_LENGTH, default_sequence_length
from dsrecon.training.group import GroupTrainer
from dsrecon.training.prepare import prepare
from dsrecon.training.stack import Stack

#: group options a resume must share with the staged run (beside the single fit's `differences`)
RESUME_KEYS = ("features", "scheme", "feature_decay", "subject_ids", "transfer_from")


class GroupFit(FitMode):
    """A group fit of ``model`` (a `dsrecon.GroupConvSSM`) on ``subs`` {id: [Recording]};
    ``source``: the fitted group model a transfer freezes (None: a fit); ``load``: a run directory →
    its fitted group model (for a finished run found in staging)."""

    def __init__(self, model, subs: dict[str, list], inputs, target: Path | None, source, load: Callable[[Path], object]):
        self.model, self.subs, self.inputs, self.target, self.source, self.load = model, subs, inputs, target, source, load
        self.ids = list(subs)

    def plan(self, log) -> dict:
        m, subs, ids = self.model, self.subs, self.ids
        base, n_train = m.base, group_train_frames(subs, m.base.test_fraction)  # one preset for the group: the median subject's
        specs = {}
        for sid in ids:  # the kernel of each subject (its modality and TR) and one sequence length for all
            try:
                specs[sid] = base.resolved(subs[sid], None, n_train=n_train)
            except DataError as e:
                raise DataError(f"subject {sid}: {e}") from None
        kerns = {sid: s.kernel_for(subs[sid][0].tr) for sid, s in specs.items()}
        if base.sequence_length is None:
            K = max(k.K for k in kerns.values())
            seq, usable = default_sequence_length([r.n_frames for sid in ids for r in subs[sid]], K, base.test_fraction)
            if seq < max(DEFAULT_SEQUENCE_LENGTH, K + 39) and log is not None:
                log(f"the shortest training split is short ({usable} usable frames): using --sequence-length {seq}")
            for s in specs.values():
                s.sequence_length = seq
        self.specs, self.kerns, self.spec0 = specs, kerns, specs[ids[0]]
        self.sub_cfgs = {sid: run_record(specs[sid], subs[sid], kerns[sid], data_hash(subs[sid]),
                                          None if self.inputs is None else list(self.inputs.get(sid) or []) or None)
                         for sid in ids}
        config = {k: v for k, v in self.sub_cfgs[ids[0]].items() if k not in SUBJECT_KEYS}
        src = self.source
        config.update(format=GROUP_FORMAT, features=int(m.features), scheme=m.scheme, feature_decay=m.feature_decay_, subject_ids=ids,
                      data_hash=array_hash(np.frombuffer(to_json(ids).encode(), np.uint8),
                                           *[np.frombuffer(self.sub_cfgs[s]["data_hash"].encode(), np.uint8) for s in ids]),
                      transfer_from=None if src is None else {
                          "run": None if src.run_dir_ is None else str(src.run_dir_),
                          "group_hash": array_hash(src.g_.numpy()), "subjects": src.subjects})
        return config

    def announce(self, log) -> None:
        m, subs, ids = self.model, self.subs, self.ids
        what = "transfer (group parameters frozen)" if self.source is not None else f"group model, F {int(m.features)}, {m.scheme}"
        log(f"fitting {self.spec0.backend} {what} on {len(ids)} subject(s), {subs[ids[0]][0].n_regions} regions, "
            f"{sum(r.n_frames for sid in ids for r in subs[sid])} frames" + (f" → {self.target}" if self.target is not None else ""))

    def check_resume(self, old: dict, new: dict, target) -> None:
        if old.get("format") != GROUP_FORMAT:
            raise DsreconError(f"{target}: cannot resume: the staged run is not a group fit; start over with --force")
        check_resumable(target, old, new)
        for k in RESUME_KEYS:
            was = run_feature_decay(old) if k == "feature_decay" else old.get(k)
            if json.dumps(was, sort_keys=True, default=str) != json.dumps(new.get(k), sort_keys=True, default=str):
                raise DsreconError(f"{target}: cannot resume: {k.replace('_', ' ')} differ ({was} in the run, {new.get(k)} now); "
                                   "resume with the run's data and options, or start over with --force")

    def adopt(self, staging: Path, record: dict, target: Path, log) -> None:
        self.check_resume(read_staged_config(staging), record, target)
        done = self.load(staging)
        for k in ("g_", "features_", "subjects_", "z_init_", "noise_", "config_", "history_"):
            setattr(self.model, k, getattr(done, k, None))
        if log is not None:
            log(f"note: the fit had finished; its run was waiting in {staging.name} and is now put in place at {target}")

    def read_teachers(self, run: Path, target):
        return {sid: read_teacher_cache(run, len(self.subs[sid]), target, subject=sid) for sid in self.ids}

    def memory(self) -> dict:
        # every subject's recordings, and a batch from each subject per step
        s, ids, r0 = self.spec0, self.ids, self.subs[self.ids[0]][0]
        return dict(n_frames=[r.n_frames for sid in ids for r in self.subs[sid]], n_regions=r0.n_regions,
                    latent_dim=s.latent_dim or max(r0.n_regions, 3), hidden_dim=s.hidden_dim,
                    kernel_taps=max(k.K for k in self.kerns.values()), opts=s.train_options, device=s.device,
                    source=f"subjects {ids[0]}…{ids[-1]}" if len(ids) > 1 else f"subject {ids[0]}", members=len(ids))

    def prepare(self, teachers):
        datas = {}
        for sid in self.ids:
            try:
                datas[sid] = prepare(self.subs[sid], self.kerns[sid], self.spec0.test_fraction,
                                     teacher_cache=None if teachers is None else teachers[sid])
            except DataError as e:
                raise DataError(f"subject {sid}: {e}") from None
        return datas

    def seed(self) -> int:
        return self.spec0.seed

    def epochs(self) -> int:
        return self.spec0.epochs

    def build(self, datas) -> list:
        ids, s0, seed = self.ids, self.spec0, self.spec0.seed
        N = len(datas[ids[0]].names)
        r0 = self.subs[ids[0]][0]
        n_reg = 0 if r0.regressors is None else r0.regressors.shape[1]
        nets = [s0.build_net(N, n_reg, self.kerns[ids[0]], torch.Generator().manual_seed(seed)).to(s0.device)]
        nets += [self.specs[s].build_net(N, n_reg, self.kerns[s], torch.Generator().manual_seed(seed)).to(s0.device) for s in ids[1:]]
        st0 = Stack(nets[:1])
        self.layout = GroupLayout(st0.layout, st0.P, int(self.model.features), self.model.scheme)
        gen2 = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 16]).generate_state(1)[0]))
        src = self.source
        if src is None:
            self.g0 = self.layout.init_vector(st0.flat[0].cpu(), gen2)
            self.f0 = init_features(len(ids), int(self.model.features), gen2)
        else:
            if src.g_.shape[0] != self.layout.G:
                raise DsreconError("transfer: the new subjects' data do not fit the group model's architecture")
            self.g0 = src.g_.clone()
            self.f0 = torch.as_tensor(np.asarray(src.features_, np.float32).mean(0), dtype=torch.float32)[None].repeat(len(ids), 1)
        return nets

    def built(self, record: dict, nets: list, datas) -> None:
        record.update({"latent_dim": nets[0].M, "backend_kwargs": nets[0].dynamics.extra_config(), "layout": self.layout.describe(),
                       "subjects": [{**{k: self.sub_cfgs[s][k] for k in SUBJECT_KEYS if k in self.sub_cfgs[s]}, "id": s,
                                     "normalisation": datas[s].norm.to_dict(), "data": datas[s].info} for s in self.ids]})
        self.record = record

    def engine(self, nets, datas, run, progress, log):
        ids, src, m = self.ids, self.source, self.model
        trainer = GroupTrainer(nets, [datas[s] for s in ids], self.layout, self.g0, self.f0, self.spec0.train_options, self.spec0.seed,
                               run, progress, log, frozen_group=src is not None, feature_decay=m.feature_decay_)
        if src is not None and int(m.features) > 0:
            # each new subject starts where the group's model of it validates best: the mean of the
            # source's features, or one source subject's (deterministic, so a resumed run agrees)
            names = ["mean"] + list(src.subjects)
            feats = np.asarray(src.features_, np.float32)
            pick = trainer.choose_start(torch.as_tensor(np.concatenate([feats.mean(0, keepdims=True), feats]), dtype=torch.float32))
            self.record["transfer_start"] = {sid: names[k] for sid, k in zip(ids, pick)}
            if log is not None:
                log("transfer starts: " + ", ".join(f"{sid} from {'the mean' if k == 0 else 'subject ' + names[k]}" for sid, k in zip(ids, pick)))
        self.t0 = time.perf_counter()
        return trainer

    def write_teachers(self, run: Path, datas) -> None:
        for sid in self.ids:
            write_teacher_cache(run, datas[sid], self.subs[sid], subject=sid)

    def finish(self, trainer, summaries, datas, record, run) -> None:
        summary = summaries[0]
        summary.pop("failed")
        mem, m = trainer.members[0], self.model
        best = (mem.best_row if mem.best_row is not None else trainer.stack.flat[0]).detach().cpu()
        g, feats = trainer.split(best.to(trainer.device))
        m.g_ = g.detach().cpu().clone()
        m.features_ = feats.detach().cpu().numpy().astype(np.float64)
        m.subjects_ = self.ids
        trainer.member_net(0, best.to(trainer.device))
        m.z_init_, m.noise_ = {}, {}
        for sid, net in zip(self.ids, trainer.nets):
            net.cpu()
            m.z_init_[sid] = net.state_from_last_reliable(datas[sid].train[-1].teacher).detach()[0]
            nm = estimate_noise(net, datas[sid].train)  # each subject's own residuals (stochastic runs)
            if nm is not None:
                m.noise_[sid] = nm
        summary["training_seconds"] = time.perf_counter() - self.t0
        summary["updates"] = int(mem.batches_done)
        record.update({"status": "complete", "training": summary})
        m.config_, m.run_dir_, m.history_, m.resolved_ = record, run, mem.rows, self.spec0

    def save(self, run: Path) -> None:
        self.model.save(run, self.model.history_)
