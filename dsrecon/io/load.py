"""One door for every input `dsrecon fit` accepts: files, directories, BIDS/fMRIPrep trees.

`load_inputs(paths, spec)` returns a list of Recordings (one per run); nothing is concatenated
across recordings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dsrecon.errors import DataError
from dsrecon.io.recording import Recording
from dsrecon.io.tables import TABLE_SUFFIXES, read_table


@dataclass
class InputSpec:
    """Everything the loaders need besides the paths (CLI options of `dsrecon fit`)."""

    tr: float | None = None
    # NIfTI + atlas
    atlas: str | None = None
    atlas_labels: str | None = None
    mask: str | None = None
    pca: int | None = None
    detrend: bool = False
    standardize: bool = False
    low_pass: float | None = None
    high_pass: float | None = None
    # fMRIPrep / BIDS
    confounds: str = "none"
    participant_label: list[str] = field(default_factory=list)
    task: str | None = None
    session: list[str] = field(default_factory=list)
    # calcium
    neuropil_factor: float = 0.7
    # tables: columns to treat as nuisance regressors rather than regions
    regressor_columns: list[str] = field(default_factory=list)
    drop_columns: list[str] = field(default_factory=list)


def load_inputs(paths: list[str], spec: InputSpec | None = None) -> list[Recording]:
    """Load every path into Recordings. Raises DataError naming the file on bad input."""
    spec = spec or InputSpec()
    recs: list[Recording] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise DataError(f"{p}: file not found")
        if p.is_dir():
            tables = sorted(q for q in p.iterdir() if q.suffix in TABLE_SUFFIXES and not q.name.endswith("_latent.tsv"))
            if not tables:
                raise DataError(f"{p}: directory holds no TSV/CSV/NPY tables")
            recs.extend(_load_table(q, spec) for q in tables)
        elif p.suffix in TABLE_SUFFIXES:
            recs.append(_load_table(p, spec))
        else:
            raise DataError(f"{p}: unsupported input type (expected a TSV/CSV/NPY table or a directory of them)")
    if not recs:
        raise DataError("no input recordings")
    names = recs[0].names
    for r in recs[1:]:
        if r.names != names:
            raise DataError(f"{r.source}: regions differ from {recs[0].source} ({len(r.names)} vs {len(names)} columns)")
    return recs


def _load_table(p: Path, spec: InputSpec) -> Recording:
    rec = read_table(p, tr=spec.tr)
    drop = set(spec.drop_columns)
    regs = [c for c in spec.regressor_columns if c in rec.names]
    missing = [c for c in list(spec.regressor_columns) + list(spec.drop_columns) if c not in rec.names]
    if missing:
        raise DataError(f"{p}: no column(s) named {', '.join(missing)}")
    if not drop and not regs:
        return rec
    keep = [i for i, n in enumerate(rec.names) if n not in drop and n not in regs]
    reg_idx = [rec.names.index(c) for c in regs]
    return Recording(
        data=rec.data[:, keep],
        tr=rec.tr,
        names=[rec.names[i] for i in keep],
        regressors=rec.data[:, reg_idx] if reg_idx else None,
        regressor_names=regs,
        provenance={**rec.provenance, "dropped_columns": sorted(drop), "regressor_columns": regs},
        source=rec.source,
    )
