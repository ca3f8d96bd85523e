"""From Recordings to normalised training/validation data with teacher signals (§3, §4)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dsrecon.errors import DataError
from dsrecon.io.recording import Recording
from dsrecon.signal.kernels import Kernel
from dsrecon.training.batches import Prepared


@dataclass
class Normalisation:
    """Per-region z-scoring with training statistics: x_norm = (x − mean) / std."""

    mean: np.ndarray
    std: np.ndarray
    reg_mean: np.ndarray | None = None
    reg_std: np.ndarray | None = None

    def apply(self, x: np.ndarray, source: str = "", names: list[str] | None = None, first_row: int = 0) -> np.ndarray:
        """(x − mean) / std of a (time, regions) array; a DataError naming ``source``, the column and
        the row (``first_row`` + its index) when a finite value does not stay finite in float32 (the
        precision of training and generation)."""
        with np.errstate(over="ignore", invalid="ignore"):
            z = (np.asarray(x, dtype=np.float64) - self.mean) / self.std
        check_zscored(x, z, source, names, first_row=first_row)
        return z

    def invert(self, x: np.ndarray) -> np.ndarray:
        return x * self.std + self.mean

    def apply_regressors(self, r: np.ndarray | None, source: str = "", names: list[str] | None = None) -> np.ndarray | None:
        if r is None or self.reg_mean is None:
            return r
        with np.errstate(over="ignore", invalid="ignore"):
            z = (np.asarray(r, dtype=np.float64) - self.reg_mean) / self.reg_std
        check_zscored(r, z, source, names, what="regressor column")
        return z

    def to_dict(self) -> dict:
        d = {"mean": self.mean.tolist(), "std": self.std.tolist()}
        if self.reg_mean is not None:
            d["regressor_mean"] = self.reg_mean.tolist()
            d["regressor_std"] = self.reg_std.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Normalisation":
        rm = d.get("regressor_mean")
        return cls(np.asarray(d["mean"]), np.asarray(d["std"]), None if rm is None else np.asarray(rm), None if rm is None else np.asarray(d["regressor_std"]))


#: z-scored values must stay finite in float32, the precision of training and generation
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _where(source: str, names: list[str] | None, col: int, row: int, what: str) -> str:
    name = names[col] if names is not None and col < len(names) else None
    col_s = f"{what} '{name}'" if name is not None else f"{what} {col + 1}"
    return f"{source + ': ' if source else ''}{col_s}, row {row + 1}"


def check_zscored(x: np.ndarray, z: np.ndarray, source: str = "", names: list[str] | None = None,
                  what: str = "column", first_row: int = 0) -> None:
    """DataError for the first finite value of x (time, regions) whose z-score z overflowed (not
    finite, or beyond float32). Rows count data rows from 1 (the header is not a row)."""
    x = np.asarray(x)
    if x.ndim != 2:
        return
    bad = np.isfinite(x) & ~(np.abs(z) <= FLOAT32_MAX)
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        raise DataError(f"{_where(source, names, col, first_row + row, what)}: value {x[row, col]:.6g} is too large to z-score "
                        "(it overflows); rescale the data")


def _check_statistics(mean: np.ndarray, std: np.ndarray, splits: list[tuple[Recording, Recording]]) -> None:
    """Mean and std of the training frames must be finite: a huge value overflows their sums. The
    error names the recording, column and row of the column's largest valid value."""
    bad = ~(np.isfinite(mean) & np.isfinite(std))
    if not bad.any():
        return
    col = int(np.argmax(bad))
    trn = max((t for t, _ in splits), key=lambda t: np.abs(t.data[t.mask, col]).max(initial=0.0))
    v = np.where(trn.mask, np.abs(trn.data[:, col]), -1.0)
    row = int(np.argmax(v))
    raise DataError(f"{_where(trn.source, trn.names, col, row, 'column')}: value {trn.data[row, col]:.6g} is too large to z-score "
                    "(the column's mean or standard deviation overflows); rescale the data")


@dataclass
class PreparedData:
    train: list[Prepared]
    test: list[Prepared]  # x in normalised units, teacher unused (NaN)
    norm: Normalisation
    names: list[str]
    tr: float
    info: dict = field(default_factory=dict)
    input_names: list[str] = field(default_factory=list)  # external input channels (none: autonomous)


def training_samples(parts: list[Prepared]) -> int:
    """The frames of these training splits (config.json's ``data.n_train_frames``)."""
    return int(sum(p.x.shape[0] for p in parts))


def training_frames(n_frames: list[int], test_fraction: float) -> int:
    """The training samples of recordings of these lengths, before they are prepared: what
    `training_samples` will count (each keeps its head, `Recording.split`)."""
    return int(sum(n - round(n * test_fraction) for n in n_frames))


def check_recordings(recs: list[Recording]) -> None:
    """Data checks at the door: constant / empty regions, consistent TR and regions."""
    if not recs:
        raise DataError("no recordings to fit")
    tr, names = recs[0].tr, recs[0].names
    for r in recs:
        if not np.isclose(r.tr, tr, rtol=1e-6):
            raise DataError(f"{r.source}: TR {r.tr} differs from {recs[0].source} (TR {tr}); fit recordings of one TR together")
        if r.names != names:
            raise DataError(f"{r.source}: regions differ from {recs[0].source}")
        if r.input_names != recs[0].input_names or (r.inputs is None) != (recs[0].inputs is None):
            raise DataError(f"{r.source}: external inputs ({', '.join(r.input_names) or 'none'}) differ from {recs[0].source} "
                            f"({', '.join(recs[0].input_names) or 'none'}); all recordings need the same input channels")
        if r.regressor_names != recs[0].regressor_names or (r.regressors is None) != (recs[0].regressors is None):
            raise DataError(f"{r.source}: nuisance regressors ({len(r.regressor_names)}) differ from {recs[0].source} ({len(recs[0].regressor_names)}); all recordings need the same confound columns")
        valid = r.data[r.mask]
        if valid.shape[0] < 2:
            raise DataError(f"{r.source}: fewer than 2 valid frames")
        allnan = np.isnan(valid).all(axis=0)
        if allnan.any():
            raise DataError(f"{r.source}: region '{r.names[int(np.argmax(allnan))]}' is all NaN")
        sd = np.nanstd(valid, axis=0)
        if (sd < 1e-12).any():
            raise DataError(f"{r.source}: region '{r.names[int(np.argmax(sd < 1e-12))]}' is constant; drop it before fitting")
        if not np.isfinite(valid).all():
            raise DataError(f"{r.source}: NaN or Inf values in valid frames; mark those frames as censored or clean the data")


def prepare(recs: list[Recording], kernel: Kernel, test_fraction: float, teacher_cache: list[np.ndarray] | None = None) -> PreparedData:
    """Split each recording into a training head and held-out tail, z-score with pooled training
    statistics, and deconvolve the training part into teacher signals (NaN at masked edges and
    censored frames)."""
    check_recordings(recs)
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    splits = [r.split(test_fraction) for r in recs]
    train_valid = np.concatenate([trn.data[trn.mask] for trn, _ in splits])
    with np.errstate(over="ignore", invalid="ignore"):
        mean, std = train_valid.mean(0), train_valid.std(0)
    _check_statistics(mean, std, splits)
    if (std < 1e-12).any():
        bad = recs[0].names[int(np.argmax(std < 1e-12))]
        raise DataError(f"{recs[0].source}: region '{bad}' is constant in the training split")
    norm = Normalisation(mean, std)
    if recs[0].regressors is not None:
        regs = np.concatenate([trn.regressors[trn.mask] for trn, _ in splits])
        rs = regs.std(0)
        norm.reg_mean, norm.reg_std = regs.mean(0), np.where(rs < 1e-12, 1.0, rs)
    from dsrecon.signal.deconvolution import wiener_deconvolve

    for tr_rec, _ in splits:
        if tr_rec.n_frames < kernel.K + 1:
            raise DataError(
                f"{tr_rec.source}: training split too short ({tr_rec.n_frames} frames) for the kernel ({kernel.K} taps) plus one "
                "sequence; use more data, a larger TR or a smaller --test-fraction"
            )
    train, test = [], []
    for i, (tr_rec, te_rec) in enumerate(splits):
        x = norm.apply(tr_rec.data, tr_rec.source, tr_rec.names)
        if teacher_cache is not None:
            d = teacher_cache[i]
        else:
            # censored frames: interpolate the observation before deconvolving, then mark missing
            xi = _fill_masked(x, tr_rec.mask)
            d = wiener_deconvolve(xi, kernel.taps)
            d[~tr_rec.mask] = np.nan
        train.append(Prepared(x.astype(np.float32), tr_rec.mask.copy(), np.asarray(d, np.float32),
                              _f32(norm.apply_regressors(tr_rec.regressors, tr_rec.source, tr_rec.regressor_names)), tr_rec.source,
                              _f32(tr_rec.inputs)))
        if te_rec.n_frames:
            xt = norm.apply(te_rec.data, te_rec.source, te_rec.names, first_row=tr_rec.n_frames)
            test.append(Prepared(xt.astype(np.float32), te_rec.mask.copy(), np.full_like(xt, np.nan, dtype=np.float32),
                                 _f32(norm.apply_regressors(te_rec.regressors, te_rec.source, te_rec.regressor_names)), te_rec.source,
                                 _f32(te_rec.inputs)))
    info = {
        "n_recordings": len(recs),
        "n_train_frames": training_samples(train),
        "n_test_frames": int(sum(p.x.shape[0] for p in test)),
        "n_masked_frames": int(sum((~r.mask).sum() for r in recs)),
    }
    return PreparedData(train, test, norm, list(recs[0].names), float(recs[0].tr), info, list(recs[0].input_names))


def _f32(a: np.ndarray | None) -> np.ndarray | None:
    return None if a is None else np.asarray(a, np.float32)


def _fill_masked(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    if mask.all():
        return x
    t = np.arange(x.shape[0])
    out = x.copy()
    for j in range(x.shape[1]):
        out[~mask, j] = np.interp(t[~mask], t[mask], x[mask, j])
    return out
