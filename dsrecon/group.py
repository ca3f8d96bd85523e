"""The hierarchical group model: many subjects, shared dynamics, one feature vector per subject.

>>> g = GroupConvSSM(features=3, latent_dim=3, epochs=500).fit({"01": [rec1a, rec1b], "02": rec2}, run_dir="grp")  # doctest: +SKIP
>>> g.subject("01").simulate(10_000)       # a ConvSSM with subject 01's generated parameters
>>> g2 = g.transfer({"03": rec3}, run_dir="grp2")   # group parameters frozen, only 03's features learned

Every subject has its own recordings, measurement kernel (its TR), normalisation and teacher
signals; its model parameters (dynamics, initial-state map, decoder) are generated from its
features by the group parameters (`dsrecon.models.group`: ``linear`` or ``outer``). Training is
the engine's GTF (`dsrecon.training.group`). A run directory holds model.safetensors (the group
vector ``group``, the ``features`` (S, F) and each subject's initial state ``z_init.<id>``),
config.json (format dsrecon-group/1), subject_features.tsv (+ .json sidecar), teacher/<id>/ and
the training log; it is written like a single fit's (`dsrecon.io.runs`: staging, lock, --resume).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import time
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch

from dsrecon._util import array_hash, dsrecon_version, seed_everything, to_json, versions, write_json_atomic, write_text_atomic
from dsrecon.errors import DataError, DsreconError

GROUP_FORMAT = "dsrecon-group/1"
FEATURES_FILE = "subject_features.tsv"
FEATURES_SIDECAR = "subject_features.json"
#: config keys that belong to one subject (in ``subjects[i]`` of a group config)
SUBJECT_KEYS = ("kernel", "tr", "inputs", "input_paths", "provenance", "n_masked_frames", "data_hash", "normalisation", "data")
#: the group's own options (not fit options)
GROUP_KEYS = ("features", "scheme")


def subject_id(name: str) -> str:
    """'sub-01' → '01' (a subject is named by its label)."""
    name = str(name)
    return name[4:] if name.startswith("sub-") and len(name) > 4 else name


def _as_subjects(subjects) -> dict[str, list]:
    from dsrecon.io.recording import Recording

    if not isinstance(subjects, Mapping) or not subjects:
        raise DataError("fit-group needs subjects: a mapping {subject: recording or [recordings]}")
    out: dict[str, list] = {}
    for k, v in subjects.items():
        sid = subject_id(k)
        if sid in out:
            raise DataError(f"subject '{sid}' is given twice")
        recs = [v] if isinstance(v, Recording) else list(v or [])
        if not recs:
            raise DataError(f"subject {sid}: no usable recording")
        out[sid] = recs
    return out


def _check_regions(subs: dict[str, list]) -> None:
    first = next(iter(subs))
    r0 = subs[first][0]
    for sid, recs in subs.items():
        for r in recs:
            if r.names != r0.names:
                raise DataError(f"{r.source}: subject {sid}'s regions differ from subject {first}'s ({r0.source}: "
                                f"{len(r.names)} vs {len(r0.names)} columns); every subject needs the same region set")
            if r.regressor_names != r0.regressor_names:
                raise DataError(f"{r.source}: subject {sid}'s nuisance regressors differ from subject {first}'s ({r0.source})")


class GroupConvSSM:
    """The hierarchical convSSM (module docstring). ``features`` F (0: every subject is the same
    model), ``scheme`` linear|outer, ``feature_decay`` λ_f of the low-rank penalty
    λ_f/2·(‖projections‖² + ‖features‖²) (default `dsrecon.models.group.FEATURE_DECAY`; 0: none;
    `dsrecon.training.group`); every other keyword is a `dsrecon.ConvSSM` (fit) option."""

    def __init__(self, features: int = 3, scheme: str = "linear", feature_decay: float | None = None, **params):
        from dsrecon.api import ConvSSM
        from dsrecon.models.group import FEATURE_DECAY

        if feature_decay is None:
            feature_decay = FEATURE_DECAY

        self.features, self.scheme, self.feature_decay = int(features), str(scheme), float(feature_decay)
        self.base = ConvSSM(**params)  # the options (checked by fit)
        self.g_: torch.Tensor | None = None
        self.features_: np.ndarray | None = None
        self.subjects_: list[str] = []
        self.z_init_: dict[str, torch.Tensor] = {}
        self.config_: dict = {}
        self.run_dir_: Path | None = None
        self.history_: list[dict] = []

    def get_params(self) -> dict:
        return {"features": self.features, "scheme": self.scheme, "feature_decay": self.feature_decay, **self.base.get_params()}

    # ---------------------------------------------------------------- fitted contract
    @property
    def subjects(self) -> list[str]:
        return list(self.subjects_)

    @property
    def config(self) -> dict:
        return self.config_

    @property
    def run_dir(self) -> Path | None:
        return self.run_dir_

    def _check_fitted(self) -> None:
        if self.g_ is None:
            raise DsreconError("group model is not fitted: call fit() or load_run()")

    def _index(self, subject: str) -> int:
        self._check_fitted()
        sid = subject_id(subject)
        if sid not in self.subjects_:
            where = f"{self.run_dir_}: " if self.run_dir_ is not None else ""
            shown = ", ".join(self.subjects_[:10]) + (" …" if len(self.subjects_) > 10 else "")
            raise DsreconError(f"{where}no subject '{subject}' in the group (subjects: {shown})")
        return self.subjects_.index(sid)

    def subject_config(self, subject: str) -> dict:
        """The subject's model as a single run's config.json would describe it."""
        i = self._index(subject)
        cfg = {k: v for k, v in self.config_.items() if k not in ("subjects", "layout", "subject_features")}
        cfg.update(self.config_["subjects"][i])
        cfg.update(format="dsrecon-run/1", subject=self.subjects_[i], group_run=None if self.run_dir_ is None else str(self.run_dir_))
        return cfg

    def generated_rows(self) -> torch.Tensor:
        """Every subject's packed parameters (S, P) (the engine's Stack layout)."""
        self._check_fitted()
        layout, _ = self._layout()
        return layout.generate(self.g_, torch.as_tensor(self.features_, dtype=torch.float32)).detach()

    def subject(self, subject: str):
        """Subject ``subject`` as a fitted `dsrecon.ConvSSM` (simulate, score, analysis)."""
        from dsrecon.api import ConvSSM
        from dsrecon.signal.kernels import Kernel
        from dsrecon.training.stack import Stack

        i = self._index(subject)
        cfg = self.subject_config(subject)
        m = ConvSSM(**{**self.base.get_params(), "latent_dim": cfg["latent_dim"], "device": "cpu"})
        net = m._build(cfg["n_regions"], len(cfg.get("regressor_names", [])), Kernel.from_dict(cfg["kernel"]), torch.Generator().manual_seed(0))
        Stack([net]).load_into(net, self.generated_rows()[i])
        net.register_buffer("z_init", self.z_init_[self.subjects_[i]].detach().cpu().clone())
        net.set_noise(getattr(self, "noise_", {}).get(self.subjects_[i]))
        net.eval()
        m.net_, m.config_, m.run_dir_ = net, cfg, self.run_dir_
        return m

    def _layout(self):
        """(GroupLayout, a template net) of this model's architecture."""
        from dsrecon.models.group import GroupLayout
        from dsrecon.signal.kernels import Kernel
        from dsrecon.training.stack import Stack

        cfg = self.config_
        sub0 = cfg["subjects"][0]
        from dsrecon.api import ConvSSM

        m = ConvSSM(**{**self.base.get_params(), "latent_dim": cfg["latent_dim"], "device": "cpu"})
        net = m._build(cfg["n_regions"], len(cfg.get("regressor_names", [])), Kernel.from_dict(sub0["kernel"]), torch.Generator().manual_seed(0))
        st = Stack([net])
        return GroupLayout(st.layout, st.P, int(cfg["features"]), cfg["scheme"]), net

    # ---------------------------------------------------------------- fit
    def fit(self, subjects, run_dir: str | Path | None = None, *, resume: bool = False, overwrite: bool = False,
            progress: Callable[[int, int, str], None] | None = None, log: Callable[[str], None] | None = None,
            inputs: Mapping[str, list[str]] | None = None) -> "GroupConvSSM":
        """Fit the group on ``subjects`` {id: recording or [recordings]} (ids 'sub-01' or '01').

        With ``run_dir`` the run is staged, locked and committed like a single fit's; ``resume``
        continues an interrupted one. Returns self."""
        return self._run(_as_subjects(subjects), run_dir, None, resume, overwrite, progress, log, inputs)

    def transfer(self, subjects, run_dir: str | Path | None = None, *, resume: bool = False, overwrite: bool = False,
                 progress=None, log=None, inputs=None, **train_options) -> "GroupConvSSM":
        """A new group model of the new ``subjects``: this model's group parameters, frozen (bit
        for bit), and only the new subjects' features learned. ``train_options`` override this
        model's training options (default epochs: a tenth of this fit's)."""
        self._check_fitted()
        from dsrecon.options import train_fields

        allowed = {f.name for f in train_fields()} | {"seed", "device"}
        bad = [k for k in train_options if k not in allowed]
        if bad:
            raise DsreconError(f"transfer: '{bad[0]}' is not a training option (the model comes from the group run)")
        tr_opts = dict(self.config_["train_options"])
        tr_opts["epochs"] = max(1, int(tr_opts["epochs"]) // 10)
        tr_opts.update(train_options)
        model_params = {k: v for k, v in self.base.get_params().items() if k not in tr_opts}
        new = GroupConvSSM(self.features, self.scheme, self.feature_decay, **{**model_params, **tr_opts, "latent_dim": self.config_["latent_dim"]})
        return new._run(_as_subjects(subjects), run_dir, self, resume, overwrite, progress, log, inputs)

    def validate(self) -> None:
        """One line naming the first bad option (DsreconError), before any data is read."""
        from dsrecon.models.group import SCHEMES

        if self.scheme not in SCHEMES:
            raise DsreconError(f"--scheme: unknown scheme '{self.scheme}' (choose {', '.join(SCHEMES)})")
        if self.features < 0:
            raise DsreconError(f"--features must be at least 0, got {self.features}")
        if not (math.isfinite(self.feature_decay) and self.feature_decay >= 0):
            raise DsreconError(f"--feature-decay must be a number ≥ 0, got {self.feature_decay:g}")
        self.base.validate()

    def _run(self, subs, run_dir, source, resume, overwrite, progress, log, inputs) -> "GroupConvSSM":
        self.validate()
        if self.base.decoder == "pca":  # its principal axes are the data's: one subject's are not another's
            raise DsreconError("--decoder pca is not available for a group fit (each subject's principal axes differ); "
                               "use identity or affine")
        _check_regions(subs)
        if run_dir is None:
            return self._fit(subs, None, True, progress, log, inputs, None, source)
        from dsrecon.io.runs import StagedRun

        with StagedRun(run_dir, resume=resume, force=overwrite, log=log) as st:
            self._fit(subs, st.dir, st.fresh, progress, log, inputs, Path(run_dir), source)
            self.run_dir_ = st.commit()
        return self

    def _fit(self, subs: dict[str, list], run: Path | None, fresh: bool, progress, log, inputs, target: Path | None,
             source: "GroupConvSSM | None") -> "GroupConvSSM":
        from dsrecon.api import _interrupted, _write_dataset_description
        from dsrecon.io.runs import CONFIG_FILE
        from dsrecon.io.runs import check_resumable as _check_resumable
        from dsrecon.models.group import GroupLayout, init_features
        from dsrecon.signal.kernels import make_kernel
        from dsrecon.training.batches import DEFAULT_SEQUENCE_LENGTH, default_sequence_length
        from dsrecon.training.group import GroupTrainer
        from dsrecon.training.prepare import prepare
        from dsrecon.training.hooks import Interrupted
        from dsrecon.training.stack import Stack
        from dsrecon.api import ConvSSM

        ids = list(subs)
        # one preset for the group (each subject resolves with it)
        base = ConvSSM(**{**self.base.get_params(), "preset": group_preset(self.base.preset, subs, self.base.test_fraction)})
        # the kernel of each subject (its modality and TR) and one sequence length for all
        specs = {}
        for sid in ids:
            try:
                specs[sid] = base.resolved(subs[sid], None)
            except DataError as e:
                raise DataError(f"subject {sid}: {e}") from None
        kerns = {sid: make_kernel(s.kernel, subs[sid][0].tr, tau_decay=s.tau_decay, tau_rise=s.tau_rise) for sid, s in specs.items()}
        if base.sequence_length is None:
            K = max(k.K for k in kerns.values())
            seq, usable = default_sequence_length([r.n_frames for sid in ids for r in subs[sid]], K, base.test_fraction)
            if seq < max(DEFAULT_SEQUENCE_LENGTH, K + 39) and log is not None:
                log(f"the shortest training split is short ({usable} usable frames): using --sequence-length {seq}")
            for s in specs.values():
                s.sequence_length = seq
        spec0 = specs[ids[0]]
        opts = spec0.train_options
        n_frames = sum(r.n_frames for sid in ids for r in subs[sid])
        # refuse at once what cannot fit in memory: every subject's recordings, and a batch from each subject per step
        from dsrecon.training.memory import check_fit_memory

        r0 = subs[ids[0]][0]
        check_fit_memory([r.n_frames for sid in ids for r in subs[sid]], r0.n_regions, spec0.latent_dim or max(r0.n_regions, 3),
                         spec0.hidden_dim, max(k.K for k in kerns.values()), opts, spec0.device, f"subjects {ids[0]}…{ids[-1]}"
                         if len(ids) > 1 else f"subject {ids[0]}", members=len(ids))
        if log is not None:
            what = "transfer (group parameters frozen)" if source is not None else f"group model, F {self.features}, {self.scheme}"
            log(f"fitting {spec0.backend} {what} on {len(ids)} subject(s), {subs[ids[0]][0].n_regions} regions, {n_frames} frames"
                + (f" → {target}" if target is not None else ""))
        sub_cfgs = {sid: specs[sid]._config(subs[sid], kerns[sid], array_hash(*[r.data for r in subs[sid]], *[r.mask for r in subs[sid]]),
                                            None if inputs is None else list(inputs.get(sid) or []) or None)
                    for sid in ids}
        c0 = sub_cfgs[ids[0]]
        config = {k: v for k, v in c0.items() if k not in SUBJECT_KEYS}
        config.update(format=GROUP_FORMAT, features=self.features, scheme=self.scheme, feature_decay=self.feature_decay, subject_ids=ids,
                      data_hash=array_hash(np.frombuffer(to_json(ids).encode(), np.uint8),
                                           *[np.frombuffer(sub_cfgs[s]["data_hash"].encode(), np.uint8) for s in ids]),
                      transfer_from=None if source is None else {
                          "run": None if source.run_dir_ is None else str(source.run_dir_),
                          "group_hash": array_hash(source.g_.numpy()), "subjects": source.subjects})
        caches = {sid: None for sid in ids}
        if not fresh:
            from dsrecon.io.runs import read_staged_config

            old = read_staged_config(run)
            if old.get("format") != GROUP_FORMAT:
                raise DsreconError(f"{target}: cannot resume: the staged run is not a group fit; start over with --force")
            _check_resumable(target, old, config)
            for k in ("features", "scheme", "feature_decay", "subject_ids", "transfer_from"):
                was = run_feature_decay(old) if k == "feature_decay" else old.get(k)
                if json.dumps(was, sort_keys=True, default=str) != json.dumps(config.get(k), sort_keys=True, default=str):
                    raise DsreconError(f"{target}: cannot resume: {k.replace('_', ' ')} differ ({was} in the run, {config.get(k)} now); "
                                       "resume with the run's data and options, or start over with --force")
            caches = {sid: _read_subject_teacher(run, sid, len(subs[sid]), target) for sid in ids}
        datas = {}
        for sid in ids:
            try:
                datas[sid] = prepare(subs[sid], kerns[sid], opts.test_fraction, teacher_cache=caches[sid])
            except DataError as e:
                raise DataError(f"subject {sid}: {e}") from None
        seed = spec0.seed
        seed_everything(seed)
        gen = torch.Generator().manual_seed(seed)
        N = len(datas[ids[0]].names)
        n_reg = 0 if subs[ids[0]][0].regressors is None else subs[ids[0]][0].regressors.shape[1]
        nets = [spec0._build(N, n_reg, kerns[ids[0]], gen).to(spec0.device)]
        nets += [specs[s]._build(N, n_reg, kerns[s], torch.Generator().manual_seed(seed)).to(spec0.device) for s in ids[1:]]
        st0 = Stack(nets[:1])
        layout = GroupLayout(st0.layout, st0.P, self.features, self.scheme)
        gen2 = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 16]).generate_state(1)[0]))
        if source is None:
            g0 = layout.init_vector(st0.flat[0].cpu(), gen2)
            f0 = init_features(len(ids), self.features, gen2)
        else:
            if source.g_.shape[0] != layout.G:
                raise DsreconError("transfer: the new subjects' data do not fit the group model's architecture")
            g0 = source.g_.clone()
            f0 = torch.as_tensor(np.asarray(source.features_, np.float32).mean(0), dtype=torch.float32)[None].repeat(len(ids), 1)
        config.update({"latent_dim": nets[0].M, "backend_kwargs": nets[0].dynamics.extra_config(), "layout": layout.describe(),
                       "subjects": [{**{k: sub_cfgs[s][k] for k in SUBJECT_KEYS if k in sub_cfgs[s]}, "id": s,
                                     "normalisation": datas[s].norm.to_dict(), "data": datas[s].info} for s in ids]})
        trainer = GroupTrainer(nets, [datas[s] for s in ids], layout, g0, f0, opts, seed, run, progress, log,
                               frozen_group=source is not None, feature_decay=self.feature_decay)
        if source is not None and self.features > 0:
            # each new subject starts where the group's model of it validates best: the mean of the
            # source's features, or one source subject's (deterministic, so a resumed run agrees)
            names = ["mean"] + list(source.subjects)
            cands = torch.as_tensor(np.concatenate([np.asarray(source.features_, np.float32).mean(0, keepdims=True),
                                                    np.asarray(source.features_, np.float32)]), dtype=torch.float32)
            pick = trainer.choose_start(cands)
            config["transfer_start"] = {sid: names[k] for sid, k in zip(ids, pick)}
            if log is not None:
                log("transfer starts: " + ", ".join(f"{sid} from {'the mean' if k == 0 else 'subject ' + names[k]}" for sid, k in zip(ids, pick)))
        if run is not None:
            if fresh:
                for sid in ids:
                    _write_subject_teacher(run, sid, datas[sid], subs[sid])
                write_json_atomic(run / CONFIG_FILE, {**config, "status": "training"})
                _write_dataset_description(run)
            else:
                from dsrecon.io.runs import resume_checkpoint

                resume_checkpoint(trainer, run)
        t0 = time.perf_counter()
        try:
            summary = trainer.fit()[0]
            summary.pop("failed")
        except Interrupted:
            raise
        except KeyboardInterrupt as e:
            raise _interrupted(trainer, e, run, opts.epochs) from None
        m = trainer.members[0]
        best = (m.best_row if m.best_row is not None else trainer.stack.flat[0]).detach().cpu()
        g, feats = trainer.split(best.to(trainer.device))
        self.g_ = g.detach().cpu().clone()
        self.features_ = feats.detach().cpu().numpy().astype(np.float64)
        self.subjects_ = ids
        trainer.member_net(0, best.to(trainer.device))
        self.z_init_, self.noise_ = {}, {}
        from dsrecon.models.noise import estimate as estimate_noise

        for sid, net in zip(ids, trainer.nets):
            net.cpu()
            self.z_init_[sid] = net.state_from_last_reliable(datas[sid].train[-1].teacher).detach()[0]
            nm = estimate_noise(net, datas[sid].train)  # each subject's own residuals (stochastic runs)
            if nm is not None:
                self.noise_[sid] = nm
        summary["training_seconds"] = time.perf_counter() - t0
        summary["updates"] = int(m.batches_done)
        config.update({"status": "complete", "training": summary})
        self.config_, self.run_dir_, self.history_ = config, run, m.rows
        self.base = spec0
        if run is not None:
            try:
                self.save(run, self.history_)
            except KeyboardInterrupt as e:
                raise _interrupted(trainer, e, run, opts.epochs) from None
        return self

    # ---------------------------------------------------------------- persistence
    def save(self, run_dir: str | Path, rows: list[dict] | None = None) -> None:
        from dsrecon.io.runs import CONFIG_FILE, LOG_FILE, MODEL_FILE
        from dsrecon.io.tables import write_table
        from dsrecon.training import checkpoint as ckpt
        from dsrecon.training.trainer import LOG_COLUMNS

        self._check_fitted()
        run = Path(run_dir)
        run.mkdir(parents=True, exist_ok=True)
        tensors = {"group": self.g_, "features": torch.as_tensor(self.features_, dtype=torch.float32)}
        tensors.update({f"z_init.{s}": z for s, z in self.z_init_.items()})
        for sid, nm in getattr(self, "noise_", {}).items():
            tensors.update({f"noise.{sid}.process_chol": nm.process_chol, f"noise.{sid}.obs_chol": nm.obs_chol})
        ckpt.save_tensors(run / MODEL_FILE, tensors, metadata={"format": GROUP_FORMAT})
        write_features(run, self.subjects_, self.features_, self.config_)
        if rows is not None:
            arr = np.array([[r.get(c, np.nan) for c in LOG_COLUMNS] for r in rows], dtype=float).reshape(-1, len(LOG_COLUMNS))
            write_table(run / LOG_FILE, arr, LOG_COLUMNS, sidecar={
                "Description": "dsrecon fit-group training log: one row per epoch; loss is the mean GTF loss over subjects, "
                               "val_D_stsp / val_D_H the subjects' means of the single-fit validation.",
                "seed": self.config_.get("seed"), "versions": versions()})
        write_json_atomic(run / CONFIG_FILE, self.config_)


def write_features(run: Path, ids: list[str], feats: np.ndarray, config: dict) -> None:
    """subject_features.tsv (participant_id, f1…fF) and its JSON sidecar."""
    F = feats.shape[1]
    cols = ["participant_id"] + [f"f{k + 1}" for k in range(F)]
    lines = ["\t".join(cols)] + ["\t".join([f"sub-{s}"] + [f"{v:.9g}" for v in row]) for s, row in zip(ids, feats)]
    write_text_atomic(run / FEATURES_FILE, "\n".join(lines) + "\n")
    side = {"Description": "Subject features of a dsrecon group model: each subject's model parameters are generated from its "
                           f"row ({config.get('scheme')} scheme, see config.json 'layout').",
            "participant_id": {"Description": "BIDS participant label"},
            **{f"f{k + 1}": {"Description": f"feature {k + 1} (dimensionless)"} for k in range(F)},
            "scheme": config.get("scheme"), "features": F, "seed": config.get("seed"), "transfer_from": config.get("transfer_from"),
            "DsreconVersion": dsrecon_version(), "versions": versions(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    write_json_atomic(run / FEATURES_SIDECAR, side)


def _write_subject_teacher(run: Path, sid: str, data, recs) -> None:
    from dsrecon.io.runs import write_teacher_cache

    write_teacher_cache(run, data, recs, subject=sid)


def _read_subject_teacher(run: Path, sid: str, n: int, target) -> list[np.ndarray]:
    from dsrecon.io.runs import read_teacher_cache

    return read_teacher_cache(run, n, target, subject=sid)


def group_preset(preset: str, subs: Mapping[str, list], test_fraction: float) -> str:
    """The preset of a group fit (`dsrecon.options.choose_preset`): by its median subject's training
    samples, so that every subject's model has the same architecture and training options."""
    from dsrecon.options import choose_preset
    from dsrecon.training.prepare import training_frames

    n_regions = next(iter(subs.values()))[0].n_regions if subs else 0
    return choose_preset(preset, int(np.median([training_frames([r.n_frames for r in recs], test_fraction) for recs in subs.values()])),
                         n_regions)


def run_feature_decay(cfg: dict) -> float:
    """The feature penalty's λ a group run's config.json was fitted with (runs from before
    --feature-decay existed had none: 0)."""
    return float(cfg.get("feature_decay", 0.0))


def is_group_config(cfg: dict) -> bool:
    return isinstance(cfg, dict) and cfg.get("format") == GROUP_FORMAT


def load_group_run(run: Path, cfg: dict) -> GroupConvSSM:
    """Rebuild a GroupConvSSM from a group run (called by `dsrecon.load_run`)."""
    from dsrecon.api import _config_key
    from dsrecon.io.runs import CONFIG_FILE, MODEL_FILE
    from dsrecon.options import model_fields
    from dsrecon.training import checkpoint as ckpt

    cfg_path = run / CONFIG_FILE
    from dsrecon.io.run_check import check_group_config, check_sizes, check_weights

    check_group_config(cfg, cfg_path)  # types, ranges, status: one line naming the key
    state = ckpt.load_tensors(run / MODEL_FILE)
    check_sizes(cfg, cfg_path, check_weights(state, run / MODEL_FILE))
    try:
        params = {f.name: cfg[_config_key(f)] for f in model_fields() if _config_key(f) in cfg}
        params.update(latent_dim=cfg["latent_dim"], device="cpu")
        g = GroupConvSSM(int(cfg["features"]), cfg["scheme"], run_feature_decay(cfg), **params, **cfg["train_options"])
        g.config_ = cfg
        g.subjects_ = [str(s["id"]) for s in cfg["subjects"]]
        layout, _ = g._layout()
    except (DsreconError, KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        from dsrecon.api import _one_line

        raise DataError(f"{cfg_path}: does not describe a group model dsrecon can rebuild ({_one_line(e)})") from None
    S, F = len(g.subjects_), int(cfg["features"])
    want = {"group": (layout.G,), "features": (S, F), **{f"z_init.{s}": None for s in g.subjects_}}
    for k, shp in want.items():
        if k not in state:
            raise DataError(f"{run / MODEL_FILE}: tensor '{k}' that {CONFIG_FILE} calls for is missing from the weights")
        if shp is not None and tuple(state[k].shape) != shp:
            raise DataError(f"{run / MODEL_FILE}: does not match {cfg_path}: tensor '{k}' has shape {tuple(state[k].shape)} "
                            f"in the weights but {shp} from {CONFIG_FILE}")
    g.g_ = state["group"].clone()
    g.features_ = state["features"].numpy().astype(np.float64)
    g.z_init_ = {s: state[f"z_init.{s}"].clone() for s in g.subjects_}
    from dsrecon.models.noise import NoiseModel

    g.noise_ = {}
    for s in g.subjects_:
        p, o = state.get(f"noise.{s}.process_chol"), state.get(f"noise.{s}.obs_chol")
        if p is not None and o is not None:
            nm = NoiseModel(p.shape[0], o.shape[0])
            nm.process_chol.copy_(p)
            nm.obs_chol.copy_(o)
            g.noise_[s] = nm
    g.run_dir_ = run
    return g


def select_subject(model, subject: str | None, run: Path):
    """The model a command works on: a single run's model as it is; a group run's subject
    ``subject`` (required there); `--subject` on a single run is an error."""
    if isinstance(model, GroupConvSSM):
        if subject is None:
            shown = ", ".join(model.subjects[:10]) + (" …" if len(model.subjects) > 10 else "")
            raise DsreconError(f"{run}: a group run: choose a subject with --subject (subjects: {shown})")
        return model.subject(subject)
    if subject is not None:
        raise DsreconError(f"--subject {subject}: {run} is not a group run (written by dsrecon fit, not fit-group)")
    return model
