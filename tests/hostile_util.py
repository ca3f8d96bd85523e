"""Harness for the hostile-input suite (tests/test_hostile*.py).

Every hostile case runs the real CLI in a subprocess, in a working directory that holds the
user's files, and checks the contract of issue 13:
- exit 1 (2 for usage errors), one line on stderr that names the file, no traceback;
- every file that existed before (working directory and ``-o``) is byte-identical afterwards;
- no temporary file (``*.tmp``, ``.*.partial-*``, ``.*.staging*``) and no staging directory remains.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: tiny training settings: a fit of a few seconds
TINY = ["--epochs", "3", "--batches-per-epoch", "2", "--batch-size", "4", "--hidden-dim", "8", "--sequence-length", "60",
        "--val-every", "1", "--checkpoint-every", "1", "--quiet"]

ENV = {"DSRECON_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1",
       "DSRECON_NO_RAY": "1", "PYTHONWARNINGS": "ignore"}

TEMP_MARKERS = (".tmp", ".partial-", ".staging", ".lock")


@dataclass
class Proc:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.strip()]


def snapshot(*dirs: Path) -> dict[str, str]:
    """sha256 of every file below the given directories (path → digest); symlinks by their target."""
    out: dict[str, str] = {}
    for d in dirs:
        d = Path(d)
        if not d.exists():
            continue
        if d.is_file():
            out[str(d)] = hashlib.sha256(d.read_bytes()).hexdigest()
            continue
        for p in sorted(d.rglob("*")):
            if p.is_symlink():
                out[str(p)] = "link:" + os.readlink(p)
            elif p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def dsrecon(*args, cwd: Path, env: dict | None = None, timeout: float = 300, stdin=subprocess.DEVNULL) -> Proc:
    """Run `dsrecon ARGS` in a fresh interpreter (as a user would), in ``cwd``."""
    e = {**os.environ, **ENV, **(env or {})}
    e.pop("DSRECON_DEBUG", None)
    p = subprocess.run([sys.executable, "-m", "dsrecon.cli.main", *[str(a) for a in args]], cwd=cwd, env=e,
                       capture_output=True, text=True, timeout=timeout, stdin=stdin)
    return Proc(p.returncode, p.stdout, p.stderr)


def popen(*args, cwd: Path, env: dict | None = None) -> subprocess.Popen:
    e = {**os.environ, **ENV, **(env or {})}
    e.pop("DSRECON_DEBUG", None)
    return subprocess.Popen([sys.executable, "-m", "dsrecon.cli.main", *[str(a) for a in args]], cwd=cwd, env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def leftovers(*dirs: Path) -> list[str]:
    """Temporary files or staging directories dsrecon may have left below (or beside) the dirs."""
    found = []
    for d in dirs:
        d = Path(d)
        roots = [d] + ([d.parent] if d.parent != d else [])
        for root in roots:
            if not root.is_dir():
                continue
            # below d: anything temporary; beside d: only what dsrecon would put there for d
            it = root.rglob("*") if root == d else (p for p in root.iterdir() if p.name.startswith(f".{d.name}."))
            for p in it:
                if any(m in p.name for m in TEMP_MARKERS):
                    found.append(str(p))
    return sorted(set(found))


def assert_clean_failure(r: Proc, *, names: str | list[str], before: dict[str, str], dirs: list[Path], code: int = 1,
                         says: str | list[str] | None = None) -> str:
    """The hostile-case contract. Returns the one error line."""
    assert r.code == code, f"exit {r.code} (expected {code})\nstdout: {r.out}\nstderr: {r.err}"
    assert "Traceback" not in r.err and "Traceback" not in r.out, r.err
    assert "internal error" not in r.err, r.err
    lines = r.err_lines
    if code == 1:
        assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{r.err}"
    msg = "\n".join(lines)
    for n in [names] if isinstance(names, str) else names:
        assert n in msg, f"the message does not name {n!r}: {msg}"
    for s in [] if says is None else [says] if isinstance(says, str) else says:
        assert s.lower() in msg.lower(), f"the message does not say {s!r}: {msg}"
    after = snapshot(*dirs)
    changed = [k for k, v in before.items() if after.get(k) != v]
    assert not changed, f"user files changed or removed: {changed}"
    left = leftovers(*dirs)
    assert not left, f"temporary files left behind: {left}"
    return lines[0] if lines else ""


def lorenz_table(path: Path, frames: int = 300, tr: float = 1.0, seed: int = 0, sidecar: bool = True) -> Path:
    """A small simulated Lorenz63 BOLD table (TSV + JSON sidecar with RepetitionTime)."""
    from dsrecon.io.tables import write_table
    from dsrecon.systems import simulate_system

    out = simulate_system("lorenz63", frames, 0.02, tr, noise=0.01, seed=seed)
    write_table(path, out["observed"], out["names"], sidecar={"RepetitionTime": tr} if sidecar else None)
    return path


def user_files(d: Path) -> None:
    """The kind of files a user keeps beside their data."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "notes.txt").write_text("my notes: do not delete\n")
    (d / "analysis.py").write_text("print('mine')\n")
    np.save(d / "results.npy", np.arange(5.0))
