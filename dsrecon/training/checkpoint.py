"""Checkpoints without pickle: tensors in safetensors, everything else in JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from dsrecon._util import atomic_path, to_json, write_text_atomic


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    clean = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(clean, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a missing, empty, truncated or damaged file is a DataError
    that names it."""
    from dsrecon.errors import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {'is a directory, not a' if path.is_dir() else 'no'} safetensors file")
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{path}: empty file (0 bytes); the weights were not written or were cut off")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own SafetensorError (not an OSError) for a bad header or length
        detail = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise DataError(f"{path}: not a readable safetensors file ({size} bytes: truncated or damaged: {detail})") from None


def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors = {}
    scalars: dict = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{idx}.{k}"] = v
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict = {}
    for key, v in tensors.items():
        if not key.startswith("opt."):
            continue
        _, idx, k = key.split(".", 2)
        state.setdefault(int(idx), {})[k] = v
    for key, v in meta.get("scalars", {}).items():
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state_to_json(rng: np.random.Generator) -> dict:
    return rng.bit_generator.state


def rng_from_json(st: dict) -> np.random.Generator:
    bg = getattr(np.random, st["bit_generator"])()
    bg.state = st
    return np.random.Generator(bg)


def write_state_json(path: Path, obj: dict) -> None:
    write_text_atomic(path, to_json(obj) + "\n")


def write_live_log(run_dir: Path, member_rows: list[list[dict]], columns: list[str]) -> None:
    """The training log so far, for watching a running fit: RUN_DIR/training_log.tsv (RUN_DIR is
    the staging directory, PARENT/.NAME.staging), rewritten atomically at each checkpoint and
    validation, in the format of the finished run's log (one member) or with a leading ``member``
    column (an ensemble). The finished run's own log replaces it when the run is written."""
    from dsrecon.io.runs import LOG_FILE
    from dsrecon.io.tables import write_table

    if len(member_rows) == 1:
        arr = [[r.get(c, np.nan) for c in columns] for r in member_rows[0]]
        names = list(columns)
    else:
        arr = [[k] + [r.get(c, np.nan) for c in columns] for k, rows in enumerate(member_rows) for r in rows]
        names = ["member", *columns]
    write_table(Path(run_dir) / LOG_FILE, np.array(arr, dtype=float).reshape(-1, len(names)), names)


def read_state_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
