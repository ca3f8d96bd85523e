"""The one fit skeleton every fit mode runs (`FitSession`).

A fit, whatever its mode (one model `convssm`, K members `ensemble`, a group of subjects `group`):
stage the run (`dsrecon.io.runs.StagedRun`: lock, staging directory, commit) → a finished staged
run is adopted → plan the run record (options resolved once, the data hash over data, masks and
task inputs: `data_hash`) → on --resume, the staged record must match (`check_resumable`) and the
teacher cache is read back → refuse what cannot fit in memory → prepare the data → seed → build →
write the teacher cache, the record (status "training") and dataset_description.json, or load the
checkpoint → run the engine → translate an interrupt (`interrupted`) → initial states, record →
save → commit.

The session knows no estimator: a mode is a `FitMode` object whose methods are the steps that
differ (what to build, which engine, what to save).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from dsrecon._util import array_hash, seed_everything
from dsrecon.errors import FitInterrupted, Terminated
from dsrecon.io.recording import Recording
from dsrecon.io.runs import (CONFIG_FILE, StagedRun, check_resumable, read_staged_config, resume_checkpoint, write_config,
                             write_run_description)
from dsrecon.training.hooks import InjectedKill
from dsrecon.training.memory import check_fit_memory


def data_hash(recs: list[Recording]) -> str:
    """The hash of what a fit learns from: the recordings' data, their masks and their external inputs
    (task designs: changed events refit a cohort subject and refuse --resume, in every fit mode)."""
    return array_hash(*[r.data for r in recs], *[r.mask for r in recs], *[r.inputs for r in recs if r.inputs is not None])


def interrupted(trainer, e: KeyboardInterrupt, run: Path | None, epochs: int) -> BaseException:
    """The FitInterrupted of a fit stopped by SIGINT/SIGTERM: the epoch reached and the checkpoint kept."""
    c = trainer.checkpoint_on_disk()
    return FitInterrupted(
        f"interrupted at epoch {trainer.epoch} of {epochs}; "
        + (f"the checkpoint of epoch {c} is kept (continue with --resume)" if c is not None and run is not None
           else "no checkpoint had been written yet"),
        signal="SIGTERM" if isinstance(e, Terminated) else "SIGINT", epoch=trainer.epoch, checkpoint_epoch=c,
        staging=None if run is None else str(run))


class FitMode:
    """The steps of a fit that differ between modes; `FitSession` calls them in order.

    ``record_file``: the run record a resume compares (config.json; ensemble.json for an
    ensemble); ``describe``: write dataset_description.json at the top of the staged run."""

    record_file = CONFIG_FILE
    describe = True

    def plan(self, log) -> dict:
        """The run record a fresh fit writes (options resolved once); a resume compares it."""
        raise NotImplementedError

    def announce(self, log) -> None:
        """The fit's first line in the log (what is fitted on what), once planned."""

    def check_resume(self, old: dict, new: dict, target: Path | None) -> None:
        """Refuse a resume whose staged record ``old`` differs from ``new`` (the data, the options)."""
        check_resumable(target, old, new)

    def adopt(self, staging: Path, record: dict, target: Path, log) -> None:
        """A --resume that found the fit finished in staging (its commit had failed): check, take it."""
        raise NotImplementedError

    def read_teachers(self, run: Path, target: Path | None):
        """The teacher cache of an interrupted fit (None: none)."""
        return None

    def memory(self) -> dict:
        """The keyword arguments of `check_fit_memory`."""
        raise NotImplementedError

    def prepare(self, teachers):
        raise NotImplementedError

    def seed(self) -> int:
        raise NotImplementedError

    def build(self, data) -> list:
        """The networks, built after `seed` seeded every generator."""
        raise NotImplementedError

    def built(self, record: dict, nets: list, data) -> None:
        """Complete the record with what building settled (the data's normalisation, the built sizes)."""

    def engine(self, nets: list, data, run: Path | None, progress, log):
        """The trainer (`dsrecon.training`) that fits ``nets``."""
        raise NotImplementedError

    def epochs(self) -> int:
        raise NotImplementedError

    def write_teachers(self, run: Path, data) -> None:
        raise NotImplementedError

    def finish(self, trainer, summaries: list[dict], data, record: dict, run: Path | None):
        """After training: initial states, noise, the record; returns the fit's result."""
        raise NotImplementedError

    def save(self, run: Path) -> None:
        raise NotImplementedError


class FitSession:
    """One fit into ``run_dir`` (or in memory: None), staged, locked and resumable (module docstring)."""

    def __init__(self, run_dir: str | Path | None, *, resume: bool = False, overwrite: bool = False,
                 progress: Callable[[int, int, str], None] | None = None, log: Callable[[str], None] | None = None):
        self.target = None if run_dir is None else Path(run_dir)
        self.resume, self.overwrite, self.progress, self.log = resume, overwrite, progress, log
        self.committed: Path | None = None

    def run(self, mode: FitMode):
        """Fit ``mode``; returns its `finish` result (the run's path: ``self.committed``)."""
        if self.target is None:
            return self._fit(mode, None, True)
        with StagedRun(self.target, resume=self.resume, force=self.overwrite, log=self.log) as st:
            if st.complete:  # the fit had finished, its commit had not: check the options, put it in place
                out = mode.adopt(st.dir, mode.plan(self.log), self.target, self.log)
            else:
                out = self._fit(mode, st.dir, st.fresh)
            self.committed = st.commit()
        return out

    def _fit(self, mode: FitMode, run: Path | None, fresh: bool):
        """The skeleton: train ``mode`` into ``run`` (the staging directory, or None)."""
        record = mode.plan(self.log)
        if self.log is not None:
            mode.announce(self.log)
        teachers = None
        if not fresh:
            mode.check_resume(read_staged_config(run, mode.record_file), record, self.target)
            teachers = mode.read_teachers(run, self.target)
        check_fit_memory(**mode.memory())  # refuse at once what cannot fit in memory
        data = mode.prepare(teachers)
        seed_everything(mode.seed())
        nets = mode.build(data)
        mode.built(record, nets, data)
        trainer = mode.engine(nets, data, run, self.progress, self.log)
        if run is not None:
            if fresh:
                mode.write_teachers(run, data)
                write_config(run, {**record, "status": "training"}, mode.record_file)
                if mode.describe:
                    write_run_description(run)
            else:
                resume_checkpoint(trainer, run)
        try:
            summaries = trainer.fit()
        except InjectedKill:
            raise
        except KeyboardInterrupt as e:
            raise interrupted(trainer, e, run, mode.epochs()) from None
        out = mode.finish(trainer, summaries, data, record, run)
        if run is not None:
            try:
                mode.save(run)
            except KeyboardInterrupt as e:  # while writing the run: the checkpoint is still there
                raise interrupted(trainer, e, run, mode.epochs()) from None
        return out
