"""Checks on an output file (``-o``) before any work: a command that would fail to write, or would
overwrite a file dsrecon did not write, says so at once in one line instead of after the computation.

dsrecon never replaces what it did not create: an existing output is overwritten only when it is a
previous output of dsrecon (a rerun); any other file is the user's and is left alone.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from dsrecon.errors import DsreconError


def _json_is_ours(path: Path) -> bool:
    """A JSON file dsrecon wrote: metrics and sidecars carry the versions or the command."""
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    if not isinstance(d, dict):
        return False
    if str(d.get("command", "")).startswith("dsrecon") or "DsreconVersion" in d:
        return True
    v = d.get("versions")
    return isinstance(v, dict) and "python" in v and ("dsrecon" in v or "torch" in v)


def json_is_ours(path: Path) -> bool:
    return _json_is_ours(Path(path))


def table_is_ours(path: Path) -> bool:
    """A table dsrecon wrote: its JSON sidecar (same stem) is one of ours."""
    from dsrecon.io.tables import sidecar_path

    side = sidecar_path(Path(path))
    return side.is_file() and _json_is_ours(side)


def html_is_ours(path: Path) -> bool:
    """A report dsrecon wrote (render_html marks it in a generator meta tag)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096).decode("utf-8", "replace")
    except OSError:
        return False
    return '<meta name="generator" content="dsrecon' in head or ("<title>dsrecon report" in head and "by dsrecon" in head)


def check_writable_dir(parent: Path, target: Path) -> None:
    """``target`` can be created below ``parent`` (created as needed): its first existing ancestor is
    a directory we can write in. Probed by creating and removing a temporary file there (root
    ignores permission bits; a read-only or immutable location still refuses the probe)."""
    anc = parent if str(parent) else Path(".")
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise DsreconError(f"{target}: cannot write there: {anc} is a file, not a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".dsrecon-write-probe-", suffix=".tmp", dir=anc)
    except OSError as e:
        where = "" if anc == parent else f" ({anc})"
        raise DsreconError(f"{target}: cannot write in {parent}{where}: {e.strerror or e}") from None
    os.close(fd)
    os.unlink(tmp)


def check_output_files(paths: Iterable[Path], *, option: str = "--output", ours: Callable[[Path], bool] | None = None,
                       what: str = "file") -> None:
    """Every path can be written: not a directory, in a writable location, and either absent or a
    previous output of dsrecon (``ours(path)``). The first path is the one the user named."""
    paths = [Path(p) for p in paths]
    first = paths[0]
    for p in paths:
        also = "" if p == first else f" ({option} {first} also writes it)"
        if p.is_dir():
            raise DsreconError(f"{p}: is a directory{also}; {option} takes a {what} name")
        if p.exists() or p.is_symlink():
            if not p.is_file():
                raise DsreconError(f"{p}: exists and is not a regular file{also}")
            if ours is None or not ours(p):
                raise DsreconError(f"{p}: already exists and was not written by dsrecon{also}; remove it or choose another {option}")
    for parent in dict.fromkeys(p.parent for p in paths):
        check_writable_dir(parent, first)
