"""`load_run`: the fitted model of any run directory dsrecon writes — the one module that knows
every run format (a single fit's or an ensemble member's: `ConvSSM`; a group fit's:
`GroupConvSSM`) — and `select_subject`, the model a command works on.

>>> model = load_run("run")    # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path

from dsrecon.errors import DataError, OptionError
from dsrecon.estimators.convssm import ConvSSM
from dsrecon.estimators.group import GroupConvSSM
from dsrecon.estimators.group_run import is_group_config
from dsrecon.io.runs import CONFIG_FILE, MODEL_FILE, commit_pending, journal_path, recover_commit


def load_run(path: str | Path) -> ConvSSM | GroupConvSSM:
    """Rebuild a fitted model from a run directory (model.safetensors + config.json): a ConvSSM, or
    for a `dsrecon fit-group` run a GroupConvSSM (its .subject(id) is a ConvSSM).

    A damaged run (unreadable or incomplete config.json, empty or truncated weights, weights that do
    not fit the configuration) is a DataError naming the file and what is wrong with it."""
    run = Path(path)
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
    try:
        raw = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, OSError, UnicodeDecodeError):
        raw = None
    if is_group_config(raw):
        return GroupConvSSM.from_run(run, raw)
    return ConvSSM.from_run(run)  # reads config.json again, naming what is wrong with it


def load_group_run(run: Path, cfg: dict) -> GroupConvSSM:
    """Rebuild a GroupConvSSM from a group run (`GroupConvSSM.from_run`)."""
    return GroupConvSSM.from_run(Path(run), cfg)


def select_subject(model, subject: str | None, run: Path):
    """The model a command works on: a single run's model as it is; a group run's subject
    ``subject`` (required there); `--subject` on a single run is an error."""
    if isinstance(model, GroupConvSSM):
        if subject is None:
            shown = ", ".join(model.subjects[:10]) + (" …" if len(model.subjects) > 10 else "")
            raise OptionError(f"{run}: a group run: choose a subject with `subject` (subjects: {shown})")
        return model.subject(subject)
    if subject is not None:
        raise OptionError(f"`subject` {subject}: {run} is not a group run (written by dsrecon fit, not fit-group)")
    return model
