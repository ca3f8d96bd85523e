"""Staging and the commit: a fit builds its run in ``PARENT/.NAME.staging`` (`StagedRun`) and renames
it into place only when the run is complete; ``--resume`` continues from the staged checkpoint
(`resume_checkpoint`).

The commit is a small journal, so that a kill at any moment of it never loses a run:
``PARENT/.NAME.commit`` is written before the first rename of a ``--force`` commit (old run →
``PARENT/.NAME.replaced``, staging → target, old run removed, journal removed), and every command
that opens the target first completes the commit or keeps the old run (`recover_commit`). Tests
stop a commit at a step with `inject_commit_faults`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dsrecon._util import signals_deferred
from dsrecon.errors import DsreconError
from dsrecon.io.run_dir import (CHECKPOINT_DIR, CONFIG_FILE, MEMBER_DIR, check_target, foreign_files, foreign_phrase, is_complete,
                                is_run, journal_path, replaced_path, run_target, staging_path, write_manifest)
from dsrecon.io.run_lock import RunLock

_log = logging.getLogger("dsrecon")


def _abs(p: Path) -> Path:
    return Path(os.path.abspath(Path(p).expanduser()))


@dataclass
class CommitFaults:
    """Faults a test injects into a commit (never set by a user): at step ``at`` (`COMMIT_STEPS`),
    call ``action`` (default: SIGKILL this process, as a power cut would stop it)."""

    at: str | None = None
    action: Callable[[], None] | None = None


#: the moments of a commit a test can stop it at: before it starts (the run complete in staging);
#: the journal written; the old run moved aside; the new run in place; the old run removed
COMMIT_STEPS = ("before_commit", "journal_written", "old_moved", "new_in_place", "old_removed")
_COMMIT_FAULTS = CommitFaults()


@contextlib.contextmanager
def inject_commit_faults(at: str, action: Callable[[], None] | None = None):
    """``with inject_commit_faults("old_moved"): ...`` (tests only): stop a commit at that step."""
    global _COMMIT_FAULTS
    if at not in COMMIT_STEPS:
        raise ValueError(f"unknown commit step {at!r}; one of {', '.join(COMMIT_STEPS)}")
    old, _COMMIT_FAULTS = _COMMIT_FAULTS, CommitFaults(at, action)
    try:
        yield _COMMIT_FAULTS
    finally:
        _COMMIT_FAULTS = old


def _fault(step: str) -> None:
    if _COMMIT_FAULTS.at == step:
        if _COMMIT_FAULTS.action is not None:
            _COMMIT_FAULTS.action()
        else:
            os.kill(os.getpid(), signal.SIGKILL)


def remove_staging(d: Path) -> None:
    """Remove a staging directory so that no reader ever sees part of it: renamed first (atomic),
    then deleted. A process killed during the deletion (its lock then released by the kernel)
    leaves ``.NAME.staging.removing``, which the next fit of that target deletes under its lock;
    an in-place ``rmtree`` cut short left a staging directory that still looked resumable (its
    checkpoint and teacher index there, a teacher table gone)."""
    if not d.exists():
        return
    trash = d.with_name(d.name + ".removing")
    if trash.exists() or trash.is_symlink():  # never deleted here: a name of our own beside it instead
        trash = d.with_name(f"{d.name}.removing-{os.getpid()}")
    os.rename(d, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _fsync_dir(d: Path) -> None:
    """Make the renames in directory d durable (a power cut after the commit keeps them)."""
    try:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _legacy_replaced(real: Path) -> list[Path]:
    """``PARENT/.NAME.replaced-PID``: the old run moved aside by a version without the journal."""
    return sorted(real.parent.glob(f".{glob_escape(real.name)}.replaced-*")) if real.parent.is_dir() else []


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def commit_pending(target: Path) -> bool:
    """A commit of ``target`` was cut short: its journal, or an old run moved aside, is still there."""
    real = run_target(target)
    return journal_path(real).exists() or replaced_path(real).exists() or bool(_legacy_replaced(real))


def recover_commit(target: Path, log: Callable[[str], None] | None = None) -> bool:
    """Complete, or undo, a commit of ``target`` that a kill cut short (`StagedRun.commit`), so that
    the target holds a complete run again: the new one when it had been staged completely, else the
    old one. Takes the run's lock (a commit in progress in a live process is left alone). Returns
    whether anything was done; says what in one note."""
    if not commit_pending(target):
        return False
    say = log if log is not None else (lambda s: _log.warning(s))
    try:
        lock = RunLock(target).acquire()
    except DsreconError:
        return False  # a live process holds it: its commit is in progress (readers see the run it leaves)
    try:
        return _recover_locked(Path(target), say)
    except OSError as e:
        raise DsreconError(f"{target}: cannot finish its commit that was cut short ({e.strerror or e}: {e.filename or ''})") from None
    finally:
        lock.release()


def _recover_locked(target: Path, say: Callable[[str], None]) -> bool:
    real = run_target(target)
    journal, old, staged = journal_path(real), replaced_path(real), staging_path(real)
    legacy = _legacy_replaced(real)
    if not (journal.exists() or old.exists() or legacy):
        return False
    note = None
    with signals_deferred():
        if not real.exists():
            if is_complete(staged):  # cut between moving the old run aside and putting the new one in place
                os.replace(staged, real)
                note = f"note: finished putting the new run in place at {target} (its commit was cut short)"
            elif old.exists() and is_run(old):
                os.replace(old, real)
                note = f"note: restored the previous run at {target} from {old.name} (a replacement was cut short)"
            elif len(legacy) == 1 and is_run(legacy[0]):
                os.replace(legacy[0], real)
                note = f"note: restored the previous run at {target} from {legacy[0].name} (a replacement was cut short)"
                legacy = []
            _fsync_dir(real.parent)
        if real.exists():  # the run in place is complete: what was moved aside is the replaced run
            for o in [old, *legacy]:
                if o.exists():
                    shutil.rmtree(o, ignore_errors=True)
                    note = note or f"note: finished the commit of {target} that was cut short (removed {o.name}, the run it replaced)"
    redo = journal.exists() and real.exists() and not old.exists() and is_complete(staged)
    if journal.exists():
        journal.unlink()
        _fsync_dir(real.parent)
        note = note or (None if redo else f"note: finished the commit of {target} that was cut short")
    if redo:  # cut after the journal, before the first rename: the new run is complete, the commit is done now
        foreign = foreign_files(real)
        if foreign:
            note = (f"note: the replacement of {target} was cut short before it began and {foreign_phrase(target, foreign)}; "
                    f"the previous run is kept, the new one waits in {staged.name} (--resume puts it in place)")
        else:
            _replace_run(real, staged)
            note = f"note: finished replacing {target} with the new run (its commit was cut short before it began)"
    if note:
        say(note)
    return True


def _replace_run(t: Path, staged: Path) -> None:
    """Replace run directory t by the complete run ``staged``, journaled (module docstring)."""
    from dsrecon._util import to_json

    journal, old = journal_path(t), replaced_path(t)
    if old.exists():  # a previous commit's leftover (recovered before; here only if it reappeared)
        raise DsreconError(f"{old}: exists; dsrecon keeps the run it replaces there during a commit: move it away")
    with signals_deferred():  # the journal and the renames are not cut apart by Ctrl-C / SIGTERM
        tmp = journal.with_name(journal.name + ".tmp")
        with open(tmp, "w") as f:
            f.write(to_json({"format": "dsrecon-commit/1", "target": t.name, "staging": staged.name, "old": old.name,
                             "pid": os.getpid(), "started": time.time()}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, journal)
        _fsync_dir(t.parent)
        _fault("journal_written")
        os.replace(t, old)
        _fault("old_moved")
        try:
            os.replace(staged, t)
        except BaseException:
            os.replace(old, t)
            journal.unlink(missing_ok=True)
            raise
        _fsync_dir(t.parent)
        _fault("new_in_place")
    shutil.rmtree(old, ignore_errors=True)
    _fault("old_removed")
    journal.unlink(missing_ok=True)
    _fsync_dir(t.parent)


class StagedRun:
    """Where a fit writes (``.dir``, the staging directory) and how it ends.

    Use as ``with StagedRun(target, resume=..., force=...) as st:``; call ``st.commit()`` when the
    run is complete. Leaving the block by an exception removes the staging directory, except for
    KeyboardInterrupt (SIGINT; SIGTERM is raised as its subclass by the CLI), which keeps it for
    ``--resume``, and a commit that could not be made (files appeared in the target, the parent
    became read-only), which keeps the complete new run there and says so; a failed resume keeps
    the checkpoint it continued. The lock is released either way.

    ``complete``: a ``--resume`` found a finished run in staging (its commit had failed): the fit
    only has to check its options and commit it (`finish_staged`)."""

    def __init__(self, target: str | os.PathLike, *, resume: bool = False, force: bool = False,
                 log: Callable[[str], None] | None = None):
        self.target = Path(target)
        self.real = run_target(self.target)
        self.resume, self.force = resume, force
        self.log = log or (lambda s: None)
        self.dir = staging_path(self.real)
        self.lock = RunLock(self.target, self.log)
        self.committed = False
        self.keep = False  # a complete run that could not be committed stays in staging
        self.fresh = True
        self.complete = False
        self._made_parents: list[Path] = []

    def __enter__(self) -> "StagedRun":
        check_target(self.target, resume=self.resume, force=self.force)
        p = self.real.parent
        while not p.exists():
            self._made_parents.append(p)
            p = p.parent
        self.lock.acquire()
        try:
            _recover_locked(self.target, self.log)
            check_target(self.target, resume=self.resume, force=self.force)  # again, now that we hold the lock
            left = self.dir.with_name(self.dir.name + ".removing")
            if not left.is_symlink() and self._looks_staged(left):  # a removal cut short by a kill (remove_staging)
                shutil.rmtree(left, ignore_errors=True)
            if self.resume:
                self.fresh = False
                self.complete = is_complete(self.dir)
            elif self.dir.exists():
                if not self._looks_staged(self.dir):
                    raise DsreconError(f"{self.dir}: exists and was not written by dsrecon; move it away")
                what = ("the complete run an earlier fit could not put in place" if is_complete(self.dir)
                        else "the staging directory of an earlier, interrupted fit")
                remove_staging(self.dir)
                self.log(f"note: removed {what} ({self.dir.name}); use --resume to continue such a fit instead")
            if self.fresh:
                self.dir.mkdir()
        except BaseException:
            self._cleanup_lock()
            raise
        return self

    @staticmethod
    def _looks_staged(d: Path) -> bool:
        return d.is_dir() and (not any(d.iterdir()) or is_run(d) or (d / CHECKPOINT_DIR).exists()
                               or (d / "teacher").exists() or any(MEMBER_DIR.match(p.name) for p in d.iterdir()))

    def _kept(self, why: str) -> DsreconError:
        self.keep = True
        return DsreconError(f"{self.target}: {why}; the new run is complete and kept in {self.dir}: "
                            "run the same command with --resume to put it in place")

    def commit(self) -> Path:
        """Put the staged run in place: onto a missing or empty target one rename; over a previous
        run (--force, or a resumed --force fit) a journaled replacement (module docstring). Until its
        journal is written the old run stays complete and loadable; after it, a kill at any point is
        completed by the next command on the target (`recover_commit`)."""
        t = self.real
        write_manifest(self.dir)
        _fault("before_commit")
        try:
            if t.is_dir() and any(t.iterdir()):
                foreign = foreign_files(t)
                if foreign:  # appeared during the fit
                    raise self._kept(f"{foreign_phrase(self.target, foreign)}, which appeared during the fit; move them away")
                if replaced_path(t).exists():  # in the way of the commit (recovered at the start: put there since)
                    raise self._kept(f"{replaced_path(t)} is in the way (dsrecon moves the run it replaces there); move it away")
                _replace_run(t, self.dir)
            else:
                with signals_deferred():
                    os.replace(self.dir, t)  # onto a missing or empty directory
                    _fsync_dir(t.parent)
        except OSError as e:
            raise self._kept(f"cannot put the new run in place ({e.strerror or e}: {e.filename or t.parent})") from None
        self.committed = True
        return _abs(self.target)

    def __exit__(self, exc_type, exc, tb) -> None:
        failed = not self.committed and not self.keep and not (exc_type is not None and issubclass(exc_type, KeyboardInterrupt))
        try:
            # interrupted: keep the staging directory and its checkpoint for --resume; a resume that
            # fails (options differ, bad data) keeps the checkpoint it was given as well
            if failed and self.fresh:
                remove_staging(self.dir)
        finally:
            self._cleanup_lock()
        if failed or self.committed:
            for p in self._made_parents:  # directories this fit created and left empty
                try:
                    p.rmdir()
                except OSError:
                    break

    def _cleanup_lock(self) -> None:
        self.lock.release()


def recorded_sources(run: Path) -> list[Path]:
    """The data files a run was fitted on, as its config.json records them (every subject's for a
    group run): their real paths (``input_paths``); for a run from before they were recorded, the
    recorded names, relative to the current directory (as `dsrecon evaluate` reads them). A missing
    or damaged config.json records nothing (reading the run refuses it)."""
    try:
        cfg = json.loads((Path(run) / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(cfg, dict):
        return []
    out: list[Path] = []
    for c in [cfg, *[s for s in cfg.get("subjects") or [] if isinstance(s, dict)]]:
        paths = c.get("input_paths")
        if not isinstance(paths, list):
            prov = c.get("provenance") if isinstance(c.get("provenance"), list) else []
            paths = [p.get("source") for p in prov if isinstance(p, dict)] + list(c.get("inputs") or [])
        paths += list(c.get("input_files") or [])
        out += [Path(p) for p in paths if isinstance(p, str) and p]
    return list(dict.fromkeys(out))


def read_staged_config(staging: Path, name: str = CONFIG_FILE) -> dict:
    """The run record of the staged fit a --resume continues; a missing or damaged one is one line
    naming it (the fit can only start over)."""
    p = Path(staging) / name
    again = "the interrupted fit cannot be resumed: run the command without --resume to start over"
    try:
        cfg = json.loads(p.read_text())
    except FileNotFoundError:
        raise DsreconError(f"{p}: missing; {again}") from None
    except (OSError, ValueError) as e:
        raise DsreconError(f"{p}: damaged ({e.__class__.__name__}: {_first_line(e)}); {again}") from None
    if not isinstance(cfg, dict):
        raise DsreconError(f"{p}: damaged (not a JSON object); {again}")
    return cfg


def resume_checkpoint(trainer, staging: Path) -> None:
    """``trainer.load_checkpoint()`` for a --resume, checked: a checkpoint that cannot be read or
    does not fit the model the run record describes (an edited config.json) is one line naming it."""
    where = Path(staging) / CHECKPOINT_DIR
    again = "the interrupted fit cannot be resumed: run the command without --resume to start over"
    want = {"flat": tuple(trainer.stack.flat.shape), "opt.m": tuple(trainer.opt.m.shape)}
    try:
        trainer.load_checkpoint()
    except DsreconError as e:
        raise DsreconError(f"{e}" if str(where) in str(e) else f"{where}: {e}") from None
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, RuntimeError) as e:
        what = f"no key {e}" if isinstance(e, KeyError) else f"{e.__class__.__name__}: {_first_line(e)}"
        raise DsreconError(f"{where}: damaged ({what}); {again}") from None
    have = {"flat": tuple(trainer.stack.flat.shape), "opt.m": tuple(trainer.opt.m.shape)}
    for k in want:
        if want[k] != have[k]:
            raise DsreconError(f"{where}: tensor '{k}' has shape {have[k]}, the model {staging / CONFIG_FILE} describes needs "
                               f"{want[k]} (was config.json edited?); {again}")


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else e.__class__.__name__


