"""Right-hand sides and analytic Jacobians of the benchmark systems.

Each system is a small subclass of :class:`System`: ``_rhs(x)`` returns dx/dt for states
``x`` of shape (..., D) and ``_jac(x)`` the (D, D) Jacobian ∂f_i/∂x_j at one state (D,).
Parameter values, state names, default dt and initial-condition boxes are data, read from
``systems.json`` (see :mod:`dsrecon.systems.registry`); this module only holds equations.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from dsrecon.errors import DsreconError


class System:
    """A benchmark ODE system dx/dt = f(x) with fixed parameters.

    Attributes: ``name``, ``dim`` (D), ``params`` (dict of floats), ``state_names`` (D names),
    ``default_dt`` and ``default_transient`` (system time units), ``dysts_name`` (key in dysts'
    ``chaotic_attractors.json`` when this is the same system with the same parameters, else None).
    """

    key: ClassVar[str] = ""

    def __init__(self, spec: dict[str, Any], dim: int, params: dict[str, float]) -> None:
        self.name: str = self.key
        self.spec = spec
        self.dim: int = int(dim)
        self.params: dict[str, float] = {k: float(v) for k, v in params.items()}
        names = spec.get("state_names")
        self.state_names: list[str] = list(names) if names else [f"x{i}" for i in range(self.dim)]
        self.default_dt: float = float(spec["default_dt"])
        self.default_transient: float = float(spec["default_transient"])
        self.dysts_name: str | None = spec.get("dysts_name")
        self.description: str = spec.get("description", "")
        self._setup()

    def _setup(self) -> None:
        """Hook for subclasses to precompute from ``self.params`` (after validation)."""

    def __repr__(self) -> str:
        ps = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
        return f"{type(self).__name__}(dim={self.dim}, {ps})"

    # -- public API -------------------------------------------------------------------------
    def rhs(self, x: np.ndarray) -> np.ndarray:
        """dx/dt at state(s) ``x`` of shape (D,) or (B, D); same shape out (units: state / time)."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1] != self.dim or x.ndim not in (1, 2):
            raise DsreconError(f"{self.name}: expected a state of shape ({self.dim},) or (B, {self.dim}), got {x.shape}")
        return self._rhs(x)

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        """Analytic Jacobian ∂f_i/∂x_j at one state ``x`` (D,); returns (D, D)."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.dim,):
            raise DsreconError(f"{self.name}: jacobian expects one state of shape ({self.dim},), got {x.shape}")
        return self._jac(x)

    def initial_state(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """A random initial state (D,) drawn uniformly from the system's initial-condition box."""
        rng = np.random.default_rng() if rng is None else rng
        box = self.spec["ic_box"]
        low = np.broadcast_to(np.asarray(box["low"], dtype=np.float64), (self.dim,))
        high = np.broadcast_to(np.asarray(box["high"], dtype=np.float64), (self.dim,))
        return low + (high - low) * rng.random(self.dim)

    # -- to implement -----------------------------------------------------------------------
    def _rhs(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _jac(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


#: name → System subclass; filled by @register, matched against systems.json by the registry.
SYSTEM_CLASSES: dict[str, type[System]] = {}


def register(key: str):
    def deco(cls: type[System]) -> type[System]:
        cls.key = key
        SYSTEM_CLASSES[key] = cls
        return cls

    return deco


def _cols(x: np.ndarray):
    return [x[..., i] for i in range(x.shape[-1])]


@register("lorenz63")
class Lorenz63(System):
    def _rhs(self, x):
        p = self.params
        u, v, w = _cols(x)
        return np.stack([p["sigma"] * (v - u), u * (p["rho"] - w) - v, u * v - p["beta"] * w], axis=-1)

    def _jac(self, x):
        p = self.params
        u, v, w = x
        return np.array([[-p["sigma"], p["sigma"], 0.0], [p["rho"] - w, -1.0, -u], [v, u, -p["beta"]]])


@register("rossler")
class Rossler(System):
    def _rhs(self, x):
        p = self.params
        u, v, w = _cols(x)
        return np.stack([-v - w, u + p["a"] * v, p["b"] + w * (u - p["c"])], axis=-1)

    def _jac(self, x):
        p = self.params
        u, _, w = x
        return np.array([[0.0, -1.0, -1.0], [1.0, p["a"], 0.0], [w, 0.0, u - p["c"]]])


@register("lorenz96")
class Lorenz96(System):
    def _rhs(self, x):
        # (x_{i+1} − x_{i−2}) x_{i−1} − x_i + F, indices modulo D
        return (np.roll(x, -1, axis=-1) - np.roll(x, 2, axis=-1)) * np.roll(x, 1, axis=-1) - x + self.params["F"]

    def _jac(self, x):
        D = self.dim
        J = -np.eye(D)
        for i in range(D):
            ip1, im1, im2 = (i + 1) % D, (i - 1) % D, (i - 2) % D
            J[i, ip1] += x[im1]
            J[i, im2] -= x[im1]
            J[i, im1] += x[ip1] - x[im2]
        return J


@register("chua")
class Chua(System):
    def _g(self, u):
        p = self.params
        return p["m1"] * u + 0.5 * (p["m0"] - p["m1"]) * (np.abs(u + 1.0) - np.abs(u - 1.0))

    def _rhs(self, x):
        p = self.params
        u, v, w = _cols(x)
        return np.stack([p["alpha"] * (v - u - self._g(u)), u - v + w, -p["beta"] * v], axis=-1)

    def _jac(self, x):
        p = self.params
        u = x[0]
        # g is piecewise linear: slope m0 inside |x| < 1, m1 outside (one-sided at the kinks)
        dg = p["m0"] if abs(u) < 1.0 else p["m1"]
        return np.array([[-p["alpha"] * (1.0 + dg), p["alpha"], 0.0], [1.0, -1.0, 1.0], [0.0, -p["beta"], 0.0]])


@register("chen")
class Chen(System):
    def _rhs(self, x):
        p = self.params
        u, v, w = _cols(x)
        return np.stack([p["a"] * (v - u), (p["c"] - p["a"]) * u - u * w + p["c"] * v, u * v - p["b"] * w], axis=-1)

    def _jac(self, x):
        p = self.params
        u, v, w = x
        return np.array([[-p["a"], p["a"], 0.0], [p["c"] - p["a"] - w, p["c"], -u], [v, u, -p["b"]]])


@register("rucklidge")
class Rucklidge(System):
    def _rhs(self, x):
        p = self.params
        u, v, w = _cols(x)
        return np.stack([-p["a"] * u + p["b"] * v - v * w, u, -w + v**2], axis=-1)

    def _jac(self, x):
        p = self.params
        _, v, w = x
        return np.array([[-p["a"], p["b"] - w, -v], [1.0, 0.0, 0.0], [0.0, 2.0 * v, -1.0]])


@register("thomas")
class Thomas(System):
    def _rhs(self, x):
        b = self.params["b"]
        u, v, w = _cols(x)
        return np.stack([np.sin(v) - b * u, np.sin(w) - b * v, np.sin(u) - b * w], axis=-1)

    def _jac(self, x):
        b = self.params["b"]
        u, v, w = x
        return np.array([[-b, np.cos(v), 0.0], [0.0, -b, np.cos(w)], [np.cos(u), 0.0, -b]])


@register("hindmarsh_rose")
class HindmarshRose(System):
    def _rhs(self, x):
        p = self.params
        u, v, w = _cols(x)
        return np.stack(
            [
                v - p["a"] * u**3 + p["b"] * u**2 - w + p["I"],
                p["c"] - p["d"] * u**2 - v,
                p["r"] * (p["s"] * (u - p["x_R"]) - w),
            ],
            axis=-1,
        )

    def _jac(self, x):
        p = self.params
        u = x[0]
        return np.array(
            [
                [-3.0 * p["a"] * u**2 + 2.0 * p["b"] * u, 1.0, -1.0],
                [-2.0 * p["d"] * u, -1.0, 0.0],
                [p["r"] * p["s"], 0.0, -p["r"]],
            ]
        )


@register("fitzhugh_nagumo")
class FitzHughNagumo(System):
    def _rhs(self, x):
        p = self.params
        v, w = _cols(x)
        return np.stack([v - v**3 / 3.0 - w + p["I"], p["eps"] * (v + p["a"] - p["b"] * w)], axis=-1)

    def _jac(self, x):
        p = self.params
        v = x[0]
        return np.array([[1.0 - v**2, -1.0], [p["eps"], -p["eps"] * p["b"]]])


@register("van_der_pol")
class VanDerPol(System):
    def _rhs(self, x):
        mu = self.params["mu"]
        u, v = _cols(x)
        return np.stack([v, mu * (1.0 - u**2) * v - u], axis=-1)

    def _jac(self, x):
        mu = self.params["mu"]
        u, v = x
        return np.array([[0.0, 1.0], [-2.0 * mu * u * v - 1.0, mu * (1.0 - u**2)]])


@register("jansen_rit")
class JansenRit(System):
    """Jansen–Rit column: y0 pyramidal, y1 excitatory, y2 inhibitory PSPs (mV); y3–y5 their rates."""

    def _sigmoid(self, v):
        p = self.params
        return 2.0 * p["e0"] / (1.0 + np.exp(p["r"] * (p["v0"] - v)))

    def _dsigmoid(self, v):
        # S'(v) = r S(v) (1 − S(v) / (2 e0))
        p = self.params
        s = self._sigmoid(v)
        return p["r"] * s * (1.0 - s / (2.0 * p["e0"]))

    def _rhs(self, x):
        p = self.params
        A, B, a, b, C = p["A"], p["B"], p["a"], p["b"], p["C"]
        y0, y1, y2, y3, y4, y5 = _cols(x)
        S = self._sigmoid
        return np.stack(
            [
                y3,
                y4,
                y5,
                A * a * S(y1 - y2) - 2.0 * a * y3 - a**2 * y0,
                A * a * (p["p"] + 0.8 * C * S(C * y0)) - 2.0 * a * y4 - a**2 * y1,
                B * b * 0.25 * C * S(0.25 * C * y0) - 2.0 * b * y5 - b**2 * y2,
            ],
            axis=-1,
        )

    def _jac(self, x):
        p = self.params
        A, B, a, b, C = p["A"], p["B"], p["a"], p["b"], p["C"]
        y0, y1, y2 = x[0], x[1], x[2]
        dS = self._dsigmoid
        J = np.zeros((6, 6))
        J[0, 3] = J[1, 4] = J[2, 5] = 1.0
        s12 = A * a * dS(y1 - y2)
        J[3, 0], J[3, 1], J[3, 2], J[3, 3] = -(a**2), s12, -s12, -2.0 * a
        J[4, 0], J[4, 1], J[4, 4] = A * a * 0.8 * C * C * dS(C * y0), -(a**2), -2.0 * a
        J[5, 0], J[5, 2], J[5, 5] = B * b * 0.25 * C * 0.25 * C * dS(0.25 * C * y0), -(b**2), -2.0 * b
        return J
