"""The hierarchical group model: many subjects, shared dynamics, one feature vector per subject.

>>> g = GroupConvSSM(features=3, latent_dim=3, epochs=500).fit({"01": [rec1a, rec1b], "02": rec2}, run_dir="grp")  # doctest: +SKIP
>>> g.subject("01").simulate(10_000)       # a ConvSSM with subject 01's generated parameters
>>> g2 = g.transfer({"03": rec3}, run_dir="grp2")   # group parameters frozen, only 03's features learned

Every subject has its own recordings, measurement kernel (its TR), normalisation and teacher
signals; its model parameters (dynamics, initial-state map, decoder) are generated from its
features by the group parameters (`dsrecon.models.group`: ``linear`` or ``outer``). Training is
the engine's GTF (`dsrecon.training.group`), run by the one fit skeleton
(`dsrecon.estimators.session.FitSession` with `GroupFit`). A run directory holds
model.safetensors (the group vector ``group``, the ``features`` (S, F) and each subject's initial
state ``z_init.<id>``), config.json (format dsrecon-group/1), subject_features.tsv (+ .json
sidecar), teacher/<id>/ and the training log; it is written like a single fit's
(`dsrecon.io.runs`: staging, lock, --resume).
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch

from dsrecon._util import write_json_atomic
from dsrecon.errors import DataError, DsreconError, OptionError
from dsrecon.estimators.convssm import ConvSSM
from dsrecon.estimators.group_fit import GroupFit
from dsrecon.estimators.group_run import GROUP_FORMAT, LOG_DESCRIPTION, as_subjects, check_regions, run_feature_decay, subject_id, write_features
from dsrecon.estimators.record import config_key, one_line
from dsrecon.estimators.session import FitSession
from dsrecon.io.run_check import check_group_config, check_sizes, check_weights
from dsrecon.io.runs import CONFIG_FILE, MODEL_FILE, read_config, write_training_log
from dsrecon.models.group import FEATURE_DECAY, SCHEMES, GroupLayout
from dsrecon.models.noise import NoiseModel
from dsrecon.options import model_fields, train_fields
from dsrecon.signal.kernels import Kernel
from dsrecon.training import checkpoint as ckpt
from dsrecon.training.stack import Stack
from dsrecon.training.trainer import LOG_COLUMNS


class GroupConvSSM:
    """The hierarchical convSSM (module docstring). ``features`` F (0: every subject is the same
    model), ``scheme`` linear|outer, ``feature_decay`` λ_f of the low-rank penalty
    λ_f/2·(‖projections‖² + ‖features‖²) (default `dsrecon.models.group.FEATURE_DECAY`; 0: none;
    `dsrecon.training.group`); every other keyword is a `dsrecon.ConvSSM` (fit) option, kept as
    given in ``base`` (the fit's resolved options: ``resolved_``)."""

    def __init__(self, features: int = 3, scheme: str = "linear", feature_decay: float | None = None, **params):
        self.features, self.scheme, self.feature_decay = features, scheme, feature_decay  # as given; validate() checks
        self.base = ConvSSM(**params)  # the options (checked by fit)
        self.feature_decay_: float | None = None  # λ_f as fitted (feature_decay, or FEATURE_DECAY for None)
        self.resolved_: ConvSSM | None = None
        self.g_: torch.Tensor | None = None
        self.features_: np.ndarray | None = None
        self.subjects_: list[str] = []
        self.z_init_: dict[str, torch.Tensor] = {}
        self.noise_: dict[str, NoiseModel] = {}
        self.config_: dict = {}
        self.run_dir_: Path | None = None
        self.history_: list[dict] = []

    def get_params(self, deep: bool = True) -> dict:
        """Every constructor argument → its value (the group's three, then ``base``'s ConvSSM options)."""
        return {"features": self.features, "scheme": self.scheme, "feature_decay": self.feature_decay, **self.base.get_params()}

    def set_params(self, **params) -> "GroupConvSSM":
        """Set constructor arguments (the group's own, or any ConvSSM option); returns self."""
        own = {k: params.pop(k) for k in ("features", "scheme", "feature_decay") if k in params}
        self.base.set_params(**params)  # (names an unknown keyword)
        self.__dict__.update(own)
        return self

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

    def check_fitted(self) -> None:
        if self.g_ is None:
            raise DsreconError("group model is not fitted: call fit() or load_run()")

    def _index(self, subject: str) -> int:
        self.check_fitted()
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
        self.check_fitted()
        layout, _ = self.layout()
        return layout.generate(self.g_, torch.as_tensor(self.features_, dtype=torch.float32)).detach()

    def _options(self) -> dict:
        """The options of a subject's model: the fit's resolved ones (a loaded run's are), with the built
        M, on the CPU (generation is sequential)."""
        return {**(self.resolved_ or self.base).get_params(), "latent_dim": self.config_["latent_dim"], "device": "cpu"}

    def subject(self, subject: str) -> ConvSSM:
        """Subject ``subject`` as a fitted `dsrecon.ConvSSM` (simulate, score, analysis)."""
        i = self._index(subject)
        cfg = self.subject_config(subject)
        m = ConvSSM(**self._options())
        net = m.build_net(cfg["n_regions"], len(cfg.get("regressor_names", [])), Kernel.from_dict(cfg["kernel"]), torch.Generator().manual_seed(0))
        Stack([net]).load_into(net, self.generated_rows()[i])
        net.register_buffer("z_init", self.z_init_[self.subjects_[i]].detach().cpu().clone())
        net.set_noise(self.noise_.get(self.subjects_[i]))
        net.eval()
        m.net_, m.config_, m.run_dir_ = net, cfg, self.run_dir_
        return m

    def layout(self):
        """(GroupLayout, a template net) of this model's architecture."""
        cfg = self.config_
        m = ConvSSM(**self._options())
        net = m.build_net(cfg["n_regions"], len(cfg.get("regressor_names", [])), Kernel.from_dict(cfg["subjects"][0]["kernel"]),
                          torch.Generator().manual_seed(0))
        st = Stack([net])
        return GroupLayout(st.layout, st.P, int(cfg["features"]), cfg["scheme"]), net

    # ---------------------------------------------------------------- fit
    def fit(self, subjects, run_dir: str | Path | None = None, *, resume: bool = False, overwrite: bool = False,
            progress: Callable[[int, int, str], None] | None = None, log: Callable[[str], None] | None = None,
            inputs: Mapping[str, list[str]] | None = None) -> "GroupConvSSM":
        """Fit the group on ``subjects`` {id: recording or [recordings]} (ids 'sub-01' or '01').

        With ``run_dir`` the run is staged, locked and committed like a single fit's; ``resume``
        continues an interrupted one. Returns self."""
        return self._session(as_subjects(subjects), run_dir, None, resume, overwrite, progress, log, inputs)

    def transfer(self, subjects, run_dir: str | Path | None = None, *, resume: bool = False, overwrite: bool = False,
                 progress=None, log=None, inputs=None, **train_options) -> "GroupConvSSM":
        """A new group model of the new ``subjects``: this model's group parameters, frozen (bit
        for bit), and only the new subjects' features learned. ``train_options`` override this
        model's training options (default epochs: a tenth of this fit's)."""
        self.check_fitted()
        allowed = {f.name for f in train_fields()} | {"seed", "device"}
        bad = [k for k in train_options if k not in allowed]
        if bad:
            raise DsreconError(f"transfer: '{bad[0]}' is not a training option (the model comes from the group run)")
        tr_opts = dict(self.config_["train_options"])
        tr_opts["epochs"] = max(1, int(tr_opts["epochs"]) // 10)
        tr_opts.update(train_options)
        model_params = {k: v for k, v in (self.resolved_ or self.base).get_params().items() if k not in tr_opts}
        new = GroupConvSSM(self.features, self.scheme, self.feature_decay, **{**model_params, **tr_opts, "latent_dim": self.config_["latent_dim"]})
        return new._session(as_subjects(subjects), run_dir, self, resume, overwrite, progress, log, inputs)

    def validate(self) -> None:
        """One line naming the first bad option (DsreconError), before any data is read."""
        if self.scheme not in SCHEMES:
            raise OptionError(f"`scheme`: unknown scheme '{self.scheme}' (choose {', '.join(SCHEMES)})")
        if isinstance(self.features, bool) or not isinstance(self.features, numbers.Integral) or self.features < 0:
            raise OptionError(f"`features` must be a whole number, at least 0, got {self.features!r}")
        decay = FEATURE_DECAY if self.feature_decay is None else self.feature_decay
        if isinstance(decay, bool) or not isinstance(decay, numbers.Real) or not (math.isfinite(decay) and decay >= 0):
            raise OptionError(f"`feature_decay` must be a number ≥ 0, got {decay!r}")
        self.base.validate()
        self.feature_decay_ = float(decay)

    def _session(self, subs, run_dir, source, resume, overwrite, progress, log, inputs) -> "GroupConvSSM":
        self.validate()
        if self.base.decoder == "pca":  # its principal axes are the data's: one subject's are not another's
            raise OptionError("`decoder` pca is not available for a group fit (each subject's principal axes differ); "
                               "use identity or affine")
        check_regions(subs)
        session = FitSession(run_dir, resume=resume, overwrite=overwrite, progress=progress, log=log)
        session.run(GroupFit(self, subs, inputs, None if run_dir is None else Path(run_dir), source, self.from_run))
        if session.committed is not None:
            self.run_dir_ = session.committed
        return self

    # ---------------------------------------------------------------- persistence
    def save(self, run_dir: str | Path, rows: list[dict] | None = None) -> None:
        self.check_fitted()
        run = Path(run_dir)
        run.mkdir(parents=True, exist_ok=True)
        tensors = {"group": self.g_, "features": torch.as_tensor(self.features_, dtype=torch.float32)}
        tensors.update({f"z_init.{s}": z for s, z in self.z_init_.items()})
        for sid, nm in self.noise_.items():
            tensors.update({f"noise.{sid}.process_chol": nm.process_chol, f"noise.{sid}.obs_chol": nm.obs_chol})
        ckpt.save_tensors(run / MODEL_FILE, tensors, metadata={"format": GROUP_FORMAT})
        write_features(run, self.subjects_, self.features_, self.config_)
        if rows is not None:
            write_training_log(run, rows, LOG_COLUMNS, LOG_DESCRIPTION, self.config_.get("seed"))
        write_json_atomic(run / CONFIG_FILE, self.config_)

    @classmethod
    def from_run(cls, run: Path, cfg: dict | None = None) -> "GroupConvSSM":
        """Rebuild a fitted group model from the group run ``run`` (its config.json ``cfg``);
        `dsrecon.load_run` calls it for a run of format dsrecon-group/1."""
        cfg_path = run / CONFIG_FILE
        if cfg is None:
            cfg = read_config(run)
        check_group_config(cfg, cfg_path)  # types, ranges, status: one line naming the key
        state = ckpt.load_tensors(run / MODEL_FILE)
        check_sizes(cfg, cfg_path, check_weights(state, run / MODEL_FILE))
        try:
            params = {f.name: cfg[config_key(f)] for f in model_fields() if config_key(f) in cfg}
            g = cls(int(cfg["features"]), cfg["scheme"], run_feature_decay(cfg), **params, **cfg["train_options"])
            g.feature_decay_ = g.feature_decay
            g.config_ = cfg
            g.subjects_ = [str(s["id"]) for s in cfg["subjects"]]
            layout, _ = g.layout()
        except (DsreconError, KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise DataError(f"{cfg_path}: does not describe a group model dsrecon can rebuild ({one_line(e)})") from None
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
        for s in g.subjects_:
            p, o = state.get(f"noise.{s}.process_chol"), state.get(f"noise.{s}.obs_chol")
            if p is not None and o is not None:
                nm = NoiseModel(p.shape[0], o.shape[0])
                nm.process_chol.copy_(p)
                nm.obs_chol.copy_(o)
                g.noise_[s] = nm
        g.run_dir_ = run
        return g
