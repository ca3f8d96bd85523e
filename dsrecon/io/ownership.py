"""Whether a file is one dsrecon wrote, from its own content (for the rule that dsrecon replaces
only what it wrote: a rerun's outputs, a report in a run directory)."""

from __future__ import annotations

import json
from pathlib import Path


def json_is_ours(path: Path) -> bool:
    """A JSON file dsrecon wrote: metrics and sidecars carry the versions or the command."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    if not isinstance(d, dict):
        return False
    if str(d.get("command", "")).startswith("dsrecon") or "DsreconVersion" in d:
        return True
    v = d.get("versions")
    return isinstance(v, dict) and "python" in v and ("dsrecon" in v or "torch" in v)


def html_is_ours(path: Path) -> bool:
    """A report dsrecon wrote (render_html marks it in a generator meta tag)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096).decode("utf-8", "replace")
    except OSError:
        return False
    return '<meta name="generator" content="dsrecon' in head or ("<title>dsrecon report" in head and "by dsrecon" in head)
