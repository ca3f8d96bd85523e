"""Find benchmark systems by name; their parameters live in ``systems.json`` (package data)."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from dsrecon.errors import DsreconError, OptionError
from dsrecon.systems.flows import SYSTEM_CLASSES, System


@lru_cache(maxsize=1)
def system_specs() -> dict[str, dict[str, Any]]:
    """The parsed ``systems.json``: name → spec (params, dim, state names, default dt, ...)."""
    text = resources.files("dsrecon.systems").joinpath("systems.json").read_text()
    specs = json.loads(text)
    missing = sorted(set(specs) ^ set(SYSTEM_CLASSES))
    if missing:  # a packaging bug, not a user error
        raise RuntimeError(f"systems.json and dsrecon.systems.flows disagree on: {', '.join(missing)}")
    return specs


def list_systems() -> list[str]:
    """Names of the benchmark systems, sorted."""
    return sorted(system_specs())


def get_system(name: str, dim: int | None = None, **param_overrides: float) -> System:
    """Build the system ``name`` with its published parameters, optionally overridden.

    ``dim`` is only for systems of variable dimension (lorenz96); for the others it must be
    None or equal to their fixed dimension. Unknown names or parameters raise DsreconError.
    """
    specs = system_specs()
    key = str(name).lower().replace("-", "_")
    if key not in specs:
        raise DsreconError(f"unknown system '{name}' (available: {', '.join(list_systems())})")
    spec = specs[key]
    fixed = spec.get("dim")
    if fixed is None:
        d = int(spec["default_dim"]) if dim is None else int(dim)
        if d < int(spec.get("min_dim", 1)):
            raise OptionError(f"`dim`: system '{key}' needs dimension >= {spec['min_dim']}, got {d}")
    else:
        d = int(fixed)
        if dim is not None and int(dim) != d:
            raise OptionError(f"`dim`: system '{key}' has fixed dimension {d}, got {dim}")
    params = dict(spec["params"])
    for k, v in param_overrides.items():
        if k not in params:
            raise DsreconError(f"system '{key}' has no parameter '{k}' (parameters: {', '.join(params)})")
        try:
            params[k] = float(v)
        except (TypeError, ValueError):
            raise DsreconError(f"system '{key}': parameter '{k}' must be a number, got {v!r}") from None
    return SYSTEM_CLASSES[key](spec, d, params)
