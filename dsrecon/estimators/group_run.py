"""A group run's format and the group fit's inputs: the config keys (format dsrecon-group/1), the
subjects mapping (`as_subjects`, `subject_id`), the group's preset (`group_preset`) and the
subject features table (subject_features.tsv + .json sidecar, `write_features`)."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Mapping

import numpy as np

from dsrecon._util import dsrecon_version, versions, write_json_atomic, write_text_atomic
from dsrecon.errors import DataError
from dsrecon.io.recording import Recording
from dsrecon.options import choose_preset
from dsrecon.training.prepare import training_frames

GROUP_FORMAT = "dsrecon-group/1"
FEATURES_FILE = "subject_features.tsv"
FEATURES_SIDECAR = "subject_features.json"
#: config keys that belong to one subject (in ``subjects[i]`` of a group config)
SUBJECT_KEYS = ("kernel", "tr", "inputs", "input_paths", "provenance", "n_masked_frames", "data_hash", "normalisation", "data")
#: the group's own options (not fit options)
GROUP_KEYS = ("features", "scheme")


def subject_id(name: str) -> str:
    """'sub-01' → '01' (a subject is named by its label)."""
    name = str(name)
    return name[4:] if name.startswith("sub-") and len(name) > 4 else name


def as_subjects(subjects) -> dict[str, list]:
    if not isinstance(subjects, Mapping) or not subjects:
        raise DataError("fit-group needs subjects: a mapping {subject: recording or [recordings]}")
    out: dict[str, list] = {}
    for k, v in subjects.items():
        sid = subject_id(k)
        if sid in out:
            raise DataError(f"subject '{sid}' is given twice")
        recs = [v] if isinstance(v, Recording) else list(v or [])
        if not recs:
            raise DataError(f"subject {sid}: no usable recording")
        out[sid] = recs
    return out


def check_regions(subs: dict[str, list]) -> None:
    first = next(iter(subs))
    r0 = subs[first][0]
    for sid, recs in subs.items():
        for r in recs:
            if r.names != r0.names:
                raise DataError(f"{r.source}: subject {sid}'s regions differ from subject {first}'s ({r0.source}: "
                                f"{len(r.names)} vs {len(r0.names)} columns); every subject needs the same region set")
            if r.regressor_names != r0.regressor_names:
                raise DataError(f"{r.source}: subject {sid}'s nuisance regressors differ from subject {first}'s ({r0.source})")



def write_features(run: Path, ids: list[str], feats: np.ndarray, config: dict) -> None:
    """subject_features.tsv (participant_id, f1…fF) and its JSON sidecar."""
    F = feats.shape[1]
    cols = ["participant_id"] + [f"f{k + 1}" for k in range(F)]
    lines = ["\t".join(cols)] + ["\t".join([f"sub-{s}"] + [f"{v:.9g}" for v in row]) for s, row in zip(ids, feats)]
    write_text_atomic(run / FEATURES_FILE, "\n".join(lines) + "\n")
    side = {"Description": "Subject features of a dsrecon group model: each subject's model parameters are generated from its "
                           f"row ({config.get('scheme')} scheme, see config.json 'layout').",
            "participant_id": {"Description": "BIDS participant label"},
            **{f"f{k + 1}": {"Description": f"feature {k + 1} (dimensionless)"} for k in range(F)},
            "scheme": config.get("scheme"), "features": F, "seed": config.get("seed"), "transfer_from": config.get("transfer_from"),
            "DsreconVersion": dsrecon_version(), "versions": versions(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    write_json_atomic(run / FEATURES_SIDECAR, side)



def group_train_frames(subs: Mapping[str, list], test_fraction: float) -> int:
    """The training samples a group fit's preset is chosen by: its median subject's, so that every
    subject's model has the same architecture and training options."""
    return int(np.median([training_frames([r.n_frames for r in recs], test_fraction) for recs in subs.values()]))


def group_preset(preset: str, subs: Mapping[str, list], test_fraction: float) -> str:
    """The preset of a group fit (`dsrecon.options.choose_preset` by `group_train_frames`; a group
    fit settles it in `ConvSSM.resolved`, given those samples)."""
    n_regions = next(iter(subs.values()))[0].n_regions if subs else 0
    return choose_preset(preset, group_train_frames(subs, test_fraction), n_regions)


def run_feature_decay(cfg: dict) -> float:
    """The feature penalty's λ a group run's config.json was fitted with (runs from before
    --feature-decay existed had none: 0)."""
    return float(cfg.get("feature_decay", 0.0))


def is_group_config(cfg: dict) -> bool:
    return isinstance(cfg, dict) and cfg.get("format") == GROUP_FORMAT


#: the training log's description in a group run
LOG_DESCRIPTION = ("dsrecon fit-group training log: one row per epoch; loss is the mean GTF loss over subjects, "
                   "val_D_stsp / val_D_H the subjects' means of the single-fit validation.")
