"""The checks every user file passes before it is opened or parsed.

* `check_input_file`: the path is a regular file (``os.stat``, before any ``open``): a named pipe, a
  socket or a device given as a data file would block the reader or read forever, so it is refused
  at once, naming the path.
* `loads_json` / `read_json`: JSON with a key given twice in one object is refused, naming the file
  and the key (``json.loads`` keeps the last silently; a sidecar with ``RepetitionTime`` twice must
  not be read as either of them).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from dsrecon.errors import DataError

_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))


def check_input_file(path: str | os.PathLike, what: str = "file") -> os.stat_result:
    """``os.stat`` of ``path`` (following links); DataError naming it when it is missing, a directory
    or anything but a regular file. Nothing is opened, so a named pipe never blocks."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise DataError(f"{p}: file not found") from None
    except NotADirectoryError:
        raise DataError(f"{p}: file not found (a parent of it is a file)") from None
    except OSError as e:
        raise DataError(f"{p}: cannot read ({e.strerror or e.__class__.__name__})") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{p}: is a directory, expected a {what}")
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
        raise DataError(f"{p}: is {kind}, not a regular {what}; give the {what} itself (dsrecon reads only regular files)")
    return st


def _no_duplicates(source: str):
    def hook(pairs: list[tuple[str, Any]]) -> dict:
        out: dict = {}
        for k, v in pairs:
            if k in out:
                raise DataError(f"{source}: key {k!r} appears more than once in one JSON object; keep one of them")
            out[k] = v
        return out
    return hook


def loads_json(text: str, source: str | os.PathLike) -> Any:
    """``json.loads`` that refuses a key given twice in one object (DataError naming ``source``);
    invalid JSON is a DataError naming it too."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates(str(source)))
    except json.JSONDecodeError as e:
        raise DataError(f"{source}: not valid JSON ({e})") from None


def read_json(path: str | os.PathLike) -> Any:
    """A user's JSON file: a regular file (`check_input_file`), UTF-8, valid JSON, no duplicated key."""
    p = Path(path)
    check_input_file(p, "JSON file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{p}: not valid JSON (not UTF-8 text)") from None
    except OSError as e:
        raise DataError(f"{p}: cannot read ({e.strerror or e.__class__.__name__})") from None
    return loads_json(text, p)
