"""Fit settings shared by `fit-cohort` and `sweep`: one picklable object a worker can rebuild a fit from.

`FitSettings` holds every option of `dsrecon fit` (model, training, input loading), made from the
option dataclasses of `dsrecon.options` and `InputSpec`. A worker turns it into an `InputSpec`
(:meth:`FitSettings.input_spec`) and a `ConvSSM` (:meth:`FitSettings.model`). Sweep grids name
its fields (``latent_dim=3,5``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, field
from typing import Any


from dsrecon.errors import DsreconError
from dsrecon.io.load import InputSpec
from dsrecon.options import (ModelOptions, TrainOptions, base_type, field_types, flag_of, model_fields, parse_value, train_fields,
                             validate_options)


def _settings_fields() -> list[tuple[str, Any, dataclasses.Field]]:
    """Every option of a fit, from the option dataclasses: model, training, inputs."""
    out = []
    for cls, keep in ((ModelOptions, lambda f: True), (TrainOptions, lambda f: True),
                      (InputSpec, lambda f: f.metadata.get("cli"))):
        types = field_types(cls)
        for f in dataclasses.fields(cls):
            if keep(f):
                dflt = ({"default_factory": f.default_factory} if f.default_factory is not dataclasses.MISSING
                        else {"default": f.default})
                out.append((f.name, types[f.name], field(metadata=f.metadata, **dflt)))
    return out


class _FitSettingsMethods:
    #: fields that define the model (a finished run with different values is not reused)
    MODEL_KEYS = tuple(f.name for f in model_fields() + train_fields() if f.name not in ("device", "checkpoint_every"))

    def validate(self) -> "FitSettings":
        """Raise DsreconError (one line naming the option) for impossible values."""
        validate_options(self)
        if not isinstance(self.backend_options, dict):
            raise DsreconError(f"backend_options must be a dict, got {type(self.backend_options).__name__}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def model_dict(self) -> dict[str, Any]:
        d = self.to_dict()
        return {k: d[k] for k in self.MODEL_KEYS}

    def replace(self, **changes: Any) -> "FitSettings":
        return dataclasses.replace(self, **changes)

    def input_spec(self, participant: str | None = None, quiet: bool = True) -> InputSpec:
        """The InputSpec of these settings; ``participant`` (a cohort's subject) replaces --participant-label."""
        kw = {f.name: getattr(self, f.name) for f in dataclasses.fields(InputSpec) if f.metadata.get("cli")}
        kw = {k: list(v) if isinstance(v, list) else v for k, v in kw.items()}
        if participant:
            kw["participant_label"] = [participant]
        return InputSpec(**kw, quiet=quiet)

    def model(self):
        """A ConvSSM with these options (its derived defaults are resolved by `fit`)."""
        from dsrecon.estimators.convssm import ConvSSM

        kw = {f.name: getattr(self, f.name) for f in model_fields() + train_fields()}
        kw["backend_options"] = dict(self.backend_options)
        kw["alpha"] = None if self.alpha is None else str(self.alpha)  # None: the preset's
        return ConvSSM(**kw)


#: Model/training options (as `dsrecon fit`) plus input options (as `InputSpec`): every fit option.
FitSettings = dataclasses.make_dataclass("FitSettings", _settings_fields(), bases=(_FitSettingsMethods,),
                                         namespace={"__module__": __name__})
FitSettings.__doc__ = "Every option of `dsrecon fit`: the model and training options (as `ConvSSM`) and the input options (as `InputSpec`)."


def _field_type(name: str) -> Any:
    return field_types(FitSettings).get(name)


def _sweepable() -> tuple[str, ...]:
    """Model and training options with one scalar value (input-loading options are fixed for a sweep)."""
    names = []
    for f in model_fields() + train_fields():
        if f.name in ("seed", "device") or not f.metadata.get("cli"):
            continue
        if base_type(_field_type(f.name)) in (int, float, str, bool):
            names.append(f.name)
    return tuple(names)


#: fields a sweep may vary
SWEEPABLE = _sweepable()


def parse_grid(items: list[str]) -> dict[str, list]:
    """``['latent_dim=3,5', 'alpha=0.1,adaptive']`` → ``{"latent_dim": [3, 5], "alpha": ["0.1", "adaptive"]}``.

    Names may use dashes (``latent-dim``). Raises DsreconError naming the bad --grid item.
    """
    grid: dict[str, list] = {}
    for it in items:
        if "=" not in it:
            raise DsreconError(f"--grid expects NAME=V1,V2,…, got '{it}'")
        name, vals = it.split("=", 1)
        name = name.strip().replace("-", "_")
        if name == "seed":
            raise DsreconError("--grid seed=…: use --seeds N for the seed axis")
        if name not in SWEEPABLE:
            raise DsreconError(f"--grid {name}: not a sweepable option (choose from {', '.join(SWEEPABLE)})")
        if name in grid:
            raise DsreconError(f"--grid {name}: given twice")
        raw = [v.strip() for v in vals.split(",") if v.strip()]
        if not raw:
            raise DsreconError(f"--grid {name}: no values")
        f = FitSettings.__dataclass_fields__[name]
        check = f.metadata.get("check")
        out = []
        for v in raw:
            try:
                val = parse_value(_field_type(name), v, f"--grid {name}")
            except DsreconError:
                val = None
                bad = True
            else:
                bad = check is not None and val is not None and bool(check(flag_of(f), val))
            if bad:
                raise DsreconError(f"--grid {name}: '{v}' is not a valid value")
            out.append(val)
        if len(set(map(str, out))) != len(out):
            raise DsreconError(f"--grid {name}: repeated values")
        grid[name] = out
    return grid
