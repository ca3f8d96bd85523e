"""Checks on an output file (``-o``) before any work: a command that would fail to write, or would
overwrite a file dsrecon did not write, says so at once in one line instead of after the computation.

dsrecon never replaces what it did not create: an existing output is overwritten only when it is a
previous output of dsrecon (a rerun); any other file is the user's and is left alone.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from dsrecon.errors import DsreconError
from dsrecon.io.ownership import html_is_ours, json_is_ours  # noqa: F401 (the recognisers live beside the run directory's code)

_json_is_ours = json_is_ours


def table_is_ours(path: Path) -> bool:
    """A table dsrecon wrote: its JSON sidecar (same stem) is one of ours."""
    from dsrecon.io.tables import sidecar_path

    side = sidecar_path(Path(path))
    return side.is_file() and _json_is_ours(side)


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


# ------------------------------------------------------------------------ outputs are never inputs
def _exists(p: Path) -> bool:
    return p.exists() or p.is_symlink()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def is_within(p: Path, d: Path) -> bool:
    """Whether ``p`` is ``d`` or lies under it (links resolved)."""
    rp, rd = os.path.realpath(p), os.path.realpath(d)
    return rp == rd or rp.startswith(rd.rstrip(os.sep) + os.sep)


def table_inputs(path: Path | str | None, what: str) -> list[tuple[Path, str]]:
    """A table input and the JSON sidecar beside it (part of the input: its TR, its columns)."""
    from dsrecon.io.tables import sidecar_path

    if path is None:
        return []
    p = Path(path)
    return [(p, what), (sidecar_path(p), f"the sidecar of {p}, {what}")]


def run_inputs(run: Path, keep: tuple[str, ...] = ()) -> tuple[list[tuple[Path, str]], list[tuple[Path, str, tuple[Path, ...]]]]:
    """What a command reading run directory ``run`` must not overwrite: every file of the run (but
    ``keep``, names relative to it that the command itself writes there, e.g. report.html) and the
    data the run was fitted on, with their sidecars (recorded in its config.json)."""
    from dsrecon.io.runs import recorded_sources

    files: list[tuple[Path, str]] = []
    for src in recorded_sources(run):
        files += table_inputs(src, f"the training data of the run {run}, as its config.json records")
    return files, [(Path(run), f"the run {run}", tuple(Path(run) / k for k in keep))]


def check_not_inputs(outputs: Iterable[Path], files: Iterable[tuple[Path, str]] = (),
                     dirs: Iterable[tuple[Path, str, tuple[Path, ...]]] = (), *, option: str = "-o") -> None:
    """No output of a command is one of its inputs: not an input file or its sidecar (the same file
    by ``os.path.samefile``: another spelling, a hard or symbolic link), not a file inside an input
    directory (a run). One line naming both paths. Only existing files can be overwritten, so an
    output that does not exist yet passes."""
    outs = [Path(o) for o in outputs]
    files, dirs = list(files), list(dirs)
    first = outs[0] if outs else None
    for o in outs:
        if not _exists(o) or o.is_dir():  # nothing to overwrite; a directory is refused as an output by check_output_files
            continue
        also = "" if o == first else f" ({option} {first} also writes it)"
        for p, what in files:
            if _exists(p) and _same_file(o, p):
                same = "" if str(p) == str(o) else f"{p}, "
                raise DsreconError(f"{o}: is {same}{what}{also}; dsrecon never overwrites its inputs: choose another {option}")
        for d, what, keep in dirs:
            if d.is_dir() and is_within(o, d) and not any(_exists(k) and _same_file(o, k) for k in keep):
                raise DsreconError(f"{o}: is a file of {what}{also}; dsrecon never overwrites its inputs: choose another {option}")


def check_inputs_outside(target: Path, inputs: Iterable[Path | str | None], *, what: str = "the run directory") -> None:
    """No input of a fit lies in the directory it writes (which --force would replace), in its
    staging directory, or is that directory."""
    from dsrecon.io.runs import run_target, staging_path

    t = Path(target)
    for d in (run_target(t), staging_path(t)):
        for p in inputs:
            if p is None or str(p) == "":
                continue
            if _exists(Path(p)) and is_within(Path(p), d):
                raise DsreconError(f"{p}: is inside {what} {t} that this command writes; dsrecon never overwrites its inputs: "
                                   f"choose another -o")


def fit_input_paths(inputs: Iterable[Path | str], spec, kernel: str | None = None) -> list[Path]:
    """Every file or directory a fit reads: its inputs and the files its options name (atlas,
    mask, events, input tables, confounds file, kernel file, BIDS directory)."""
    out = [Path(p) for p in inputs]
    for name in ("atlas", "atlas_labels", "mask", "bids_dir", "confounds"):
        v = getattr(spec, name, None)
        if isinstance(v, (str, os.PathLike)) and v and Path(v).exists():
            out.append(Path(v))
    for name in ("events", "input_tables"):
        out += [Path(v) for v in getattr(spec, name, None) or [] if v]
    if kernel and Path(kernel).is_file():
        out.append(Path(kernel))
    return out
