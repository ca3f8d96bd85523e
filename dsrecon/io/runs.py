"""The run directory: what dsrecon owns, and how it is written without touching anything else.

A fit never writes into its target directly. It builds the run in a staging directory beside the
target, ``PARENT/.NAME.staging``, and renames it into place only when the run is complete:

* a failure (bad data, divergence, an exception) removes the staging directory and nothing else;
* an interruption (SIGINT, SIGTERM, ``kill -9``) keeps it, with its checkpoint, so ``--resume``
  continues from it; a later fit without ``--resume`` clears it, with a note;
* ``--force`` replaces a previous run only after the new one has succeeded: until the final
  rename the old run stays complete and loadable;
* an existing target is used only when it is empty or is a dsrecon run holding nothing but run
  files; anything else (``-o .`` over the user's inputs) is refused, naming what is there.

One process at a time writes a run: ``PARENT/.NAME.lock`` is held with ``flock`` for the whole fit.
A second process exits naming the holder; a lock left by a dead process (``kill -9``) is taken
over with a note (the kernel releases ``flock`` locks of dead processes).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Callable

from dsrecon._util import signals_deferred
from dsrecon.errors import DsreconError

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
LOG_FILE = "training_log.tsv"
TEACHER_DIR = "teacher"
ENSEMBLE_FILE = "ensemble.json"
CHECKPOINT_DIR = "checkpoint"
#: names dsrecon writes into a run directory (single fit, ensemble, cohort member, report)
RUN_ENTRIES = frozenset({
    MODEL_FILE, CONFIG_FILE, LOG_FILE, "training_log.json", TEACHER_DIR, CHECKPOINT_DIR,
    "dataset_description.json", "cohort_metrics.json", "report.html", "figures", ENSEMBLE_FILE, "best",
    "subject_features.tsv", "subject_features.json",
})
_MEMBER = re.compile(r"^member-\d+$")


def staging_path(target: Path) -> Path:
    target = _abs(target)
    return target.with_name(f".{target.name}.staging")


def lock_path(target: Path) -> Path:
    target = _abs(target)
    return target.with_name(f".{target.name}.lock")


def _abs(p: Path) -> Path:
    return Path(os.path.abspath(Path(p).expanduser()))


def is_run(d: Path) -> bool:
    """A dsrecon run (single fit or ensemble), recognised by its config.json / ensemble.json."""
    return d.is_dir() and ((d / CONFIG_FILE).is_file() or (d / ENSEMBLE_FILE).is_file())


def foreign_entries(d: Path) -> list[str]:
    """Entries of directory d that dsrecon does not write into a run."""
    return sorted(p.name for p in d.iterdir() if p.name not in RUN_ENTRIES and not _MEMBER.match(p.name))


def _listing(names: list[str], n: int = 5) -> str:
    head = ", ".join(names[:n])
    return head + (f" and {len(names) - n} more" if len(names) > n else "")


def has_checkpoint(d: Path) -> bool:
    return (d / CHECKPOINT_DIR / "state.json").is_file()


def resumable(d: Path) -> bool:
    """A staging directory a --resume can continue: a checkpoint, the run record and the teacher
    cache's index, each written whole (the index before the record, the record before the first
    checkpoint). A directory missing one of them was cut short while it was being written or
    removed (a worker killed in the middle of cleaning up), and is started over instead."""
    return has_checkpoint(d) and (d / CONFIG_FILE).is_file() and (d / TEACHER_DIR / "index.json").is_file()


def check_target(target: Path, *, resume: bool = False, force: bool = False) -> None:
    """Refuse an output that cannot become a run, before any work (no side effects).

    Raises DsreconError naming the directory and the problem."""
    t = Path(target)
    ta = _abs(t)
    if t.exists() and not t.is_dir():
        raise DsreconError(f"{t}: exists and is not a directory; -o names the run directory to create")
    parent = ta.parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise DsreconError(f"{t}: cannot create the run directory: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise DsreconError(f"{t}: cannot write the run directory: {probe} is not writable")
    staged = has_checkpoint(staging_path(ta))
    if t.is_dir():
        entries = list(t.iterdir())
        if not entries:
            if resume and not staged:
                raise DsreconError(f"{t}: nothing to resume (no checkpoint found)")
            return
        if not is_run(t):
            raise DsreconError(f"{t}: not empty and not a dsrecon run (holds {_listing(sorted(p.name for p in entries))}); "
                               "give -o a new or empty directory")
        foreign = foreign_entries(t)
        if foreign and (force or resume):
            raise DsreconError(f"{t}: holds files that are not part of a dsrecon run ({_listing(foreign)}); "
                               "dsrecon will not replace them: move them away or choose another -o")
        if resume:
            if not staged:
                if _status(t) == "complete":
                    raise DsreconError(f"{t}: the run is complete, there is nothing to resume (use --force to fit it again)")
                raise DsreconError(f"{t}: nothing to resume (no checkpoint of an interrupted fit found)")
            return
        if not force:
            raise DsreconError(f"{t}: run directory already exists; use --resume to continue it or --force to replace it")
        return
    if resume and not staged:
        raise DsreconError(f"{t}: nothing to resume (no checkpoint found)")


def _status(d: Path) -> str | None:
    try:
        return json.loads((d / CONFIG_FILE).read_text()).get("status")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


class RunLock:
    """An exclusive ``flock`` on PARENT/.NAME.lock; the file names the holder (pid, host, command)."""

    def __init__(self, target: Path, log: Callable[[str], None] | None = None):
        self.target = Path(target)
        self.path = lock_path(target)
        self.log = log or (lambda s: None)
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                holder = _read_holder(fd)
                os.close(fd)
                raise DsreconError(f"{self.target}: another dsrecon process is writing this run ({holder}); "
                                   "wait for it to finish or choose another -o") from None
            try:  # the file we locked must still be the one at the path (a releasing holder unlinks it)
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            if not _is_our_lock(fd):  # a file of that name that dsrecon did not write: never overwrite it
                os.close(fd)
                raise DsreconError(f"{self.path}: exists and was not written by dsrecon (it is where dsrecon keeps the "
                                   f"lock of {self.target.name}); move it away")
            old = _read_holder(fd, raw=True)
            if old:
                self.log(f"note: took over the lock of {self.target} left by a process that is no longer running ({old})")
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                                     "command": " ".join(["dsrecon", *sys.argv[1:]])}).encode())
            os.fsync(fd)
            self.fd = fd
            return self
        raise DsreconError(f"{self.target}: could not take the lock {self.path}")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _is_our_lock(fd: int) -> bool:
    """The locked file is empty (just created) or holds a dsrecon holder record ({"pid": …})."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode(errors="replace").strip()
    except OSError:
        return False
    if not text:
        return True
    try:
        h = json.loads(text)
    except json.JSONDecodeError:
        return False
    return isinstance(h, dict) and "pid" in h


def _read_holder(fd: int, raw: bool = False) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode(errors="replace").strip()
    except OSError:
        return ""
    if not text:
        return "" if raw else "process unknown"
    try:
        h = json.loads(text)
    except json.JSONDecodeError:
        return text[:200]
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h.get("started", 0)))
    return f"process {h.get('pid')} on {h.get('host')}, since {when}"


class StagedRun:
    """Where a fit writes (``.dir``, the staging directory) and how it ends.

    Use as ``with StagedRun(target, resume=..., force=...) as st:``; call ``st.commit()`` when the
    run is complete. Leaving the block by an exception removes the staging directory, except for
    KeyboardInterrupt (SIGINT; SIGTERM is raised as its subclass by the CLI), which keeps it for
    ``--resume``; a failed resume keeps the checkpoint it continued. The lock is released either way."""

    def __init__(self, target: str | os.PathLike, *, resume: bool = False, force: bool = False,
                 log: Callable[[str], None] | None = None):
        self.target = Path(target)
        self.resume, self.force = resume, force
        self.log = log or (lambda s: None)
        self.dir = staging_path(self.target)
        self.lock = RunLock(self.target, self.log)
        self.committed = False
        self.fresh = True
        self._made_parents: list[Path] = []

    def __enter__(self) -> "StagedRun":
        check_target(self.target, resume=self.resume, force=self.force)
        parent = _abs(self.target).parent
        p = parent
        while not p.exists():
            self._made_parents.append(p)
            p = p.parent
        self.lock.acquire()
        try:
            check_target(self.target, resume=self.resume, force=self.force)  # again, now that we hold the lock
            if self.resume:
                self.fresh = False
            elif self.dir.exists():
                if not self._looks_staged(self.dir):
                    raise DsreconError(f"{self.dir}: exists and was not written by dsrecon; move it away")
                shutil.rmtree(self.dir)
                self.log(f"note: removed the staging directory of an earlier, interrupted fit ({self.dir.name}); "
                         "use --resume to continue such a fit instead")
            if self.fresh:
                self.dir.mkdir()
        except BaseException:
            self._cleanup_lock()
            raise
        return self

    @staticmethod
    def _looks_staged(d: Path) -> bool:
        return d.is_dir() and (not any(d.iterdir()) or is_run(d) or (d / CHECKPOINT_DIR).exists()
                               or (d / "teacher").exists() or any(_MEMBER.match(p.name) for p in d.iterdir()))

    def commit(self) -> Path:
        """Rename the staging directory into place (replacing an empty target or, with --force,
        the previous run, which stays intact until this moment)."""
        t = _abs(self.target)
        if t.is_dir() and any(t.iterdir()):
            foreign = foreign_entries(t)
            if foreign:  # appeared during the fit
                raise DsreconError(f"{self.target}: files that are not part of a dsrecon run appeared during the fit "
                                   f"({_listing(foreign)}); the new run is kept in {self.dir}")
            old = t.with_name(f".{t.name}.replaced-{os.getpid()}")
            with signals_deferred():  # the two renames are not cut apart by Ctrl-C / SIGTERM
                os.replace(t, old)
                try:
                    os.replace(self.dir, t)
                except BaseException:
                    os.replace(old, t)
                    raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.dir, t)  # onto a missing or empty directory
        self.committed = True
        return t

    def __exit__(self, exc_type, exc, tb) -> None:
        failed = not self.committed and not (exc_type is not None and issubclass(exc_type, KeyboardInterrupt))
        try:
            # interrupted: keep the staging directory and its checkpoint for --resume; a resume that
            # fails (options differ, bad data) keeps the checkpoint it was given as well
            if failed and self.fresh:
                shutil.rmtree(self.dir, ignore_errors=True)
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


# ------------------------------------------------------------------------ what a run directory holds
# config.json (or ensemble.json, whose "config" is member 0's) is the run's record; teacher/ caches
# the Wiener teacher signals of the training split, so that a resumed fit trains on exactly the
# same targets. One compatibility check (`differences`) decides both whether a fit may --resume a
# run and whether a cohort rerun may reuse a finished subject.


def read_config(run: Path, name: str = CONFIG_FILE) -> dict:
    """config.json (or ``name``) of a run; a missing or unreadable one is a DsreconError naming it."""
    p = Path(run) / name
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise DsreconError(f"{p}: cannot read the run record ({e.__class__.__name__}: {e})") from None


def write_config(run: Path, config: dict, name: str = CONFIG_FILE) -> None:
    from dsrecon._util import write_json_atomic

    write_json_atomic(Path(run) / name, config)


def _teacher_name(i: int, rec_source: str, taken: set[str]) -> str:
    """BIDS-derivative name keeping the source entities (sub, ses, task, run) + desc-teacher."""
    from dsrecon.io.results import bids_entities, derivative_name

    ents = bids_entities(rec_source)
    name = derivative_name(ents, "teacher", "timeseries", ".tsv") if ents else f"rec-{i:02d}_desc-teacher_timeseries.tsv"
    if name in taken:
        name = name.replace("_desc-teacher", f"_rec-{i:02d}_desc-teacher")
    taken.add(name)
    return name


def _teacher_dir(run: Path, subject: str | None) -> Path:
    return Path(run) / TEACHER_DIR / ("" if subject is None else f"sub-{subject}")


def _train_name(teacher_name: str) -> str:
    """The training split's table beside a teacher table: ``…_desc-teacher_…`` → ``…_desc-train_…``."""
    return teacher_name.replace("_desc-teacher", "_desc-train", 1)


def write_teacher_cache(run: Path, data, recs, subject: str | None = None) -> None:
    """teacher/ (a group run: teacher/sub-ID/): per recording the normalised teacher of its training
    split and the normalised training split itself (``…_desc-train_timeseries.tsv``, NaN at censored
    frames: what `evaluate` and `report` fit the linear baseline to and score as the floor), plus
    index.json ({"files": teachers, "train_files": training splits})."""
    from dsrecon._util import write_json_atomic
    from dsrecon.io.results import tsv_sidecar
    from dsrecon.io.tables import write_table

    import numpy as np

    d = _teacher_dir(run, subject)
    files: list[str] = []
    train_files: list[str] = []
    taken: set[str] = set()
    scale = "training statistics" if subject is None else "the subject's training statistics"
    for i, (p, r) in enumerate(zip(data.train, recs)):
        name = _teacher_name(i, r.source, taken)
        side = tsv_sidecar(r, units=f"normalised (z-scored with {scale})", columns=data.names,
                           Description="Wiener-deconvolved teacher signals of the training split; NaN = unreliable edge or censored frame",
                           Source=r.source)
        write_table(d / name, p.teacher, data.names, sidecar=side)
        files.append(name)
        x = np.where(p.mask[:, None], p.x, np.nan)
        side = tsv_sidecar(r, units=f"normalised (z-scored with {scale})", columns=data.names,
                           Description="the training split (the frames the model was fitted on), normalised; NaN = censored frame",
                           Source=r.source)
        write_table(d / _train_name(name), x, data.names, sidecar=side)
        train_files.append(_train_name(name))
    write_json_atomic(d / "index.json", {"files": files, "train_files": train_files, **({} if subject is None else {"subject": subject})})


def read_training_split(run: Path, subject: str | None = None) -> list | None:
    """The normalised training splits a run keeps in its teacher cache (float64 arrays, NaN at
    censored frames), or None when the run has none (written before they were kept)."""
    import numpy as np

    from dsrecon.io.tables import read_array

    d = _teacher_dir(run, subject)
    try:
        idx = json.loads((d / "index.json").read_text())
    except (OSError, ValueError):
        return None
    names = idx.get("train_files") if isinstance(idx, dict) else None
    if not names:
        return None
    return [read_array(d / f, allow_nan=True)[0].astype(np.float64) for f in names]


def read_teacher_cache(run: Path, n: int, target: Path | None = None, subject: str | None = None) -> list:
    """The cached teachers of a run's ``n`` recordings (float32 arrays, NaN where unreliable)."""
    import numpy as np

    from dsrecon.io.tables import read_array

    d = _teacher_dir(run, subject)
    idx = read_config(d, "index.json")
    if len(idx["files"]) != n:
        whose = "teacher cache" if subject is None else f"subject {subject}'s teacher cache"
        raise DsreconError(f"{target or run}: cannot resume: {whose} holds {len(idx['files'])} recordings, data has {n}")
    return [read_array(d / f, allow_nan=True)[0].astype(np.float32) for f in idx["files"]]


#: config keys a run must share with a new fit to be resumed or reused → the option that sets each
COMPATIBILITY_KEYS = {"data_hash": "the input data", "backend": "--backend", "backend_options": "--backend-option",
                      "latent_dim_requested": "--latent-dim", "hidden_dim": "--hidden-dim", "decoder": "--decoder", "kernel": "--kernel",
                      "seed": "--seed", "train_options": None, "input_names": "the input channels (--events / --inputs)"}


def differences(old: dict, new: dict) -> list[str]:
    """What differs between a run's config (``old``) and the config a fit would write (``new``), one
    phrase per option with both values ("--learning-rate: 0.001 in the run, 0.01 now"); the data
    first ("the input data differ (data hash … in the run, … now)"). Empty: the same fit."""
    from dsrecon.options import TrainOptions, train_fields

    internal = {f.name for f in train_fields() if not f.metadata.get("cli")}
    old = dict(old)
    if isinstance(old.get("train_options"), dict):
        # a run started by an older version lacks the options added since; they had their defaults
        old["train_options"] = {**_plain(TrainOptions().public()), **old["train_options"]}
    old.setdefault("input_names", [])  # a run from before external inputs: autonomous
    new = {**new, "input_names": new.get("input_names") or []}
    diffs: list[str] = []
    for key, opt in COMPATIBILITY_KEYS.items():
        a, b = _plain(old.get(key)), _plain(new.get(key))
        if _same(a, b):
            continue
        if key == "data_hash":
            diffs.append(f"the input data differ (data hash {str(a)[:12]} in the run, {str(b)[:12]} now)")
        elif key == "train_options" and isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if not _same(a.get(k), b.get(k)):
                    name = f"train option '{k}'" if k in internal else "--" + k.replace("_", "-")
                    diffs.append(f"{name}: {_show(a.get(k))} in the run, {_show(b.get(k))} now")
        elif key == "backend_options" and isinstance(a or {}, dict) and isinstance(b or {}, dict):
            a, b = a or {}, b or {}
            for k in sorted(set(a) | set(b)):
                if not _same(a.get(k), b.get(k)):
                    diffs.append(f"--{k.replace('_', '-')}: {_show(a.get(k))} in the run, {_show(b.get(k))} now")
        elif key == "kernel" and isinstance(a, dict) and isinstance(b, dict):
            diffs.append(_kernel_difference(a, b))
        else:
            diffs.append(f"{opt}: {_show(a)} in the run, {_show(b)} now")
    return diffs


def data_changed(diffs: list[str]) -> bool:
    return bool(diffs) and diffs[0].startswith("the input data differ")


def check_resumable(run: Path, old: dict, new: dict) -> None:
    """Refuse to resume with other data or options than the run was started with (`differences`)."""
    diffs = differences(old, new)
    if diffs:
        more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
        raise DsreconError(f"{run}: cannot resume: {'; '.join(diffs[:3])}{more}; resume with the run's data and options, "
                           "or start over with --force")


def _plain(v):
    return json.loads(json.dumps(v, default=str))


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _show(v) -> str:
    if v is None:
        return "not set"
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v) if isinstance(v, (str, int)) else json.dumps(v, sort_keys=True)


def _kernel_difference(a: dict, b: dict) -> str:
    """The kernel option that differs: its kind, a parameter (TR, --tau-decay, --tau-rise) or a file's taps."""
    if a.get("kind") != b.get("kind"):
        return f"--kernel: {a.get('kind')} in the run, {b.get('kind')} now"
    pa, pb = a.get("params") or {}, b.get("params") or {}
    for k, name in (("tr", "TR"), ("fs", "sampling rate"), ("tau_decay", "--tau-decay"), ("tau_rise", "--tau-rise"), ("path", "--kernel")):
        if not _same(pa.get(k), pb.get(k)):
            return f"{name}: {_show(pa.get(k))} in the run, {_show(pb.get(k))} now"
    return f"--kernel {a.get('kind')}: the taps differ ({len(a.get('taps') or [])} in the run, {len(b.get('taps') or [])} now)"
