"""Every option of a fit, defined once: the model, training and input options as dataclasses.

Each field's metadata carries its CLI flag, help, check and help panel; `dsrecon fit`,
`fit-cohort`, `sweep` (`dsrecon.cli.options` turns the fields into Typer options), the run's
config.json, `FitSettings` and `ConvSSM(...)` are all derived from these classes. A backend
declares its own options the same way (`LatentDynamics.Options`).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from dsrecon.errors import DsreconError, OptionError

#: the fixed GTF forcing weight α: the short-data preset's (the convSSM paper's BOLD setting), and
#: where an annealed α (--alpha-end) starts when --alpha is unset
DEFAULT_ALPHA = 0.15

#: Data-aware defaults (``--preset``): the values of the options a user leaves unset. ``auto`` (the
#: default) takes ``long`` for fits of at least LONG_MIN_SAMPLES training samples, else ``short``
#: (`choose_preset`). Measured on Lorenz63-BOLD: docs/experiments/lorenz-bold-reconstruction.md#round-7-2026-12-02-100-000-frames-the-floor-and-the-teacher-space-term
#: and docs/experiments/lorenz-bold-reconstruction.md#round-8-2026-12-03-the-gtf-papers-settings-on-long-data-now-the-long-data-preset.
PRESETS: dict[str, dict[str, Any]] = {
    "short": {"hidden_dim": 50, "alpha": f"{DEFAULT_ALPHA:g}", "l2": 0.0, "teacher_weight": 0.0, "epochs": 2000,
              "generation": "deterministic", "select_by": "stsp"},
    # the GTF paper's Lorenz settings (L 100, adaptive α, λ_lat 1e-5) with the teacher-space term (λ 1)
    "long": {"hidden_dim": 100, "alpha": "adaptive", "l2": 1e-5, "teacher_weight": 1.0, "epochs": 2000,
             "generation": "deterministic", "select_by": "stsp"},
    # whole-brain recordings (WIDE_MIN_REGIONS regions or more): resting-state BOLD is noise-driven, so
    # free runs are stochastic (the fitted noise model), and the budget is one that fits such a
    # subject in minutes (docs/benchmarks.md#whole-brain-resting-state-hcp-94-regions)
    "wide": {"hidden_dim": 50, "alpha": f"{DEFAULT_ALPHA:g}", "l2": 0.0, "teacher_weight": 0.0, "epochs": 150,
             "generation": "stochastic", "select_by": "connectivity"},
}
LONG_MIN_SAMPLES = 15_000
#: from this many regions the auto preset is ``wide`` (whole-brain parcellations have 68–400)
WIDE_MIN_REGIONS = 50
#: the options a preset fills in when they are left unset (besides the model's hidden_dim)
PRESET_TRAIN_OPTIONS = ("alpha", "l2", "teacher_weight", "epochs", "generation", "select_by")
# (older names of the teacher-space term's rule)
TEACHER_WEIGHT_LONG = PRESETS["long"]["teacher_weight"]
TEACHER_WEIGHT_MIN_SAMPLES = LONG_MIN_SAMPLES


def choose_preset(preset: str, n_train: int, n_regions: int = 0) -> str:
    """The preset a fit of ``n_train`` training samples of ``n_regions`` regions uses: ``preset``
    itself, or for ``auto`` ``wide`` from WIDE_MIN_REGIONS regions on, else ``long`` from
    LONG_MIN_SAMPLES samples on and ``short`` below."""
    if preset != "auto":
        return preset
    if n_regions >= WIDE_MIN_REGIONS:
        return "wide"
    return "long" if n_train >= LONG_MIN_SAMPLES else "short"

#: help panels of `dsrecon fit --help`
MODEL_PANEL = "Model"
BACKEND_PANEL = "Backend options"
TRAIN_PANEL = "Training"
VALIDATION_PANEL = "Validation and checkpoints"
INPUT_PANEL = "Inputs"


def option(default: Any = None, *, flag: str | None = None, help: str = "", check: Callable[[str, Any], str | None] | None = None,
           panel: str = TRAIN_PANEL, short: str | None = None, cli: bool = True, factory: Callable[[], Any] | None = None,
           **meta: Any) -> Any:
    """A dataclass field with its CLI description. ``flag`` defaults to --field-name; ``check(flag,
    value)`` returns a one-line complaint or None; ``cli=False`` keeps the field out of the CLI."""
    show = meta.pop("repr", True)
    md = {"flag": flag, "help": help, "check": check, "panel": panel, "short": short, "cli": cli, **meta}
    if factory is not None:
        return field(default_factory=factory, metadata=md, repr=show)
    return field(default=default, metadata=md, repr=show)


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def cli_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of an options class that are CLI options, in declaration order."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", False)]


def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def validate_options(obj: Any) -> Any:
    """Run every field's check; raise OptionError (one line naming the option by its field name,
    which the CLI shows as its flag) on the first failure."""
    for f in dataclasses.fields(obj):
        check = f.metadata.get("check")
        v = getattr(obj, f.name)
        if check is not None and v is not None:
            msg = check(f"`{f.name}`", v)
            if msg:
                raise OptionError(msg)
    return obj


# ---------------------------------------------------------------------------------------- checks
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def at_least(n: int) -> Callable[[str, Any], str | None]:
    def check(flag: str, v: Any) -> str | None:
        if not _is_int(v) or v < n:
            return f"{flag} must be at least {n}, got {v}"
        return None
    return check


def positive_integer(flag: str, v: Any) -> str | None:
    if not _is_int(v) or v < 1:
        return f"{flag} must be a positive integer, got {v}"
    return None


def positive(flag: str, v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        return f"{flag} must be positive, got {v}"
    return None


def non_negative(flag: str, v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
        return f"{flag} must be at least 0, got {v}"
    return None


def fraction(flag: str, v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
        return f"{flag} must be in [0, 1), got {v}"
    return None


#: the seeds every library takes (numpy's legacy seeding, torch, Python's random): 0 … 2³² − 1
SEED_MAX = 2**32 - 1


def seed_value(flag: str, v: Any) -> str | None:
    if not _is_int(v) or not 0 <= v <= SEED_MAX:
        return f"{flag} must be a whole number from 0 to {SEED_MAX}, got {v}"
    return None


#: the frame intervals (TR, seconds per frame) dsrecon accepts: from 1 ms (kHz sampling) to below
#: 100 s. A TR of 100 s or more is refused as "looks like milliseconds" (BIDS and dsrecon take
#: seconds; 720 for an HCP run's 0.72 s is the usual slip); above an hour, as out of range.
TR_MIN, TR_MS_SLIP, TR_MAX = 1e-3, 100.0, 3600.0


def tr_problem(tr: Any) -> str | None:
    """Why ``tr`` (seconds per frame) cannot be a recording's TR, as the end of a sentence that
    starts with where it came from ("--tr 720: …", "x.json: RepetitionTime …: …"); None if it can."""
    import math

    try:
        f = float(tr) if not isinstance(tr, bool) else math.nan
    except (TypeError, ValueError):
        return f"TR must be a number of seconds per frame, got {tr!r}"
    accepted = f"dsrecon accepts {TR_MIN:g} s to {TR_MS_SLIP:g} s per frame"
    if not (math.isfinite(f) and f > 0):
        return f"TR must be a positive number of seconds per frame, got {tr!r}"
    if f < TR_MIN:
        return f"TR {f:g} s is below 1 ms (TR is in seconds per frame; {accepted})"
    if f > TR_MAX:
        return f"TR {f:g} s is above one hour (TR is in seconds per frame; {accepted})"
    if f >= TR_MS_SLIP:
        return f"TR is in seconds; {f:g} s looks like milliseconds ({f / 1000:g} s?); {accepted}"
    return None


def tr_seconds(flag: str, v: Any) -> str | None:
    msg = tr_problem(v)
    return None if msg is None else f"{flag} {v:g}: {msg}" if isinstance(v, (int, float)) else f"{flag}: {msg}"


#: calcium indicator time constants dsrecon accepts (seconds): GCaMP6s decays in about 1–2 s; a
#: kernel of 5 decay constants longer than a minute or so cannot be sampled against a recording
TAU_MAX = 60.0


def tau_seconds(flag: str, v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= TAU_MAX:
        return (f"{flag} must be in (0, {TAU_MAX:g}] seconds (a calcium indicator's time constant; the kernel lasts "
                f"5 decay constants), got {v:g}" if isinstance(v, (int, float)) else f"{flag} must be a number of seconds, got {v}")
    return None


def cutoff_hz(flag: str, v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or v != v or v == float("inf"):
        return f"{flag} must be a positive frequency in Hz, got {v}"
    return None


def one_of(*choices: str) -> Callable[[str, Any], str | None]:
    def check(flag: str, v: Any) -> str | None:
        if str(v) not in choices:
            return f"{flag} must be {', '.join(choices[:-1])} or {choices[-1]}, got '{v}'"
        return None
    return check


def alpha_value(text: Any) -> float | None:
    """α as a number, None for 'adaptive'; DsreconError for anything else or outside [0, 1]."""
    if str(text).lower() == "adaptive":
        return None
    try:
        a = float(text)
    except (TypeError, ValueError):
        raise OptionError(f"`alpha` must be a number in [0, 1] or 'adaptive', got '{text}'") from None
    if not 0.0 <= a <= 1.0:
        raise OptionError(f"`alpha` must be in [0, 1], got {a}")
    return a


def alpha_in_range(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and 0.0 <= v <= 1.0


def _alpha_check(flag: str, v: Any) -> str | None:
    try:
        alpha_value(v)
    except DsreconError as e:
        return str(e)
    return None


# ---------------------------------------------------------------------------------------- the options
@dataclass
class ModelOptions:
    """What the model is: latent dynamics, kernel, decoder; the seed and device of its fit."""

    backend: str = option("cshplrnn", help="Latent dynamics (see `dsrecon backends`).", panel=MODEL_PANEL)
    latent_dim: int | None = option(None, short="-M", help="Latent dimension M (default N, at least 3).", check=positive_integer,
                                    panel=MODEL_PANEL, config_key="latent_dim_requested")
    preset: str = option("auto", help="Data-aware defaults of --hidden-dim, --alpha, --l2, --teacher-weight, --epochs and "
                         "--generation where they are not given: short|long|wide, or auto (wide from "
                         f"{WIDE_MIN_REGIONS} regions, else long from {LONG_MIN_SAMPLES:,} training samples; config.json "
                         "records the choice).",
                         check=one_of("auto", "short", "long", "wide"), panel=MODEL_PANEL)
    hidden_dim: int | None = option(None, short="-L", help="Hidden width L of the shPLRNN and the SSM blocks (default: the "
                                    f"preset's, {PRESETS['short']['hidden_dim']} short / {PRESETS['long']['hidden_dim']} long).",
                                    check=positive_integer, panel=MODEL_PANEL)
    kernel: str | None = option(None, help="spm|glover|calcium|none|FILE (default spm; calcium for calcium imaging).",
                                panel=MODEL_PANEL, config_key="kernel_name")
    tau_decay: float = option(0.4, help=f"Calcium kernel decay time constant (s, at most {TAU_MAX:g}).", check=tau_seconds,
                              panel=MODEL_PANEL)
    tau_rise: float | None = option(None, help="Calcium kernel rise time constant (s); double exponential.", check=tau_seconds,
                                    panel=MODEL_PANEL)
    decoder: str = option("identity", help="identity|affine|regressor|pca (pca: M < N latent units forced by the teacher "
                          "signals' principal components, read out by a learned matrix).",
                          check=one_of("identity", "affine", "regressor", "pca"),
                          panel=MODEL_PANEL)
    # the backend's own options (`LatentDynamics.Options`): on the CLI its flags and --backend-option KEY=VALUE
    backend_options: dict = option(factory=dict, cli=False)
    seed: int = option(0, help=f"Random seed, 0 to {SEED_MAX} (recorded in every output).", check=seed_value, panel=MODEL_PANEL)
    device: str = option("auto", help="Compute device: auto|cpu|cuda.", panel=MODEL_PANEL)


@dataclass
class TrainOptions:
    """How the model is trained (GTF, RAdam schedule, validation, early stopping, checkpoints)."""

    epochs: int | None = option(None, help="Maximum number of epochs (default: the preset's, "
                                f"{PRESETS['short']['epochs']} short/long, {PRESETS['wide']['epochs']} wide).", check=at_least(1))
    batches_per_epoch: int = option(50, help="RAdam steps per epoch.", check=at_least(1))
    batch_size: int = option(16, help="Sequences per batch.", check=at_least(1))
    # None: 200 (at least K+39), capped by the shortest training split; resolved by fit
    sequence_length: int | None = option(None, help="Latent sequence length T̃ (default 200, at least K+39, capped by the data).",
                                         check=at_least(2))
    learning_rate: float = option(1e-3, help="Initial RAdam learning rate (decays exponentially to --lr-end).", check=positive)
    lr_end: float = option(1e-6, help="Final learning rate.", check=positive)
    alpha: str | None = option(None, help="GTF forcing weight in [0, 1], or 'adaptive' (default: the preset's, "
                               f"{PRESETS['short']['alpha']} short / {PRESETS['long']['alpha']} long).", check=_alpha_check)
    alpha_end: float | None = option(None, help="Anneal a fixed --alpha geometrically to this value at the last epoch "
                                     "(default: no annealing).", check=lambda f, v: None if alpha_in_range(v) else
                                     f"{f} must be a number in [0, 1], got {v}")
    sparse_tf_interval: int | None = option(None, help="Sparse teacher forcing: force fully every τ steps instead of α.",
                                            check=at_least(1))
    adaptive_every: int = option(5, cli=False)  # adaptive α: recompute it every this many batches
    noise: float = option(0.05, help="Std of Gaussian noise injected into batches and teacher signals.", check=non_negative)
    pretrain_epochs: int | None = option(None, help="Teacher-space pretraining: first fit the latent model to the deconvolved "
                                         "teacher signals directly (no kernel) for this many epochs, then train through the kernel "
                                         "(default: half of --epochs; 0: none).", check=at_least(0))
    teacher_weight: float | None = option(None, help="Weight λ of a teacher-space term beside the observation loss: "
                                          "λ·MSE(latent, deconvolved teacher) over the forced units (default: the preset's, "
                                          f"{PRESETS['short']['teacher_weight']:g} short / {PRESETS['long']['teacher_weight']:g} long; "
                                          "0: none).", check=non_negative)
    l2: float | None = option(None, help="L2 regularisation of latent and decoder weights (default: the preset's, "
                              f"{PRESETS['short']['l2']:g} short / {PRESETS['long']['l2']:g} long).", check=non_negative)
    grad_clip: float = option(10.0, cli=False)  # gradient norm clip
    test_fraction: float = option(0.25, help="Held-out tail of each recording used for validation.", check=fraction,
                                  panel=VALIDATION_PANEL)
    val_every: int = option(25, help="Validate (D_stsp, D_H) every this many epochs.", check=at_least(1), panel=VALIDATION_PANEL)
    patience: int = option(20, help="Stop after this many validations without improvement (0: never).", check=at_least(0),
                           panel=VALIDATION_PANEL)
    restore_on_collapse: bool = option(False, help="When a validation free run has collapsed onto a fixed point, continue from "
                                       "the best model so far.", panel=VALIDATION_PANEL)
    min_epochs: int | None = option(None, help="Never stop early before this epoch (default: half of --epochs).", check=at_least(0),
                                    panel=VALIDATION_PANEL)
    stsp: str = option("auto", help="Validation D_stsp: auto|binned|gmm.", check=one_of("auto", "binned", "gmm"),
                       panel=VALIDATION_PANEL)
    generation: str | None = option(None, help="How free runs are made (validation, simulate, evaluate): stochastic (the map plus "
                                    "the process and observation noise fitted to the training residuals), deterministic (the map "
                                    "alone); default: the preset's (stochastic wide, else deterministic).",
                                    check=one_of("stochastic", "deterministic"), panel=VALIDATION_PANEL)
    select_by: str | None = option(None, help="What picks the best checkpoint at each validation: stsp (D_stsp, then D_H: the "
                                   "attractor criterion of the published method) or connectivity (FCD_KS + 1 − FC_corr + D_H "
                                   "against the recording: what whole-brain modelling compares); default: the preset's "
                                   "(connectivity wide, else stsp).", check=one_of("stsp", "connectivity"), panel=VALIDATION_PANEL)
    match_noise: bool = option(False, help="Validation adds the recording's observation noise (estimated per channel from its "
                               "finest wavelet details) to the noise-free free run before comparing state spaces, so that "
                               "noisy data are compared with noisy generated data.", panel=VALIDATION_PANEL)
    bins: int = option(30, cli=False)  # binned D_stsp: bins per dimension (capped by the data)
    gmm_var: float = option(1.0, help="σ² of the validation's GMM D_stsp, for every kind of data (evaluate and report use 0.3 for BOLD).", check=positive, panel=VALIDATION_PANEL)
    smoothing: float = option(20.0, help="Validation's D_H spectral smoothing σ (bins), for every kind of data (evaluate and report use 1 for BOLD).", check=non_negative, panel=VALIDATION_PANEL)
    checkpoint_every: int = option(25, help="Write a resumable checkpoint every this many epochs.", check=at_least(1),
                                   panel=VALIDATION_PANEL)

    def schedule(self) -> dict[str, Any]:
        """The forcing schedule these options ask for, its options checked together (--alpha-end
        with a fixed --alpha), as the keyword arguments of `dsrecon.training.gtf.AlphaSchedule`
        (`AlphaSchedule.from_options` builds it)."""
        if self.sparse_tf_interval:
            if self.alpha_end is not None:
                raise OptionError("`alpha_end` anneals a fixed `alpha`; it does not combine with `sparse_tf_interval`")
            return {"mode": "sparse", "interval": self.sparse_tf_interval}
        a = alpha_value(self.alpha if self.alpha is not None else DEFAULT_ALPHA)  # unset: resolved by the preset
        if a is None:
            if self.alpha_end is not None:
                raise OptionError("`alpha_end` anneals a fixed `alpha`; it does not combine with `alpha` adaptive")
            return {"mode": "adaptive"}
        return {"mode": "fixed", "alpha": a, "end": self.alpha_end, "epochs": self.epochs or PRESETS["short"]["epochs"]}

    def pretraining(self) -> int:
        """Epochs of teacher-space pretraining: ``pretrain_epochs``, by default half of ``epochs``
        (on Lorenz63-BOLD it halved the median latent D_stsp;
        docs/experiments/lorenz-bold-reconstruction.md#round-6-2026-12-02-teacher-space-pretraining-issue-15-now-the-default)."""
        return (self.epochs or PRESETS["short"]["epochs"]) // 2 if self.pretrain_epochs is None else int(self.pretrain_epochs)

    def teacher_weighting(self, n_train: int) -> float:
        """λ of the teacher-space term for a fit on ``n_train`` training samples: ``teacher_weight``,
        or when unset (options not resolved by `with_preset`) the auto preset's for that length (on
        Lorenz63-BOLD it cut the mean latent D_stsp by 59 % on 75 000 samples and did not help on
        2 000; docs/experiments/lorenz-bold-reconstruction.md#round-7-2026-12-02-100-000-frames-the-floor-and-the-teacher-space-term)."""
        if self.teacher_weight is not None:
            return float(self.teacher_weight)
        return float(PRESETS[choose_preset("auto", n_train)]["teacher_weight"])

    def with_preset(self, preset: str) -> "TrainOptions":
        """These options with the unset ones (PRESET_TRAIN_OPTIONS) taken from ``preset``."""
        p = PRESETS[preset]
        return dataclasses.replace(self, **{k: p[k] for k in PRESET_TRAIN_OPTIONS if getattr(self, k) is None})

    def public(self) -> dict:
        """The options a run records."""
        return asdict(self)


def model_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(ModelOptions))


def train_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(TrainOptions))


def estimator_fields() -> list[dataclasses.Field]:
    """The keyword arguments of `ConvSSM(...)`: the model options, then the training options."""
    return model_fields() + train_fields()


def defaults(fields: list[dataclasses.Field]) -> dict[str, Any]:
    out = {}
    for f in fields:
        out[f.name] = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return out


def split(values: dict[str, Any]) -> tuple[ModelOptions, TrainOptions]:
    """A flat dict of estimator keyword arguments → (ModelOptions, TrainOptions)."""
    m = {f.name: values[f.name] for f in model_fields() if f.name in values}
    t = {f.name: values[f.name] for f in train_fields() if f.name in values}
    return ModelOptions(**m), TrainOptions(**t)


# ---------------------------------------------------------------------------------------- text → typed values
def base_type(tp: Any) -> Any:
    """int for ``int | None``, list for ``list[str]``, … (the type a value given as text becomes)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    origin = typing.get_origin(tp)
    if origin in (list, dict):
        return origin
    if args and origin is not None and origin not in (list, dict):
        return base_type(args[0])
    return tp


def optional(tp: Any) -> bool:
    return type(None) in typing.get_args(tp)


def parse_value(tp: Any, text: Any, what: str) -> Any:
    """``text`` as a value of type ``tp`` (``what`` names it in the error: "--backend-option state_size")."""
    if not isinstance(text, str):
        return text
    t = base_type(tp)
    if optional(tp) and text.lower() in ("none", ""):
        return None
    if t is bool:
        if text.lower() in ("true", "1", "yes", "on"):
            return True
        if text.lower() in ("false", "0", "no", "off"):
            return False
        raise DsreconError(f"{what}: '{text}' is not true or false")
    if t in (int, float):
        try:
            return t(text)
        except ValueError:
            raise DsreconError(f"{what}: '{text}' is not {'an integer' if t is int else 'a number'}") from None
    return text


def typed_options(cls: type, values: dict[str, Any], what: str) -> dict[str, Any]:
    """Check ``values`` against the fields of ``cls`` (unknown names, types); text is parsed.
    ``what`` names the owner in the message ("--backend s4d")."""
    types = field_types(cls)
    out = {}
    for k, v in values.items():
        if k not in types:
            known = ", ".join(types) or "none"
            raise DsreconError(f"{what}: no option '{k}' (its options: {known})")
        out[k] = parse_value(types[k], v, f"--{k.replace('_', '-')}")
    return out
