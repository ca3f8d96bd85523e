"""What a single run records about its fit (config.json): the record of a resolved model, the
config key of each model option, and reading a run's record back (`read_run_config`)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
from pathlib import Path

import numpy as np

from dsrecon._util import dsrecon_version, versions
from dsrecon.errors import DataError
from dsrecon.io.recording import Recording
from dsrecon.io.runs import json_value as plain
from dsrecon.options import model_fields
from dsrecon.signal.kernels import Kernel

#: config.json keys load_run needs to rebuild the model
RUN_KEYS = ("backend", "latent_dim", "hidden_dim", "decoder", "kernel", "kernel_name", "seed", "train_options", "tr", "names",
            "n_regions", "normalisation")


def run_record(model, recs: list[Recording], kern: Kernel, data_hash: str, inputs: list[str] | None) -> dict:
    """config.json of a run of ``model`` (a resolved `dsrecon.ConvSSM`): its options (from
    `ModelOptions` and `TrainOptions`), the kernel's taps, the data's description."""
    return {
        "format": "dsrecon-run/1",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "dsrecon_version": dsrecon_version(),
        "versions": versions(),
        **{config_key(f): plain(getattr(model, f.name)) for f in model_fields()},
        "latent_dim": model.latent_dim,  # replaced by the M the model was built with
        "kernel": kern.to_dict(),
        "train_options": model.train_options.public(),
        "tr": float(recs[0].tr),
        "names": list(recs[0].names),
        "n_regions": recs[0].n_regions,
        "regressor_names": list(recs[0].regressor_names),
        "input_names": list(recs[0].input_names),  # external input channels (task events); [] autonomous
        "n_inputs": len(recs[0].input_names),
        "input_files": [r.provenance.get("inputs_file") for r in recs],
        "input_kind": recs[0].provenance.get("inputs_kind"),  # events | table | None
        "inputs": inputs or [r.source for r in recs],
        "input_paths": real_sources(recs),  # what commands reading the run must never overwrite
        "provenance": [jsonable(r.provenance) for r in recs],
        "n_masked_frames": [int((~r.mask).sum()) for r in recs],
        "data_hash": data_hash,
    }

def with_input_arrays(recs: list[Recording], inputs, names: list[str] | None = None) -> list[Recording]:
    """The recordings with the given input arrays ((T, K), or one per recording) attached."""
    arrs = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
    if len(arrs) != len(recs):
        raise DataError(f"{len(arrs)} input arrays for {len(recs)} recordings")
    out = []
    for r, a in zip(recs, arrs):
        a = np.asarray(a, dtype=np.float64)
        k = 1 if a.ndim == 1 else a.shape[1]
        out.append(dataclasses.replace(r, inputs=a, input_names=list(names) if names else [f"input{i + 1}" for i in range(k)]))
    return out


def real_sources(recs: list[Recording]) -> list[str]:
    """The real paths of the files the recordings were read from (data and input files), as far as they exist."""
    out = []
    for r in recs:
        for p in (r.source, r.provenance.get("inputs_file")):
            if isinstance(p, str) and p and os.path.exists(p):
                out.append(os.path.realpath(p))
    return list(dict.fromkeys(out))


def config_key(f: dataclasses.Field) -> str:
    """The config.json key of a model option (latent_dim → latent_dim_requested, kernel → kernel_name)."""
    return f.metadata.get("config_key", f.name)


def jsonable(d: dict) -> dict:
    try:
        json.dumps(d, default=str)
        return json.loads(json.dumps(d, default=str))
    except (TypeError, ValueError):
        return {k: str(v) for k, v in d.items()}


def one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, KeyError):
        return f"no key {msg}"
    return msg or e.__class__.__name__


def read_run_config(cfg_path: Path) -> dict:
    """config.json of a run as a dict holding every key load_run needs; else a DataError naming the key."""
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{cfg_path}: not valid JSON ({e})") from None
    except UnicodeDecodeError:
        raise DataError(f"{cfg_path}: not a text file") from None
    except OSError as e:
        raise DataError(f"{cfg_path}: cannot read ({e.strerror or e})") from None
    if not isinstance(cfg, dict):
        raise DataError(f"{cfg_path}: expected a JSON object, got {type(cfg).__name__}")
    missing = [k for k in RUN_KEYS if k not in cfg]
    if missing:
        raise DataError(f"{cfg_path}: key '{missing[0]}' is missing" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                        + "; the file is damaged or was not written by dsrecon fit")
    if not isinstance(cfg["train_options"], dict) or not isinstance(cfg["kernel"], dict) or not isinstance(cfg["normalisation"], dict):
        bad = next(k for k in ("train_options", "kernel", "normalisation") if not isinstance(cfg[k], dict))
        raise DataError(f"{cfg_path}: '{bad}' must be a JSON object")
    return cfg
