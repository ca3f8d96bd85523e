"""A run directory: the names dsrecon writes into it, its manifest, and which ``-o`` targets a fit
may write (dsrecon.io.runs describes the whole protocol).

An existing target is used only when it is empty or is a dsrecon run holding nothing but what
dsrecon wrote there: every file of a run is listed, with its size and sha256, in its
``manifest.json`` (written at the commit); a run from before manifests is checked, recursively,
against the names dsrecon writes. Anything else (``-o .`` over the user's inputs, a figure the user
saved in ``run/figures/``) is refused, naming the first such file (`check_target`). The target is
resolved to its real path first (`run_target`), so that a link to scratch space is followed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Iterator

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
#: an ensemble member's directory (itself a run)
MEMBER_DIR = re.compile(r"^member-\d+$")
_TEACHER_TABLE = re.compile(r"_desc-(teacher|train)_timeseries\.(tsv|json)$")  # teacher/: a teacher table and its training split
_STATE_TENSORS = re.compile(r"^state-\d+-\d+\.safetensors$|^\.state.*\.tmp$")


def run_target(target: str | os.PathLike) -> Path:
    """The directory a run target names: ``~``, ``..`` and symbolic links resolved. A link (to a
    scratch directory, empty, existing or dangling) is followed and kept: the run is staged, locked
    and committed beside the link's target."""
    p = Path(os.path.expanduser(str(target)))
    real = Path(os.path.realpath(p))
    if real.is_symlink():  # realpath stops at a loop
        raise DsreconError(f"{target}: a symbolic link that does not resolve (a loop); give -o a directory")
    return real


def _beside(target: Path, kind: str) -> Path:
    """``PARENT/.NAME.KIND``: where dsrecon keeps what belongs to the run target (resolved) NAME."""
    t = run_target(target)
    return t.with_name(f".{t.name}.{kind}")


def staging_path(target: Path) -> Path:
    return _beside(target, "staging")


def lock_path(target: Path) -> Path:
    return _beside(target, "lock")


def journal_path(target: Path) -> Path:
    return _beside(target, "commit")


def replaced_path(target: Path) -> Path:
    return _beside(target, "replaced")


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
    while parts and MEMBER_DIR.match(parts[0]) and len(parts) > 1:  # an ensemble's member is a run
        parts = parts[1:]
    name, is_dir = parts[-1], p.is_dir() and not p.is_symlink()
    if len(parts) == 1:
        if MEMBER_DIR.match(name):
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


def foreign_phrase(t, problems: list[tuple[str, str]]) -> str:
    """What is wrong with run directory t, naming the first file dsrecon did not write there."""
    rel, why = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    if why.startswith("changed"):
        return f"{Path(str(t)) / rel} was changed since dsrecon wrote it{more}"
    return f"holds files that are not part of a dsrecon run ({Path(str(t)) / rel}{more})"


def _foreign_message(t, problems: list[tuple[str, str]]) -> str:
    return f"{t}: {foreign_phrase(t, problems)}; dsrecon will not replace them: move them away or choose another -o"


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
    staged = has_checkpoint(staging_path(ta)) or is_complete(staging_path(ta))
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


def is_complete(d: Path) -> bool:
    """A staged run whose fit finished and whose files were all written (its commit did not happen)."""
    return d.is_dir() and (d / MANIFEST_FILE).is_file() and _read_manifest(d) is not None


