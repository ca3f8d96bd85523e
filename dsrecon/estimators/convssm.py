"""One convSSM, fitted by the one fit skeleton (`dsrecon.estimators.session.FitSession`).

>>> model = ConvSSM(latent_dim=3, epochs=500).fit(recordings, run_dir="run")   # doctest: +SKIP
>>> out = model.simulate(10_000)            # {"observed": (n, N), "latent": (n, M)}
>>> model.score(test_recording)             # {"D_stsp": …, "D_H": …, "PE_n": …}
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch

from dsrecon._util import write_json_atomic
from dsrecon.errors import DataError
from dsrecon.estimators.fitted import FittedConvSSM
from dsrecon.estimators.params import ConvSSMParams
from dsrecon.estimators.record import run_record, with_input_arrays
from dsrecon.estimators.session import FitMode, FitSession, data_hash
from dsrecon.io.recording import Recording
from dsrecon.io.runs import (CONFIG_FILE, MODEL_FILE, read_staged_config, read_teacher_cache, write_teacher_cache,
                             write_training_log)
from dsrecon.models.decoders import default_latent_dim
from dsrecon.models.noise import estimate as estimate_noise
from dsrecon.signal.kernels import Kernel
from dsrecon.training import checkpoint as ckpt
from dsrecon.training.prepare import prepare
from dsrecon.training.trainer import LOG_COLUMNS, Trainer

LOG_DESCRIPTION = ("dsrecon training log: one row per epoch. val_D_stsp / val_D_H compare a >= 10 000-step free run (started after the "
                   "training split) with all observed frames (training head + held-out tail); binned D_stsp there uses at most "
                   "(n_frames/2)^(1/N) bins. NaN between validations.")


class ConvSSM(ConvSSMParams, FittedConvSSM):
    """A convolutional state-space model trained with generalized teacher forcing.

    The keyword arguments are every option of `dsrecon fit`, with its defaults
    (`dsrecon.options.ModelOptions` and `TrainOptions`): backend (`dsrecon backends`), latent_dim M
    (default N, at least 3), hidden_dim L, kernel (spm|glover|calcium|none|path; default by
    modality), decoder (identity|affine|regressor), backend_options (the backend's own options,
    e.g. {"pwl_units": 2}), seed, device (auto|cpu|cuda), epochs, alpha, sequence_length (default
    by the kernel length and the data), …. They are stored as given and never rewritten (scikit-learn
    style: `get_params`, `set_params`, `sklearn.base.clone`); the derived defaults are resolved once
    by `resolved` (the fit's copy is ``resolved_``), and what is learned ends in ``_``.
    """

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
            recs, inputs = with_input_arrays(recs, inputs), None
        self.validate()
        session = FitSession(run_dir, resume=resume, overwrite=overwrite, progress=progress, log=log)
        session.run(SingleFit(self, recs, inputs, None if run_dir is None else Path(run_dir)))
        if session.committed is not None:
            self.run_dir_ = session.committed
        return self

    def plan(self, recs: list[Recording], inputs: list[str] | None = None, log=None) -> tuple["ConvSSM", Kernel, dict]:
        """What a fit of ``recs`` would be, before any training: the resolved model (kernel, sequence
        length and device derived here, once), its kernel, and the config.json it would write (the
        record `dsrecon.io.runs.differences` compares for --resume and for a cohort rerun)."""
        spec = self.resolved(recs, log)
        kern = spec.kernel_for(recs[0].tr)
        return spec, kern, run_record(spec, recs, kern, data_hash(recs), inputs)

    # ---------------------------------------------------------------- persistence
    def save(self, run_dir: str | Path, rows: list[dict] | None = None) -> None:
        run = Path(run_dir)
        run.mkdir(parents=True, exist_ok=True)
        ckpt.save_tensors(run / MODEL_FILE, self._net().state_dict(), metadata={"format": "dsrecon-run/1"})
        if rows is not None:
            write_training_log(run, rows, LOG_COLUMNS, LOG_DESCRIPTION, self.seed)
        write_json_atomic(run / CONFIG_FILE, self.config_)


class SingleFit(FitMode):
    """The steps of one model's fit (`FitMode`): one net, the `Trainer`, config.json."""

    def __init__(self, model: ConvSSM, recs: list[Recording], inputs, target: Path | None):
        self.model, self.recs, self.inputs, self.target = model, recs, inputs, target

    def plan(self, log) -> dict:
        self.spec, self.kern, record = self.model.plan(self.recs, self.inputs, log)
        return record

    def announce(self, log) -> None:
        r0 = self.recs[0]
        log(f"fitting {self.spec.backend} on {len(self.recs)} recording(s), {r0.n_regions} regions, "
            f"{sum(r.n_frames for r in self.recs)} frames, TR {r0.tr:g} s, kernel {self.spec.kernel} ({self.kern.K} taps)"
            + (f" → {self.target}" if self.target is not None else ""))

    def adopt(self, staging: Path, record: dict, target: Path, log) -> None:
        """The staged run, after the same compatibility check as any resume."""
        self.check_resume(read_staged_config(staging), record, target)
        m = ConvSSM.from_run(staging)
        self.model.net_, self.model.config_ = m.net_, m.config_
        if log is not None:
            log(f"note: the fit had finished; its run was waiting in {staging.name} and is now put in place at {target}")

    def read_teachers(self, run: Path, target):
        return read_teacher_cache(run, len(self.recs), target)

    def memory(self) -> dict:
        s, N = self.spec, self.recs[0].n_regions
        return dict(n_frames=[r.n_frames for r in self.recs], n_regions=N, latent_dim=s.latent_dim or default_latent_dim(N, s.decoder),
                    hidden_dim=s.hidden_dim, kernel_taps=self.kern.K, opts=s.train_options, device=s.device, source=self.recs[0].source)

    def prepare(self, teachers):
        return prepare(self.recs, self.kern, self.spec.test_fraction, teacher_cache=teachers)

    def seed(self) -> int:
        return self.spec.seed

    def epochs(self) -> int:
        return self.spec.epochs

    def build(self, data) -> list:
        n_reg = 0 if self.recs[0].regressors is None else self.recs[0].regressors.shape[1]
        gen = torch.Generator().manual_seed(self.spec.seed)
        self.net = self.spec.build_net(len(data.names), n_reg, self.kern, gen, len(data.input_names)).fit_axes(data.train).to(self.spec.device)
        return [self.net]

    def built(self, record: dict, nets: list, data) -> None:
        record.update({"normalisation": data.norm.to_dict(), "data": data.info, "latent_dim": self.net.M,
                       "backend_kwargs": self.net.dynamics.extra_config()})

    def engine(self, nets, data, run, progress, log):
        self.messages: list[str] = []  # the fit's own notes and warnings, kept in config.json for the report

        def keep(msg: str) -> None:
            self.messages.append(str(msg))
            if log is not None:
                log(msg)

        return Trainer(nets, data, self.spec.train_options, [self.spec.seed], run, progress, keep)

    def write_teachers(self, run: Path, data) -> None:
        write_teacher_cache(run, data, self.recs)

    def finish(self, trainer, summaries, data, record, run) -> None:
        summary = summaries[0]
        summary.pop("failed")  # a plain fit that fails raises
        net = self.net.cpu()  # generation and analysis are sequential: they run on the CPU
        # initial state for later simulation: the last reliable teacher frame of the training data
        net.register_buffer("z_init", net.state_from_last_reliable(data.train[-1].teacher).detach()[0])
        net.set_noise(estimate_noise(net, data.train))  # what the map and kernel leave unexplained (stochastic runs)
        record.update({"status": "complete", "training": summary, "fit_messages": self.messages, "noise": None if net.noise is None else net.noise.summary()})
        m = self.model
        m.net_, m.config_, m.run_dir_, m.resolved_ = net, record, run, self.spec
        m.history_, m.data_ = trainer.members[0].rows, data

    def save(self, run: Path) -> None:
        self.model.save(run, self.model.history_)


#: the constructor's keyword arguments and defaults: every fit option (model, then training)
