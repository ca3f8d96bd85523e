"""The simplest models that do the job, as yardsticks for every metric.

- :class:`LinearVAR`: a linear vector autoregression of order p, x_t = c + Σ_k A_k x_{t−k} + ε_t,
  ε ~ N(0, Σ), fitted by ridge regression (the intercept is not penalised) on one or more
  training segments (never across a segment boundary). Nozari et al. (Nature Biomedical
  Engineering 2024) found linear autoregressive models the hardest to beat on HCP resting state.
- :class:`IIDGaussian`: independent draws from a Gaussian with the training mean and covariance
  (the right FC and nothing else: no temporal structure).

Arrays are ``(time, regions)``; numpy only. Free runs use Gaussian innovations with the
residual covariance, so they are stationary series, not a decaying mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsrecon.errors import DataError

#: ridge penalty of the VAR coefficients (on z-scored data; the issue's baseline uses 1)
DEFAULT_RIDGE = 1.0


def _segments(x) -> list[np.ndarray]:
    segs = [np.asarray(x, dtype=np.float64)] if isinstance(x, np.ndarray) else [np.asarray(s, dtype=np.float64) for s in x]
    if not segs or any(s.ndim != 2 for s in segs) or len({s.shape[1] for s in segs}) != 1:
        raise DataError("a baseline needs one or more (time, regions) arrays with the same regions")
    if not all(np.isfinite(s).all() for s in segs):
        raise DataError("a baseline needs finite training data")
    return segs


def _lagged(seg: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Design rows [x_{t−1}, …, x_{t−p}] and targets x_t for t = p … T−1."""
    T = seg.shape[0]
    X = np.concatenate([seg[p - k - 1 : T - k - 1] for k in range(p)], axis=1)
    return X, seg[p:]


@dataclass
class LinearVAR:
    """x_t = intercept + coef.T @ [x_{t−1}; …; x_{t−p}] + ε_t, ε ~ N(0, noise_cov).

    coef: (p·N, N); intercept: (N,); noise_cov: (N, N)."""

    coef: np.ndarray
    intercept: np.ndarray
    noise_cov: np.ndarray
    order: int

    @classmethod
    def fit(cls, train, order: int = 1, ridge: float = DEFAULT_RIDGE) -> "LinearVAR":
        """Ridge regression of each frame on the previous ``order`` frames, pooled over segments."""
        if order < 1:
            raise DataError(f"VAR order must be >= 1, got {order}")
        if not ridge >= 0:
            raise DataError(f"ridge must be >= 0, got {ridge}")
        segs = [s for s in _segments(train) if s.shape[0] > order + 1]
        if not segs:
            raise DataError(f"a VAR({order}) needs a segment longer than {order + 1} frames")
        pairs = [_lagged(s, order) for s in segs]
        X = np.concatenate([a for a, _ in pairs])
        Y = np.concatenate([b for _, b in pairs])
        mx, my = X.mean(0), Y.mean(0)
        Xc, Yc = X - mx, Y - my
        G = Xc.T @ Xc + ridge * np.eye(X.shape[1])
        coef = np.linalg.solve(G, Xc.T @ Yc)
        resid = Yc - Xc @ coef
        cov = resid.T @ resid / max(1, resid.shape[0] - 1)
        return cls(coef=coef, intercept=my - mx @ coef, noise_cov=cov, order=order)

    @property
    def n_regions(self) -> int:
        return self.intercept.shape[0]

    def spectral_radius(self) -> float:
        """Largest |eigenvalue| of the companion matrix: < 1 means the free run is stationary (bounded)."""
        N, p = self.n_regions, self.order
        comp = np.zeros((N * p, N * p))
        comp[:N] = self.coef.T
        if p > 1:
            comp[N:, : N * (p - 1)] = np.eye(N * (p - 1))
        return float(np.max(np.abs(np.linalg.eigvals(comp))))

    def simulate(self, n_steps: int, seed: int = 0, start: np.ndarray | None = None, burn_in: int = 1000) -> np.ndarray:
        """A free run of ``n_steps`` frames (n_steps, N) with Gaussian innovations, after
        ``burn_in`` discarded frames from ``start`` (the last ``order`` frames; default the mean)."""
        rng = np.random.default_rng(seed)
        N, p = self.n_regions, self.order
        L = np.linalg.cholesky(self.noise_cov + 1e-12 * np.eye(N))
        total = n_steps + burn_in
        mean = np.linalg.solve(np.eye(N) - self.coef.reshape(p, N, N).sum(0).T, self.intercept) if self.spectral_radius() < 1 else self.intercept
        hist = [np.asarray(start[-p + k], float) if start is not None else mean.copy() for k in range(p)]  # oldest first
        eps = rng.standard_normal((total, N)) @ L.T
        out = np.empty((total, N))
        for t in range(total):
            lagged = np.concatenate(hist[::-1])  # x_{t−1}, …, x_{t−p}
            x = self.intercept + lagged @ self.coef + eps[t]
            if not np.isfinite(x).all() or np.abs(x).max() > 1e6:
                out[t:] = np.nan
                break
            out[t] = x
            hist = hist[1:] + [x]
        return out[burn_in:]

    def predict(self, x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n-step-ahead predictions of the mean dynamics from the observed history.

        x: (T, N) observations. Returns (predictions (m, N), their frame indices (m,)): for each
        t = p−1 … T−n−1 the prediction of x_{t+n} from x_{t−p+1} … x_t."""
        p = self.order
        x = np.asarray(x, float)
        T = x.shape[0]
        ts = np.arange(p - 1, T - n)
        if ts.size == 0:
            return np.empty((0, self.n_regions)), ts
        hist = [x[ts - p + 1 + k] for k in range(p)]  # oldest first, each (m, N)
        for _ in range(n):
            nxt = self.intercept + np.concatenate(hist[::-1], axis=1) @ self.coef
            hist = hist[1:] + [nxt]
        return hist[-1], ts + n


@dataclass
class IIDGaussian:
    """Independent frames from N(mean, cov) of the training data."""

    mean: np.ndarray
    cov: np.ndarray

    @classmethod
    def fit(cls, train) -> "IIDGaussian":
        x = np.concatenate(_segments(train))
        return cls(mean=x.mean(0), cov=np.cov(x, rowvar=False))

    def simulate(self, n_steps: int, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return rng.multivariate_normal(self.mean, self.cov, size=n_steps, method="cholesky" if _pd(self.cov) else "eigh")


def _pd(c: np.ndarray) -> bool:
    try:
        np.linalg.cholesky(c)
        return True
    except np.linalg.LinAlgError:
        return False


def r2_score(pred: np.ndarray, target: np.ndarray) -> float:
    """Prediction R², averaged over regions: mean_i (1 − Σ_t (x̂ − x)² / Σ_t (x − x̄)²).

    1 is perfect, 0 is the target's own mean, negative is worse than the mean. Regions with no
    variance are left out; NaN when none is left."""
    pred, target = np.asarray(pred, float), np.asarray(target, float)
    if pred.shape != target.shape or pred.ndim != 2 or pred.shape[0] < 2:
        return float("nan")
    sst = ((target - target.mean(0)) ** 2).sum(0)
    sse = ((pred - target) ** 2).sum(0)
    ok = sst > 0
    return float(np.mean(1 - sse[ok] / sst[ok])) if ok.any() else float("nan")
