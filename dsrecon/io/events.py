"""External inputs on the latent time grid: BIDS ``*_events.tsv`` files and input tables.

An events file (BIDS: tab-separated, columns ``onset`` and ``duration`` in seconds, optional
``trial_type`` and ``modulation``, ``n/a`` for a missing value) becomes one input channel per
condition (``trial_type``; one channel ``event`` without that column), channels sorted by name.
Frame t covers the interval [t·TR, (t+1)·TR) of the run; its input is the mean over that interval
of the boxcar "modulation on [onset, onset + duration)", summed over the condition's events:

    s_t[c] = Σ_{events of c} modulation · |[onset, onset + duration) ∩ [t·TR, (t+1)·TR)| / TR

so an onset between frames and a duration shorter than one TR are kept by the overlap fraction,
and Σ_t s_t · TR equals Σ modulation · duration. An event of duration 0 (an impulse) adds its
modulation to the frame holding its onset. Events whose onset lies past the end of the run are
dropped (a warning says how many); an event running past the end is cut there.

An input table (``--inputs FILE.tsv``) is read as it is: T rows × K named columns, one row per
frame of the recording.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from dsrecon.errors import DataError


def _read_tsv(path: Path) -> tuple[list[str], list[list[str]]]:
    if not path.exists():
        raise DataError(f"{path}: events file not found")
    from dsrecon.io.files import check_input_file

    check_input_file(path, "events file")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    rows = [r for r in csv.reader(text.splitlines(), delimiter="\t") if r and any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"{path}: empty events file (expected a header with onset, duration)")
    header = [c.strip() for c in rows[0]]
    return header, rows[1:]


def _number(path: Path, row: int, col: str, cell: str, default: float | None = None) -> float:
    cell = cell.strip()
    if cell in ("", "n/a", "N/A", "NaN", "nan"):
        if default is not None:
            return default
        raise DataError(f"{path}: row {row}: '{col}' is missing ({cell or 'empty'})")
    try:
        return float(cell)
    except ValueError:
        raise DataError(f"{path}: row {row}: '{col}' is not a number ('{cell}')") from None


def read_events(path: str | Path) -> list[tuple[float, float, str, float]]:
    """The events of a BIDS events file as (onset, duration, condition, modulation) tuples."""
    p = Path(path)
    header, rows = _read_tsv(p)
    missing = [c for c in ("onset", "duration") if c not in header]
    if missing:
        raise DataError(f"{p}: no {' and no '.join(repr(c) for c in missing)} column (a BIDS events file needs onset and duration)")
    i_on, i_du = header.index("onset"), header.index("duration")
    i_tt = header.index("trial_type") if "trial_type" in header else None
    i_mo = header.index("modulation") if "modulation" in header else None
    events = []
    for j, r in enumerate(rows, start=2):
        r = r + [""] * (len(header) - len(r))
        if r[i_on].strip().lower() in ("nan", "n/a", "inf", "-inf", "+inf"):
            raise DataError(f"{p}: row {j}: onset {r[i_on].strip()} must be a finite number >= 0")
        onset = _number(p, j, "onset", r[i_on])
        if not math.isfinite(onset) or onset < 0:
            raise DataError(f"{p}: row {j}: onset {r[i_on].strip()} must be a finite number >= 0")
        dur = _number(p, j, "duration", r[i_du], default=0.0)
        if not math.isfinite(dur) or dur < 0:
            raise DataError(f"{p}: row {j}: duration {r[i_du].strip()} must be a finite number >= 0")
        cond = "event" if i_tt is None else (r[i_tt].strip() or "n/a")
        mod = 1.0 if i_mo is None else _number(p, j, "modulation", r[i_mo], default=1.0)
        if not math.isfinite(mod):
            raise DataError(f"{p}: row {j}: modulation {r[i_mo].strip()} must be finite")
        events.append((onset, dur, cond, mod))
    return events


def events_to_inputs(path: str | Path, n_frames: int, tr: float, conditions: list[str] | None = None,
                     warn=None) -> tuple[np.ndarray, list[str]]:
    """Events file → (inputs (n_frames, C), condition names) on the TR grid (module docstring).

    ``conditions``: the channels to make, in this order (a model's input names); a condition of the
    file not among them is an error, one missing from the file is a channel of zeros. ``warn(msg)``
    is called with one line when events start past the end of the run."""
    p = Path(path)
    events = read_events(p)
    found = sorted({c for _, _, c, _ in events})
    if conditions is None:
        names = found
    else:
        names = list(conditions)
        extra = [c for c in found if c not in names]
        if extra:
            raise DataError(f"{p}: condition(s) {', '.join(extra)} not among the model's inputs ({', '.join(names) or 'none'})")
    if not names:
        raise DataError(f"{p}: no events")
    out = np.zeros((int(n_frames), len(names)), dtype=np.float64)
    end = n_frames * tr
    past = 0
    for onset, dur, cond, mod in events:
        if onset >= end:
            past += 1
            continue
        c = names.index(cond)
        if dur == 0:
            out[int(onset // tr), c] += mod
            continue
        stop = min(onset + dur, end)
        first, last = int(onset // tr), min(int(math.ceil(stop / tr)), n_frames)
        for t in range(first, last):
            overlap = min(stop, (t + 1) * tr) - max(onset, t * tr)
            if overlap > 0:
                out[t, c] += mod * overlap / tr
    if past and warn is not None:
        warn(f"warning: {p}: {past} event(s) start past the end of the run ({n_frames} frames × TR {tr:g} s = {end:g} s) and were dropped")
    return out, names


def read_input_table(path: str | Path, n_frames: int, tr: float, source: str = "the recording") -> tuple[np.ndarray, list[str]]:
    """An input table (T × K named columns) whose rows are the recording's frames → (inputs, names)."""
    from dsrecon.io.tables import read_table

    p = Path(path)
    rec = read_table(p, tr=tr, tr_label="the recording's TR")
    if rec.n_frames != n_frames:
        raise DataError(f"{p}: {rec.n_frames} rows, {source} has {n_frames} frames (an input table needs one row per frame)")
    if not np.isfinite(rec.data).all():
        raise DataError(f"{p}: NaN or Inf values (inputs must be finite)")
    return rec.data, list(rec.names)


def attach_inputs(rec, events: str | Path | None = None, table: str | Path | None = None, names: list[str] | None = None,
                  warn=None):
    """The Recording ``rec`` with inputs from an events file or an input table (``names``: the
    channels to make, e.g. a fitted model's input names)."""
    from dsrecon.io.recording import Recording

    if events is None and table is None:
        return rec
    if events is not None and table is not None:
        raise DataError(f"{events}: give --events or --inputs, not both")
    if events is not None:
        s, got = events_to_inputs(events, rec.n_frames, rec.tr, names, warn=warn)
        src = str(events)
    else:
        s, got = read_input_table(table, rec.n_frames, rec.tr, rec.source)
        src = str(table)
        if names is not None and got != list(names):
            raise DataError(f"{table}: input columns {', '.join(got)} differ from the model's inputs ({', '.join(names)})")
    prov = {**rec.provenance, "inputs_file": src, "inputs_kind": "events" if events is not None else "table", "input_names": got}
    return Recording(data=rec.data, tr=rec.tr, names=list(rec.names), mask=rec.mask, regressors=rec.regressors,
                     regressor_names=list(rec.regressor_names), inputs=s, input_names=got, provenance=prov, source=rec.source)


def write_events(path: str | Path, events: list[tuple[float, float, str, float]]) -> None:
    """Atomically write a BIDS events file (onset, duration, trial_type, modulation), sorted by onset."""
    from dsrecon._util import atomic_path

    rows = sorted(events)
    with atomic_path(path) as tmp:
        Path(tmp).write_text("onset\tduration\ttrial_type\tmodulation\n"
                             + "".join(f"{o:.6g}\t{d:.6g}\t{c}\t{m:.6g}\n" for o, d, c, m in rows))


def random_design(total_s: float, n_per_condition: int, conditions: list[str], duration: float, rng: np.random.Generator,
                  min_gap: float = 0.0) -> list[tuple[float, float, str, float]]:
    """A jittered random design: ``n_per_condition`` events of each condition, of ``duration``
    seconds, at onsets drawn uniformly in [0, total_s − duration) with at least ``min_gap`` seconds
    between the end of one event and the next onset (when possible), conditions interleaved at random."""
    n = n_per_condition * len(conditions)
    labels = rng.permutation(np.repeat(np.arange(len(conditions)), n_per_condition))
    slack = total_s - duration - n * (duration + min_gap)
    if slack <= 0:
        raise DataError(f"{n} events of {duration:g} s with gaps of {min_gap:g} s do not fit in {total_s:g} s")
    cuts = np.sort(rng.uniform(0, slack, n))  # jitter: the free time, split at random
    onsets = cuts + np.arange(n) * (duration + min_gap)
    return [(float(o), float(duration), conditions[int(c)], 1.0) for o, c in zip(onsets, labels)]


def onsets_of(inputs: np.ndarray) -> list[np.ndarray]:
    """Per input channel, the frames where it switches on (rises from 0 to non-zero)."""
    s = np.asarray(inputs) != 0
    prev = np.vstack([np.zeros((1, s.shape[1]), bool), s[:-1]])
    return [np.flatnonzero(s[:, c] & ~prev[:, c]) for c in range(s.shape[1])]


def event_locked_mean(x: np.ndarray, onsets: np.ndarray, window: int) -> np.ndarray | None:
    """Mean over onsets f (with f ≥ 1 and f + window ≤ T) of x[f : f + window] − x[f − 1] → (window, N);
    None when no onset fits."""
    segs = [x[f : f + window] - x[f - 1] for f in onsets if f >= 1 and f + window <= x.shape[0]]
    return np.mean(segs, axis=0) if segs else None
