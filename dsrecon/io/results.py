"""BIDS-derivative style outputs: dataset_description.json, entity-keeping names, TSV sidecars.

A run directory can sit beside other derivatives (``derivatives/dsrecon/``): it holds a
``dataset_description.json`` (DatasetType "derivative", GeneratedBy dsrecon and its version),
and file names keep the source entities (sub, ses, task, run) plus a ``desc-`` label, e.g.
``sub-01_task-rest_desc-teacher_timeseries.tsv``. Every TSV gets a JSON sidecar
(:func:`tsv_sidecar`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from dsrecon._util import dsrecon_version, versions, write_json_atomic
from dsrecon.errors import DsreconError

#: Entities kept from a source file name, in BIDS order.
KEPT_ENTITIES = ("sub", "ses", "task", "acq", "run", "echo", "space")

_LABEL_RE = re.compile(r"^[A-Za-z0-9]+$")


def write_dataset_description(run_dir: str | os.PathLike, name: str = "dsrecon") -> Path:
    """Write ``run_dir/dataset_description.json`` atomically; returns its path."""
    path = Path(run_dir) / "dataset_description.json"
    write_json_atomic(path, {
        "Name": name,
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "dsrecon", "Version": dsrecon_version(),
                         "Description": "Dynamical-systems reconstruction (convSSM, generalized teacher forcing)"}],
    })
    return path


def bids_entities(source_path: str | os.PathLike | None, keep: tuple[str, ...] = ("sub", "ses", "task", "run")) -> dict[str, str]:
    """Entities ``sub``, ``ses``, ``task``, ``run`` parsed from a BIDS file or folder name.

    Returns {} for a name without BIDS entities, e.g. ``table.tsv``. Key-value pairs are the
    ``key-value`` chunks of the name before its suffix; only ``keep`` keys are returned, in that
    order.
    """
    if source_path is None:
        return {}
    name = Path(str(source_path)).name
    name = name.split(".", 1)[0]
    found: dict[str, str] = {}
    for chunk in name.split("_"):
        if "-" not in chunk:
            continue
        key, _, value = chunk.partition("-")
        if key and value and _LABEL_RE.match(key) and _LABEL_RE.match(value):
            found.setdefault(key, value)
    return {k: found[k] for k in keep if k in found}


def derivative_name(entities: dict[str, str], desc: str | None, suffix: str, ext: str) -> str:
    """Build a BIDS-derivative file name: ``<entities>[_desc-<desc>]_<suffix><ext>``.

    entities are written in BIDS order (sub, ses, task, acq, run, echo, space); ext with or
    without its dot. Example: ({"sub": "01", "task": "rest"}, "teacher", "timeseries", ".tsv")
    → ``sub-01_task-rest_desc-teacher_timeseries.tsv``.
    """
    parts: list[str] = []
    order = list(KEPT_ENTITIES) + sorted(k for k in entities if k not in KEPT_ENTITIES)
    for k in order:
        if k in entities and entities[k] not in (None, ""):
            v = str(entities[k])
            if not _LABEL_RE.match(v):
                raise DsreconError(f"entity {k}-{v}: BIDS labels are letters and digits only")
            parts.append(f"{k}-{v}")
    if desc:
        if not _LABEL_RE.match(desc):
            raise DsreconError(f"desc-{desc}: BIDS labels are letters and digits only")
        parts.append(f"desc-{desc}")
    if not _LABEL_RE.match(suffix):
        raise DsreconError(f"suffix {suffix!r}: letters and digits only")
    parts.append(suffix)
    ext = ext if not ext or ext.startswith(".") else "." + ext
    return "_".join(parts) + ext


def tsv_sidecar(recording=None, *, tr: float | None = None, modality: str | None = None,
                units: str | None = None, columns: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """JSON sidecar for a TSV of time series: timing, units, atlas, confounds, versions.

    BOLD (and anything not calcium) gets ``RepetitionTime`` (s); calcium gets
    ``SamplingFrequency`` (Hz). From a Recording's provenance: ``Atlas``, ``ConfoundStrategy``,
    ``NumberOfMaskedFrames``, ``Sources``. ``extra`` keys are added as given (e.g. Seed).
    """
    prov = dict(getattr(recording, "provenance", {}) or {})
    tr = tr if tr is not None else getattr(recording, "tr", None)
    modality = modality or prov.get("modality", "bold")
    out: dict[str, Any] = {}
    if tr is not None:
        if modality == "calcium":
            out["SamplingFrequency"] = round(1.0 / float(tr), 9)
        else:
            out["RepetitionTime"] = float(tr)
    out["Modality"] = modality
    out["Units"] = units or prov.get("units") or ("dF/F" if modality == "calcium" else "arbitrary")
    if columns is not None:
        out["Columns"] = list(columns)
    if prov.get("atlas"):
        out["Atlas"] = prov["atlas"]
    if prov.get("confounds"):
        out["ConfoundStrategy"] = prov["confounds"]
        out["NumberOfMaskedFrames"] = int(prov.get("n_masked_frames", 0))
    if getattr(recording, "source", None) not in (None, "<memory>"):
        out["Sources"] = [str(recording.source)]
    out["GeneratedBy"] = {"Name": "dsrecon", "Version": dsrecon_version()}
    out["Versions"] = versions()
    out.update(extra)
    return out
