"""The hostile-input suite of issue 13: every case runs the real CLI in a subprocess
(tests/hostile_util.py) and checks that it exits 1 (2 for usage) with one line on stderr naming the
file and the problem, no traceback, the user's files byte-identical, no temporary file left, and no
staging directory after a failure. Sections:

1. The run directory and interrupts (parts 1 and 2): dsrecon never deletes or overwrites what it
   did not write; a failed or interrupted command leaves the user's files and any previous run as
   they were; an interrupted fit resumes bit-identically.
2. Tables read as the user meant, or refused (part 3).
3. No raw internal errors, and the bugs found on the way (parts 4 and 5).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hostile_util import ENV as HOSTILE_ENV, TINY, assert_clean_failure, dsrecon, leftovers, lorenz_table, popen, snapshot, user_files


# ================================================================================================
# 1. The run directory and interrupts
# ================================================================================================
# Hostile cases for the run directory (issue 13, parts 1 and 2): dsrecon never deletes or
# overwrites what it did not write, a failed or interrupted command leaves the user's files and
# any previous run exactly as they were, and an interrupted fit resumes bit-identically.
#
# Every case runs the real CLI in a subprocess (tests/hostile_util.py).


#: a fit long enough to be interrupted (about 10 s), checkpointing every epoch
LONG = ["--epochs", "80", "--batches-per-epoch", "2", "--batch-size", "4", "--hidden-dim", "8", "--sequence-length", "60",
        "--val-every", "5", "--checkpoint-every", "1", "--quiet", "--seed", "3"]
DIVERGE = ["--learning-rate", "1e12"]


@pytest.fixture
def userdir(tmp_path):
    """A working directory as a user has it: a table, its sidecar, and their own files."""
    lorenz_table(tmp_path / "x.tsv")
    user_files(tmp_path)
    return tmp_path


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "model.safetensors"))


def _same_weights(a: Path, b: Path) -> bool:
    import torch

    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# ------------------------------------------------------------------------------ output refused
def test_diverging_fit_into_a_directory_with_user_files_is_refused_and_keeps_them(userdir):
    mine = userdir / "mine"
    user_files(mine)
    before = snapshot(userdir)
    r = dsrecon("fit", "x.tsv", "-o", "mine", *DIVERGE, *TINY, cwd=userdir)
    assert_clean_failure(r, names="mine", says="not a dsrecon run", before=before, dirs=[userdir])


def test_output_dot_over_the_users_inputs_is_refused(userdir):
    before = snapshot(userdir)
    r = dsrecon("fit", "x.tsv", "-o", ".", *TINY, cwd=userdir)
    line = assert_clean_failure(r, names=["x.tsv", "notes.txt"], says="not a dsrecon run", before=before, dirs=[userdir])
    assert str(userdir) in line or " .:" in line or line.startswith("error: .")


def test_output_that_is_a_regular_file_is_refused(userdir):
    before = snapshot(userdir)
    r = dsrecon("fit", "x.tsv", "-o", "notes.txt", *TINY, cwd=userdir)
    assert_clean_failure(r, names="notes.txt", says="not a directory", before=before, dirs=[userdir])


def test_read_only_output_location_is_refused(userdir):
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")  # pragma: no cover - CI runs as root: see the next test
    ro = userdir / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        before = snapshot(userdir)
        r = dsrecon("fit", "x.tsv", "-o", "ro/run", *TINY, cwd=userdir)
        assert_clean_failure(r, names="ro", says="not writable", before=before, dirs=[userdir])
    finally:
        ro.chmod(0o755)


def test_output_under_a_regular_file_is_refused(userdir):
    """(The read-only case as root: a location that cannot hold a directory.)"""
    before = snapshot(userdir)
    r = dsrecon("fit", "x.tsv", "-o", "notes.txt/run", *TINY, cwd=userdir)
    assert_clean_failure(r, names="notes.txt", says="not a directory", before=before, dirs=[userdir])


def test_diverging_fit_into_an_empty_directory_leaves_it_empty_and_no_staging(userdir):
    (userdir / "empty").mkdir()
    before = snapshot(userdir)
    r = dsrecon("fit", "x.tsv", "-o", "empty", *DIVERGE, *TINY, cwd=userdir)
    assert_clean_failure(r, names="diverged", before=before, dirs=[userdir])
    assert (userdir / "empty").is_dir() and not any((userdir / "empty").iterdir())


def test_diverging_fit_into_a_new_directory_creates_nothing(userdir):
    before = snapshot(userdir)
    r = dsrecon("fit", "x.tsv", "-o", "new/deeper/run", *DIVERGE, *TINY, cwd=userdir)
    assert_clean_failure(r, names="diverged", before=before, dirs=[userdir])
    assert not (userdir / "new").exists()


def test_bad_data_fit_leaves_nothing(userdir):
    (userdir / "bad.tsv").write_text("a\tb\tc\n1\t2\tx\n3\t4\t5\n")
    before = snapshot(userdir)
    r = dsrecon("fit", "bad.tsv", "-o", "run", "--tr", "1", *TINY, cwd=userdir)
    assert_clean_failure(r, names="bad.tsv", before=before, dirs=[userdir])
    assert not (userdir / "run").exists()


def test_existing_run_without_force_or_resume_is_refused(userdir):
    assert dsrecon("fit", "x.tsv", "-o", "run", *TINY, cwd=userdir).code == 0
    before = snapshot(userdir)
    r = dsrecon("fit", "x.tsv", "-o", "run", *TINY, cwd=userdir)
    assert_clean_failure(r, names="run", says=["already exists", "--force"], before=before, dirs=[userdir])


# ------------------------------------------------------------------------------ --force
def test_failed_force_fit_leaves_the_previous_run_loadable_and_unchanged(userdir):
    assert dsrecon("fit", "x.tsv", "-o", "run", *TINY, cwd=userdir).code == 0
    r = dsrecon("simulate", "model", "run", "--steps", "300", "--seed", "1", "-o", "g1.tsv", "--quiet", cwd=userdir)
    assert r.code == 0, r.err
    before = snapshot(userdir)
    r = dsrecon("fit", "x.tsv", "-o", "run", "--force", *DIVERGE, *TINY, cwd=userdir)
    assert_clean_failure(r, names="diverged", before=before, dirs=[userdir])
    r = dsrecon("simulate", "model", "run", "--steps", "300", "--seed", "1", "-o", "g2.tsv", "--quiet", cwd=userdir)
    assert r.code == 0, r.err
    assert (userdir / "g1.tsv").read_bytes() == (userdir / "g2.tsv").read_bytes()


def test_force_with_user_files_in_the_run_is_refused_naming_them(userdir):
    assert dsrecon("fit", "x.tsv", "-o", "run", *TINY, cwd=userdir).code == 0
    (userdir / "run" / "my_plot.png").write_bytes(b"png")
    before = snapshot(userdir)
    r = dsrecon("fit", "x.tsv", "-o", "run", "--force", *TINY, cwd=userdir)
    assert_clean_failure(r, names=["run", "my_plot.png"], says="not part of a dsrecon run", before=before, dirs=[userdir])


def test_force_replaces_the_previous_run_after_success(userdir):
    assert dsrecon("fit", "x.tsv", "-o", "run", *TINY, cwd=userdir).code == 0
    cfg0 = json.loads((userdir / "run" / "config.json").read_text())
    r = dsrecon("fit", "x.tsv", "-o", "run", "--force", *TINY, "--seed", "5", "--json", cwd=userdir)
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["seed"] == 5 and "torch" in out["versions"]
    cfg = json.loads((userdir / "run" / "config.json").read_text())
    assert cfg0["seed"] == 0 and cfg["seed"] == 5 and cfg["status"] == "complete"
    assert not leftovers(userdir)


def test_ensemble_force_over_user_files_is_refused(userdir):
    (userdir / "ens").mkdir()
    (userdir / "ens" / "keep.txt").write_text("mine")
    before = snapshot(userdir)
    r = dsrecon("fit", "x.tsv", "-o", "ens", "--ensemble", "2", "--force", *TINY, cwd=userdir)
    assert_clean_failure(r, names=["ens", "keep.txt"], before=before, dirs=[userdir])


def test_failed_ensemble_force_leaves_the_previous_ensemble(userdir):
    assert dsrecon("fit", "x.tsv", "-o", "ens", "--ensemble", "2", *TINY, cwd=userdir).code == 0
    before = snapshot(userdir)
    r = dsrecon("fit", "x.tsv", "-o", "ens", "--ensemble", "2", "--force", *DIVERGE, *TINY, cwd=userdir)
    assert_clean_failure(r, names="diverged", before=before, dirs=[userdir])


# ------------------------------------------------------------------------------ the lock
def _wait_for(cond, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    t0 = time.time()
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.returncode} {proc.stderr.read()}")
        if time.time() - t0 > timeout:
            raise AssertionError("timed out")
        time.sleep(0.05)


def _ckpt_epoch(userdir: Path, name: str = "run") -> int:
    st = userdir / f".{name}.staging" / "checkpoint" / "state.json"
    try:
        return int(json.loads(st.read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return -1


def test_two_concurrent_fits_into_one_directory(userdir):
    p1 = popen("fit", "x.tsv", "-o", "run", *LONG, "--epochs", "600", "--patience", "0", cwd=userdir)  # (the last wins)
    try:
        _wait_for(lambda: (userdir / ".run.lock").exists() and _ckpt_epoch(userdir) >= 1, proc=p1)
        before = snapshot(userdir)
        r = dsrecon("fit", "x.tsv", "-o", "run", *LONG, cwd=userdir)
        assert r.code == 1 and len(r.err_lines) == 1, r.err
        assert "another dsrecon process" in r.err and f"process {p1.pid}" in r.err and "run" in r.err
        mine = {k for k in before if "/.run.staging/" not in k and not k.endswith("/.run.lock")}  # (those are the first fit's)
        assert snapshot(userdir).keys() >= mine
    finally:
        out, err = p1.communicate(timeout=300)
    assert p1.returncode == 0, err
    assert (userdir / "run" / "model.safetensors").exists() and not leftovers(userdir)


def test_a_stale_lock_is_taken_over_with_a_note(userdir):
    (userdir / ".run.lock").write_text(json.dumps({"pid": 999999, "host": "elsewhere", "started": 0, "command": "dsrecon fit"}))
    r = dsrecon("fit", "x.tsv", "-o", "run", *TINY[:-1], cwd=userdir)
    assert r.code == 0, r.err
    assert "took over the lock" in r.err and "999999" in r.err
    assert not leftovers(userdir)


def test_a_users_file_where_the_lock_goes_is_never_overwritten(userdir):
    (userdir / ".run.lock").write_text("my own file\n")
    before = snapshot(userdir)
    r = dsrecon("fit", "x.tsv", "-o", "run", *TINY, cwd=userdir)
    assert r.code == 1 and len(r.err_lines) == 1 and ".run.lock" in r.err and "not written by dsrecon" in r.err, r.err
    assert snapshot(userdir) == before and not (userdir / "run").exists()


def test_a_stale_staging_directory_is_cleared_with_a_note(userdir):
    st = userdir / ".run.staging"
    (st / "checkpoint").mkdir(parents=True)
    (st / "config.json").write_text("{}")
    r = dsrecon("fit", "x.tsv", "-o", "run", *TINY[:-1], cwd=userdir)
    assert r.code == 0, r.err
    assert "removed the staging directory" in r.err
    assert not st.exists() and (userdir / "run" / "model.safetensors").exists()


# ------------------------------------------------------------------------------ interrupts
@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    d = tmp_path_factory.mktemp("full")
    lorenz_table(d / "x.tsv")
    r = dsrecon("fit", "x.tsv", "-o", "run", *LONG, cwd=d)
    assert r.code == 0, r.err
    return d / "run"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_interrupted_fit_resumes_bit_identically(userdir, uninterrupted, sig):
    # every checkpoint write held 0.1 s, so the fit cannot finish before the signal lands on a loaded machine
    p = popen("fit", "x.tsv", "-o", "run", *LONG, cwd=userdir, env={"DSRECON_TEST_HOLD_WRITE": "0.1"})
    _wait_for(lambda: _ckpt_epoch(userdir) >= 8, proc=p)
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    assert "Traceback" not in err
    if sig == signal.SIGKILL:
        assert p.returncode == -signal.SIGKILL
    else:
        assert p.returncode == (130 if sig == signal.SIGINT else 143), err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1, err
        m = re.search(r"at epoch (\d+); checkpoint at epoch (\d+) kept; resume with: (dsrecon fit .*--resume)$", lines[0])
        assert m, lines[0]
        assert int(m.group(1)) >= int(m.group(2)) >= 8
        assert m.group(3).split()[2:] == ["x.tsv", "-o", "run", *LONG, "--resume"]
    assert not (userdir / "run").exists()  # nothing at the target until the run is complete
    assert (userdir / ".run.staging" / "checkpoint" / "state.json").exists()
    r = dsrecon("fit", "x.tsv", "-o", "run", *LONG, "--resume", cwd=userdir)
    assert r.code == 0, r.err
    assert _same_weights(userdir / "run", uninterrupted)
    a = (userdir / "run" / "training_log.tsv").read_text().splitlines()
    b = (uninterrupted / "training_log.tsv").read_text().splitlines()
    strip = lambda rows: [r.split("\t")[:4] + r.split("\t")[5:] for r in rows]  # noqa: E731 (seconds differ)
    assert strip(a) == strip(b)
    assert not leftovers(userdir)


def _long_model(userdir: Path) -> None:
    r = dsrecon("fit", "x.tsv", "-o", "run", *TINY, cwd=userdir)
    assert r.code == 0, r.err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_simulate_model_leaves_no_temporary_files(userdir, sig):
    _long_model(userdir)
    before = snapshot(userdir)
    # the written table is held under its temporary name (60 s), so the signal lands while it writes
    p = popen("simulate", "model", "run", "--steps", "200000", "-o", "g.tsv", "--quiet", cwd=userdir,
              env={"DSRECON_TEST_HOLD_WRITE": "60"})
    _wait_for(lambda: any(".tmp" in q.name for q in userdir.iterdir()), proc=p)
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    assert p.returncode in (130, 143), (p.returncode, err)
    assert "Traceback" not in err
    assert snapshot(userdir) == before and not leftovers(userdir)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_evaluate_and_report_leave_no_temporary_files(userdir, sig):
    """Signalled once the command has started its work (its first log line), not while Python is
    still importing (a slow start under load would make that a test of the interpreter)."""
    _long_model(userdir)
    before = snapshot(userdir)
    for args, started in ((["evaluate", "run", "--data", "x.tsv", "--lyapunov-steps", "2000000", "-o", "m.json"], "analysing the model"),
                          (["report", "run", "--data", "x.tsv", "--lyapunov-steps", "2000000", "-o", "r.html"], "analysing run")):
        log = userdir.parent / f"{args[0]}-{sig}.log"
        with open(log, "w") as fh:
            env = {**os.environ, **HOSTILE_ENV}
            p = subprocess.Popen([sys.executable, "-m", "dsrecon.cli.main", *args], cwd=userdir, env=env, stdout=subprocess.DEVNULL,
                                 stderr=fh, stdin=subprocess.DEVNULL, text=True)
            _wait_for(lambda: started in log.read_text(), proc=None)
            # (a signal that lands in numba's first compilation is swallowed there; the CLI keeps it
            # and the Lyapunov loop raises it again at its next chunk)
            p.send_signal(sig)
            p.wait(timeout=120)
        err = log.read_text()
        assert p.returncode in (130, 143), (args[0], p.returncode, err)
        assert "Traceback" not in err
        assert snapshot(userdir) == before and not leftovers(userdir), args[0]


# ------------------------------------------------------------------------------ cohorts and sweeps
COHORT = ["--epochs", "60", "--patience", "0", "--batches-per-epoch", "2", "--batch-size", "4", "--hidden-dim", "8",
          "--sequence-length", "60", "--val-every", "10", "--checkpoint-every", "1", "--lyapunov-steps", "200",
          "--max-parallel", "2", "--quiet"]


def _tmp_files(d: Path) -> list[str]:
    return [str(p) for p in d.rglob("*") if p.name.endswith(".tmp") or ".replaced-" in p.name]


@pytest.mark.parametrize("sig", [signal.SIGTERM])  # (SIGINT takes the same path: both are a KeyboardInterrupt)
def test_interrupted_fit_cohort_stops_its_workers_and_resumes(tmp_path, sig):
    """The driver forwards the interrupt to the pool workers: it exits within seconds, leaves no
    temporary file, keeps each running subject's checkpoint, and a rerun completes every subject."""
    (tmp_path / "data").mkdir()
    for i in range(2):
        lorenz_table(tmp_path / "data" / f"sub-{i + 1:02d}_bold.tsv", seed=i)
    before = snapshot(tmp_path / "data")
    out = tmp_path / "out"
    # every checkpoint write held 0.1 s (≥ 6 s per subject), so no subject finishes before the signal
    p = popen("fit-cohort", "data", "-o", "out", *COHORT, cwd=tmp_path, env={"DSRECON_TEST_HOLD_WRITE": "0.1"})
    _wait_for(lambda: out.exists() and any(_ckpt_epoch(out, f"sub-{i:02d}") >= 2 for i in (1, 2)), proc=p)
    t0 = time.time()
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert time.time() - t0 < 30, "the workers were not stopped"
    assert p.returncode == (130 if sig == signal.SIGINT else 143), err
    assert "Traceback" not in err
    assert not _tmp_files(tmp_path)
    assert not all((out / f"sub-{i:02d}" / "model.safetensors").exists() for i in (1, 2))  # stopped, not finished
    r = dsrecon("fit-cohort", "data", "-o", "out", *COHORT, "--json", cwd=tmp_path)
    assert r.code == 0, r.err
    assert json.loads(r.out)["n_complete"] == 2
    assert snapshot(tmp_path / "data") == before and not _tmp_files(tmp_path) and not leftovers(out)


def test_interrupted_sweep_leaves_no_temporary_files(userdir, tmp_path_factory):
    """SIGTERM to a sweep on the local pool, on a cold numba cache: the workers are still compiling
    (an interrupt there lands in llvmlite's ctypes callback) and must neither print a traceback
    nor leave a temporary file."""
    cache = tmp_path_factory.mktemp("numba-cache")
    p = popen("sweep", "x.tsv", "-o", "sw", "--grid", "hidden_dim=6,8", "--seeds", "2", "--epochs", "400", "--batches-per-epoch", "2",
              "--batch-size", "4", "--sequence-length", "60", "--val-every", "5", "--quiet", cwd=userdir,
              env={"NUMBA_CACHE_DIR": str(cache)})
    _wait_for(lambda: (userdir / "sw").exists() and any((userdir / "sw").rglob("state.json")), proc=p)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    assert "Traceback" not in err and not _tmp_files(userdir)


# ================================================================================================
# 2. Tables read as the user meant, or refused
# ================================================================================================
# Hostile tables (issue 13, part 3): tables read as the user meant, or refused.
#
# Each case runs the real CLI in a subprocess in a folder holding the user's files. A refusal is
# one line on stderr naming the file, exit 1, nothing changed and nothing left behind; a table
# read with a guess (a dropped row index, reordered regions, no header) succeeds with a one-line
# note on stderr and the right result.


#: TINY without --quiet: the notes are log lines, and --quiet silences them
LOUD = [a for a in TINY if a != "--quiet"]
NAMES = ["x", "y", "z"]


def _frames(src: Path) -> np.ndarray:
    return np.loadtxt(src, skiprows=1, delimiter="\t", ndmin=2)


def _write(path: Path, arr: np.ndarray, header: list[str] | None, delim: str = "\t", index: int | None = None) -> Path:
    lines = [] if header is None else [delim.join(header)]
    for i, row in enumerate(arr):
        cells = ([str(index + i)] if index is not None else []) + [repr(float(v)) for v in row]
        lines.append(delim.join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())


@pytest.fixture
def home(tmp_path):
    """The user's folder: their own files and a Lorenz63 table x.tsv (TR 1 s in x.json).

    A folder below tmp_path, not tmp_path itself: the harness also looks for leftovers beside the
    folder, and pytest keeps its own ``.lock`` beside tmp_path."""
    d = tmp_path / "home"
    user_files(d)
    lorenz_table(d / "x.tsv")
    return d


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One tiny fit of x.tsv (regions x, y, z; TR 1 s), shared by the evaluate/simulate/report cases."""
    d = tmp_path_factory.mktemp("fitted")
    lorenz_table(d / "x.tsv")
    r = dsrecon("fit", "x.tsv", "-o", "run", "--seed", "0", *TINY, cwd=d)
    assert r.code == 0, r.err
    return d / "run", d / "x.tsv"


def _run_copy(fitted, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(fitted[0], run)
    return run


# ---------------------------------------------------------------- fit: read as meant

def test_pandas_index_column_is_dropped_with_a_note(home):
    x = _frames(home / "x.tsv")
    _write(home / "pd.csv", x, ["", *NAMES], ",", index=0)  # df.to_csv(): empty first header cell, 0..T-1 below
    r = dsrecon("fit", "pd.csv", "--tr", "1", "-o", "run", "--seed", "0", *LOUD, cwd=home)
    assert r.code == 0, r.err
    assert "pd.csv: unnamed first column counts 0, 1, 2, …: read as a row index and dropped" in r.err_lines
    cfg = _config(home / "run")
    assert cfg["n_regions"] == 3 and cfg["names"] == NAMES


def test_r_row_names_with_a_short_header_are_dropped_with_a_note(home):
    x = _frames(home / "x.tsv")
    _write(home / "r.txt", x, NAMES, " ", index=1)  # R write.table: header one name short, row names 1..T
    r = dsrecon("fit", "r.txt", "--tr", "1", "-o", "run", "--seed", "0", *LOUD, cwd=home)
    assert r.code == 0, r.err
    assert any(ln.startswith("r.txt: the header is one name short") for ln in r.err_lines), r.err
    assert _config(home / "run")["names"] == NAMES


def test_numeric_first_row_is_read_as_data_with_a_note(home):
    x = _frames(home / "x.tsv")
    _write(home / "nohead.tsv", x, None)
    r = dsrecon("fit", "nohead.tsv", "--tr", "1", "-o", "run", "--seed", "0", *LOUD, cwd=home)
    assert r.code == 0, r.err
    assert ("nohead.tsv: first row is numeric, read as data (no header); columns named by position "
            "(region000…region002)") in r.err_lines
    cfg = _config(home / "run")
    assert cfg["names"] == ["region000", "region001", "region002"]
    assert cfg["provenance"][0]["columns"] == "position"


def test_gzipped_tsv_with_a_header_is_read(home):
    (home / "sub-01_timeseries.tsv.gz").write_bytes(gzip.compress((home / "x.tsv").read_bytes()))
    (home / "sub-01_timeseries.json").write_text(json.dumps({"RepetitionTime": 1.0}))
    r = dsrecon("fit", "sub-01_timeseries.tsv.gz", "-o", "run", "--seed", "0", *TINY, cwd=home)
    assert r.code == 0, r.err
    cfg = _config(home / "run")
    assert cfg["names"] == NAMES and cfg["tr"] == 1.0


def test_gzipped_headerless_physio_takes_the_sidecar_columns(home):
    x = _frames(home / "x.tsv")
    body = "".join("\t".join(repr(float(v)) for v in row) + "\n" for row in x)
    (home / "sub-01_physio.tsv.gz").write_bytes(gzip.compress(body.encode()))
    (home / "sub-01_physio.json").write_text(json.dumps({"SamplingFrequency": 1.0, "Columns": ["cardiac", "resp", "pulse"]}))
    r = dsrecon("fit", "sub-01_physio.tsv.gz", "-o", "run", "--seed", "0", *LOUD, cwd=home)
    assert r.code == 0, r.err
    assert ("sub-01_physio.tsv.gz: first row is numeric, read as data (no header); columns named by the sidecar's "
            "Columns") in r.err_lines
    assert _config(home / "run")["names"] == ["cardiac", "resp", "pulse"]


def test_tr_equal_to_the_sidecar_within_tolerance_is_fine(home):
    r = dsrecon("fit", "x.tsv", "--tr", "1.0000000001", "-o", "run", "--seed", "0", *TINY, cwd=home)
    assert r.code == 0, r.err
    assert _config(home / "run")["tr"] == 1.0


# ---------------------------------------------------------------- fit: refused

def _fit_refused(home: Path, args: list, names, says=None) -> str:
    before = snapshot(home)
    r = dsrecon("fit", *args, "-o", "run", "--seed", "0", *TINY, cwd=home)
    line = assert_clean_failure(r, names=names, before=before, dirs=[home], says=says)
    assert not (home / "run").exists()
    return line


@pytest.mark.parametrize("extra", [[], ["--drop-column", "x"]], ids=["plain", "drop-column"])
def test_duplicated_region_names_are_refused(home, extra):
    _write(home / "dup.tsv", _frames(home / "x.tsv"), ["x", "y", "x"])
    line = _fit_refused(home, ["dup.tsv", "--tr", "1", *extra], "dup.tsv")
    assert line == ("error: dup.tsv: duplicated column name(s) in the header: 'x' (columns 1, 3); "
                    "region names must be unique")


def test_tr_contradicting_the_sidecar_is_refused(home):
    line = _fit_refused(home, ["x.tsv", "--tr", "2"], ["x.tsv", "x.json"])
    assert line == "error: x.tsv: --tr 2 s contradicts the file's TR (1 s, RepetitionTime in x.json); drop --tr or fix the sidecar"


def test_semicolon_delimited_table_gets_a_hint(home):
    x = _frames(home / "x.tsv")
    (home / "eu.csv").write_text("x;y;z\n" + "".join(";".join(f"{v:.4f}".replace(".", ",") for v in row) + "\n" for row in x))
    _fit_refused(home, ["eu.csv", "--tr", "1"], "eu.csv", says="semicolon-delimited")


def test_unnamed_first_column_that_is_not_an_index_is_refused(home):
    x = _frames(home / "x.tsv")
    t = np.arange(x.shape[0])[:, None] * 0.5  # a time column in seconds under an empty header cell
    _write(home / "t.csv", np.hstack([t, x]), ["", *NAMES], ",")
    _fit_refused(home, ["t.csv", "--tr", "1"], "t.csv", says="first column has no name")


def test_truncated_gzip_is_refused(home):
    full = gzip.compress((home / "x.tsv").read_bytes())
    (home / "cut.tsv.gz").write_bytes(full[: len(full) // 2])
    _fit_refused(home, ["cut.tsv.gz", "--tr", "1"], "cut.tsv.gz", says="not a readable gzip file")


# ---------------------------------------------------------------- evaluate / simulate / report on a fitted run

def _evaluate(run: Path, data: str, cwd: Path):
    return dsrecon("evaluate", run, "--data", data, "--no-analysis", "--json", cwd=cwd)


METRICS = ("D_stsp", "D_H", "PE_n", "n_test")


def test_evaluate_on_permuted_columns_reorders_with_a_note_and_scores_the_same(fitted, home):
    run, _ = fitted
    x = _frames(home / "x.tsv")
    _write(home / "perm.tsv", x[:, [2, 0, 1]], ["z", "x", "y"])  # no sidecar: takes the model's TR
    ref = _evaluate(run, "x.tsv", home)
    r = _evaluate(run, "perm.tsv", home)
    assert ref.code == 0 and r.code == 0, r.err
    assert "perm.tsv: columns reordered by name to the model's region order (x, y, z)" in r.err_lines
    a, b = json.loads(ref.out), json.loads(r.out)
    assert {k: b[k] for k in METRICS} == {k: a[k] for k in METRICS}


def test_evaluate_on_headerless_npy_matches_by_position_with_a_note(fitted, home):
    run, _ = fitted
    np.save(home / "x.npy", _frames(home / "x.tsv"))
    ref, r = _evaluate(run, "x.tsv", home), _evaluate(run, "x.npy", home)
    assert r.code == 0, r.err
    assert "x.npy: no header: columns matched to the model's regions by position (x, y, z)" in r.err_lines
    a, b = json.loads(ref.out), json.loads(r.out)
    assert {k: b[k] for k in METRICS} == {k: a[k] for k in METRICS}


def test_simulate_from_permuted_columns_equals_simulate_from_the_original(fitted, home):
    run, _ = fitted
    x = _frames(home / "x.tsv")
    _write(home / "perm.tsv", x[:, [1, 2, 0]], ["y", "z", "x"])
    a = dsrecon("simulate", "model", run, "--steps", "50", "--from", "x.tsv", "-o", "a.tsv", cwd=home)
    b = dsrecon("simulate", "model", run, "--steps", "50", "--from", "perm.tsv", "-o", "b.tsv", cwd=home)
    assert a.code == 0 and b.code == 0, b.err
    assert "perm.tsv: columns reordered by name to the model's region order (x, y, z)" in b.err_lines
    assert (home / "a.tsv").read_text() == (home / "b.tsv").read_text()


def test_report_on_permuted_columns_reorders_with_a_note(fitted, home):
    run = _run_copy(fitted, home)
    x = _frames(home / "x.tsv")
    _write(home / "perm.tsv", x[:, [2, 1, 0]], ["z", "y", "x"])
    r = dsrecon("report", run, "--data", "perm.tsv", "-o", "r.html", "--lyapunov-steps", "500", "--k-max", "1", "--json", cwd=home)
    assert r.code == 0, r.err
    assert "perm.tsv: columns reordered by name to the model's region order (x, y, z)" in r.err_lines
    ev = json.loads(_evaluate(run, "x.tsv", home).out)
    assert json.loads(r.out)["D_stsp"] == pytest.approx(ev["D_stsp"])


def _command(kind: str, run: Path, data: str) -> list:
    if kind == "evaluate":
        return ["evaluate", run, "--data", data, "--no-analysis"]
    if kind == "simulate":
        return ["simulate", "model", run, "--steps", "20", "--from", data, "-o", "gen.tsv"]
    return ["report", run, "--data", data, "-o", "r.html", "--lyapunov-steps", "200", "--k-max", "1"]


KINDS = ["evaluate", "simulate", "report"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_different_region_set_is_refused_naming_missing_and_extra(fitted, home, kind):
    run = _run_copy(fitted, home)
    _write(home / "other.tsv", _frames(home / "x.tsv"), ["x", "y", "w"])
    before = snapshot(home)
    r = dsrecon(*_command(kind, run, "other.tsv"), cwd=home)
    line = assert_clean_failure(r, names="other.tsv", before=before, dirs=[home])
    assert line == ("error: other.tsv: the columns do not match the model's regions: missing z; extra w "
                    "(the file has 3 columns, the model was fitted on 3 regions)")


@pytest.mark.parametrize("kind", KINDS)
def test_data_whose_tr_differs_from_the_models_is_refused(fitted, home, kind):
    run = _run_copy(fitted, home)
    lorenz_table(home / "fast.tsv", tr=2.0)  # its sidecar says 2 s; the model was fitted at 1 s
    before = snapshot(home)
    r = dsrecon(*_command(kind, run, "fast.tsv"), cwd=home)
    line = assert_clean_failure(r, names=["fast.tsv", "fast.json"], before=before, dirs=[home], says=["model's TR", "(1 s)", "2 s"])
    assert line == ("error: fast.tsv: the file's TR (2 s, RepetitionTime in fast.json) differs from the model's TR (1 s); "
                    "the data must be sampled like the training data")


@pytest.mark.parametrize("kind", KINDS)
def test_headerless_data_with_the_wrong_column_count_is_refused(fitted, home, kind):
    run = _run_copy(fitted, home)
    np.save(home / "two.npy", _frames(home / "x.tsv")[:, :2])
    before = snapshot(home)
    r = dsrecon(*_command(kind, run, "two.npy"), cwd=home)
    line = assert_clean_failure(r, names="two.npy", before=before, dirs=[home])
    assert line == ("error: two.npy: 2 columns, the model was fitted on 3 regions "
                    "(the file has no header, so columns are matched by position)")


# ================================================================================================
# 3. No raw internal errors; bugs found on the way
# ================================================================================================
# Hostile cases of issue 13, parts 4 to 6: no raw internal error ever reaches the user. Each bad
# output location, damaged run, bad option, bad kernel, too-short or overflowing table and
# too-large problem ends in ONE line on stderr that names the file (or option) and the problem,
# with exit 1 and the user's files untouched. Plus the regressions of part 5 (report without --data,
# fit-cohort with a failed subject, report and evaluate agreeing on fixed points, the resume refusal).
#
# Every CLI case runs the real CLI in a subprocess (tests/hostile_util.py).


#: evaluate and report settings that keep the analysis short
FAST_EVAL = ["--no-analysis", "--quiet"]
FAST_REPORT = ["--lyapunov-steps", "200", "--k-max", "1", "--quiet"]


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory) -> Path:
    """One tiny fit (3 regions, TR 1 s: a 33-tap SPM kernel) for every evaluate/report case."""
    d = tmp_path_factory.mktemp("fitted_run")
    lorenz_table(d / "x.tsv")
    r = dsrecon("fit", "x.tsv", "-o", "run", *TINY, cwd=d)
    assert r.code == 0, r.err
    return d


@pytest.fixture
def work(tmp_path, fitted_run) -> Path:
    """A user's working directory: the table, its sidecar, a copy of the fitted_run run, their own files."""
    for name in ("x.tsv", "x.json"):
        shutil.copy2(fitted_run / name, tmp_path / name)
    shutil.copytree(fitted_run / "run", tmp_path / "run")
    user_files(tmp_path)
    return tmp_path


def _immutable(d: Path, on: bool) -> bool:
    r = subprocess.run(["chattr", "+i" if on else "-i", str(d)], capture_output=True)
    return r.returncode == 0


@pytest.fixture
def read_only(work) -> Path:
    """work/ro: a directory nobody can write in (chmod 555; for root, which ignores permission bits,
    the immutable attribute). Holds a file of the user's."""
    d = work / "ro"
    d.mkdir()
    (d / "keep.txt").write_text("mine\n")
    root = os.geteuid() == 0
    if root:
        ok = _immutable(d, True)
    else:
        d.chmod(0o555)
        ok = True
    probe = d / "probe"
    try:
        probe.write_text("")
        probe.unlink()
        ok = False
    except OSError:
        pass
    if not ok:  # pragma: no cover - a file system without chattr, as root
        pytest.skip("cannot make a read-only directory on this file system")
    yield d
    if root:
        _immutable(d, False)
    else:
        d.chmod(0o755)


def _edit_config(run: Path, edit) -> None:
    p = run / "config.json"
    cfg = json.loads(p.read_text())
    edit(cfg)
    p.write_text(json.dumps(cfg))


# ------------------------------------------------------------------------------ -o an existing file
def test_fit_into_an_existing_regular_file(work):
    before = snapshot(work)
    r = dsrecon("fit", "x.tsv", "-o", "notes.txt", *TINY, cwd=work)
    assert_clean_failure(r, names="notes.txt", before=before, dirs=[work])


def test_simulate_system_onto_a_users_table(work):
    np.savetxt(work / "mine.tsv", np.ones((3, 2)), delimiter="\t", header="a\tb", comments="")
    before = snapshot(work)
    r = dsrecon("simulate", "system", "lorenz63", "--length", "100", "-o", "mine.tsv", "--quiet", cwd=work)
    assert_clean_failure(r, names="mine.tsv", says="not written by dsrecon", before=before, dirs=[work])


def test_simulate_system_onto_a_users_latent_file(work):
    (work / "sim_latent.tsv").write_text("z1\n1\n")
    before = snapshot(work)
    r = dsrecon("simulate", "system", "lorenz63", "--length", "100", "-o", "sim.tsv", "--quiet", cwd=work)
    assert_clean_failure(r, names=["sim_latent.tsv", "sim.tsv"], says="not written by dsrecon", before=before, dirs=[work])


def test_simulate_rerun_replaces_its_own_outputs(work):
    args = ("simulate", "system", "lorenz63", "--length", "100", "-o", "sim.tsv", "--quiet")
    assert dsrecon(*args, cwd=work).code == 0
    first = (work / "sim.tsv").read_bytes()
    r = dsrecon(*args[:-1], "--seed", "1", "--quiet", cwd=work)
    assert r.code == 0, r.err
    assert (work / "sim.tsv").read_bytes() != first


def test_simulate_model_onto_a_users_file(work):
    (work / "gen.tsv").write_text("my table\n")
    before = snapshot(work)
    r = dsrecon("simulate", "model", "run", "--steps", "50", "-o", "gen.tsv", "--quiet", cwd=work)
    assert_clean_failure(r, names="gen.tsv", says="not written by dsrecon", before=before, dirs=[work])


def test_evaluate_run_metrics_onto_a_users_file(work):
    before = snapshot(work)
    r = dsrecon("evaluate", "run", "--data", "x.tsv", "-o", "notes.txt", *FAST_EVAL, cwd=work)
    assert_clean_failure(r, names="notes.txt", says="not written by dsrecon", before=before, dirs=[work])


def test_evaluate_tables_metrics_onto_a_users_file(work):
    before = snapshot(work)
    r = dsrecon("evaluate", "-g", "x.tsv", "-r", "x.tsv", "-o", "analysis.py", "--quiet", cwd=work)
    assert_clean_failure(r, names="analysis.py", says="not written by dsrecon", before=before, dirs=[work])


def test_report_onto_a_users_file(work):
    before = snapshot(work)
    r = dsrecon("report", "run", "-o", "notes.txt", *FAST_REPORT, cwd=work)
    assert_clean_failure(r, names="notes.txt", says="not written by dsrecon", before=before, dirs=[work])


def test_report_onto_a_directory(work):
    before = snapshot(work)
    r = dsrecon("report", "run", "-o", "run", *FAST_REPORT, cwd=work)
    assert_clean_failure(r, names="run", says="is a directory", before=before, dirs=[work])


# ------------------------------------------------------------------------------ read-only location
def test_fit_into_a_read_only_location(work, read_only):
    before = snapshot(work)
    r = dsrecon("fit", "x.tsv", "-o", "ro/run", *TINY, cwd=work)
    assert_clean_failure(r, names="ro", says="write", before=before, dirs=[work])


@pytest.mark.parametrize("args", [
    ("simulate", "system", "lorenz63", "--length", "100", "-o", "ro/sim.tsv", "--quiet"),
    ("simulate", "model", "run", "--steps", "50", "-o", "ro/gen.tsv", "--quiet"),
    ("evaluate", "run", "--data", "x.tsv", "-o", "ro/metrics.json", *FAST_EVAL),
    ("evaluate", "-g", "x.tsv", "-r", "x.tsv", "-o", "ro/metrics.json", "--quiet"),
    ("report", "run", "-o", "ro/report.html", *FAST_REPORT),
], ids=["simulate-system", "simulate-model", "evaluate-run", "evaluate-tables", "report"])
def test_outputs_into_a_read_only_location(work, read_only, args):
    before = snapshot(work)
    r = dsrecon(*args, cwd=work)
    out = args[args.index("-o") + 1]
    assert_clean_failure(r, names=out, says="cannot write", before=before, dirs=[work])


# ------------------------------------------------------------------------------ a damaged run
def _truncate(run: Path, keep: int | None) -> None:
    p = run / "model.safetensors"
    data = p.read_bytes()
    p.write_bytes(b"" if keep is None else data[:keep])


@pytest.mark.parametrize("keep,says", [(None, "empty"), (300, "truncated"), (-40, "truncated")], ids=["empty", "header", "tail"])
def test_evaluate_a_run_with_damaged_weights(work, keep, says):
    if keep is not None and keep < 0:
        keep = (work / "run" / "model.safetensors").stat().st_size + keep
    _truncate(work / "run", keep)
    before = snapshot(work)
    r = dsrecon("evaluate", "run", "--data", "x.tsv", *FAST_EVAL, cwd=work)
    assert_clean_failure(r, names="run/model.safetensors", says=says, before=before, dirs=[work])


def test_simulate_and_report_a_run_with_empty_weights(work):
    _truncate(work / "run", None)
    before = snapshot(work)
    for args in (("simulate", "model", "run", "--steps", "50", "-o", "gen.tsv", "--quiet"), ("report", "run", *FAST_REPORT)):
        r = dsrecon(*args, cwd=work)
        assert_clean_failure(r, names="run/model.safetensors", says="empty", before=before, dirs=[work])


@pytest.mark.parametrize("key", ["hidden_dim", "kernel", "normalisation"])
def test_evaluate_a_run_whose_config_lacks_a_key(work, key):
    _edit_config(work / "run", lambda c: c.pop(key))
    before = snapshot(work)
    r = dsrecon("evaluate", "run", "--data", "x.tsv", *FAST_EVAL, cwd=work)
    assert_clean_failure(r, names="run/config.json", says=f"'{key}' is missing", before=before, dirs=[work])


def test_evaluate_a_run_whose_config_does_not_match_the_weights(work):
    _edit_config(work / "run", lambda c: c.update(hidden_dim=9))
    before = snapshot(work)
    r = dsrecon("evaluate", "run", "--data", "x.tsv", *FAST_EVAL, cwd=work)
    line = assert_clean_failure(r, names=["run/model.safetensors", "run/config.json"], says="shape", before=before, dirs=[work])
    assert "(3, 8)" in line and "(3, 9)" in line  # both shapes


def test_simulate_a_run_whose_config_names_another_region_count(work):
    _edit_config(work / "run", lambda c: c.update(n_regions=4, names=c["names"] + ["w"]))
    before = snapshot(work)
    r = dsrecon("simulate", "model", "run", "--steps", "50", "-o", "gen.tsv", "--quiet", cwd=work)
    assert_clean_failure(r, names="run/config.json", before=before, dirs=[work])


def test_evaluate_a_run_whose_config_is_not_json(work):
    (work / "run" / "config.json").write_text('{"backend": "cshplrnn",')
    before = snapshot(work)
    r = dsrecon("evaluate", "run", "--data", "x.tsv", *FAST_EVAL, cwd=work)
    assert_clean_failure(r, names="run/config.json", says="not valid JSON", before=before, dirs=[work])


# ------------------------------------------------------------------------------ sizes and kernels
@pytest.mark.parametrize("opt", ["--hidden-dim", "--latent-dim", "--batch-size", "--sequence-length"])
def test_fit_with_a_size_of_zero(work, opt):
    before = snapshot(work)
    r = dsrecon("fit", "x.tsv", "-o", "new", *TINY, opt, "0", cwd=work)
    assert_clean_failure(r, names=opt, before=before, dirs=[work])


def test_hidden_dim_zero_in_the_python_api():
    from dsrecon.api import ConvSSM
    from dsrecon.errors import DsreconError
    from dsrecon.io.recording import Recording

    x = np.random.default_rng(0).standard_normal((200, 3))
    rec = Recording(data=x, tr=1.0, names=["a", "b", "c"], mask=np.ones(200, bool), source="x")
    with pytest.raises(DsreconError, match="`hidden_dim` must be a positive integer, got 0"):
        ConvSSM(hidden_dim=0, epochs=1, batches_per_epoch=1, sequence_length=60).fit(rec)


@pytest.mark.parametrize("cmd", ["fit", "simulate"])
def test_kernel_file_not_found(work, cmd):
    before = snapshot(work)
    if cmd == "fit":
        r = dsrecon("fit", "x.tsv", "-o", "new", *TINY, "--kernel", "my_hrf.txt", cwd=work)
    else:
        r = dsrecon("simulate", "system", "lorenz63", "-o", "sim.tsv", "--kernel", "my_hrf.txt", "--quiet", cwd=work)
    line = assert_clean_failure(r, names="my_hrf.txt", says="not found", before=before, dirs=[work])
    assert "unknown kernel" not in line


def test_kernel_file_with_a_non_finite_tap(work):
    (work / "hrf.txt").write_text("0.2\n0.5\ninf\n0.3\n")
    before = snapshot(work)
    r = dsrecon("fit", "x.tsv", "-o", "new", *TINY, "--kernel", "hrf.txt", cwd=work)
    assert_clean_failure(r, names="hrf.txt", says="line 3", before=before, dirs=[work])


def test_all_zero_kernel(work):
    (work / "hrf.txt").write_text("0\n0\n0\n")
    before = snapshot(work)
    for args in (("fit", "x.tsv", "-o", "new", *TINY), ("simulate", "system", "lorenz63", "-o", "sim.tsv", "--quiet")):
        r = dsrecon(*args, "--kernel", "hrf.txt", cwd=work)
        assert_clean_failure(r, names="hrf.txt", says="zero", before=before, dirs=[work])


# ------------------------------------------------------------------------------ data too short / too large
def _short_table(work: Path, frames: int = 11) -> None:
    lines = (work / "x.tsv").read_text().splitlines()
    (work / "short.tsv").write_text("\n".join(lines[: frames + 1]) + "\n")
    shutil.copy2(work / "x.json", work / "short.json")


@pytest.mark.parametrize("args", [
    ("evaluate", "run", "--data", "short.tsv", *FAST_EVAL),
    ("report", "run", "--data", "short.tsv", *FAST_REPORT),
    ("simulate", "model", "run", "--steps", "50", "--from", "short.tsv", "-o", "gen.tsv", "--quiet"),
], ids=["evaluate", "report", "simulate-from"])
def test_test_data_shorter_than_the_kernel(work, args):
    _short_table(work)
    before = snapshot(work)
    r = dsrecon(*args, cwd=work)
    assert_clean_failure(r, names="short.tsv", says=["11 frames", "at least 33 frames"], before=before, dirs=[work])


def test_evaluate_without_quiet_still_prints_one_line(work):
    _short_table(work)
    before = snapshot(work)
    r = dsrecon("evaluate", "run", "--data", "short.tsv", "--no-analysis", cwd=work)
    assert_clean_failure(r, names="short.tsv", says="at least 33 frames", before=before, dirs=[work])


def _huge_table(work: Path, value: float, row: int = 100, col: int = 1) -> None:
    from dsrecon.io.tables import read_array, write_table

    x, names = read_array(work / "x.tsv")
    x[row, col] = value
    write_table(work / "huge.tsv", x, names, sidecar={"RepetitionTime": 1.0})


def test_fit_on_values_whose_z_score_overflows(work):
    _huge_table(work, 1e308)
    before = snapshot(work)
    r = dsrecon("fit", "huge.tsv", "-o", "new", *TINY, cwd=work)
    assert_clean_failure(r, names="huge.tsv", says=["column 'y'", "row 101", "too large"], before=before, dirs=[work])


@pytest.mark.parametrize("args", [
    ("evaluate", "run", "--data", "huge.tsv", *FAST_EVAL),
    ("report", "run", "--data", "huge.tsv", *FAST_REPORT),
    ("simulate", "model", "run", "--steps", "50", "--from", "huge.tsv", "-o", "gen.tsv", "--quiet"),
], ids=["evaluate", "report", "simulate-from"])
def test_test_data_whose_z_score_overflows(work, args):
    _huge_table(work, 1e300, row=200, col=2)  # finite in float64, far beyond float32 once z-scored
    before = snapshot(work)
    r = dsrecon(*args, cwd=work)
    assert_clean_failure(r, names="huge.tsv", says=["column 'z'", "row 201", "too large"], before=before, dirs=[work])


def test_z_scoring_names_column_and_row_in_the_library():
    from dsrecon.errors import DataError
    from dsrecon.training.prepare import Normalisation

    norm = Normalisation(np.zeros(2), np.ones(2))
    x = np.zeros((5, 2))
    x[3, 1] = 1e39  # finite in float64, not in float32
    with pytest.raises(DataError, match=r"t\.tsv: column 'b', row 4: value 1e\+39"):
        norm.apply(x, "t.tsv", ["a", "b"])
    np.testing.assert_array_equal(norm.apply(np.array([[1.0, np.nan]]))[0, 0], 1.0)  # NaN (censored) stays NaN


# ------------------------------------------------------------------------------ too large for memory
def test_memory_check_refuses_10000_regions_before_any_work():
    """10 000 regions × 50 frames: each validation free run needs ~40 GB (the 32 GB conv1d output is
    most of it); the check says so with the option that avoids it."""
    from dsrecon.errors import DsreconError
    from dsrecon.training.memory import check_memory, estimate_fit_memory

    est = estimate_fit_memory([50], 10_000, 10_000, 17, batch_size=16, sequence_length=200, test_fraction=0.25, hidden_dim=50)
    assert 32e9 < est.validation_bytes < 50e9 and est.validation_steps == 50_000
    with pytest.raises(DsreconError, match=r"big\.tsv: too large for memory: each validation free run \(50000 steps × 10000 regions\) "
                                           r"needs about 4\d\.\d GB, 16\.0 GB are available.*--test-fraction 0"):
        check_memory(est, source="big.tsv", available=16_000_000_000)
    # without a held-out tail there is no validation run, and training batches are small
    small = estimate_fit_memory([50], 10_000, 10_000, 17, batch_size=16, sequence_length=20, test_fraction=0.0, hidden_dim=50)
    assert small.validation_bytes == 0
    check_memory(small, available=16_000_000_000)


def test_fit_too_large_for_memory_is_refused_before_any_work(tmp_path):
    """The CLI end to end: 30 000 regions × 50 frames (each validation free run ~120 GB, more than
    any CI machine has) is refused in seconds, before the model is built, and writes nothing."""
    import time

    from dsrecon.io.tables import write_table

    x = np.random.default_rng(0).standard_normal((50, 30_000)).astype(np.float32)
    write_table(tmp_path / "big.tsv", x, [f"r{i}" for i in range(x.shape[1])], sidecar={"RepetitionTime": 2.0})
    before = snapshot(tmp_path)
    t0 = time.perf_counter()
    r = dsrecon("fit", "big.tsv", "-o", "run", "--epochs", "1", "--quiet", cwd=tmp_path)
    assert time.perf_counter() - t0 < 120  # (a generous bound: building the model alone would take hours)
    assert_clean_failure(r, names="big.tsv", says=["too large for memory", "--test-fraction 0"], before=before, dirs=[tmp_path])
    assert not (tmp_path / "run").exists()


def test_memory_check_names_the_batch_options_for_training():
    from dsrecon.errors import DsreconError
    from dsrecon.training.memory import check_memory, estimate_fit_memory

    est = estimate_fit_memory([5000], 2000, 2000, 17, batch_size=4096, sequence_length=500, test_fraction=0.0, hidden_dim=50)
    with pytest.raises(DsreconError, match="--batch-size or --sequence-length"):
        check_memory(est, available=8_000_000_000)


def test_memory_check_passes_a_usual_fit():
    from dsrecon.training.memory import available_memory, check_memory, estimate_fit_memory

    est = estimate_fit_memory([300], 3, 3, 33, batch_size=16, sequence_length=200, test_fraction=0.25, hidden_dim=50)
    assert est.validation_bytes < 50e6
    assert available_memory() > 0
    check_memory(est)


# ------------------------------------------------------------------------------ part 5: bugs
def test_report_without_data_for_a_three_region_model(work):
    """The 3-D attractor panel without data used to crash (Axes3D.text)."""
    r = dsrecon("report", "run", "-o", "report.html", *FAST_REPORT, cwd=work)
    assert r.code == 0, r.err
    assert (work / "report.html").stat().st_size > 10_000


def test_report_and_evaluate_agree_on_fixed_points_and_cycles(work):
    ev = dsrecon("evaluate", "run", "--data", "x.tsv", "--lyapunov-steps", "300", "--json", "--quiet", cwd=work)
    rep = dsrecon("report", "run", "--lyapunov-steps", "300", "--json", "--quiet", cwd=work)
    assert ev.code == 0 and rep.code == 0, ev.err + rep.err
    e, p = json.loads(ev.out), json.loads(rep.out)
    by_period = e["analysis"]["fixed_points"]["n_by_period"]
    assert (p["n_fixed_points"], p["n_cycles"]) == (e["n_fixed_points"], e["n_cycles"])
    assert e["n_fixed_points"] == by_period.get("1", 0)
    assert e["n_cycles"] == sum(v for k, v in by_period.items() if k != "1")


def test_fit_cohort_with_a_failed_subject_exits_1_and_keeps_the_rest(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in (1, 2):
        lorenz_table(data / f"sub-{i:02d}_bold.tsv", seed=i)
    user_files(tmp_path)
    before = snapshot(tmp_path)
    r = dsrecon("fit-cohort", "data", "-o", "cohort", *TINY, "--lyapunov-steps", "0", "--max-parallel", "1",
                cwd=tmp_path, env={"DSRECON_TEST_FAIL_SUBJECT": "sub-02"})
    line = assert_clean_failure(r, names="failures.tsv", says="1 of 2 subjects failed", before=before, dirs=[tmp_path])
    assert line == f"error: 1 of 2 subjects failed: see {(tmp_path / 'cohort' / 'failures.tsv').resolve()}"
    assert (tmp_path / "cohort" / "sub-01" / "model.safetensors").exists()  # the rest is kept
    assert "sub-02" in (tmp_path / "cohort" / "failures.tsv").read_text()


def test_resume_refusal_names_the_option_and_both_values(tmp_path):
    from dsrecon.api import ConvSSM
    from dsrecon.io.load import InputSpec, load_inputs
    from dsrecon.training.hooks import InjectedKill, inject_faults

    (tmp_path / "data").mkdir()
    (tmp_path / "runs").mkdir()
    x = lorenz_table(tmp_path / "data" / "x.tsv")
    recs = load_inputs([str(x)], InputSpec())
    opts = dict(hidden_dim=8, epochs=3, batches_per_epoch=2, batch_size=4, sequence_length=60, val_every=1, checkpoint_every=1)
    with pytest.raises(InjectedKill):  # killed after epoch 2, as the CLI's TINY fit would be
        with inject_faults(stop_after_epoch=2):
            ConvSSM(**opts).fit(recs, run_dir=tmp_path / "runs" / "run", inputs=["data/x.tsv"])
    before = snapshot(tmp_path)
    r = dsrecon("fit", "data/x.tsv", "-o", "runs/run", "--resume", *TINY, "--learning-rate", "0.01", cwd=tmp_path)
    # (the staging directory of the interrupted run is expected beside runs/run: check the data for leftovers)
    line = assert_clean_failure(r, names="runs/run", says="--learning-rate: 0.001 in the run, 0.01 now",
                                before=snapshot(tmp_path / "data"), dirs=[tmp_path / "data"])
    assert "cannot resume" in line
    assert snapshot(tmp_path) == before  # the interrupted run (its staging directory) is kept as it was


def test_resume_refusal_names_a_backend_option_and_the_kernel():
    from dsrecon.io.runs import check_resumable as _check_resumable
    from dsrecon.errors import DsreconError

    old = {"backend": "alrnn", "backend_options": {"pwl_units": 2}, "kernel": {"kind": "spm", "params": {"tr": 1.0}, "taps": [1]},
           "seed": 0}
    new = {**old, "backend_options": {"pwl_units": 3}, "kernel": {"kind": "spm", "params": {"tr": 2.0}, "taps": [1]}}
    with pytest.raises(DsreconError, match=r"run: cannot resume: --pwl-units: 2 in the run, 3 now; TR: 1 in the run, 2 now"):
        _check_resumable(Path("run"), old, new)
