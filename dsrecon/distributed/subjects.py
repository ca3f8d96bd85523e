"""Which subjects a cohort directory holds, and which of their fits are finished.

A cohort is one of:

* an fMRIPrep/BIDS derivatives directory (``sub-*`` folders): one subject per ``sub-`` entity,
  all of its matching runs (task/session/space filters) are the recordings of its model;
* a directory of tables: one subject per table file, except that BIDS-named files sharing a
  ``sub-`` entity (``sub-01_run-1_bold.tsv``, ``sub-01_run-2_bold.tsv``) form one subject;
* a directory of subfolders (tables, suite2p planes): one subject per subfolder.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from dsrecon.errors import DataError

COMPLETE = "complete"
PARTIAL = "partial"  # a checkpoint to resume from
STALE = "stale"  # something there but nothing to resume: start over
ABSENT = "absent"


@dataclass
class Subject:
    """name: output folder name (``sub-01``); paths: inputs given to `load_inputs`; participant:
    BIDS label for derivative trees (None for tables)."""

    name: str
    paths: list[str]
    participant: str | None = None
    extra: dict = field(default_factory=dict)


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _table_suffixes() -> tuple[str, ...]:
    from dsrecon.io.tables import TABLE_SUFFIXES

    return tuple(TABLE_SUFFIXES)


def _safe(name: str) -> str:
    return _SAFE.sub("_", name).strip("._") or "subject"


def file_stem(p: Path) -> str:
    """A recording file's name without its format suffix (``.nii.gz``, the table suffixes)."""
    name = p.name
    for suf in (".nii.gz",) + _table_suffixes():
        if name.endswith(suf):
            return name[: -len(suf)]
    return p.stem


def discover_subjects(root: str | Path, *, participant_label: list[str] | None = None, task: str | None = None,
                      session: list[str] | None = None, space: str | None = None) -> list[Subject]:
    """Subjects of a cohort directory, sorted by name. Raises DataError naming ``root`` when it holds none."""
    from dsrecon.io.bids import looks_like_bids_dir

    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: not found")
    if not root.is_dir():
        raise DataError(f"{root}: fit-cohort expects a directory (BIDS/fMRIPrep derivatives, or a folder of tables or subfolders)")
    wanted = {s[4:] if s.startswith("sub-") else s for s in (participant_label or [])}
    if looks_like_bids_dir(root) and any(root.rglob("*_bold.nii*")):
        subs = _bids_subjects(root, sorted(wanted), task, session, space)
    else:
        given = [flag for flag, v in (("--task", task), ("--session", session), ("--space", space)) if v]
        if given:  # they select runs of a derivatives tree; a folder of tables has none to select
            raise DataError(f"{root}: {', '.join(given)} select(s) runs of a BIDS/fMRIPrep directory; {root.name} holds tables "
                            "or subfolders, not sub-*/func runs: drop the option")
        subs = _table_subjects(root)
        if wanted:
            subs = [s for s in subs if s.name in wanted or s.name.removeprefix("sub-") in wanted]
    if not subs:
        what = f" matching --participant-label {' '.join(sorted(wanted))}" if wanted else ""
        raise DataError(f"{root}: no subjects{what} (expected sub-* runs, table files or subfolders of tables)")
    return subs


def _bids_subjects(root: Path, wanted: list[str], task, session, space) -> list[Subject]:
    from dsrecon.io.bids import discover_runs
    from dsrecon.io.results import bids_entities

    runs = discover_runs(root, wanted or None, task, session, space)
    groups: dict[str, list[str]] = {}
    for r in runs:
        sub = bids_entities(r).get("sub")
        if sub is None:
            continue
        groups.setdefault(sub, []).append(str(r))
    return [Subject(f"sub-{s}", sorted(p), participant=s) for s, p in sorted(groups.items())]


def _table_subjects(root: Path) -> list[Subject]:
    from dsrecon.io.results import bids_entities

    from dsrecon.io.tables import is_table_path

    groups: dict[str, list[str]] = {}
    for q in sorted(root.iterdir()):
        if q.name.startswith("."):
            continue
        if q.is_file() and is_table_path(q) and not q.name.endswith(("_latent.tsv", "_latent.tsv.gz")):
            sub = bids_entities(q).get("sub")
            key = f"sub-{sub}" if sub else _safe(file_stem(q))
            groups.setdefault(key, []).append(str(q))
        elif q.is_dir():
            has_tables = any(f.is_file() and is_table_path(f) for f in q.iterdir())
            has_s2p = any(f.is_dir() and f.name.startswith("plane") for f in q.iterdir()) or (q / "F.npy").exists()
            if has_tables or has_s2p:
                key = _safe(q.name)
                if key in groups:
                    raise DataError(f"{q}: subject '{key}' is both a table file and a folder; rename one")
                groups[key] = [str(q)]
    return [Subject(k, v) for k, v in sorted(groups.items())]


def run_state(run: Path) -> str:
    """COMPLETE (model.safetensors + config.json with status complete), PARTIAL (an interrupted
    fit's staging directory with a checkpoint to resume, `resumable`), STALE (something there,
    nothing to resume) or ABSENT. A staging directory that is not whole (a worker killed while it
    removed it) is not PARTIAL: the next fit removes it and starts the subject over."""
    from dsrecon.io.runs import recover_commit

    recover_commit(run)  # a commit of this subject cut short by a kill: completed (or undone) first
    cfg = run / "config.json"
    if (run / "model.safetensors").exists() and cfg.exists():
        try:
            if json.loads(cfg.read_text()).get("status") == "complete":
                return COMPLETE
        except (json.JSONDecodeError, OSError):
            pass
    from dsrecon.io.runs import resumable, staging_path

    if resumable(staging_path(run)):  # an interrupted fit's staging directory, whole
        return PARTIAL
    if run.exists() and any(run.iterdir()):
        return STALE
    return ABSENT
