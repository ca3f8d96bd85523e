"""The Python API, mirroring the CLI (scikit-learn style).

>>> model = ConvSSM(latent_dim=3, epochs=500).fit(recordings, run_dir="run")   # doctest: +SKIP
>>> out = model.simulate(10_000)            # {"observed": (n, N), "latent": (n, M)}
>>> model.score(test_recording)             # {"D_stsp": …, "D_H": …, "PE_n": …}
>>> model = load_run("run")
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import shutil
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from dsrecon._util import array_hash, dsrecon_version, seed_everything, versions, write_json_atomic
from dsrecon.errors import DataError, DivergenceError, DsreconError
from dsrecon.io.recording import Recording
from dsrecon.io.tables import write_table
from dsrecon.models.base import get_backend
from dsrecon.models.convssm import ConvSSMNet
from dsrecon.models.decoders import make_decoder
from dsrecon.signal.kernels import Kernel, make_kernel
from dsrecon.training import checkpoint as ckpt
from dsrecon.training.prepare import Normalisation, prepare
from dsrecon.training.trainer import LOG_COLUMNS, TrainOptions, Trainer

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
LOG_FILE = "training_log.tsv"
TEACHER_DIR = "teacher"


class ConvSSM:
    """A convolutional state-space model trained with generalized teacher forcing.

    Parameters are stored as given (scikit-learn style); learned things end in ``_`` after `fit`.
    backend: latent dynamics (`dsrecon backends`); latent_dim: M (default N, at least 3);
    hidden_dim: L; kernel: spm|glover|calcium|none|path; decoder: identity|affine|regressor;
    backend_options: extra backend arguments (e.g. {"pwl_units": 2}); other keyword arguments
    are TrainOptions (epochs, alpha, sequence_length, …).
    """

    def __init__(self, backend: str = "cshplrnn", latent_dim: int | None = None, hidden_dim: int = 50,
                 kernel: str = "spm", tau_decay: float = 0.4, tau_rise: float | None = None,
                 decoder: str = "identity", backend_options: dict | None = None, seed: int = 0,
                 device: str = "cpu", **train_options):
        self.backend = backend
        self.latent_dim = latent_dim
        self.hidden_dim = hidden_dim
        self.kernel = kernel
        self.tau_decay = tau_decay
        self.tau_rise = tau_rise
        self.decoder = decoder
        self.backend_options = dict(backend_options or {})
        self.seed = seed
        self.device = device
        try:
            self.train_options = TrainOptions(**train_options)
        except TypeError as e:
            raise DsreconError(f"ConvSSM: {e}") from None
        self.net_: ConvSSMNet | None = None
        self.config_: dict = {}
        self.run_dir_: Path | None = None

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
    def _build(self, n_obs: int, n_regressors: int, kern: Kernel, gen: torch.Generator) -> ConvSSMNet:
        M = self.latent_dim if self.latent_dim is not None else max(n_obs, 3)
        if M < 1:
            raise DsreconError(f"--latent-dim must be positive, got {M}")
        cls = get_backend(self.backend)
        kwargs = dict(self.backend_options)
        import inspect

        sig = inspect.signature(cls.__init__).parameters
        if "hidden_dim" in sig:
            kwargs.setdefault("hidden_dim", self.hidden_dim)
        if "generator" in sig:
            kwargs["generator"] = gen
        try:
            dyn = cls(M, **kwargs)
        except (TypeError, ValueError) as e:
            raise DsreconError(f"--backend {self.backend}: {e}") from None
        dec = make_decoder(self.decoder, M, n_obs, n_regressors, generator=gen)
        return ConvSSMNet(dyn, dec, torch.as_tensor(kern.taps), n_obs)

    # ---------------------------------------------------------------- fit
    def fit(self, recordings: Recording | Sequence[Recording], run_dir: str | Path | None = None, *, resume: bool = False,
            overwrite: bool = False, progress: Callable[[int, int, str], None] | None = None,
            log: Callable[[str], None] | None = None, inputs: list[str] | None = None) -> "ConvSSM":
        """Fit on one or more recordings (each a separate sequence source). Returns self."""
        recs = [recordings] if isinstance(recordings, Recording) else list(recordings)
        if not recs:
            raise DataError("no recordings to fit")
        kern = make_kernel(self.kernel, recs[0].tr, tau_decay=self.tau_decay, tau_rise=self.tau_rise)
        data_hash = array_hash(*[r.data for r in recs], *[r.mask for r in recs])
        run = Path(run_dir) if run_dir is not None else None
        config = self._config(recs, kern, data_hash, inputs)
        cache = None
        fresh = True
        exists = run is not None and ((run / "checkpoint" / "state.json").exists() or (run / CONFIG_FILE).exists())
        if exists:
            if resume:
                old = json.loads((run / CONFIG_FILE).read_text())
                _check_resumable(run, old, config)
                cache = _read_teacher_cache(run, len(recs))
                fresh = False
            elif not overwrite:
                raise DsreconError(f"{run}: run directory already exists; use --resume to continue it or --force to overwrite")
            else:
                shutil.rmtree(run)
        elif resume and run is not None:
            raise DsreconError(f"{run}: nothing to resume (no checkpoint found)")
        data = prepare(recs, kern, self.train_options.test_fraction, teacher_cache=cache)
        seed_everything(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        n_reg = 0 if recs[0].regressors is None else recs[0].regressors.shape[1]
        net = self._build(len(data.names), n_reg, kern, gen).to(self.device)
        config.update({
            "normalisation": data.norm.to_dict(), "data": data.info, "latent_dim": net.M,
            "backend_kwargs": net.dynamics.extra_config(),
        })
        trainer = Trainer(net, data, self.train_options, self.seed, run, progress, log)
        if run is not None:
            run.mkdir(parents=True, exist_ok=True)
            if fresh:
                _write_teacher_cache(run, data, recs)
                write_json_atomic(run / CONFIG_FILE, {**config, "status": "training"})
                _write_dataset_description(run)
            else:
                trainer.load_checkpoint()
        try:
            summary = trainer.fit()
        except DivergenceError:
            if run is not None and fresh:
                shutil.rmtree(run, ignore_errors=True)
            raise
        net = net.cpu()  # generation and analysis are sequential: they run on the CPU
        # initial state for later simulation: the last reliable teacher frame of the training data
        net.register_buffer("z_init", net.state_from_last_reliable(data.train[-1].teacher).detach()[0])
        config.update({"status": "complete", "training": summary})
        self.net_, self.config_, self.run_dir_ = net, config, run
        self.history_ = trainer.rows
        self.data_ = data
        if run is not None:
            self.save(run, trainer.rows)
        return self

    def _config(self, recs: list[Recording], kern: Kernel, data_hash: str, inputs: list[str] | None) -> dict:
        return {
            "format": "dsrecon-run/1",
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "dsrecon_version": dsrecon_version(),
            "versions": versions(),
            "seed": self.seed,
            "backend": self.backend,
            "backend_options": self.backend_options,
            "latent_dim": self.latent_dim,
            "latent_dim_requested": self.latent_dim,
            "hidden_dim": self.hidden_dim,
            "decoder": self.decoder,
            "kernel": kern.to_dict(),
            "kernel_name": str(self.kernel),
            "tau_decay": self.tau_decay,
            "tau_rise": self.tau_rise,
            "device": self.device,
            "train_options": self.train_options.public(),
            "tr": float(recs[0].tr),
            "names": list(recs[0].names),
            "n_regions": recs[0].n_regions,
            "regressor_names": list(recs[0].regressor_names),
            "inputs": inputs or [r.source for r in recs],
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
        from dsrecon.signal.deconvolution import wiener_deconvolve

        x = self.norm_.apply(data.data)
        state0 = net.state_from_last_reliable(wiener_deconvolve(x, self.kernel_.taps))
        if state0 is None:
            raise DataError(f"{data.source}: too short to infer an initial state (no reliable deconvolved frame)")
        return state0

    @torch.no_grad()
    def simulate(self, n_steps: int, seed: int = 0, data: Recording | None = None) -> dict:
        """Free run of n_steps observations (§5). Returns {"observed": (n, N) in data units,
        "observed_normalised": (n, N), "latent": (n, M)} with latent row j aligned to observation j.
        Raises DivergenceError when the run leaves the bounded regime."""
        if n_steps < 1:
            raise DsreconError(f"--steps must be positive, got {n_steps}")
        net = self._net()
        seed_everything(seed)
        x, Z = net.free_run(self._state0(data, net), n_steps)
        x = x[0].cpu().numpy().astype(np.float64)
        lat = Z[0, net.K - 1 :, : net.M].cpu().numpy().astype(np.float64)
        if not (np.isfinite(x).all() and np.isfinite(lat).all()) or np.abs(lat).max() > 1e4:
            bad = np.flatnonzero(~np.isfinite(lat).all(1) | (np.abs(lat).max(1) > 1e4))
            raise DivergenceError(f"the free run diverged (non-finite or exploding states from step {int(bad[0]) if bad.size else '?'}); nothing was written")
        return {"observed": self.norm_.invert(x), "observed_normalised": x, "latent": lat}

    # ---------------------------------------------------------------- scoring
    def score(self, test: Recording, *, n_pe: int | None = None, stsp: str = "auto", bins: int = 30, gmm_var: float = 1.0,
              smoothing: float = 20.0, seed: int = 0, gmm_points: str = "first") -> dict:
        """§6 protocol on a test recording: generate 1.25·T, drop 0.25·T, D_stsp and D_H; plus PE_n.

        ``gmm_points`` (first|even): which ≤ 10 000 rows the mixture D_stsp keeps (metrics.stsp)."""
        from dsrecon.metrics.prediction import prediction_error
        from dsrecon.metrics.spectrum import hellinger_spectral
        from dsrecon.metrics.stsp import state_space_divergence
        from dsrecon.signal.deconvolution import wiener_deconvolve

        net = self._net()
        if test.n_regions != len(self.names):
            raise DataError(f"{test.source}: {test.n_regions} columns, the model was fitted on {len(self.names)} regions")
        x = self.norm_.apply(test.data)
        T = x.shape[0]
        n_total = int(math.ceil(1.25 * T))
        with torch.no_grad():
            gen, Z = net.free_run(net.z_init[None].clone(), n_total)
        gen = gen[0, n_total - T :].cpu().numpy().astype(np.float64)
        diverged = not np.isfinite(gen).all() or np.abs(Z.cpu().numpy()).max() > 1e4
        if diverged:
            d_stsp, method, d_h = float("inf"), stsp, float("nan")
        else:
            d_stsp, method = state_space_divergence(gen[test.mask], x[test.mask], method=stsp, bins=bins, var=gmm_var, seed=seed,
                                                     gmm_points=gmm_points)
            d_h = hellinger_spectral(gen, x, smoothing=smoothing)
        if n_pe is None:
            n_pe = 20 if self.tr < 0.5 else 10
        teacher = wiener_deconvolve(x, self.kernel_.taps)
        pe = prediction_error(net, x.astype(np.float32), teacher.astype(np.float32), n_pe, test.mask)
        return {"D_stsp": float(d_stsp), "D_stsp_method": method, "D_H": float(d_h), f"PE{n_pe}": pe, "PE_n": pe, "n": n_pe,
                "n_test": T, "n_generated": n_total, "diverged": bool(diverged), "seed": seed}


def _jsonable(d: dict) -> dict:
    try:
        json.dumps(d, default=str)
        return json.loads(json.dumps(d, default=str))
    except (TypeError, ValueError):
        return {k: str(v) for k, v in d.items()}


def _check_resumable(run: Path, old: dict, new: dict) -> None:
    old = dict(old)
    if isinstance(old.get("train_options"), dict):
        # a run started by an older version lacks the options added since; they had their defaults
        old["train_options"] = {**_jsonable(TrainOptions().public()), **old["train_options"]}
    for key in ("data_hash", "backend", "backend_options", "latent_dim_requested", "hidden_dim", "decoder", "kernel", "seed", "train_options"):
        if json.dumps(old.get(key), sort_keys=True) != json.dumps(json.loads(json.dumps(new.get(key))), sort_keys=True):
            raise DsreconError(f"{run}: cannot resume: '{key}' differs from the original run (same data and options are required)")


def _teacher_name(i: int, rec_source: str, taken: set[str]) -> str:
    """BIDS-derivative name keeping the source entities (sub, ses, task, run) + desc-teacher."""
    from dsrecon.io.results import bids_entities, derivative_name

    ents = bids_entities(rec_source)
    name = derivative_name(ents, "teacher", "timeseries", ".tsv") if ents else f"rec-{i:02d}_desc-teacher_timeseries.tsv"
    if name in taken:
        name = name.replace("_desc-teacher", f"_rec-{i:02d}_desc-teacher")
    taken.add(name)
    return name


def _write_teacher_cache(run: Path, data, recs: list[Recording]) -> None:
    from dsrecon.io.results import tsv_sidecar

    files: list[str] = []
    taken: set[str] = set()
    for i, (p, r) in enumerate(zip(data.train, recs)):
        name = _teacher_name(i, r.source, taken)
        side = tsv_sidecar(r, units="normalised (z-scored with training statistics)", columns=data.names,
                           Description="Wiener-deconvolved teacher signals of the training split; NaN = unreliable edge or censored frame",
                           Source=r.source)
        write_table(run / TEACHER_DIR / name, p.teacher, data.names, sidecar=side)
        files.append(name)
    write_json_atomic(run / TEACHER_DIR / "index.json", {"files": files})


def _read_teacher_cache(run: Path, n: int) -> list[np.ndarray]:
    from dsrecon.io.tables import read_array

    idx = json.loads((run / TEACHER_DIR / "index.json").read_text())
    if len(idx["files"]) != n:
        raise DsreconError(f"{run}: cannot resume: teacher cache holds {len(idx['files'])} recordings, data has {n}")
    return [read_array(run / TEACHER_DIR / f, allow_nan=True)[0].astype(np.float32) for f in idx["files"]]


def _write_dataset_description(run: Path) -> None:
    try:
        from dsrecon.io.results import write_dataset_description

        write_dataset_description(run)
    except ImportError:
        write_json_atomic(run / "dataset_description.json", {
            "Name": "dsrecon run", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "dsrecon", "Version": dsrecon_version()}],
        })


def load_run(path: str | Path) -> ConvSSM:
    """Rebuild a fitted ConvSSM from a run directory (model.safetensors + config.json)."""
    run = Path(path)
    cfg_path = run / CONFIG_FILE
    if not cfg_path.exists():
        raise DataError(f"{run}: not a dsrecon run directory (no {CONFIG_FILE})")
    if not (run / MODEL_FILE).exists():
        raise DataError(f"{run}: no {MODEL_FILE} (training not finished? continue it with `dsrecon fit ... --resume`)")
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{cfg_path}: not valid JSON ({e})") from None
    m = ConvSSM(backend=cfg["backend"], latent_dim=cfg["latent_dim"], hidden_dim=cfg["hidden_dim"], kernel=cfg["kernel_name"],
                tau_decay=cfg.get("tau_decay", 0.4), tau_rise=cfg.get("tau_rise"), decoder=cfg["decoder"],
                backend_options=cfg.get("backend_options"), seed=cfg["seed"], **cfg["train_options"])
    kern = Kernel.from_dict(cfg["kernel"])
    net = m._build(cfg["n_regions"], len(cfg.get("regressor_names", [])), kern, torch.Generator().manual_seed(0))
    state = ckpt.load_tensors(run / MODEL_FILE)
    net.register_buffer("z_init", state["z_init"].clone())
    net.load_state_dict(state)
    net.eval()
    m.net_, m.config_, m.run_dir_ = net, cfg, run
    return m
