"""The run directory: what dsrecon owns, and how it is written without touching anything else.

A fit never writes into its target directly. It builds the run in a staging directory beside the
target, ``PARENT/.NAME.staging``, and renames it into place only when the run is complete:

* a failure (bad data, divergence, an exception) removes the staging directory and nothing else;
* an interruption (SIGINT, SIGTERM, ``kill -9``) keeps it, with its checkpoint, so ``--resume``
  continues from it; a later fit without ``--resume`` clears it, with a note;
* ``--force`` replaces a previous run only after the new one has succeeded: until the final
  rename the old run stays complete and loadable;
* an existing target is used only when it is empty or is a dsrecon run holding nothing but what
  dsrecon wrote there: every file of a run is listed, with its size and sha256, in its
  ``manifest.json`` (written at the commit); a run from before manifests is checked, recursively,
  against the names dsrecon writes. Anything else (``-o .`` over the user's inputs, a figure the
  user saved in ``run/figures/``) is refused, naming the first such file.

The target is resolved to its real path first (`run_target`): ``-o run`` where ``run`` is a symbolic
link (to scratch space, empty or dangling) stages, locks and commits beside the link's target and
leaves the link in place, and two paths to one run share one lock.

The commit is a small journal, so that a kill at any moment of it (``kill -9``, a power cut) never
loses a run: ``PARENT/.NAME.commit`` is written before the first rename of a ``--force`` commit
(old run → ``PARENT/.NAME.replaced``, staging → target, old run removed, journal removed), and
every command that opens the target first completes the commit or keeps the old run
(`recover_commit`), with a one-line note.

One process at a time writes a run: ``PARENT/.NAME.lock`` is held with ``flock`` for the whole fit.
A second process exits naming the holder; a lock left by a dead process (``kill -9``) is taken
over with a note (the kernel releases ``flock`` locks of dead processes).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from dsrecon._util import signals_deferred
from dsrecon.errors import DsreconError

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
LOG_FILE = "training_log.tsv"
TEACHER_DIR = "teacher"
ENSEMBLE_FILE = "ensemble.json"
CHECKPOINT_DIR = "checkpoint"
MANIFEST_FILE = "manifest.json"
#: names dsrecon writes into a run directory (single fit, ensemble, cohort member, report)
RUN_ENTRIES = frozenset({
    MODEL_FILE, CONFIG_FILE, LOG_FILE, "training_log.json", TEACHER_DIR, CHECKPOINT_DIR,
    "dataset_description.json", "cohort_metrics.json", "report.html", ENSEMBLE_FILE, "best",
    "subject_features.tsv", "subject_features.json", MANIFEST_FILE,
})
#: files other commands write into a finished run (after its manifest): `dsrecon report`'s default
#: output and a cohort's metrics of the subject; accepted when their content shows they are ours
AFTER_COMMIT = ("report.html", "cohort_metrics.json")
_MEMBER = re.compile(r"^member-\d+$")
_TEACHER_TABLE = re.compile(r"_desc-(teacher|train)_timeseries\.(tsv|json)$")  # teacher/: a teacher table and its training split
_STATE_TENSORS = re.compile(r"^state-\d+-\d+\.safetensors$|^\.state.*\.tmp$")

_log = logging.getLogger("dsrecon")


def run_target(target: str | os.PathLike) -> Path:
    """The directory a run target names: ``~``, ``..`` and symbolic links resolved. A link (to a
    scratch directory, empty, existing or dangling) is followed and kept: the run is staged, locked
    and committed beside the link's target."""
    p = Path(os.path.expanduser(str(target)))
    real = Path(os.path.realpath(p))
    if real.is_symlink():  # realpath stops at a loop
        raise DsreconError(f"{target}: a symbolic link that does not resolve (a loop); give -o a directory")
    return real


def staging_path(target: Path) -> Path:
    t = run_target(target)
    return t.with_name(f".{t.name}.staging")


def lock_path(target: Path) -> Path:
    t = run_target(target)
    return t.with_name(f".{t.name}.lock")


def journal_path(target: Path) -> Path:
    t = run_target(target)
    return t.with_name(f".{t.name}.commit")


def replaced_path(target: Path) -> Path:
    t = run_target(target)
    return t.with_name(f".{t.name}.replaced")


def _abs(p: Path) -> Path:
    return Path(os.path.abspath(Path(p).expanduser()))


def is_run(d: Path) -> bool:
    """A dsrecon run (single fit or ensemble), recognised by its config.json / ensemble.json."""
    return d.is_dir() and ((d / CONFIG_FILE).is_file() or (d / ENSEMBLE_FILE).is_file())


def foreign_entries(d: Path) -> list[str]:
    """What in run directory d (recursively) dsrecon did not write there, as paths relative to d:
    `foreign_files` without the reasons."""
    return [rel for rel, _ in foreign_files(d)]


def _listing(names: list[str], n: int = 5) -> str:
    head = ", ".join(names[:n])
    return head + (f" and {len(names) - n} more" if len(names) > n else "")


# ------------------------------------------------------------------------ the manifest
def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _walk(d: Path) -> Iterator[tuple[str, Path]]:
    """(relative path, path) of every entry below d, parents before children, links not followed."""
    for root, dirs, files in os.walk(d, followlinks=False):
        dirs.sort()
        base = Path(root)
        for name in sorted(dirs) + sorted(files):
            p = base / name
            yield p.relative_to(d).as_posix(), p


def write_manifest(d: Path) -> None:
    """``d/manifest.json``: every file (size, sha256), directory and link dsrecon wrote below d."""
    from dsrecon._util import write_json_atomic

    files, links, dirs = {}, {}, []
    for rel, p in _walk(d):
        if rel == MANIFEST_FILE:
            continue
        if p.is_symlink():
            links[rel] = os.readlink(p)
        elif p.is_dir():
            dirs.append(rel)
        elif p.is_file():
            files[rel] = {"size": p.stat().st_size, "sha256": _sha256(p)}
    write_json_atomic(d / MANIFEST_FILE, {"format": "dsrecon-manifest/1", "files": files, "links": links, "dirs": dirs})


def _read_manifest(d: Path) -> dict | None:
    p = d / MANIFEST_FILE
    if not p.is_file() or p.is_symlink():
        return None
    try:
        m = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    ok = (isinstance(m, dict) and m.get("format") == "dsrecon-manifest/1" and isinstance(m.get("files"), dict)
          and isinstance(m.get("links", {}), dict) and isinstance(m.get("dirs", []), list))
    return m if ok else None


def _ours_after_commit(rel: str, p: Path) -> bool:
    if rel not in AFTER_COMMIT or p.is_symlink() or not p.is_file():
        return False
    from dsrecon.io.ownership import html_is_ours, json_is_ours

    return html_is_ours(p) if rel.endswith(".html") else json_is_ours(p)


def foreign_files(d: Path) -> list[tuple[str, str]]:
    """Every entry below run directory ``d`` that dsrecon did not write there, recursively, as
    (path relative to d, why): with a manifest, anything it does not list or whose size or sha256
    differ from it (except `AFTER_COMMIT` files of ours); without one (a run from before
    manifests), anything outside the names dsrecon writes (`_known`). Parents come before children."""
    d = Path(d)
    man = _read_manifest(d)
    out: list[tuple[str, str]] = []
    inside: dict[str, int] = {}  # a foreign directory → its entry in out (named by its first file)
    for rel, p in _walk(d):
        under = next((s for s in inside if rel.startswith(s + "/")), None)
        if under is not None:
            if not (p.is_dir() and not p.is_symlink()) and out[inside[under]][0] == under:
                out[inside[under]] = (rel, "not written by dsrecon")
            continue
        if man is None:
            why = None if _known(rel, p) else "not written by dsrecon"
        elif rel == MANIFEST_FILE:
            why = None
        elif p.is_symlink():
            why = None if man.get("links", {}).get(rel) == os.readlink(p) else "not written by dsrecon"
        elif p.is_dir():
            why = None if rel in man.get("dirs", []) else "not written by dsrecon"
        elif rel in man["files"]:
            rec = man["files"][rel]
            why = None if (isinstance(rec, dict) and p.is_file() and p.stat().st_size == rec.get("size")
                           and _sha256(p) == rec.get("sha256")) else "changed since dsrecon wrote it"
        else:
            why = None if _ours_after_commit(rel, p) else "not written by dsrecon"
        if why is None:
            continue
        if p.is_dir() and not p.is_symlink():
            inside[rel] = len(out)
            why = "a directory dsrecon did not make"
        out.append((rel, why))
    return out


def _known(rel: str, p: Path) -> bool:
    """A name dsrecon writes at this place of a run (the check for runs without a manifest)."""
    parts = rel.split("/")
    while parts and _MEMBER.match(parts[0]) and len(parts) > 1:  # an ensemble's member is a run
        parts = parts[1:]
    name, is_dir = parts[-1], p.is_dir() and not p.is_symlink()
    if len(parts) == 1:
        if _MEMBER.match(name):
            return is_dir
        if name == "best":
            return p.is_symlink()
        if name in (TEACHER_DIR, CHECKPOINT_DIR):
            return is_dir
        return name in RUN_ENTRIES and p.is_file() and not p.is_symlink()
    if p.is_symlink():
        return False
    if parts[0] == TEACHER_DIR:
        if len(parts) == 2 and name.startswith("sub-") and is_dir:  # a group run: teacher/sub-ID/
            return True
        return not is_dir and (name == "index.json" or bool(_TEACHER_TABLE.search(name))) and (
            len(parts) == 2 or (len(parts) == 3 and parts[1].startswith("sub-")))
    if parts[0] == CHECKPOINT_DIR:  # checkpoint/ and the pretraining engine's checkpoint/pretrain/checkpoint/
        inner = parts[1:]
        if inner[:1] == ["pretrain"]:
            if len(inner) <= 2:
                return is_dir and inner[1:] in ([], [CHECKPOINT_DIR])
            if inner[1] != CHECKPOINT_DIR:
                return False
            inner = inner[2:]
        return len(inner) == 1 and not is_dir and (name == "state.json" or bool(_STATE_TENSORS.match(name)))
    return False


def has_checkpoint(d: Path) -> bool:
    return (d / CHECKPOINT_DIR / "state.json").is_file()


def resumable(d: Path) -> bool:
    """A staging directory a --resume can continue: a checkpoint, the run record and the teacher
    cache's index, each written whole (the index before the record, the record before the first
    checkpoint). A directory missing one of them was cut short while it was being written or
    removed (a worker killed in the middle of cleaning up), and is started over instead."""
    return has_checkpoint(d) and (d / CONFIG_FILE).is_file() and (d / TEACHER_DIR / "index.json").is_file()


def _foreign_phrase(t, problems: list[tuple[str, str]]) -> str:
    """What is wrong with run directory t, naming the first file dsrecon did not write there."""
    rel, why = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    if why.startswith("changed"):
        return f"{Path(str(t)) / rel} was changed since dsrecon wrote it{more}"
    return f"holds files that are not part of a dsrecon run ({Path(str(t)) / rel}{more})"


def _foreign_message(t, problems: list[tuple[str, str]]) -> str:
    return f"{t}: {_foreign_phrase(t, problems)}; dsrecon will not replace them: move them away or choose another -o"


def check_target(target: Path, *, resume: bool = False, force: bool = False) -> None:
    """Refuse an output that cannot become a run, before any work (no side effects).

    Raises DsreconError naming the directory and the problem."""
    t = Path(target)
    ta = run_target(t)
    if ta.exists() and not ta.is_dir():
        raise DsreconError(f"{t}: exists and is not a directory; -o names the run directory to create")
    parent = ta.parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise DsreconError(f"{t}: cannot create the run directory: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise DsreconError(f"{t}: cannot write the run directory: {probe} is not writable")
    staged = has_checkpoint(staging_path(ta)) or _complete(staging_path(ta))
    if ta.is_dir():
        entries = list(ta.iterdir())
        if not entries:
            if resume and not staged:
                raise DsreconError(f"{t}: nothing to resume (no checkpoint found)")
            return
        if not is_run(ta):
            raise DsreconError(f"{t}: not empty and not a dsrecon run (holds {_listing(sorted(p.name for p in entries))}); "
                               "give -o a new or empty directory")
        if force or resume:
            foreign = foreign_files(ta)
            if foreign:
                raise DsreconError(_foreign_message(t, foreign))
        if resume:
            if not staged:
                if _status(ta) == "complete":
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


def _complete(d: Path) -> bool:
    """A staged run whose fit finished and whose files were all written (its commit did not happen)."""
    return d.is_dir() and (d / MANIFEST_FILE).is_file() and _read_manifest(d) is not None


class RunLock:
    """An exclusive ``flock`` on PARENT/.NAME.lock; the file names the holder (pid, host, command)."""

    def __init__(self, target: Path, log: Callable[[str], None] | None = None):
        self.target = Path(target)
        self.path = lock_path(target)
        self.log = log or (lambda s: None)
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DsreconError(f"{self.target}: cannot create {self.path.parent} ({e.strerror or e})") from None
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise DsreconError(f"{self.path}: cannot write the lock of {self.target} ({e.strerror or e})") from None
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
        except OSError:  # gone, or a directory that became read-only: the flock ends with the descriptor
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


# ------------------------------------------------------------------------ the commit and its journal
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
            if _complete(staged):  # cut between moving the old run aside and putting the new one in place
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
    redo = journal.exists() and real.exists() and not old.exists() and _complete(staged)
    if journal.exists():
        journal.unlink()
        _fsync_dir(real.parent)
        note = note or (None if redo else f"note: finished the commit of {target} that was cut short")
    if redo:  # cut after the journal, before the first rename: the new run is complete, the commit is done now
        foreign = foreign_files(real)
        if foreign:
            note = (f"note: the replacement of {target} was cut short before it began and {_foreign_phrase(target, foreign)}; "
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
            if self.resume:
                self.fresh = False
                self.complete = _complete(self.dir)
            elif self.dir.exists():
                if not self._looks_staged(self.dir):
                    raise DsreconError(f"{self.dir}: exists and was not written by dsrecon; move it away")
                what = ("the complete run an earlier fit could not put in place" if _complete(self.dir)
                        else "the staging directory of an earlier, interrupted fit")
                shutil.rmtree(self.dir)
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
                               or (d / "teacher").exists() or any(_MEMBER.match(p.name) for p in d.iterdir()))

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
                    raise self._kept(f"{_foreign_phrase(self.target, foreign)}, which appeared during the fit; move them away")
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
        old["train_options"] = {**json_value(TrainOptions().public()), **old["train_options"]}
    old.setdefault("input_names", [])  # a run from before external inputs: autonomous
    new = {**new, "input_names": new.get("input_names") or []}
    diffs: list[str] = []
    for key, opt in COMPATIBILITY_KEYS.items():
        a, b = json_value(old.get(key)), json_value(new.get(key))
        if key == "train_options":
            a, b = _alpha_as_number(a), _alpha_as_number(b)
        if json_equal(a, b):
            continue
        if key == "data_hash":
            diffs.append(f"the input data differ (data hash {str(a)[:12]} in the run, {str(b)[:12]} now)")
        elif key == "train_options" and isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if not json_equal(a.get(k), b.get(k)):
                    name = f"train option '{k}'" if k in internal else "--" + k.replace("_", "-")
                    diffs.append(f"{name}: {_show(a.get(k))} in the run, {_show(b.get(k))} now")
        elif key == "backend_options" and isinstance(a or {}, dict) and isinstance(b or {}, dict):
            a, b = a or {}, b or {}
            for k in sorted(set(a) | set(b)):
                if not json_equal(a.get(k), b.get(k)):
                    diffs.append(f"--{k.replace('_', '-')}: {_show(a.get(k))} in the run, {_show(b.get(k))} now")
        elif key == "kernel" and isinstance(a, dict) and isinstance(b, dict):
            diffs.append(_kernel_difference(a, b))
        else:
            diffs.append(f"{opt}: {_show(a)} in the run, {_show(b)} now")
    return diffs


def _alpha_as_number(opts):
    """Training options with --alpha as a number where it is one: text ("0.15", as given on the command
    line) and a number (0.15, as given in Python or the annealed default) are the same α."""
    if isinstance(opts, dict) and isinstance(opts.get("alpha"), str):
        try:
            return {**opts, "alpha": float(opts["alpha"])}
        except ValueError:  # adaptive
            pass
    return opts


def data_changed(diffs: list[str]) -> bool:
    return bool(diffs) and diffs[0].startswith("the input data differ")


def check_resumable(run: Path, old: dict, new: dict) -> None:
    """Refuse to resume with other data or options than the run was started with (`differences`)."""
    diffs = differences(old, new)
    if diffs:
        more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
        raise DsreconError(f"{run}: cannot resume: {'; '.join(diffs[:3])}{more}; resume with the run's data and options, "
                           "or start over with --force")


def json_value(v):
    """``v`` as it reads back from JSON (tuples as lists, other objects as text)."""
    return json.loads(json.dumps(v, default=str))


def json_equal(a, b) -> bool:
    """Whether ``a`` and ``b`` are the same JSON (keys in any order)."""
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
        if not json_equal(pa.get(k), pb.get(k)):
            return f"{name}: {_show(pa.get(k))} in the run, {_show(pb.get(k))} now"
    return f"--kernel {a.get('kind')}: the taps differ ({len(a.get('taps') or [])} in the run, {len(b.get('taps') or [])} now)"
