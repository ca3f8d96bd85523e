"""A convSSM's options (`ConvSSMParams`): the constructor's keyword arguments (every `dsrecon fit`
option), scikit-learn's get_params / set_params, their checks, their resolution for given data
(`resolved`: the one place the preset and the derived defaults are settled) and building the
network they describe (`build_net`). The options are never rewritten by fitting, loading or `.to()`."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable, Sequence

import numpy as np
import torch

from dsrecon.errors import DsreconError, OptionError
from dsrecon.io.recording import Recording
from dsrecon.io.runs import json_equal as same, json_value as plain
from dsrecon.models.base import get_backend
from dsrecon.models.convssm import ConvSSMNet
from dsrecon.models.decoders import default_latent_dim, make_decoder
from dsrecon.models.device import resolve_device
from dsrecon.options import (DEFAULT_ALPHA, PRESET_TRAIN_OPTIONS, PRESETS, ModelOptions, TrainOptions, choose_preset, estimator_fields,
                             model_fields, train_fields, typed_options, validate_options)
from dsrecon.signal.kernels import Kernel, make_kernel
from dsrecon.training.batches import DEFAULT_SEQUENCE_LENGTH, default_sequence_length
from dsrecon.training.prepare import check_recordings, training_frames

#: the constructor's keyword arguments and defaults: every fit option (model, then training)
PARAM_DEFAULTS = {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default) for f in estimator_fields()}


class ConvSSMParams:
    """Mixed into `dsrecon.ConvSSM`: its options (module docstring)."""

    def __init__(self, **params):
        unknown = [k for k in params if k not in PARAM_DEFAULTS]
        if unknown:
            raise DsreconError(f"{type(self).__name__}: unexpected keyword argument '{unknown[0]}'")
        for name, default in PARAM_DEFAULTS.items():
            setattr(self, name, params.get(name, default))
        self.net_: ConvSSMNet | None = None
        self.config_: dict = {}
        self.run_dir_: Path | None = None

    # ---------------------------------------------------------------- parameters (scikit-learn)
    def get_params(self, deep: bool = True) -> dict:
        """Every constructor argument → its value (``deep`` is accepted for scikit-learn; nothing nests)."""
        return {name: getattr(self, name) for name in PARAM_DEFAULTS}

    def set_params(self, **params) -> "ConvSSM":
        for k, v in params.items():
            if k not in PARAM_DEFAULTS:
                raise DsreconError(f"{type(self).__name__}: unexpected keyword argument '{k}'")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.get_params().items() if not same(plain(v), plain(PARAM_DEFAULTS[k]))}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    @property
    def model_options(self) -> ModelOptions:
        return ModelOptions(**{f.name: getattr(self, f.name) for f in model_fields()})

    @property
    def train_options(self) -> TrainOptions:
        return TrainOptions(**{f.name: getattr(self, f.name) for f in train_fields()})

    def validate(self) -> "ConvSSM":
        """Check every option (one line naming the option on the first bad one); returns self."""
        validate_options(self.model_options)
        validate_options(self.train_options)
        self.train_options.schedule()  # the forcing options together (--alpha-end with a fixed --alpha)
        if self.backend_options is not None and not isinstance(self.backend_options, dict):
            raise DsreconError(f"backend_options must be a dict, got {type(self.backend_options).__name__}")
        self.backend_kwargs()
        return self

    def backend_kwargs(self) -> dict:
        """backend_options checked against the backend's `Options` (names, types; text parsed)."""
        return typed_options(get_backend(self.backend).Options, dict(self.backend_options or {}), f"--backend {self.backend}")

    def resolved(self, recs: Sequence[Recording], log: Callable[[str], None] | None = None, *, n_train: int | None = None) -> "ConvSSM":
        """A copy with the derived defaults filled in for these recordings (which must share one TR):
        the options left unset from the preset (`apply_preset`, the one place a preset is resolved),
        the kernel by modality (calcium imaging: calcium, else spm), the sequence length by the
        kernel's K taps and the training split, the device (auto: cuda when available), the backend
        options typed. This model's own options are left as given. ``n_train``: the training samples the
        preset is chosen by (default: these recordings'; a group fit passes its median subject's)."""
        recs = list(recs)
        self.validate()
        check_recordings(recs)
        out = type(self)(**self.get_params())
        out.apply_preset(training_frames([r.n_frames for r in recs], out.test_fraction) if n_train is None else n_train, recs[0].n_regions)
        if out.kernel is None:
            out.kernel = "calcium" if recs[0].provenance.get("modality", "bold") == "calcium" else "spm"
        if out.sequence_length is None:
            K = make_kernel(out.kernel, recs[0].tr, tau_decay=out.tau_decay, tau_rise=out.tau_rise).K
            out.sequence_length, usable = default_sequence_length([r.n_frames for r in recs], K, out.test_fraction)
            if out.sequence_length < max(DEFAULT_SEQUENCE_LENGTH, K + 39) and log is not None:
                log(f"the training split is short ({usable} usable frames): using --sequence-length {out.sequence_length}")
        out.device = resolve_device(out.device)
        out.backend_options = out.backend_kwargs()
        return out

    def apply_preset(self, n_train: int, n_regions: int = 0) -> "ConvSSM":
        """Settle ``preset`` for a fit of ``n_train`` training samples of ``n_regions`` regions (auto:
        `choose_preset`) and fill the options left unset (hidden_dim and `PRESET_TRAIN_OPTIONS`)
        from it, in place (`resolved` calls it on its copy)."""
        self.preset = choose_preset(self.preset, n_train, n_regions)
        if self.alpha is None and self.alpha_end is not None:  # an annealed α starts from the fixed default
            self.alpha = DEFAULT_ALPHA
        if self.hidden_dim is None:
            self.hidden_dim = PRESETS[self.preset]["hidden_dim"]
        t = self.train_options.with_preset(self.preset)
        for k in PRESET_TRAIN_OPTIONS:
            setattr(self, k, getattr(t, k))
        self.train_options.schedule()  # --alpha-end needs a fixed α, also the preset's
        return self

    def kernel_for(self, tr: float) -> Kernel:
        """The measurement kernel of this (resolved) model at repetition time ``tr``."""
        return make_kernel(self.kernel, tr, tau_decay=self.tau_decay, tau_rise=self.tau_rise)

    # ---------------------------------------------------------------- building
    def build_net(self, n_obs: int, n_regressors: int, kern: Kernel, gen: torch.Generator, n_inputs: int = 0,
                  latent_dim: int | None = None) -> ConvSSMNet:
        """The network these options describe for ``n_obs`` regions; ``latent_dim``: the M a fitted
        model was built with (a run's record), else the option's (default by N and the decoder)."""
        M = latent_dim if latent_dim is not None else self.latent_dim
        M = M if M is not None else default_latent_dim(n_obs, self.decoder)
        if M < 1:
            raise OptionError(f"`latent_dim` must be positive, got {M}")
        cls = get_backend(self.backend)
        kwargs = self.backend_kwargs()
        if "hidden_dim" in cls.Options.__dataclass_fields__:
            kwargs.setdefault("hidden_dim", self.hidden_dim)
        # sizes, checked here for every backend (a 0 fails deep inside one, e.g. a division by L)
        for key, opt in (("hidden_dim", "`hidden_dim`"), ("bases", "`bases`"), ("state_size", "`backend_options` state_size")):
            v = kwargs.get(key)
            if v is not None and not (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1):
                raise OptionError(f"{opt} must be a positive integer, got {v}")
        try:
            dyn = cls(M, generator=gen, **kwargs)
        except (TypeError, ValueError) as e:
            raise OptionError(f"`backend` {self.backend}: {e}") from None
        dyn.enable_inputs(n_inputs)  # external inputs act on the dynamics (C s_t), never on the decoder
        dec = make_decoder(self.decoder, M, n_obs, n_regressors, generator=gen)
        return ConvSSMNet(dyn, dec, torch.as_tensor(kern.taps), n_obs)

    _build = build_net  # the name benchmarks and tests use


ConvSSMParams.__init__.__signature__ = inspect.Signature(
    [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    + [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=PARAM_DEFAULTS[f.name], annotation=f.type)
       for f in estimator_fields()])
