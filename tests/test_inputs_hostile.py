"""Hostile inputs of the task-fMRI options (--events / --inputs): each is one line naming the file,
exit 1, nothing half-written (tests/hostile_util.py runs the real CLI in a subprocess)."""

from __future__ import annotations

import numpy as np
import pytest

from hostile_util import TINY, assert_clean_failure, dsrecon, lorenz_table, snapshot, user_files


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A user's directory: data, events files good and bad, and two fitted runs (with and without
    inputs), fitted in-process to keep the suite fast."""
    from dsrecon.cli.main import main

    d = tmp_path_factory.mktemp("inputs_hostile")
    lorenz_table(d / "x.tsv", frames=300)
    user_files(d)
    (d / "ev.tsv").write_text("onset\tduration\ttrial_type\n" + "".join(f"{10 * i + 3}\t2\t{'AB'[i % 2]}\n" for i in range(25)))
    (d / "no_duration.tsv").write_text("onset\ttrial_type\n1\tA\n")
    (d / "negative.tsv").write_text("onset\tduration\ttrial_type\n5\t1\tA\n-2\t1\tB\n")
    (d / "nan_onset.tsv").write_text("onset\tduration\ttrial_type\n5\t1\tA\nnan\t1\tB\n")
    (d / "past_end.tsv").write_text("onset\tduration\ttrial_type\n5\t1\tA\n400\t1\tB\n500\t1\tA\n")
    (d / "short_inputs.tsv").write_text("u\n" + "".join(f"{i % 3}\n" for i in range(200)))
    fit = ["fit", str(d / "x.tsv"), "--epochs", "2", "--batches-per-epoch", "2", "--batch-size", "4", "--hidden-dim", "8",
           "--sequence-length", "60", "--val-every", "100", "--quiet"]
    assert main([*fit, "-o", str(d / "run_plain")]) == 0
    assert main([*fit, "--events", str(d / "ev.tsv"), "-o", str(d / "run_inputs")]) == 0
    return d


@pytest.mark.parametrize("args,names,says", [
    (["fit", "x.tsv", "--events", "no_duration.tsv", "-o", "run"], "no_duration.tsv", "duration"),
    (["fit", "x.tsv", "--events", "negative.tsv", "-o", "run"], "negative.tsv", "onset -2"),
    (["fit", "x.tsv", "--inputs", "short_inputs.tsv", "-o", "run"], "short_inputs.tsv", "200 rows"),
    (["simulate", "model", "run_plain", "--events", "ev.tsv", "--steps", "50", "-o", "gen.tsv"], "ev.tsv", "fitted without inputs"),
    (["evaluate", "run_inputs", "--data", "x.tsv", "--no-analysis"], "x.tsv", "fitted with inputs"),
])
def test_bad_task_inputs_fail_cleanly(work, args, names, says):
    before = snapshot(work)
    r = dsrecon(*args, *(TINY if args[0] == "fit" else []), cwd=work)
    assert_clean_failure(r, names=names, before=before, dirs=[work], says=says)
    assert not (work / "run").exists() and not (work / "gen.tsv").exists()


def test_events_past_the_end_are_a_warning_naming_how_many(work):
    r = dsrecon("simulate", "model", "run_inputs", "--events", "past_end.tsv", "--steps", "100", "-o", "gen_past.tsv", cwd=work)
    assert r.code == 0, r.err
    warn = [ln for ln in r.err_lines if "past_end.tsv" in ln]
    assert len(warn) == 1 and "2 event(s)" in warn[0], r.err
    assert (work / "gen_past.tsv").exists()
    assert np.isfinite(np.loadtxt(work / "gen_past.tsv", skiprows=1)).all()
