"""Match a recording's columns to a fitted model's regions (``evaluate --data``, ``simulate model
--from``, ``report --data``).

* Named columns (a header, a sidecar's ``Columns``, an atlas) are matched by name: the same set in
  another order is reordered, with a note; a different set is an error naming the missing and the
  extra regions. Columns the fit used as nuisance regressors become the recording's regressors,
  columns the fit dropped are dropped.
* Columns without names (``.npy``, a table without a header), or a model whose own regions had no
  names, are matched by position; the note says so.

Nothing here prints: notes are returned for the caller (the CLI) to log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from dsrecon.errors import DataError
from dsrecon.io.recording import Recording


def _positional(names: Sequence[str]) -> bool:
    return list(names) == [f"region{i:03d}" for i in range(len(names))]


def _list(items: Sequence[str], n: int = 6) -> str:
    head = ", ".join(items[:n])
    return head + (f", … ({len(items)} in all)" if len(items) > n else "")


def match_regions(rec: Recording, names: Sequence[str], *, regressor_names: Sequence[str] = (),
                  drop: Sequence[str] = (), what: str = "the model") -> tuple[Recording, str | None]:
    """Return ``rec`` with its columns in the order of ``names``, and a one-line note (or None).

    ``regressor_names``: columns that become ``Recording.regressors`` (in this order) when present;
    ``drop``: columns ignored when present. Raises DataError naming the file for a column count
    (matched by position) or a set of names (matched by name) that differs from ``names``.
    """
    names = list(names)
    src = rec.source
    unnamed = rec.provenance.get("columns") == "position"
    if unnamed or (_positional(names) and set(rec.names) != set(names)):
        if rec.n_regions != len(names):
            why = "the file has no header" if unnamed else f"{what}'s regions have no names"
            raise DataError(f"{src}: {rec.n_regions} columns, {what} was fitted on {len(names)} regions "
                            f"({why}, so columns are matched by position)")
        if list(rec.names) == names:
            return rec, None
        why = "no header" if unnamed else f"{what}'s regions have no names"
        out = _rebuild(rec, list(range(rec.n_regions)), names, None, [])
        return out, f"{src}: {why}: columns matched to {what}'s regions by position ({_list(names)})"

    have = list(rec.names)
    regs = [c for c in regressor_names if c in have]
    dropped = [c for c in drop if c in have and c not in names]
    missing = [n for n in names if n not in have]
    extra = [c for c in have if c not in names and c not in regs and c not in dropped]
    if missing or extra:
        parts = ([f"missing {_list(missing)}"] if missing else []) + ([f"extra {_list(extra)}"] if extra else [])
        raise DataError(f"{src}: the columns do not match {what}'s regions: {'; '.join(parts)} "
                        f"(the file has {len(have)} columns, {what} was fitted on {len(names)} regions)")
    idx = [have.index(n) for n in names]
    reg_idx = [have.index(c) for c in regs]
    notes = []
    if idx != sorted(idx):
        notes.append(f"columns reordered by name to {what}'s region order ({_list(names)})")
    if regs:
        notes.append(f"column(s) {_list(regs)} read as nuisance regressors, as in the fit")
    if dropped:
        notes.append(f"column(s) {_list(dropped)} dropped, as in the fit")
    if not notes and rec.regressors is None and idx == list(range(rec.n_regions)):
        return rec, None
    out = _rebuild(rec, idx, names, reg_idx, regs)
    return out, (f"{src}: " + "; ".join(notes)) if notes else None


def _rebuild(rec: Recording, idx: list[int], names: list[str], reg_idx: list[int] | None, regs: list[str]) -> Recording:
    if reg_idx:
        regressors, reg_names = rec.data[:, reg_idx], list(regs)
    else:
        regressors, reg_names = rec.regressors, list(rec.regressor_names)
    return Recording(data=rec.data[:, idx], tr=rec.tr, names=list(names), mask=rec.mask, regressors=regressors,
                     regressor_names=reg_names, inputs=rec.inputs, provenance=dict(rec.provenance), source=rec.source)


def clean_as_fitted(rec: Recording, prov: dict, what: str = "the model") -> tuple[Recording, str | None]:
    """``rec`` cleaned as the fit's data were (``prov["cleaning"]``: --detrend, --standardize,
    --low-pass, --high-pass, recorded by `dsrecon.io.cleaning`), so that it is compared with a model
    of data prepared alike; and the note that says so (None when the fit cleaned nothing). A fit's
    confounds table belongs to its own recording: it is not applied here, and the note says that."""
    from dsrecon.io.cleaning import clean_recording, cleans, describe

    cleaning = prov.get("cleaning") if isinstance(prov.get("cleaning"), dict) else {}
    conf = prov.get("confounds_file") if prov.get("confounds") == "file" else None
    if not cleans(cleaning) and conf is None:
        return rec, None
    notes = []
    if cleans(cleaning):
        rec = clean_recording(rec, {k: cleaning.get(k) for k in ("detrend", "standardize", "low_pass", "high_pass")})
        notes.append(f"cleaned as {what}'s data were ({describe(cleaning)})")
    if conf is not None:
        notes.append(f"{what}'s data had the confounds of {conf} regressed out; this file is used without (regress its own "
                     "confounds out first, if it has them)")
    return rec, f"{rec.source}: " + "; ".join(notes)


def load_matched(path: str | Path, model, *, what: str = "the model") -> tuple[Recording, list[str]]:
    """Load ONE recording for a fitted model (``model.tr``, ``model.names``, ``model.config``) and
    match its columns to the model's regions. Returns (recording, notes to log).

    A table without a TR of its own takes the model's; one whose sidecar TR differs from the
    model's is an error naming the file and both TRs.
    """
    from dsrecon.io.load import InputSpec, load_inputs

    p = Path(path)
    cfg = getattr(model, "config", None) or {}
    prov = (cfg.get("provenance") or [{}])[0] or {}
    recs = load_inputs([str(p)], InputSpec(tr=model.tr, tr_label=f"{what}'s TR", quiet=True))
    if len(recs) != 1:
        raise DataError(f"{p}: holds {len(recs)} recordings; give one table")
    rec = recs[0]
    notes = list(rec.provenance.get("notes", []))
    rec, note = match_regions(rec, model.names, regressor_names=cfg.get("regressor_names") or (),
                              drop=prov.get("dropped_columns") or (), what=what)
    if note:
        notes.append(note)
    rec, note = clean_as_fitted(rec, prov, what)
    if note:
        notes.append(note)
    K = len((cfg.get("kernel") or {}).get("taps") or [])
    if rec.n_frames < K:  # deconvolution (PE_n's teacher, the --from state) needs a kernel's length
        raise DataError(f"{p}: {rec.n_frames} frames, shorter than {what}'s kernel ({K} taps): give at least {K} frames")
    return rec, notes
