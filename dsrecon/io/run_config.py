"""What a run directory holds besides its weights: ``config.json`` (and ``ensemble.json``), the teacher
cache (the deconvolved teacher signals and training splits under ``teacher/``), and the one
compatibility check (`differences`) that decides both ``--resume`` and whether a cohort rerun reuses
a subject.
"""

from __future__ import annotations

import json
from pathlib import Path

from dsrecon.errors import DsreconError
from dsrecon.io.run_dir import CONFIG_FILE, LOG_FILE, TEACHER_DIR

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


# ------------------------------------------------------------------------ a run's descriptive files
# (one writer each for every fit mode: `dsrecon.estimators`)
def write_run_description(run: Path) -> None:
    """dataset_description.json of a run directory (a BIDS derivative)."""
    from dsrecon.io.results import write_dataset_description  # lazy, like write_config's

    write_dataset_description(run)


def write_training_log(run: Path, rows: list[dict], columns: list[str], description: str, seed) -> None:
    """The training log (LOG_FILE, one row per epoch, NaN where a row lacks a column) and its sidecar."""
    import numpy as np

    from dsrecon._util import versions
    from dsrecon.io.tables import write_table

    arr = np.array([[r.get(c, np.nan) for c in columns] for r in rows], dtype=float).reshape(-1, len(columns))
    write_table(Path(run) / LOG_FILE, arr, columns, sidecar={"Description": description, "seed": seed, "versions": versions()})
