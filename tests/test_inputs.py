"""External inputs (task fMRI): events on the TR grid, input tables, BIDS discovery, the input term
of every backend, the fused kernel with inputs, and fits/simulations driven by inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dsrecon.errors import DataError
from dsrecon.io.events import attach_inputs, events_to_inputs, read_input_table
from dsrecon.io.recording import Recording


def _events(path, rows, header=("onset", "duration", "trial_type", "modulation")):
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(str(c) for c in r) + "\n" for r in rows))
    return path


def test_events_boxcar_by_hand(tmp_path):
    # TR 2 s, 5 frames (run ends at 10 s); frame t covers [2t, 2t + 2)
    p = _events(tmp_path / "ev.tsv", [
        (1.0, 3.0, "A", 1),      # onset between frames: [1, 4) → frame 0 half, frame 1 full
        (4.5, 0.5, "B", 2),      # shorter than one TR: 0.5 s of frame 2, modulation 2 → 2 · 0.25
        (9.0, 0, "A", 3),        # an impulse: modulation 3 in the frame holding 9 s (frame 4)
        (8.5, 4.0, "A", "n/a"),  # runs past the end: cut at 10 s → 1.5 s of frame 4; n/a modulation = 1
        (20.0, 1.0, "B", 1),     # starts past the end: dropped, with a warning
    ])
    warnings = []
    s, names = events_to_inputs(p, 5, 2.0, warn=warnings.append)
    assert names == ["A", "B"]
    expected = np.array([[0.5, 0], [1.0, 0], [0, 0.5], [0, 0], [3 + 0.75, 0]])
    np.testing.assert_allclose(s, expected)
    assert len(warnings) == 1 and "1 event(s)" in warnings[0] and str(p) in warnings[0]


def test_events_conditions_of_a_model_and_defaults(tmp_path):
    p = _events(tmp_path / "ev.tsv", [(0, 2, 1)], header=("onset", "duration", "modulation"))
    s, names = events_to_inputs(p, 3, 1.0)
    assert names == ["event"] and s[:, 0].tolist() == [1.0, 1.0, 0.0]
    s, names = events_to_inputs(p, 3, 1.0, conditions=["other", "event"])
    assert names == ["other", "event"] and s[:, 0].tolist() == [0, 0, 0]
    with pytest.raises(DataError, match="not among the model's inputs"):
        events_to_inputs(p, 3, 1.0, conditions=["other"])


@pytest.mark.parametrize("rows,header,msg", [
    ([(1, 2)], ("onset", "trial_type"), "no 'duration' column"),
    ([(1, 2)], ("time", "trial_type"), "no 'onset' and no 'duration'"),
    ([(-1, 2, "A")], ("onset", "duration", "trial_type"), "onset -1 must be a finite number >= 0"),
    ([("inf", 2, "A")], ("onset", "duration", "trial_type"), "must be a finite number"),
    ([("x", 2, "A")], ("onset", "duration", "trial_type"), "not a number"),
])
def test_bad_events(tmp_path, rows, header, msg):
    p = _events(tmp_path / "ev.tsv", rows, header)
    with pytest.raises(DataError, match=msg) as e:
        events_to_inputs(p, 10, 1.0)
    assert str(p) in str(e.value)


def test_input_table_rows_must_match(tmp_path):
    p = tmp_path / "inp.tsv"
    p.write_text("u\tv\n" + "".join(f"{i}\t{2 * i}\n" for i in range(4)))
    s, names = read_input_table(p, 4, 1.0)
    assert names == ["u", "v"] and s[3].tolist() == [3, 6]
    with pytest.raises(DataError, match="4 rows, .* has 5 frames"):
        read_input_table(p, 5, 1.0)
    rec = attach_inputs(Recording(np.random.default_rng(0).normal(size=(4, 2)), tr=1.0), table=p)
    assert rec.inputs.shape == (4, 2) and rec.input_names == ["u", "v"]
    assert rec.slice(1, 3).inputs.tolist() == [[1, 2], [2, 4]] and rec.slice(1, 3).input_names == ["u", "v"]


def test_recording_checks_inputs():
    with pytest.raises(DataError, match="inputs have 3 rows"):
        Recording(np.zeros((4, 2)), tr=1.0, inputs=np.zeros((3, 1)))
    with pytest.raises(DataError, match="NaN or Inf"):
        Recording(np.zeros((4, 2)), tr=1.0, inputs=np.full((4, 1), np.nan))
