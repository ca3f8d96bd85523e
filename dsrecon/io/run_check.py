"""A run is checked before it is trusted: every command that reads one (`load_run`: simulate,
evaluate, report, ensembles' members, group runs) validates its config.json and its weights, and a
damaged run ends in one line naming the file and the key.

config.json: the fit finished (``status`` complete); the TR is a positive number; region names
are distinct strings, as many as ``n_regions``; the normalisation's mean and std are finite numbers,
one per region, the std positive; the kernel's taps are finite numbers; the sizes are positive
integers no larger than the weights can hold. The weights: floating-point tensors, all finite.
"""

from __future__ import annotations

import math
from pathlib import Path

from dsrecon.errors import DataError

_DAMAGED = "the file is damaged or was not written by dsrecon fit"


def _bad(path: Path, key: str, what: str) -> DataError:
    return DataError(f"{path}: '{key}' {what}; {_DAMAGED}")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_status(cfg: dict, path: Path) -> None:
    status = cfg.get("status")
    if status != "complete":
        raise DataError(f"{path}: 'status' is {status!r}, not 'complete': the fit that wrote this run did not finish "
                        "(continue it with `dsrecon fit ... --resume`, or fit again)")


def check_tr(v, path: Path, key: str = "tr") -> None:
    if not (_is_number(v) and math.isfinite(v) and v > 0):
        raise _bad(path, key, f"must be a positive number of seconds, got {v!r}")


def check_names(names, n, path: Path) -> None:
    if not isinstance(names, list) or not names or not all(isinstance(x, str) and x for x in names):
        raise _bad(path, "names", "must be a non-empty list of region names (strings)")
    seen: set[str] = set()
    for x in names:
        if x in seen:
            raise _bad(path, "names", f"holds region '{x}' twice")
        seen.add(x)
    if not (_is_int(n) and n == len(names)):
        raise _bad(path, "n_regions", f"is {n!r} but 'names' lists {len(names)} regions")


def check_normalisation(norm, n: int, path: Path, key: str = "normalisation") -> None:
    if not isinstance(norm, dict):
        raise _bad(path, key, "must be a JSON object")
    for part in ("mean", "std"):
        v = norm.get(part)
        k = f"{key}.{part}"
        if not isinstance(v, list) or len(v) != n:
            raise _bad(path, k, f"must list one number per region ({n}), got {_describe(v)}")
        for i, x in enumerate(v):
            if not _is_number(x):
                raise _bad(path, k, f"holds {x!r} at position {i}, not a number")
            if not math.isfinite(x):
                raise _bad(path, k, f"holds {x!r} at position {i}, not a finite number")
            if part == "std" and x <= 0:
                raise _bad(path, k, f"holds {x!r} at position {i}: a standard deviation must be positive")
    for part in ("regressor_mean", "regressor_std"):
        v = norm.get(part)
        if v is not None and not (isinstance(v, list) and all(_is_number(x) and math.isfinite(x) for x in v)
                                  and (part != "regressor_std" or all(x > 0 for x in v))):
            raise _bad(path, f"{key}.{part}", "must list finite numbers (positive for the std)")


def check_kernel(kern, path: Path, key: str = "kernel") -> None:
    if not isinstance(kern, dict):
        raise _bad(path, key, "must be a JSON object")
    taps = kern.get("taps")
    if not isinstance(taps, list) or not taps or not all(_is_number(x) and math.isfinite(x) for x in taps):
        raise _bad(path, f"{key}.taps", "must be a non-empty list of finite numbers")


def check_sizes(cfg: dict, path: Path, n_weights: int) -> None:
    """latent_dim and hidden_dim: positive integers no larger than the weights hold numbers (a
    size of 10⁶ would allocate a model of 10¹² parameters before any shape could be compared)."""
    for key, required in (("latent_dim", True), ("hidden_dim", False)):
        v = cfg.get(key)
        if v is None and not required:
            continue
        if not (_is_int(v) and v >= 1):
            raise _bad(path, key, f"must be a positive integer, got {v!r}")
        if v > max(n_weights, 1):
            raise DataError(f"{path}: '{key}' is {v}, more than the {n_weights} numbers the weights hold; "
                            f"config.json does not describe these weights ({_DAMAGED})")


def check_config(cfg: dict, path: Path) -> None:
    """A single run's config.json (after `_read_run_config` found every key)."""
    check_status(cfg, path)
    check_tr(cfg.get("tr"), path)
    check_names(cfg.get("names"), cfg.get("n_regions"), path)
    check_normalisation(cfg.get("normalisation"), len(cfg["names"]), path)
    check_kernel(cfg.get("kernel"), path)
    if not isinstance(cfg.get("train_options"), dict):
        raise _bad(path, "train_options", "must be a JSON object")


def check_group_config(cfg: dict, path: Path) -> None:
    """A group run's config.json: the group's record and every subject's TR, normalisation and kernel."""
    check_status(cfg, path)
    check_names(cfg.get("names"), cfg.get("n_regions"), path)
    subs = cfg.get("subjects")
    if not isinstance(subs, list) or not subs or not all(isinstance(s, dict) for s in subs):
        raise _bad(path, "subjects", "must be a non-empty list of JSON objects")
    ids = [s.get("id") for s in subs]
    if len(set(map(str, ids))) != len(ids):
        raise _bad(path, "subjects", "lists a subject id twice")
    for i, s in enumerate(subs):
        check_tr(s.get("tr"), path, f"subjects[{i}].tr")
        check_normalisation(s.get("normalisation"), len(cfg["names"]), path, f"subjects[{i}].normalisation")
        check_kernel(s.get("kernel"), path, f"subjects[{i}].kernel")


def check_weights(state: dict, path: Path) -> int:
    """Every tensor of a run's weights is floating point and finite. Returns how many numbers they hold."""
    import torch

    total = 0
    for k, v in state.items():
        if not torch.is_floating_point(v):
            raise DataError(f"{path}: tensor '{k}' holds {str(v.dtype).replace('torch.', '')} values, not floating point; "
                            f"{_DAMAGED}")
        if not bool(torch.isfinite(v).all()):
            bad = int((~torch.isfinite(v)).sum())
            raise DataError(f"{path}: tensor '{k}' holds {bad} NaN or infinite value(s); the weights are damaged")
        total += v.numel()
    return total


def _describe(v) -> str:
    if isinstance(v, list):
        return f"a list of {len(v)}"
    return repr(v) if v is None or _is_number(v) else type(v).__name__
