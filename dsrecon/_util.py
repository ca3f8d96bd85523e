"""Small shared helpers: atomic writes, provenance, seeding."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

# (re-exported: the interrupt state lives in a module the CLI imports before anything heavy)
from dsrecon._interrupt import check_interrupt, clear_interrupt, interrupt_pending, note_interrupt, signals_deferred  # noqa: F401


def _hold_for_tests() -> None:
    """DSRECON_TEST_HOLD_WRITE=SECONDS: keep each atomically written temporary file this long
    before its rename, so a test can signal a command while it writes (tests only)."""
    hold = os.environ.get("DSRECON_TEST_HOLD_WRITE")
    if hold:
        end = time.monotonic() + float(hold)
        while time.monotonic() < end:
            time.sleep(0.05)
            check_interrupt()


#: faults a test injects into the atomic writer (never set by a user): file name → errno
_WRITE_FAULTS: dict[str, int] = {}


@contextlib.contextmanager
def inject_write_faults(**by_name: int) -> Iterator[None]:
    """``with inject_write_faults(**{"model.safetensors": errno.ENOSPC}):`` (tests only): writing a
    file of that name fails with that error, as on a full disk, after its bytes went to the temporary file."""
    old = dict(_WRITE_FAULTS)
    _WRITE_FAULTS.update(by_name)
    try:
        yield
    finally:
        _WRITE_FAULTS.clear()
        _WRITE_FAULTS.update(old)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    Whatever ends the block (an exception, Ctrl-C, SIGTERM raised by the CLI), the temporary
    file is removed: its creation, the rename and the clean-up run with signals deferred."""
    from dsrecon.errors import DsreconError

    path = Path(path)
    tmp_path: Path | None = None
    try:
        with signals_deferred():
            try:  # a location we cannot write in is the user's to fix: one line naming the file
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            except OSError as e:
                raise DsreconError(f"{path}: cannot write ({e.strerror or e})") from None
            os.close(fd)
            tmp_path = Path(tmp)
        try:  # a full disk, a quota, a file system gone read-only: one line naming the file
            yield tmp_path
            if path.name in _WRITE_FAULTS:
                raise OSError(_WRITE_FAULTS[path.name], os.strerror(_WRITE_FAULTS[path.name]))
        except OSError as e:
            raise DsreconError(f"{path}: cannot write ({e.strerror or e})") from None
        _hold_for_tests()
        with signals_deferred():
            if tmp_path.exists():  # mkstemp creates 0600; give the file the usual umask-based mode
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(tmp_path, 0o666 & ~umask)
            try:
                os.replace(tmp_path, path)
            except OSError as e:
                raise DsreconError(f"{path}: cannot write ({e.strerror or e})") from None
    finally:
        if tmp_path is not None:
            with signals_deferred():
                tmp_path.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_json(obj: Any, indent: int | None = 2) -> str:
    """JSON with NaN/Inf written as null (strict JSON)."""
    return json.dumps(_nan_to_none(obj), indent=indent, default=_json_default, allow_nan=False)


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, np.floating) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, to_json(obj) + "\n")


def cpu_name() -> str:
    """The processor's model name (/proc/cpuinfo), for the machine line of benchmark outputs."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    """Versions of dsrecon and the libraries whose numbers end up in results."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("dsrecon", "torch", "numpy", "scipy", "nilearn", "nibabel", "PyWavelets"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def dsrecon_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("dsrecon")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def seed_everything(seed: int) -> np.random.Generator:
    """Seed python, numpy and torch; return a numpy Generator for explicit use."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    import torch

    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def array_hash(*arrays: np.ndarray) -> str:
    """sha256 of the arrays' bytes (for the data hash recorded with a run)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.shape).encode())
        h.update(str(a.dtype).encode())
        h.update(a.tobytes())
    return h.hexdigest()
