"""The Python API: the options and defaults of the CLI (scikit-learn style).

>>> model = ConvSSM(latent_dim=3, epochs=500).fit(recordings, run_dir="run")   # doctest: +SKIP
>>> out = model.simulate(10_000)            # {"observed": (n, N), "latent": (n, M)}
>>> model.score(test_recording)             # {"D_stsp": …, "D_H": …, "PE_n": …}
>>> model = load_run("run")
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import inspect
import json
import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from dsrecon._util import array_hash, dsrecon_version, seed_everything, versions, write_json_atomic
from dsrecon.errors import DataError, DivergenceError, DsreconError
from dsrecon.io.recording import Recording
from dsrecon.io.runs import (CONFIG_FILE, LOG_FILE, MODEL_FILE, TEACHER_DIR, check_resumable, json_equal as _same, json_value as _plain,  # noqa: F401
                             read_teacher_cache, write_teacher_cache)
from dsrecon.io.tables import write_table
from dsrecon.models.base import get_backend
from dsrecon.options import (DEFAULT_ALPHA, PRESET_TRAIN_OPTIONS, PRESETS, ModelOptions, choose_preset, estimator_fields, model_fields, train_fields,
                             typed_options, validate_options)
from dsrecon.models.convssm import ConvSSMNet
from dsrecon.models.device import resolve_device
from dsrecon.models.decoders import default_latent_dim, make_decoder
from dsrecon.models.noise import NoiseModel
from dsrecon.models.noise import estimate as estimate_noise
from dsrecon.signal.kernels import Kernel, make_kernel
from dsrecon.training import checkpoint as ckpt
from dsrecon.training.prepare import Normalisation, prepare
from dsrecon.training.memory import check_fit_memory
from dsrecon.training.hooks import Interrupted
from dsrecon.training.trainer import LOG_COLUMNS, TrainOptions, Trainer


#: steps of the free run `ConvSSM.long_run` checks after a fit (validation's shortest run)
LONG_RUN_STEPS = 10_000


class ConvSSM:
    """A convolutional state-space model trained with generalized teacher forcing.

    The keyword arguments are every option of `dsrecon fit`, with its defaults
    (`dsrecon.options.ModelOptions` and `TrainOptions`): backend (`dsrecon backends`), latent_dim M
    (default N, at least 3), hidden_dim L, kernel (spm|glover|calcium|none|path; default by
    modality), decoder (identity|affine|regressor), backend_options (the backend's own options,
    e.g. {"pwl_units": 2}), seed, device (auto|cpu|cuda), epochs, alpha, sequence_length (default
    by the kernel length and the data), …. They are stored as given (scikit-learn style:
    `get_params`, `set_params`, `sklearn.base.clone`); the derived defaults are resolved by `fit`,
    and what is learned ends in ``_``.
    """

    def __init__(self, **params):
        unknown = [k for k in params if k not in _PARAM_DEFAULTS]
        if unknown:
            raise DsreconError(f"ConvSSM: unexpected keyword argument '{unknown[0]}'")
        for name, default in _PARAM_DEFAULTS.items():
            setattr(self, name, params.get(name, default))
        self.net_: ConvSSMNet | None = None
        self.config_: dict = {}
        self.run_dir_: Path | None = None

    # ---------------------------------------------------------------- parameters (scikit-learn)
    def get_params(self, deep: bool = True) -> dict:
        """Every constructor argument → its value (``deep`` is accepted for scikit-learn; nothing nests)."""
        return {name: getattr(self, name) for name in _PARAM_DEFAULTS}

    def set_params(self, **params) -> "ConvSSM":
        for k, v in params.items():
            if k not in _PARAM_DEFAULTS:
                raise DsreconError(f"ConvSSM: unexpected keyword argument '{k}'")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.get_params().items() if not _same(_plain(v), _plain(_PARAM_DEFAULTS[k]))}
        return f"ConvSSM({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    @property
    def model_options(self) -> ModelOptions:
        return ModelOptions(**{f.name: getattr(self, f.name) for f in model_fields()})

    @property
    def train_options(self) -> TrainOptions:
        return TrainOptions(**{f.name: getattr(self, f.name) for f in train_fields()})

    def validate(self) -> "ConvSSM":
        """Check every option (one line naming the option on the first bad one); returns self."""
        validate_options(self.model_options)
        validate_options(self.train_options)
        self.train_options.schedule()  # the forcing options together (--alpha-end with a fixed --alpha)
        if self.backend_options is not None and not isinstance(self.backend_options, dict):
            raise DsreconError(f"backend_options must be a dict, got {type(self.backend_options).__name__}")
        self._backend_kwargs()
        return self

    def _backend_kwargs(self) -> dict:
        """backend_options checked against the backend's `Options` (names, types; text parsed)."""
        return typed_options(get_backend(self.backend).Options, dict(self.backend_options or {}), f"--backend {self.backend}")

    def resolved(self, recs: Sequence[Recording], log: Callable[[str], None] | None = None) -> "ConvSSM":
        """A copy with the derived defaults filled in for these recordings (which must share one TR):
        the kernel by modality (calcium imaging: calcium, else spm), the sequence length by the kernel's
        K taps and the training split, the device (auto: cuda when available), the backend options typed,
        and the options left unset from the preset (`apply_preset`)."""
        from dsrecon.training.batches import DEFAULT_SEQUENCE_LENGTH, default_sequence_length
        from dsrecon.training.prepare import check_recordings, training_frames

        recs = list(recs)
        self.validate()
        check_recordings(recs)
        out = ConvSSM(**self.get_params())
        out.apply_preset(training_frames([r.n_frames for r in recs], out.test_fraction), recs[0].n_regions)
        if out.kernel is None:
            out.kernel = "calcium" if recs[0].provenance.get("modality", "bold") == "calcium" else "spm"
        if out.sequence_length is None:
            K = make_kernel(out.kernel, recs[0].tr, tau_decay=out.tau_decay, tau_rise=out.tau_rise).K
            out.sequence_length, usable = default_sequence_length([r.n_frames for r in recs], K, out.test_fraction)
            if out.sequence_length < max(DEFAULT_SEQUENCE_LENGTH, K + 39) and log is not None:
                log(f"the training split is short ({usable} usable frames): using --sequence-length {out.sequence_length}")
        out.device = resolve_device(out.device)
        out.backend_options = out._backend_kwargs()
        return out

    def apply_preset(self, n_train: int, n_regions: int = 0) -> "ConvSSM":
        """Settle ``preset`` for a fit of ``n_train`` training samples of ``n_regions`` regions (auto:
        `choose_preset`) and fill the options left unset (hidden_dim and `PRESET_TRAIN_OPTIONS`)
        from it, in place."""
        self.preset = choose_preset(self.preset, n_train, n_regions)
        if self.alpha is None and self.alpha_end is not None:  # an annealed α starts from the fixed default
            self.alpha = DEFAULT_ALPHA
        if self.hidden_dim is None:
            self.hidden_dim = PRESETS[self.preset]["hidden_dim"]
        t = self.train_options.with_preset(self.preset)
        for k in PRESET_TRAIN_OPTIONS:
            setattr(self, k, getattr(t, k))
        self.train_options.schedule()  # --alpha-end needs a fixed α, also the preset's
        return self

    # ---------------------------------------------------------------- contract for analysis/report
    @property
    def dynamics(self):
        return self._net().dynamics

    @property
    def kernel_(self) -> Kernel:
        return Kernel.from_dict(self.config_["kernel"])

    @property
    def tr(self) -> float:
        return float(self.config_["tr"])

    @property
    def names(self) -> list[str]:
        return list(self.config_["names"])

    @property
    def config(self) -> dict:
        return self.config_

    @property
    def run_dir(self) -> Path | None:
        return self.run_dir_

    @property
    def norm_(self) -> Normalisation:
        return Normalisation.from_dict(self.config_["normalisation"])

    def _net(self) -> ConvSSMNet:
        if self.net_ is None:
            raise DsreconError("model is not fitted: call fit() or load_run()")
        return self.net_

    # ---------------------------------------------------------------- building
    def _build(self, n_obs: int, n_regressors: int, kern: Kernel, gen: torch.Generator, n_inputs: int = 0) -> ConvSSMNet:
        M = self.latent_dim if self.latent_dim is not None else default_latent_dim(n_obs, self.decoder)
        if M < 1:
            raise DsreconError(f"--latent-dim must be positive, got {M}")
        cls = get_backend(self.backend)
        kwargs = self._backend_kwargs()
        if "hidden_dim" in cls.Options.__dataclass_fields__:
            kwargs.setdefault("hidden_dim", self.hidden_dim)
        # sizes, checked here for every backend (a 0 fails deep inside one, e.g. a division by L)
        for key, opt in (("hidden_dim", "--hidden-dim"), ("bases", "--bases"), ("state_size", "--backend-option state_size")):
            v = kwargs.get(key)
            if v is not None and not (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1):
                raise DsreconError(f"{opt} must be a positive integer, got {v}")
        try:
            dyn = cls(M, generator=gen, **kwargs)
        except (TypeError, ValueError) as e:
            raise DsreconError(f"--backend {self.backend}: {e}") from None
        dyn.enable_inputs(n_inputs)  # external inputs act on the dynamics (C s_t), never on the decoder
        dec = make_decoder(self.decoder, M, n_obs, n_regressors, generator=gen)
        return ConvSSMNet(dyn, dec, torch.as_tensor(kern.taps), n_obs)

    # ---------------------------------------------------------------- fit
    def fit(self, recordings: Recording | Sequence[Recording], run_dir: str | Path | None = None, *, resume: bool = False,
            overwrite: bool = False, progress: Callable[[int, int, str], None] | None = None,
            log: Callable[[str], None] | None = None, inputs: list[str] | None = None) -> "ConvSSM":
        """Fit on one or more recordings (each a separate sequence source). Returns self.

        With ``run_dir`` the run is built in a staging directory beside it and renamed into place
        when complete (`dsrecon.io.runs`): a failure leaves nothing, an interruption leaves the
        staging directory for ``resume=True``, and ``overwrite=True`` replaces a previous run only
        once the new one has succeeded.

        External inputs (task designs) travel in ``Recording.inputs``; ``inputs=`` may also give
        them here as arrays, (T, K) or one per recording (a list of file names there is what the
        CLI records as the data's sources)."""
        recs = [recordings] if isinstance(recordings, Recording) else list(recordings)
        if not recs:
            raise DataError("no recordings to fit")
        if inputs is not None and not all(isinstance(i, (str, Path)) for i in inputs):
            recs, inputs = _with_input_arrays(recs, inputs), None
        self.validate()
        if run_dir is None:
            return self._fit(recs, None, True, progress, log, inputs, None)
        from dsrecon.io.runs import StagedRun

        with StagedRun(run_dir, resume=resume, force=overwrite, log=log) as st:
            if st.complete:  # the fit had finished, its commit had not: check the options, put it in place
                self._adopt_staged(recs, st.dir, log, inputs, Path(run_dir))
            else:
                self._fit(recs, st.dir, st.fresh, progress, log, inputs, Path(run_dir))
            self.run_dir_ = st.commit()
        return self

    def _adopt_staged(self, recs: list[Recording], staging: Path, log, inputs, target: Path) -> None:
        """A --resume of a fit that finished but was not put in place: the staged run, after the
        same compatibility check as any resume."""
        from dsrecon.io.runs import read_staged_config

        _, _, config = self.plan(recs, inputs, log)
        _check_resumable(target, read_staged_config(staging), config)
        m = load_run(staging)
        self.net_, self.config_ = m.net_, m.config_
        if log is not None:
            log(f"note: the fit had finished; its run was waiting in {staging.name} and is now put in place at {target}")

    def _fit(self, recs: list[Recording], run: Path | None, fresh: bool, progress, log, inputs, target: Path | None) -> "ConvSSM":
        """Train into ``run`` (the staging directory, or None); ``target`` names the run in messages."""
        spec, kern, config = self.plan(recs, inputs, log)
        if log is not None:
            n_frames = sum(r.n_frames for r in recs)
            log(f"fitting {spec.backend} on {len(recs)} recording(s), {recs[0].n_regions} regions, {n_frames} frames, "
                f"TR {recs[0].tr:g} s, kernel {spec.kernel} ({kern.K} taps)" + (f" → {target}" if target is not None else ""))
        opts = spec.train_options
        cache = None
        if not fresh:
            from dsrecon.io.runs import read_staged_config

            old = read_staged_config(run)
            _check_resumable(target, old, config)
            cache = _read_teacher_cache(run, len(recs), target)
        N = recs[0].n_regions  # refuse at once what cannot fit in memory
        check_fit_memory([r.n_frames for r in recs], N, spec.latent_dim or default_latent_dim(N, spec.decoder), spec.hidden_dim, kern.K,
                         opts, spec.device, recs[0].source)
        data = prepare(recs, kern, opts.test_fraction, teacher_cache=cache)
        seed_everything(spec.seed)
        gen = torch.Generator().manual_seed(spec.seed)
        n_reg = 0 if recs[0].regressors is None else recs[0].regressors.shape[1]
        net = spec._build(len(data.names), n_reg, kern, gen, len(data.input_names)).fit_axes(data.train).to(spec.device)
        config.update({
            "normalisation": data.norm.to_dict(), "data": data.info, "latent_dim": net.M,
            "backend_kwargs": net.dynamics.extra_config(),
        })
        messages: list[str] = []  # the fit's own notes and warnings, kept in config.json for the report

        def keep(msg: str) -> None:
            messages.append(str(msg))
            if log is not None:
                log(msg)

        trainer = Trainer([net], data, opts, [spec.seed], run, progress, keep)
        if run is not None:
            if fresh:
                _write_teacher_cache(run, data, recs)
                write_json_atomic(run / CONFIG_FILE, {**config, "status": "training"})
                _write_dataset_description(run)
            else:
                from dsrecon.io.runs import resume_checkpoint

                resume_checkpoint(trainer, run)
        try:
            summary = trainer.fit()[0]
            summary.pop("failed")  # a plain fit that fails raises
        except Interrupted:
            raise
        except KeyboardInterrupt as e:
            raise _interrupted(trainer, e, run, opts.epochs) from None
        net = net.cpu()  # generation and analysis are sequential: they run on the CPU
        # initial state for later simulation: the last reliable teacher frame of the training data
        net.register_buffer("z_init", net.state_from_last_reliable(data.train[-1].teacher).detach()[0])
        net.set_noise(estimate_noise(net, data.train))  # what the map and kernel leave unexplained (stochastic runs)
        config.update({"status": "complete", "training": summary, "fit_messages": messages,
                       "noise": None if net.noise is None else net.noise.summary()})
        self.net_, self.config_, self.run_dir_ = net, config, run
        self.history_ = trainer.members[0].rows
        self.data_ = data
        if run is not None:
            try:
                self.save(run, self.history_)
            except KeyboardInterrupt as e:  # while writing the run: the checkpoint is still there
                raise _interrupted(trainer, e, run, opts.epochs) from None
        return self

    def plan(self, recs: list[Recording], inputs: list[str] | None = None, log=None) -> tuple["ConvSSM", Kernel, dict]:
        """What a fit of ``recs`` would be, before any training: the resolved model (kernel, sequence
        length and device derived here, once), its kernel, and the config.json it would write (the
        record `dsrecon.io.runs.differences` compares for --resume and for a cohort rerun)."""
        spec = self.resolved(recs, log)
        kern = make_kernel(spec.kernel, recs[0].tr, tau_decay=spec.tau_decay, tau_rise=spec.tau_rise)
        # the inputs (task designs) are part of the data: changed events refit a cohort subject, refuse --resume
        data_hash = array_hash(*[r.data for r in recs], *[r.mask for r in recs], *[r.inputs for r in recs if r.inputs is not None])
        return spec, kern, spec._config(recs, kern, data_hash, inputs)

    def _config(self, recs: list[Recording], kern: Kernel, data_hash: str, inputs: list[str] | None) -> dict:
        """config.json of a run of this (resolved) model: its options (from `ModelOptions` and
        `TrainOptions`), the kernel's taps, the data's description."""
        return {
            "format": "dsrecon-run/1",
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "dsrecon_version": dsrecon_version(),
            "versions": versions(),
            **{_config_key(f): _plain(getattr(self, f.name)) for f in model_fields()},
            "latent_dim": self.latent_dim,  # replaced by the M the model was built with
            "kernel": kern.to_dict(),
            "train_options": self.train_options.public(),
            "tr": float(recs[0].tr),
            "names": list(recs[0].names),
            "n_regions": recs[0].n_regions,
            "regressor_names": list(recs[0].regressor_names),
            "input_names": list(recs[0].input_names),  # external input channels (task events); [] autonomous
            "n_inputs": len(recs[0].input_names),
            "input_files": [r.provenance.get("inputs_file") for r in recs],
            "input_kind": recs[0].provenance.get("inputs_kind"),  # events | table | None
            "inputs": inputs or [r.source for r in recs],
            "input_paths": _real_sources(recs),  # what commands reading the run must never overwrite
            "provenance": [_jsonable(r.provenance) for r in recs],
            "n_masked_frames": [int((~r.mask).sum()) for r in recs],
            "data_hash": data_hash,
        }

    # ---------------------------------------------------------------- persistence
    def save(self, run_dir: str | Path, rows: list[dict] | None = None) -> None:
        run = Path(run_dir)
        run.mkdir(parents=True, exist_ok=True)
        net = self._net()
        ckpt.save_tensors(run / MODEL_FILE, net.state_dict(), metadata={"format": "dsrecon-run/1"})
        if rows is not None:
            arr = np.array([[r.get(c, np.nan) for c in LOG_COLUMNS] for r in rows], dtype=float).reshape(-1, len(LOG_COLUMNS))
            write_table(run / LOG_FILE, arr, LOG_COLUMNS, sidecar={
                "Description": "dsrecon training log: one row per epoch. val_D_stsp / val_D_H compare a >= 10 000-step free run (started after the training split) with all observed frames (training head + held-out tail); binned D_stsp there uses at most (n_frames/2)^(1/N) bins. NaN between validations.",
                "seed": self.seed, "versions": versions(),
            })
        write_json_atomic(run / CONFIG_FILE, self.config_)

    def to(self, device: str) -> "ConvSSM":
        """Move the fitted model (for generation and scoring) to a torch device: cpu or cuda.

        Free runs are sequential, so the CPU (fused numba path) is usually the faster choice."""
        self._net().to(device)
        self.device = device
        return self

    # ---------------------------------------------------------------- generation
    def _state0(self, data: Recording | None, net: ConvSSMNet) -> torch.Tensor:
        if data is None:
            return net.z_init[None].clone()
        return self._reliable_state(data, net, "last")[0]

    def _reliable_state(self, data: Recording, net: ConvSSMNet, which: str) -> tuple[torch.Tensor, int]:
        from dsrecon.signal.deconvolution import wiener_deconvolve

        x = self.norm_.apply(data.data, data.source, data.names)
        found = net.state_from_reliable(wiener_deconvolve(x, self.kernel_.taps), which)
        if found is None:
            raise DataError(f"{data.source}: too short to infer an initial state (no reliable deconvolved frame)")
        return found

    @property
    def input_names(self) -> list[str]:
        """The external input channels the model was fitted with ([]: autonomous)."""
        return list(self.config_.get("input_names") or [])

    def check_inputs(self, inputs: np.ndarray | None, source: str = "inputs", n_frames: int | None = None) -> np.ndarray | None:
        """``inputs`` (T, K) as float64, checked against the model's input channels; None stays None
        (a model with inputs then runs with zero input: the autonomous system)."""
        if inputs is None:
            return None
        if not self.input_names:
            raise DataError(f"{source}: the model was fitted without inputs (no --events / --inputs); it takes none")
        s = np.asarray(inputs, dtype=np.float64)
        if s.ndim == 1:
            s = s[:, None]
        if s.ndim != 2 or s.shape[1] != len(self.input_names):
            raise DataError(f"{source}: {s.shape[-1] if s.ndim else 0} input column(s), the model has {len(self.input_names)} "
                            f"({', '.join(self.input_names)})")
        if n_frames is not None and s.shape[0] != n_frames:
            raise DataError(f"{source}: {s.shape[0]} input rows for {n_frames} frames")
        if not np.isfinite(s).all():
            raise DataError(f"{source}: NaN or Inf in the inputs")
        return s

    @torch.no_grad()
    def simulate(self, n_steps: int, seed: int = 0, data: Recording | None = None, inputs: np.ndarray | None = None,
                 start: str = "end", stochastic: bool | None = None) -> dict:
        """Free run of n_steps observations (§5). Returns {"observed": (n, N) in data units,
        "observed_normalised": (n, N), "latent": (n, M), "first_frame"} with latent row j aligned
        to observation j.

        The run starts from the state inferred at the end of ``data`` (default: of the training
        data). ``inputs`` (L, K): the external inputs of generated frames 0 … L−1 (row f drives the
        latent state that observation f reads; zero input beyond L and for the kernel's warm-up
        states); without inputs a model fitted with inputs generates the autonomous system.

        ``start="start"`` replays ``data`` instead: the run starts from the state inferred at the
        recording's first reliable deconvolved frame r, ``inputs`` are the recording's own design
        (row f: its frame f; zero beyond), and generated observation j is the recording's frame
        ``first_frame`` + j (r + K − 1, the first the kernel can reach from there).

        ``stochastic``: add the fitted process and observation noise (`dsrecon.models.noise`),
        drawn from ``seed``; None: the model's default (`generation_`).
        Raises DivergenceError when the run leaves the bounded regime."""
        if n_steps < 1:
            raise DsreconError(f"--steps must be positive, got {n_steps}")
        if start not in ("start", "end"):
            raise DsreconError(f"start must be 'start' or 'end', got '{start}'")
        net = self._net()
        s = self.check_inputs(inputs)
        seed_everything(seed)
        gen = self._noise_generator(stochastic, seed)
        first = 0
        if start == "start":
            if data is None:
                raise DsreconError("replaying a recording from its start needs the recording (--from FILE)")
            state0, r = self._reliable_state(data, net, "first")
            first = r + net.K - 1
            u = None
            if s is not None:  # rollout row i − 1 drives latent state i, the teacher's frame r + i
                u = torch.as_tensor(s[r + 1 : r + n_steps + net.K - 1], dtype=torch.float32)[None]
            x, Z = net.free_run(state0, n_steps, u, generator=gen)
        else:
            x, Z = net.free_run(self._state0(data, net), n_steps, None if s is None else net.step_inputs(s, n_steps), generator=gen)
        x = x[0].cpu().numpy().astype(np.float64)
        lat = Z[0, net.K - 1 :, : net.M].cpu().numpy().astype(np.float64)
        if not (np.isfinite(x).all() and np.isfinite(lat).all()) or np.abs(lat).max() > 1e4:
            bad = np.flatnonzero(~np.isfinite(lat).all(1) | (np.abs(lat).max(1) > 1e4))
            raise DivergenceError(f"the free run diverged (non-finite or exploding states from step {int(bad[0]) if bad.size else '?'}); nothing was written")
        return {"observed": self.norm_.invert(x), "observed_normalised": x, "latent": lat, "first_frame": first,
                "stochastic": gen is not None}

    @property
    def generation_(self) -> str:
        """How this fitted model's free runs are made by default: "stochastic" (the fitted noise added)
        or "deterministic" (the map alone): the fit's ``generation`` option, deterministic without a
        noise model (runs of older dsrecon versions)."""
        g = (self.config_.get("train_options") or {}).get("generation") or "deterministic"
        return "stochastic" if g == "stochastic" and self._net().noise is not None else "deterministic"

    def _noise_generator(self, stochastic: bool | None, seed: int) -> torch.Generator | None:
        """The generator of a stochastic free run (None: deterministic); ``stochastic`` None: `generation`."""
        if stochastic is None:
            stochastic = self.generation_ == "stochastic"
        if not stochastic:
            return None
        if self._net().noise is None:
            raise DsreconError("this model has no noise model (fitted by an older dsrecon): it generates deterministic runs only")
        return torch.Generator().manual_seed(int(seed))

    def long_run(self, n_steps: int = LONG_RUN_STEPS) -> dict:
        """Where the fitted model's free run ends up: an ``n_steps`` run from the end of the training
        data (no inputs). Returns {"steps", "spread", "settles", "diverged"}: ``spread`` is the largest
        std over regions of the last quarter, in the training data's z-units (about 1 for a run on
        the data's attractor); ``settles`` is spread below 0.05, the collapse test validation uses
        (a fixed point or a tiny cycle: the model has lost the data's oscillation). The run is the
        one users get by default (`generation_`, recorded as "generation"): a stochastic model's
        noise keeps its run moving even where its map alone settles."""
        from dsrecon.training.validation import COLLAPSE_SPREAD

        gen = self.generation_
        try:
            x = self.simulate(int(n_steps))["observed_normalised"]
        except DivergenceError:
            return {"steps": int(n_steps), "spread": float("inf"), "settles": False, "diverged": True, "generation": gen}
        spread = float(x[-max(1, x.shape[0] // 4):].std(0).max())
        return {"steps": int(n_steps), "spread": spread, "settles": spread < COLLAPSE_SPREAD, "diverged": False, "generation": gen}

    # ---------------------------------------------------------------- scoring
    def score(self, test: Recording, *, n_pe: int | None = None, stsp: str = "auto", bins: int = 30, gmm_var: float = 1.0,
              smoothing: float = 20.0, seed: int = 0, gmm_points: str = "first", inputs: np.ndarray | None = None,
              fcd_window_s: float = 30.0, keep_series: bool = False, stochastic: bool | None = None) -> dict:
        """§6 protocol on a test recording: generate 1.25·T, drop 0.25·T, D_stsp and D_H; FC_corr,
        FC_rmse and FCD_KS (windows of ``fcd_window_s`` seconds, metrics.connectivity); plus PE_n.
        ``stochastic``: the free run with the fitted noise (None: the model's `generation_`).

        ``gmm_points`` (first|even): which ≤ 10 000 rows the mixture D_stsp keeps (metrics.stsp).
        A model fitted with inputs needs the test design: ``test.inputs`` or ``inputs`` (T, K); it
        drives PE_n and the last T frames of the free run (returned as ``generated_test_period``).
        ``keep_series``: also return the scored free run and the test data, both normalised
        (``generated_test_period``, ``test_normalised``)."""
        if inputs is not None:
            test = _with_input_arrays([test], [inputs], self.input_names or None)[0]
        from dsrecon.metrics.prediction import prediction_error
        from dsrecon.metrics.spectrum import hellinger_spectral
        from dsrecon.metrics.stsp import state_space_divergence
        from dsrecon.signal.deconvolution import wiener_deconvolve

        net = self._net()
        if test.n_regions != len(self.names):
            raise DataError(f"{test.source}: {test.n_regions} columns, the model was fitted on {len(self.names)} regions")
        K = self.kernel_.K
        if test.n_frames < K:  # the teacher of PE_n is deconvolved with the kernel
            raise DataError(f"{test.source}: {test.n_frames} frames, shorter than the model's kernel ({K} taps): "
                            f"test data need at least {K} frames")
        x = self.norm_.apply(test.data, test.source, test.names)
        T = x.shape[0]
        n_total = int(math.ceil(1.25 * T))
        if self.input_names and test.inputs is None:
            raise DataError(f"{test.source}: the model was fitted with inputs ({', '.join(self.input_names)}); give the test "
                            "data's inputs (--events / --inputs)")
        s = self.check_inputs(test.inputs, test.source, T)
        u = None
        if s is not None:  # the test design on the last T generated frames (the ones compared), zero before
            u = net.step_inputs(np.concatenate([np.zeros((n_total - T, s.shape[1])), s]), n_total)
        with torch.no_grad():
            gen, Z = net.free_run(net.z_init[None].clone(), n_total, u, generator=self._noise_generator(stochastic, seed))
        gen = gen[0, n_total - T :].cpu().numpy().astype(np.float64)
        diverged = not np.isfinite(gen).all() or np.abs(Z.cpu().numpy()).max() > 1e4
        from dsrecon.metrics.yardsticks import connectivity

        conn = {"FC_corr": float("nan"), "FC_rmse": float("nan"), "FCD_KS": float("nan")}
        if diverged:
            d_stsp, method, d_h = float("inf"), stsp, float("nan")
        else:
            d_stsp, method = state_space_divergence(gen[test.mask], x[test.mask], method=stsp, bins=bins, var=gmm_var, seed=seed,
                                                     gmm_points=gmm_points)
            d_h = hellinger_spectral(gen, x, smoothing=smoothing)
            conn = connectivity(gen[test.mask], x[test.mask], self.tr, fcd_window_s)
        if n_pe is None:
            n_pe = 20 if self.tr < 0.5 else 10
        teacher = wiener_deconvolve(x, self.kernel_.taps)
        pe = prediction_error(net, x.astype(np.float32), teacher.astype(np.float32), n_pe, test.mask, inputs=s)
        out = {"D_stsp": float(d_stsp), "D_stsp_method": method, "D_H": float(d_h), f"PE{n_pe}": pe, "PE_n": pe, "n": n_pe,
               **conn, "FCD_window_s": float(fcd_window_s), "n_test": T, "n_generated": n_total, "diverged": bool(diverged), "seed": seed,
               "generation": "stochastic" if (self.generation_ == "stochastic" if stochastic is None else stochastic) else "deterministic"}
        if s is not None:
            out["inputs"] = list(self.input_names)
        if s is not None or keep_series:
            out["generated_test_period"] = gen  # normalised units, aligned with the test frames
        if keep_series:
            out["test_normalised"] = x
        return out


#: the constructor's keyword arguments and defaults: every fit option (model, then training)
_PARAM_DEFAULTS = {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default) for f in estimator_fields()}
ConvSSM.__init__.__signature__ = inspect.Signature(
    [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    + [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=_PARAM_DEFAULTS[f.name], annotation=f.type)
       for f in estimator_fields()])


def _with_input_arrays(recs: list[Recording], inputs, names: list[str] | None = None) -> list[Recording]:
    """The recordings with the given input arrays ((T, K), or one per recording) attached."""
    arrs = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
    if len(arrs) != len(recs):
        raise DataError(f"{len(arrs)} input arrays for {len(recs)} recordings")
    out = []
    for r, a in zip(recs, arrs):
        a = np.asarray(a, dtype=np.float64)
        k = 1 if a.ndim == 1 else a.shape[1]
        out.append(dataclasses.replace(r, inputs=a, input_names=list(names) if names else [f"input{i + 1}" for i in range(k)]))
    return out


def _real_sources(recs: list[Recording]) -> list[str]:
    """The real paths of the files the recordings were read from (data and input files), as far as they exist."""
    import os

    out = []
    for r in recs:
        for p in (r.source, r.provenance.get("inputs_file")):
            if isinstance(p, str) and p and os.path.exists(p):
                out.append(os.path.realpath(p))
    return list(dict.fromkeys(out))


def _config_key(f: dataclasses.Field) -> str:
    """The config.json key of a model option (latent_dim → latent_dim_requested, kernel → kernel_name)."""
    return f.metadata.get("config_key", f.name)


def _interrupted(trainer: Trainer, e: KeyboardInterrupt, run: Path | None, epochs: int) -> BaseException:
    """The FitInterrupted of a fit stopped by SIGINT/SIGTERM: the epoch reached and the checkpoint kept."""
    from dsrecon.errors import FitInterrupted, Terminated

    c = trainer.checkpoint_on_disk()
    return FitInterrupted(
        f"interrupted at epoch {trainer.epoch} of {epochs}; "
        + (f"the checkpoint of epoch {c} is kept (continue with --resume)" if c is not None and run is not None
           else "no checkpoint had been written yet"),
        signal="SIGTERM" if isinstance(e, Terminated) else "SIGINT", epoch=trainer.epoch, checkpoint_epoch=c,
        staging=None if run is None else str(run))


def _jsonable(d: dict) -> dict:
    try:
        json.dumps(d, default=str)
        return json.loads(json.dumps(d, default=str))
    except (TypeError, ValueError):
        return {k: str(v) for k, v in d.items()}


# the run directory's files and its compatibility check live in dsrecon.io.runs (these names are
# kept for callers of the private helpers)
_check_resumable = check_resumable
_write_teacher_cache = write_teacher_cache
_read_teacher_cache = read_teacher_cache


def _write_dataset_description(run: Path) -> None:
    from dsrecon.io.results import write_dataset_description

    write_dataset_description(run)


#: config.json keys load_run needs to rebuild the model
_RUN_KEYS = ("backend", "latent_dim", "hidden_dim", "decoder", "kernel", "kernel_name", "seed", "train_options", "tr", "names",
             "n_regions", "normalisation")


def load_run(path: str | Path):
    """Rebuild a fitted ConvSSM from a run directory (model.safetensors + config.json).

    A damaged run (unreadable or incomplete config.json, empty or truncated weights, weights that do
    not fit the configuration) is a DataError naming the file and what is wrong with it."""
    run = Path(path)
    from dsrecon.io.runs import commit_pending, journal_path, recover_commit

    for d in (run, run.parent):  # a commit of the run (or of the ensemble it is a member of) cut short by a kill
        if d.name and commit_pending(d):
            recover_commit(d)
    if not run.exists():
        if journal_path(run).exists():
            raise DataError(f"{run}: another dsrecon process is putting a new run in place right now; try again in a moment")
        raise DataError(f"{run}: run directory not found")
    if not run.is_dir():
        raise DataError(f"{run}: not a run directory (a file; `dsrecon fit -o` writes a directory)")
    cfg_path = run / CONFIG_FILE
    if not cfg_path.exists():
        raise DataError(f"{run}: not a dsrecon run directory (no {CONFIG_FILE})")
    if not (run / MODEL_FILE).exists():
        raise DataError(f"{run}: no {MODEL_FILE} (training not finished? continue it with `dsrecon fit ... --resume`)")
    from dsrecon.group import is_group_config, load_group_run

    try:
        raw = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, OSError, UnicodeDecodeError):
        raw = None
    if is_group_config(raw):  # a `dsrecon fit-group` run: a GroupConvSSM (its .subject(id) is a ConvSSM)
        return load_group_run(run, raw)
    cfg = _read_run_config(cfg_path)
    from dsrecon.io.run_check import check_config, check_sizes, check_weights

    check_config(cfg, cfg_path)  # types, ranges, status: one line naming the key
    norm = cfg["normalisation"]
    state = ckpt.load_tensors(run / MODEL_FILE)
    check_sizes(cfg, cfg_path, check_weights(state, run / MODEL_FILE))  # before building: no size allocates at random
    try:
        params = {f.name: cfg[_config_key(f)] for f in model_fields() if _config_key(f) in cfg}
        params.update(latent_dim=cfg["latent_dim"], device="cpu")  # the built M; generation runs on the CPU
        m = ConvSSM(**params, **cfg["train_options"])
        kern = Kernel.from_dict(cfg["kernel"])
        net = m._build(cfg["n_regions"], len(cfg.get("regressor_names", [])), kern, torch.Generator().manual_seed(0),
                       len(cfg.get("input_names") or []))
        Normalisation.from_dict(norm)
    except (DsreconError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise DataError(f"{cfg_path}: does not describe a model dsrecon can rebuild ({_one_line(e)})") from None
    if "z_init" not in state:
        raise DataError(f"{run / MODEL_FILE}: no 'z_init' tensor (not the weights of a dsrecon model)")
    net.register_buffer("z_init", state["z_init"].clone())
    if "noise.process_chol" in state and "noise.obs_chol" in state:  # a model with its noise model (stochastic runs)
        net.set_noise(NoiseModel(net.F, net.N))
    want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items()}
    missing = [k for k in want if k not in have]
    extra = [k for k in have if k not in want]
    wrong = [k for k in want if k in have and want[k] != have[k]]
    if missing or extra or wrong:
        if wrong:
            k = wrong[0]
            what = f"tensor '{k}' has shape {have[k]} in the weights but {want[k]} from {CONFIG_FILE}"
        elif missing:
            what = f"tensor '{missing[0]}' that {CONFIG_FILE} calls for is missing from the weights"
        else:
            what = f"the weights hold tensor '{extra[0]}' that {CONFIG_FILE} does not call for"
        more = len(missing) + len(extra) + len(wrong) - 1
        raise DataError(f"{run / MODEL_FILE}: does not match {cfg_path}: {what}" + (f" (and {more} more)" if more else ""))
    net.load_state_dict(state)
    net.eval()
    m.net_, m.config_, m.run_dir_ = net, cfg, run
    return m


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, KeyError):
        return f"no key {msg}"
    return msg or e.__class__.__name__


def _read_run_config(cfg_path: Path) -> dict:
    """config.json of a run as a dict holding every key load_run needs; else a DataError naming the key."""
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{cfg_path}: not valid JSON ({e})") from None
    except UnicodeDecodeError:
        raise DataError(f"{cfg_path}: not a text file") from None
    except OSError as e:
        raise DataError(f"{cfg_path}: cannot read ({e.strerror or e})") from None
    if not isinstance(cfg, dict):
        raise DataError(f"{cfg_path}: expected a JSON object, got {type(cfg).__name__}")
    missing = [k for k in _RUN_KEYS if k not in cfg]
    if missing:
        raise DataError(f"{cfg_path}: key '{missing[0]}' is missing" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                        + "; the file is damaged or was not written by dsrecon fit")
    if not isinstance(cfg["train_options"], dict) or not isinstance(cfg["kernel"], dict) or not isinstance(cfg["normalisation"], dict):
        bad = next(k for k in ("train_options", "kernel", "normalisation") if not isinstance(cfg[k], dict))
        raise DataError(f"{cfg_path}: '{bad}' must be a JSON object")
    return cfg
