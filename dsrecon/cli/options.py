"""The options of `dsrecon fit`, `fit-cohort` and `sweep` as Typer parameters, made from the option
dataclasses (`dsrecon.options`, `dsrecon.io.load.InputSpec`, each backend's `Options`).

`with_fit_options(...)` appends them to a command's own parameters (its ``__signature__``, which
Typer reads); `parse_fit_options(values)` turns what Typer parsed back into ConvSSM keyword
arguments and an InputSpec. Nothing here checks a value: that is the library's job.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Optional

import typer

from dsrecon.errors import DsreconError, OptionError
from dsrecon.io.load import InputSpec
from dsrecon.options import (BACKEND_PANEL, MODEL_PANEL, ModelOptions, TrainOptions, base_type, cli_fields, field_types, flag_of,
                             optional)

#: library parameter names whose flag is not that of the option field of the same name (or --name-with-dashes)
OTHER_FLAGS = {"n_steps": "--steps", "size": "--ensemble", "backend_options": "--backend-option"}


def flag_for(name: str) -> str:
    """The CLI flag of the library parameter ``name`` (hidden_dim → --hidden-dim, n_steps → --steps)."""
    if name in OTHER_FLAGS:
        return OTHER_FLAGS[name]
    for cls in (ModelOptions, TrainOptions, InputSpec):
        f = cls.__dataclass_fields__.get(name)
        if f is not None:
            return flag_of(f)
    return "--" + name.replace("_", "-")


def cli_words(e: BaseException) -> str:
    """An error's message as the CLI shows it: the library names options by their parameter names
    (`OptionError`: `hidden_dim`), the command line by their flags (--hidden-dim)."""
    return e.named(flag_for) if isinstance(e, OptionError) else str(e)


#: the generic way to give a backend option (any backend, registered ones included)
BACKEND_OPTION = "backend_option"


def _annotation(tp: Any) -> Any:
    t = base_type(tp)
    if t is list:
        return list[str]
    return Optional[t] if optional(tp) else t


def _param(f: dataclasses.Field, tp: Any, default: Any = dataclasses.MISSING, help: str | None = None) -> inspect.Parameter:
    if default is dataclasses.MISSING:
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    decls = [flag_of(f)] + ([f.metadata["short"]] if f.metadata.get("short") else [])
    opt = typer.Option(default, *decls, help=help if help is not None else f.metadata.get("help", ""),
                       rich_help_panel=f.metadata.get("panel"), show_default=not (default is None or default is False or default == []))
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=_annotation(tp))


def _backend_params(skip: set[str]) -> list[inspect.Parameter]:
    """One flag per backend option name over all registered backends (default: the backend's own)."""
    from dsrecon.models.base import backend_option_fields

    out = []
    for name, owners in backend_option_fields().items():
        if name in skip:
            continue
        _, f, tp = owners[0]
        which = ", ".join(f"{b} {d.default:g}" if isinstance(d.default, float) else f"{b} {d.default}" for b, d, _ in owners
                          if d.default is not None)
        help = f"{f.metadata.get('help', '')} ({', '.join(b for b, _, _ in owners)}; default {which or 'as described'})"
        if base_type(tp) is bool:
            out.append(_param(f, bool, default=False, help=help))
        else:
            out.append(_param(f, Optional[base_type(tp)], default=None, help=help))
    out.append(inspect.Parameter(BACKEND_OPTION, inspect.Parameter.KEYWORD_ONLY, annotation=list[str], default=typer.Option(
        [], "--backend-option", help="Any backend option as KEY=VALUE (repeatable).", rich_help_panel=BACKEND_PANEL)))
    return out


def fit_option_params(exclude: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """Typer parameters for every option of a fit: model, backend, training, inputs (minus ``exclude``)."""
    params: list[inspect.Parameter] = []
    model = [f for f in cli_fields(ModelOptions) if f.name not in ("seed", "device")]
    tm, tt, ti = field_types(ModelOptions), field_types(TrainOptions), field_types(InputSpec)
    params += [_param(f, tm[f.name]) for f in model]
    params += _backend_params(skip={f.name for f in dataclasses.fields(ModelOptions)})
    params += [_param(f, tt[f.name]) for f in cli_fields(TrainOptions)]
    params += [_param(f, ti[f.name]) for f in cli_fields(InputSpec)]
    seed_device = [f for f in cli_fields(ModelOptions) if f.name in ("seed", "device")]
    params += [_param(f, tm[f.name]) for f in seed_device]
    return [p for p in params if p.name not in exclude]


def with_fit_options(exclude: tuple[str, ...] = ()) -> Callable[[Callable], Callable]:
    """Give a command ``fn(own parameters…, **options)`` the fit options after its own parameters
    (``--json`` and ``--quiet`` go last)."""

    def deco(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        own = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        tail = [p for p in own if p.name in ("as_json", "quiet")]
        head = [p for p in own if p not in tail]
        head = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD else p for p in head]
        tail = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in tail]

        @functools.wraps(fn)
        def wrapper(**kw: Any) -> Any:
            return fn(**kw)

        wrapper.__signature__ = sig.replace(parameters=head + fit_option_params(exclude) + tail)
        return wrapper

    return deco


def _backend_option_pairs(items: list[str]) -> dict[str, str]:
    out = {}
    for it in items:
        if "=" not in it:
            raise DsreconError(f"--backend-option expects KEY=VALUE, got '{it}'")
        k, v = it.split("=", 1)
        out[k.strip().replace("-", "_")] = v.strip()
    return out


def parse_fit_options(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """What Typer parsed → (ConvSSM keyword arguments, InputSpec keyword arguments). A backend flag
    left at its CLI default (not given) is left out, so the backend's own default applies."""
    from dsrecon.models.base import backend_option_fields

    model_names = {f.name for f in dataclasses.fields(ModelOptions)} | {f.name for f in dataclasses.fields(TrainOptions)}
    est = {k: v for k, v in values.items() if k in model_names}
    spec = {f.name: values[f.name] for f in cli_fields(InputSpec) if f.name in values}
    spec = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in spec.items()}
    backend_opts: dict[str, Any] = {}
    for name in backend_option_fields():
        if name in values and name not in model_names and values[name] not in (None, False):
            backend_opts[name] = values[name]
    backend_opts.update(_backend_option_pairs(list(values.get(BACKEND_OPTION) or [])))
    est["backend_options"] = backend_opts
    return est, spec


def fit_option_names(exclude: tuple[str, ...] = ()) -> list[str]:
    """The names of the generated parameters (for `FitSettings`)."""
    return [p.name for p in fit_option_params(exclude)]


__all__ = ["fit_option_params", "fit_option_names", "parse_fit_options", "with_fit_options", "MODEL_PANEL"]
