"""Fit settings shared by `fit-cohort` and `sweep`: one picklable object a worker can rebuild a fit from.

`FitSettings` holds the options of `dsrecon fit` that matter for a cohort or a sweep (model,
training, input loading). A worker turns it into an `InputSpec` (:meth:`FitSettings.input_spec`)
and a `ConvSSM` (:meth:`FitSettings.model`). Sweep grids name its fields (``latent_dim=3,5``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any


from dsrecon.errors import DsreconError


@dataclass
class FitSettings:
    """Model/training options (as `dsrecon fit`) plus input options (as `InputSpec`)."""

    # model
    backend: str = "cshplrnn"
    latent_dim: int | None = None
    hidden_dim: int = 50
    kernel: str | None = None  # None: spm, or calcium for calcium recordings
    tau_decay: float = 0.4
    tau_rise: float | None = None
    decoder: str = "identity"
    # training
    alpha: str = "0.15"
    epochs: int = 2000
    batches_per_epoch: int = 50
    batch_size: int = 16
    sequence_length: int | None = None  # None: 200 (at least K+39), capped by the training split
    learning_rate: float = 1e-3
    noise: float = 0.05
    test_fraction: float = 0.25
    val_every: int = 25
    patience: int = 20
    checkpoint_every: int = 25
    gmm_var: float = 1.0
    seed: int = 0
    device: str = "auto"
    # inputs
    tr: float | None = None
    atlas: str | None = None
    atlas_labels: str | None = None
    confounds: str = "none"
    task: str | None = None
    session: list[str] = field(default_factory=list)
    space: str | None = None
    detrend: bool = False
    standardize: bool = False
    low_pass: float | None = None
    high_pass: float | None = None

    #: fields that define the model (a finished run with different values is not reused)
    MODEL_KEYS = ("backend", "latent_dim", "hidden_dim", "kernel", "tau_decay", "tau_rise", "decoder", "alpha", "epochs",
                  "batches_per_epoch", "batch_size", "sequence_length", "learning_rate", "noise", "test_fraction",
                  "val_every", "patience", "gmm_var", "seed")

    def validate(self) -> "FitSettings":
        """Raise DsreconError (one line naming the option) for impossible values."""
        for name in ("epochs", "batches_per_epoch", "batch_size", "val_every", "checkpoint_every", "hidden_dim"):
            if getattr(self, name) < 1:
                raise DsreconError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.latent_dim is not None and self.latent_dim < 1:
            raise DsreconError(f"--latent-dim must be at least 1, got {self.latent_dim}")
        if not 0 <= self.test_fraction < 1:
            raise DsreconError(f"--test-fraction must be in [0, 1), got {self.test_fraction}")
        if self.tr is not None and not self.tr > 0:
            raise DsreconError(f"--tr must be positive, got {self.tr}")
        if not self.learning_rate > 0:
            raise DsreconError(f"--learning-rate must be positive, got {self.learning_rate}")
        if str(self.alpha).lower() != "adaptive":
            try:
                a = float(self.alpha)
            except ValueError:
                raise DsreconError(f"--alpha must be a number in [0, 1] or 'adaptive', got '{self.alpha}'") from None
            if not 0 <= a <= 1:
                raise DsreconError(f"--alpha must be in [0, 1], got {a}")
        if self.sequence_length is not None and self.sequence_length < 2:
            raise DsreconError(f"--sequence-length must be at least 2, got {self.sequence_length}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def model_dict(self) -> dict[str, Any]:
        d = self.to_dict()
        return {k: d[k] for k in self.MODEL_KEYS}

    def replace(self, **changes: Any) -> "FitSettings":
        return dataclasses.replace(self, **changes)

    def input_spec(self, participant: str | None = None, quiet: bool = True):
        from dsrecon.io.load import InputSpec

        return InputSpec(tr=self.tr, atlas=self.atlas, atlas_labels=self.atlas_labels, confounds=self.confounds,
                         participant_label=[participant] if participant else [], task=self.task, session=list(self.session),
                         space=self.space, detrend=self.detrend, standardize=self.standardize, low_pass=self.low_pass,
                         high_pass=self.high_pass, quiet=quiet)

    def kernel_name(self, recs: list) -> str:
        if self.kernel:
            return self.kernel
        return "calcium" if recs[0].provenance.get("modality", "bold") == "calcium" else "spm"

    def resolved_sequence_length(self, recs: list, n_taps: int) -> int:
        """As `dsrecon fit`: 200 (at least K+39) capped by the shortest training split."""
        if self.sequence_length is not None:
            return int(self.sequence_length)
        from dsrecon.training.batches import default_sequence_length

        return default_sequence_length([r.n_frames for r in recs], n_taps, self.test_fraction)[0]

    def model(self, recs: list, device: str = "cpu"):
        """A ConvSSM configured for these recordings (kernel and sequence length resolved)."""
        from dsrecon.api import ConvSSM
        from dsrecon.signal.kernels import make_kernel

        kname = self.kernel_name(recs)
        K = make_kernel(kname, recs[0].tr, tau_decay=self.tau_decay, tau_rise=self.tau_rise).K
        return ConvSSM(
            backend=self.backend, latent_dim=self.latent_dim, hidden_dim=self.hidden_dim, kernel=kname, tau_decay=self.tau_decay,
            tau_rise=self.tau_rise, decoder=self.decoder, seed=self.seed, device=device, epochs=self.epochs,
            batches_per_epoch=self.batches_per_epoch, batch_size=self.batch_size, sequence_length=self.resolved_sequence_length(recs, K),
            learning_rate=self.learning_rate, alpha=str(self.alpha), noise=self.noise, test_fraction=self.test_fraction,
            val_every=self.val_every, patience=self.patience, gmm_var=self.gmm_var, checkpoint_every=self.checkpoint_every,
        )


def _caster(name: str):
    """How a sweep value given as text becomes the field's type."""
    ints = {"latent_dim", "hidden_dim", "epochs", "batches_per_epoch", "batch_size", "sequence_length", "val_every", "patience",
            "checkpoint_every", "seed"}
    floats = {"tau_decay", "tau_rise", "learning_rate", "noise", "test_fraction", "gmm_var", "tr", "low_pass", "high_pass"}
    if name in ints:
        return int
    if name in floats:
        return float
    if name == "alpha":
        def alpha(v: str) -> str:
            if v.lower() == "adaptive":
                return "adaptive"
            float(v)
            return v
        return alpha
    if name in ("backend", "kernel", "decoder", "confounds"):
        return str
    return None


#: fields a sweep may vary (input-loading options are fixed for a sweep)
SWEEPABLE = tuple(f.name for f in dataclasses.fields(FitSettings) if _caster(f.name) is not None and f.name not in ("seed", "tr", "low_pass", "high_pass", "confounds"))


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
        cast = _caster(name)
        out = []
        for v in raw:
            try:
                out.append(cast(v))
            except ValueError:
                raise DsreconError(f"--grid {name}: '{v}' is not a valid value") from None
        if len(set(map(str, out))) != len(out):
            raise DsreconError(f"--grid {name}: repeated values")
        grid[name] = out
    return grid
