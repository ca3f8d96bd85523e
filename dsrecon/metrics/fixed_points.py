"""Fixed points and k-cycles of fitted latent dynamics.

Piecewise-linear models (PLRNN family) use SCYFI (Eisenmann et al., "Bifurcations and loss jumps
in RNN training", NeurIPS 2023; docs/method.md §6): within one relu activation pattern d the map is
affine, z' = M_d z + c_d, so a k-cycle with patterns d_1…d_k solves the linear system

    (I − M_k ⋯ M_1) z_1 = Σ_j M_k ⋯ M_{j+1} c_j.

Guess the patterns, solve, recompute the true patterns along the solved orbit, accept when they
match, otherwise retry with the recomputed ones. Stability comes from the eigenvalues of the
cycle's Jacobian M_k ⋯ M_1.

Both parameter kinds from ``piecewise_linear_params()`` are written as one affine-by-pattern form
z' = diag(A) z + W1 diag(d) (W2 z + h2) + h1, d_l = 1[(W2 z + h2)_l > 0]:
- "shplrnn": as given (L hidden units);
- "plrnn": W1 = W, W2 = I, h2 = 0, h1 = h, with d fixed to 1 on the linear (non-relu) units.

Other backends: :func:`find_fixed_points_generic` runs scipy.optimize.root on F(z) − z from many
initial states.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from dsrecon.errors import DsreconError

#: |eigenvalue| within this of 1 still counts as on its side (stable < 1, unstable > 1).
_EIG_TOL = 1e-9


@dataclass
class _PWL:
    """z' = A⊙z + W1 (d ⊙ (W2 z + h2)) + h1 with d = 1[W2 z + h2 > 0] on free units, 1 on fixed ones."""

    A: np.ndarray  # (M,)
    W1: np.ndarray  # (M, L)
    W2: np.ndarray  # (L, M)
    h1: np.ndarray  # (M,)
    h2: np.ndarray  # (L,)
    always_on: np.ndarray  # (L,) bool: units that are linear (pattern fixed to 1)

    @property
    def M(self) -> int:
        return self.A.size

    def pattern(self, z: np.ndarray) -> np.ndarray:
        """Activation pattern(s) of state(s) z (..., M) → (..., L) bool."""
        return ((z @ self.W2.T + self.h2) > 0) | self.always_on

    def affine(self, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(M_d, c_d) of the affine piece with pattern d (L,)."""
        W1d = self.W1 * d
        return np.diag(self.A) + W1d @ self.W2, W1d @ self.h2 + self.h1

    def step(self, z: np.ndarray) -> np.ndarray:
        pre = z @ self.W2.T + self.h2
        act = np.where(self.always_on, pre, np.maximum(pre, 0.0))
        return self.A * z + act @ self.W1.T + self.h1


def pwl_from_params(params: dict[str, Any]) -> _PWL:
    """The unified affine-by-pattern form of ``piecewise_linear_params()`` output."""
    kind = params.get("kind")
    f = lambda k: np.asarray(params[k], dtype=np.float64)  # noqa: E731
    if kind == "shplrnn":
        A, W1, W2, h1, h2 = f("A"), f("W1"), f("W2"), f("h1"), f("h2")
        M, L = W1.shape
        if A.shape != (M,) or W2.shape != (L, M) or h1.shape != (M,) or h2.shape != (L,):
            raise DsreconError(f"shplrnn parameters have inconsistent shapes: A {A.shape}, W1 {W1.shape}, W2 {W2.shape}")
        return _PWL(A, W1, W2, h1, h2, np.zeros(L, dtype=bool))
    if kind == "plrnn":
        A, W, h = f("A"), f("W"), f("h")
        relu = np.asarray(params["relu"], dtype=bool)
        M = A.size
        if W.shape != (M, M) or h.shape != (M,) or relu.shape != (M,):
            raise DsreconError(f"plrnn parameters have inconsistent shapes: A {A.shape}, W {W.shape}, relu {relu.shape}")
        return _PWL(A, W, np.eye(M), h, np.zeros(M), ~relu)
    raise DsreconError(f"piecewise-linear parameters of unknown kind {kind!r} (expected 'shplrnn' or 'plrnn')")


def classify(eigenvalues: np.ndarray) -> str:
    """'stable' if all |λ| < 1, 'unstable' if all |λ| > 1, else 'saddle'."""
    a = np.abs(np.asarray(eigenvalues))
    if np.all(a < 1 - _EIG_TOL):
        return "stable"
    if np.all(a > 1 + _EIG_TOL):
        return "unstable"
    return "saddle"


def _solve_cycle(pwl: _PWL, patterns: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Orbit (k, M) of the k-cycle with the given patterns (k, L), and its Jacobian P; None if singular."""
    k = patterns.shape[0]
    M = pwl.M
    P = np.eye(M)
    q = np.zeros(M)
    pieces = [pwl.affine(d) for d in patterns]
    for Mj, cj in pieces:
        P = Mj @ P
        q = Mj @ q + cj
    try:
        z1 = np.linalg.solve(np.eye(M) - P, q)
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.isfinite(z1)):
        return None
    pts = np.empty((k, M))
    pts[0] = z1
    for j in range(1, k):
        Mj, cj = pieces[j - 1]
        pts[j] = Mj @ pts[j - 1] + cj
    return pts, P


def _minimal_period(pts: np.ndarray, tol: float) -> int:
    k = pts.shape[0]
    scale = 1.0 + np.max(np.abs(pts))
    for p in range(1, k):
        if k % p == 0 and np.all(np.abs(pts[p:] - pts[:-p]) < tol * scale):
            return p
    return k


def _is_duplicate(pts: np.ndarray, found: list[np.ndarray], tol: float) -> bool:
    scale = 1.0 + np.max(np.abs(pts))
    for other in found:
        if other.shape != pts.shape:
            continue
        for s in range(pts.shape[0]):
            if np.all(np.abs(np.roll(other, s, axis=0) - pts) < tol * scale):
                return True
    return False


def find_cycles(
    params: dict[str, Any],
    k_max: int = 10,
    n_init: int = 100,
    max_iter: int = 50,
    seed: int = 0,
    init_states: np.ndarray | None = None,
    init_scale: float = 1.0,
    tol: float = 1e-8,
) -> list[dict[str, Any]]:
    """All k-cycles (k = 1…k_max; k = 1 are fixed points) SCYFI finds in a piecewise-linear model.

    params: ``piecewise_linear_params()`` output (kind "shplrnn" or "plrnn"). n_init: initial
    pattern guesses per period; each is the pattern sequence along the k-step orbit of a start
    state, drawn from ``init_states`` (n, M) when given (e.g. a model trajectory), else
    N(0, init_scale²). max_iter: pattern updates per guess.

    Returns a list of {"period": k, "points": (k, M) latent states, "eigenvalues": (M,) complex
    eigenvalues of the cycle's Jacobian, "max_abs_eigenvalue": float, "stability":
    "stable"|"unstable"|"saddle"}, sorted by period; cyclic shifts of a cycle are one cycle.
    """
    pwl = pwl_from_params(params)
    rng = np.random.default_rng(seed)
    if init_states is not None:
        init_states = np.asarray(init_states, dtype=np.float64)
        init_states = init_states[np.all(np.isfinite(init_states), axis=1)]
        if init_states.ndim != 2 or init_states.shape[1] != pwl.M or len(init_states) == 0:
            raise DsreconError(f"init_states must be (n, {pwl.M}) with finite rows")
        mu, sd = init_states.mean(0), init_states.std(0) + 1e-12
    else:
        mu, sd = np.zeros(pwl.M), np.full(pwl.M, float(init_scale))
    found: list[np.ndarray] = []
    out: list[dict[str, Any]] = []
    for k in range(1, int(k_max) + 1):
        for i in range(int(n_init)):
            if init_states is not None and i % 2 == 0:
                z = init_states[rng.integers(len(init_states))]
            else:
                z = rng.normal(mu, sd)
            orbit = [z]
            for _j in range(k - 1):
                orbit.append(pwl.step(orbit[-1]))
            patterns = pwl.pattern(np.array(orbit))
            seen: set[bytes] = set()
            for _it in range(int(max_iter)):
                key = patterns.tobytes()
                if key in seen:  # the pattern update cycles without converging
                    break
                seen.add(key)
                sol = _solve_cycle(pwl, patterns)
                if sol is None:
                    break
                pts, P = sol
                actual = pwl.pattern(pts)
                if np.array_equal(actual, patterns):
                    if _minimal_period(pts, 1e-6) == k and not _is_duplicate(pts, found, 1e-6) and _verify(pwl, pts, tol):
                        found.append(pts)
                        eig = np.linalg.eigvals(P)
                        out.append(
                            {
                                "period": k,
                                "points": pts,
                                "eigenvalues": eig,
                                "max_abs_eigenvalue": float(np.max(np.abs(eig))),
                                "stability": classify(eig),
                            }
                        )
                    break
                patterns = actual
    return out


def _verify(pwl: _PWL, pts: np.ndarray, tol: float) -> bool:
    """The true map sends each point to the next (and the last to the first)."""
    nxt = pwl.step(pts)
    scale = 1.0 + np.max(np.abs(pts))
    return bool(np.all(np.abs(nxt - np.roll(pts, -1, axis=0)) < tol * scale * 1e3))


def find_fixed_points_generic(
    step: Callable[[np.ndarray], np.ndarray],
    jacobian: Callable[[np.ndarray], np.ndarray],
    M: int,
    n_init: int = 200,
    init_states: np.ndarray | None = None,
    init_scale: float = 1.0,
    seed: int = 0,
    tol: float = 1e-8,
) -> list[dict[str, Any]]:
    """Fixed points z* = F(z*) of any map by root finding (scipy.optimize.root, 'hybr') from many starts.

    step: (B, M) → (B, M); jacobian: (B, M) → (B, M, M). Starts are drawn from ``init_states``
    (n, M) when given, else N(0, init_scale²). Returns the same records as :func:`find_cycles`
    with period 1.
    """
    from scipy.optimize import root

    rng = np.random.default_rng(seed)
    f = lambda z: np.asarray(step(z[None]), dtype=np.float64)[0] - z  # noqa: E731
    fj = lambda z: np.asarray(jacobian(z[None]), dtype=np.float64)[0] - np.eye(M)  # noqa: E731
    found: list[np.ndarray] = []
    out: list[dict[str, Any]] = []
    for _ in range(int(n_init)):
        if init_states is not None:
            z0 = np.asarray(init_states[rng.integers(len(init_states))], dtype=np.float64)
        else:
            z0 = rng.normal(0.0, init_scale, M)
        sol = root(f, z0, jac=fj, method="hybr")
        z = sol.x
        if not np.all(np.isfinite(z)):
            continue
        scale = 1.0 + np.max(np.abs(z))
        if np.max(np.abs(f(z))) > tol * scale * 1e3:
            continue
        pts = z[None]
        if _is_duplicate(pts, found, 1e-6):
            continue
        found.append(pts)
        eig = np.linalg.eigvals(np.asarray(jacobian(z[None]), dtype=np.float64)[0])
        out.append({"period": 1, "points": pts, "eigenvalues": eig, "max_abs_eigenvalue": float(np.max(np.abs(eig))), "stability": classify(eig)})
    return out


def cycles_to_json(cycles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """JSON-friendly copy: points as lists, eigenvalues as [re, im] pairs."""
    out = []
    for c in cycles:
        eig = np.asarray(c["eigenvalues"])
        out.append(
            {
                "period": int(c["period"]),
                "points": np.asarray(c["points"]).tolist(),
                "eigenvalues": [[float(e.real), float(e.imag)] for e in eig],
                "max_abs_eigenvalue": float(c["max_abs_eigenvalue"]),
                "stability": c["stability"],
            }
        )
    return out
