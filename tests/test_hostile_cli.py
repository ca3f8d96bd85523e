"""The CLI's edge (issue 38, part A): interrupts at any moment, outputs a script can rely on,
progress a cluster job can watch, and the fresh-clone check.

Each case runs the real CLI in a subprocess (tests/hostile_util.py) and checks the exit code, the
one line on stderr, that the user's files are byte-identical and that nothing is left behind.
"""

from __future__ import annotations

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

from hostile_util import ENV, TINY, Proc, assert_clean_failure, dsrecon, leftovers, lorenz_table, snapshot, user_files

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def userdir(tmp_path):
    """A working directory as a user has it: a table, its sidecar, and their own files."""
    lorenz_table(tmp_path / "x.tsv")
    user_files(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A tiny fitted run, copied into each test's directory that needs one."""
    d = tmp_path_factory.mktemp("fitted")
    lorenz_table(d / "x.tsv")
    r = dsrecon("fit", "x.tsv", "-o", "run", *TINY, cwd=d)
    assert r.code == 0, r.err
    return d / "run"


def _env(**extra) -> dict:
    e = {**os.environ, **ENV, **extra}
    e.pop("DSRECON_DEBUG", None)
    return e


def _handlers_installed(pid: int) -> bool:
    """The CLI's handlers are in place: the process catches SIGTERM (the interpreter itself catches
    only SIGINT), read from /proc/PID/status."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    m = re.search(r"^SigCgt:\s*([0-9a-f]+)$", text, re.M)
    return bool(m) and bool(int(m.group(1), 16) >> (signal.SIGTERM - 1) & 1)


# ------------------------------------------------------------------------------ interrupts
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("delay", [0.0, 0.1, 0.5, 1.5])
def test_an_interrupt_at_any_moment_exits_130_or_143_with_one_line(userdir, fitted, tmp_path_factory, delay, sig):
    """evaluate on a cold numba cache (an empty NUMBA_CACHE_DIR: seconds of compilation), signalled
    `delay` seconds after the CLI's handlers are installed: during the imports (0, 0.1 s), numba's
    compilation and the Lyapunov chunks. Always exit 130/143 and the one line, never the signal's
    own death (-2/-15) nor a traceback."""
    shutil.copytree(fitted, userdir / "run")
    before = snapshot(userdir)
    cache = tmp_path_factory.mktemp("numba-cache")
    p = subprocess.Popen([sys.executable, "-m", "dsrecon.cli.main", "evaluate", "run", "--data", "x.tsv", "--lyapunov-steps", "2000000",
                          "-o", "m.json", "--quiet"], cwd=userdir, env=_env(NUMBA_CACHE_DIR=str(cache)), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    t0 = time.monotonic()
    while not _handlers_installed(p.pid):
        assert p.poll() is None, f"ended before its handlers were installed: {p.returncode} {p.stderr.read()}"
        assert time.monotonic() - t0 < 60, "the CLI did not install its signal handlers"
        time.sleep(0.002)
    time.sleep(delay)
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    expected = (130, "interrupted") if sig == signal.SIGINT else (143, "terminated (SIGTERM)")
    assert (p.returncode, [ln for ln in err.splitlines() if ln.strip()]) == (expected[0], [expected[1]]), err
    assert snapshot(userdir) == before and not leftovers(userdir)


def _probe(tmp_path: Path, body: str, **env) -> subprocess.CompletedProcess:
    """Run the CLI's entry point (`run`) as `python -m probe`, the way the hostile suite runs it,
    with its command replaced by ``body`` (a function `command()`)."""
    (tmp_path / "probe.py").write_text("import dsrecon.cli.main as cli\n" + body + "\ncli._register = command\ncli.run()\n")
    r = subprocess.run([sys.executable, "-m", "probe", "evaluate", "run"], cwd=tmp_path, env=_env(**env), capture_output=True, text=True,
                       timeout=120)
    (tmp_path / "probe.py").unlink()
    shutil.rmtree(tmp_path / "__pycache__", ignore_errors=True)
    return r


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_inside_exec_d_code_still_exits_130_or_143(tmp_path, sig):
    """The cause of test_interrupted_evaluate_and_report_leave_no_temporary_files[2] ending by the
    signal (-2) after printing "interrupted": CPython notes a plain KeyboardInterrupt that escapes
    code run by exec() of a string (numba's compiler, dataclasses, namedtuples, scipy's imports) and
    then ends a `python -m` process by SIGINT at exit, whatever code it returned. The CLI's handlers
    raise subclasses, which CPython does not note."""
    r = _probe(tmp_path, f"""
def command():  # a signal lands while exec()'d code runs (an import, numba compiling)
    exec("import os, signal, time\\nos.kill(os.getpid(), {int(sig)})\\nt = time.time()\\nwhile time.time() - t < 10: pass")
""")
    expected = (130, "interrupted") if sig == signal.SIGINT else (143, "terminated (SIGTERM)")
    assert (r.returncode, r.stderr.strip()) == expected, r.stderr


def test_a_second_signal_while_exiting_keeps_the_exit_code(tmp_path):
    """The first Ctrl-C is reported and 130 decided; a second one while the interpreter shuts down
    (here: during an atexit function) ends the process at once with 130, not by the signal."""
    r = _probe(tmp_path, """
import atexit, os, signal, time

def slow_exit():
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(10)

def command():
    atexit.register(slow_exit)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(10)
""")
    assert (r.returncode, r.stderr.strip()) == (130, "interrupted"), r.stderr


def test_the_entry_point_imports_nothing_heavy_before_its_handlers():
    """Importing the entry point (what runs before `run()` installs the handlers) loads no numpy,
    torch, typer or rich: a signal is the CLI's from a few milliseconds after the interpreter starts."""
    code = ("import sys, dsrecon.cli.main; "
            "print([m for m in ('numpy', 'torch', 'typer', 'rich', 'scipy', 'numba', 'dsrecon.cli.app') if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout.strip()) == (0, "[]"), r.stderr


# ------------------------------------------------------------------------------ errors stay one line
def _truncated_nifti(d: Path) -> tuple[Path, Path]:
    import nibabel as nib

    rng = np.random.default_rng(0)
    img = nib.Nifti1Image(rng.standard_normal((4, 4, 4, 60)).astype("float32"), np.eye(4))
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = 2.0
    nib.save(img, d / "full.nii.gz")
    data = (d / "full.nii.gz").read_bytes()
    (d / "bold.nii.gz").write_bytes(data[: len(data) // 2])
    (d / "full.nii.gz").unlink()
    labels = np.zeros((4, 4, 4), dtype="int16")
    labels[:2], labels[2:] = 1, 2
    nib.save(nib.Nifti1Image(labels, np.eye(4)), d / "atlas.nii.gz")
    return d / "bold.nii.gz", d / "atlas.nii.gz"


def test_a_truncated_nifti_is_a_data_error_not_an_interrupt(userdir):
    """A .nii.gz cut off in its voxel data (a copy that stopped half-way) is exit 1 with one line
    naming it; it used to end as "aborted" with exit 130, as if the user had pressed Ctrl-C
    (typer turns the gzip stream's EOFError into Abort)."""
    _truncated_nifti(userdir)
    before = snapshot(userdir)
    r = dsrecon("fit", "bold.nii.gz", "--atlas", "atlas.nii.gz", "-o", "run", *TINY, cwd=userdir)
    assert_clean_failure(r, names="bold.nii.gz", says="truncated", before=before, dirs=[userdir])
    assert not (userdir / "run").exists()


def test_an_abort_that_is_not_an_interrupt_exits_1(monkeypatch, capsys):
    """typer maps an EOFError raised anywhere in a command to Abort; the CLI maps that to a data
    error (exit 1, one line), and only a real interrupt to 130."""
    import typer

    import dsrecon.cli.main as cli_main

    def eof(*a, **k):
        try:
            raise EOFError("Compressed file ended before the end-of-stream marker was reached")
        except EOFError as e:
            raise typer.Abort() from e

    cli_main._register()
    monkeypatch.setattr(cli_main, "app", eof)
    assert cli_main.main(["evaluate", "run"]) == 1
    err = capsys.readouterr().err
    assert [ln for ln in err.splitlines() if ln.strip()] == [
        "error: unexpected end of input (EOFError: Compressed file ended before the end-of-stream marker was reached); "
        "is a file truncated?"]


def test_library_warnings_add_no_lines_to_the_one_line_error(tmp_path):
    """numpy and scipy warnings (a RuntimeWarning of a division by zero, scipy's ODEintWarning
    before "integration failed") printed their lines above the one-line error; with
    PYTHONWARNINGS unset, as in a user's shell (the suite's harness sets it to ignore)."""
    (tmp_path / "x.tsv").write_text("x\n1\n")
    before = snapshot(tmp_path)
    r = _probe(tmp_path, """
import warnings
import numpy as np
from dsrecon.errors import DataError

def command():
    np.array([1.0]) / np.array([0.0])  # RuntimeWarning: divide by zero
    warnings.warn("Excess work done on this call", UserWarning)
    raise DataError("x.tsv: integration failed")
""", PYTHONWARNINGS="")
    assert_clean_failure(Proc(r.returncode, r.stdout, r.stderr), names="x.tsv", before=before, dirs=[tmp_path])
    assert r.stderr == "error: x.tsv: integration failed\n"


def test_json_failure_prints_one_json_object_on_stdout(userdir):
    """With --json, stdout holds one JSON object either way: on a failure the error line and the exit code."""
    before = snapshot(userdir)
    r = dsrecon("fit", "missing.tsv", "-o", "run", *TINY, "--json", cwd=userdir)
    line = assert_clean_failure(r, names="missing.tsv", before=before, dirs=[userdir])
    assert json.loads(r.out) == {"error": line.removeprefix("error: "), "exit_code": 1}
    assert len(r.out.strip().splitlines()) == 1


def test_json_usage_error_prints_one_json_object_with_exit_code_2(userdir):
    before = snapshot(userdir)
    r = dsrecon("fit", "x.tsv", "-o", "run", "--zzz", "--json", cwd=userdir)
    assert_clean_failure(r, names="--zzz", code=2, before=before, dirs=[userdir])
    obj = json.loads(r.out)
    assert obj["exit_code"] == 2 and obj["error"].startswith("No such option: --zzz") and len(r.out.strip().splitlines()) == 1


@pytest.mark.parametrize("encoding", ["latin-1", "ascii"])
def test_a_non_utf8_stdout_gets_the_summary_in_ascii(userdir, encoding):
    """With a latin-1 (or ASCII) stdout, a fit wrote its run and then exited 1 on the "→" of its
    summary's title. Characters the encoding lacks become ASCII look-alikes."""
    before = snapshot(userdir)
    loud = [a for a in TINY if a != "--quiet"]
    r = dsrecon("fit", "x.tsv", "-o", "run", *loud, cwd=userdir, env={"PYTHONIOENCODING": encoding})
    assert r.code == 0, r.err
    assert "dsrecon fit -> run" in r.out and "→" not in r.out
    assert "kernel spm (33 taps) -> run" in r.err  # the log line's arrow on stderr too
    assert (userdir / "run" / "model.safetensors").exists()
    assert {k: v for k, v in snapshot(userdir).items() if k in before} == before and not leftovers(userdir)


# ------------------------------------------------------------------------------ progress you can watch
#: a fit long enough to be watched: every atomic write is held 0.05 s (DSRECON_TEST_HOLD_WRITE),
#: so each checkpointed epoch takes at least 0.15 s however fast the machine
WATCHED = ["--epochs", "40", "--batches-per-epoch", "2", "--batch-size", "4", "--hidden-dim", "8", "--sequence-length", "60",
           "--val-every", "5", "--checkpoint-every", "1", "--seed", "1"]
PROGRESS = re.compile(r"^fit: epoch (\d+)/40 \((\d+)%\) · loss \S+ α \S+( best D_stsp \S+@\d+)? · \d+ (s|min \d+ s)(, eta \d+ (s|min \d+ s))?$")


def test_a_fit_with_stderr_to_a_file_prints_progress_lines_and_a_live_log(userdir):
    before = snapshot(userdir)
    env = _env(DSRECON_TEST_HOLD_WRITE="0.05")
    env.pop("DSRECON_NO_PROGRESS", None)
    errfile = userdir.parent / "fit.err"
    live = userdir / ".run.staging" / "training_log.tsv"
    seen_live, seen_lines = None, None
    with open(errfile, "w") as fh:
        p = subprocess.Popen([sys.executable, "-m", "dsrecon.cli.main", "fit", "x.tsv", "-o", "run", *WATCHED], cwd=userdir, env=env,
                             stdout=subprocess.DEVNULL, stderr=fh, stdin=subprocess.DEVNULL)
        t0 = time.monotonic()
        while p.poll() is None and time.monotonic() - t0 < 300:
            try:
                rows = live.read_text().splitlines()
            except OSError:
                rows = []
            lines = [ln for ln in errfile.read_text().splitlines() if ln.startswith("fit: epoch")]
            if len(rows) >= 3 and lines and p.poll() is None:  # both read while the fit runs
                seen_live, seen_lines = rows, lines
                break
            time.sleep(0.05)
        p.wait(timeout=300)
    assert p.returncode == 0, errfile.read_text()
    assert seen_live is not None, f"no live training log and progress line while the fit ran:\n{errfile.read_text()}"
    final = (userdir / "run" / "training_log.tsv").read_text().splitlines()
    assert seen_live == final[:len(seen_live)]  # the same header and rows as the finished log, so far
    assert seen_lines[0] in errfile.read_text()
    lines = [ln for ln in errfile.read_text().splitlines() if ln.startswith("fit: epoch")]
    assert all(PROGRESS.match(ln) for ln in lines), lines
    epochs = [int(PROGRESS.match(ln).group(1)) for ln in lines]
    assert epochs == list(range(2, 41, 2))  # every 5 %: 20 lines for 40 epochs, not one per epoch
    assert "eta" in lines[0] and "eta" not in lines[-1]
    assert any(ln.startswith("fit: pretraining ") for ln in errfile.read_text().splitlines())
    assert {k: v for k, v in snapshot(userdir).items() if k in before} == before and not leftovers(userdir)


def test_quiet_prints_no_progress_lines(userdir):
    env = {"DSRECON_NO_PROGRESS": ""}  # (set by the suite; a non-empty value is what disables progress)
    r = dsrecon("fit", "x.tsv", "-o", "run", *TINY, cwd=userdir, env=env)
    assert r.code == 0, r.err
    assert not [ln for ln in r.err.splitlines() if ln.startswith(("fit: epoch", "fit: pretraining"))], r.err


# ------------------------------------------------------------------------------ the fresh-clone check
FAKE_MAKE = """#!/bin/sh
echo "make $1: NUMBA_CACHE_DIR=$NUMBA_CACHE_DIR XDG_CACHE_HOME=$XDG_CACHE_HOME RAY_TMPDIR=$RAY_TMPDIR PYTHONPATH=${PYTHONPATH:-unset}" >> "$FAKE_LOG"
ls -A "$NUMBA_CACHE_DIR" >> "$FAKE_LOG"
test -f Makefile && test -f pyproject.toml || exit 9
case "$1" in
  test) echo "3.10s call tests/test_x.py::test_y"; echo "12 passed, 1 skipped in 3.21s" ;;
  demo) test -z "$FAIL_DEMO" || { echo "the demo failed"; exit 3; } ;;
esac
"""


@pytest.mark.parametrize("demo_fails", [False, True])
def test_fresh_clone_check_runs_both_targets_in_a_clean_clone(tmp_path, demo_fails):
    """tools/fresh_clone_check.sh with a stand-in `make`: both targets run in a clone of HEAD with
    empty caches in its own temporary directory, the summary line and times are printed, a failing
    target fails the script, and its directory is removed afterwards."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout (the script clones the repository it is run from)")
    make = tmp_path / "make"
    make.write_text(FAKE_MAKE)
    make.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "MAKE": str(make), "FAKE_LOG": str(tmp_path / "fake.log"), "FRESH_CHECK_TMP": str(work),
           "PYTHONPATH": "/somewhere", "FAIL_DEMO": "1" if demo_fails else ""}
    r = subprocess.run(["bash", str(REPO / "tools" / "fresh_clone_check.sh")], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == (1 if demo_fails else 0), r.stdout + r.stderr
    assert "make test summary: 12 passed, 1 skipped in 3.21s" in r.stdout
    assert re.search(r"^make test: ok in [0-9.]+ s$", r.stdout, re.M)
    assert re.search(r"^make demo: FAILED \(exit 3\)" if demo_fails else r"^make demo: ok in [0-9.]+ s$", r.stdout, re.M), r.stdout
    calls = (tmp_path / "fake.log").read_text().splitlines()
    assert [c.split(":")[0] for c in calls] == ["make test", "make demo"]  # (ls of the empty caches adds no line)
    assert all(f"={work}/dsrecon-fresh." in c and "PYTHONPATH=unset" in c for c in calls)
    assert list(work.iterdir()) == []  # its own directory removed, nothing else touched
