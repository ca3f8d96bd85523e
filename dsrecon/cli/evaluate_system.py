"""`dsrecon evaluate system NAME`: the Lyapunov spectrum of a benchmark ODE, next to dysts' reference.

The lead's `evaluate` command routes here; this module registers no command itself.
"""

from __future__ import annotations

from typing import Any

from dsrecon._util import versions
from dsrecon.cli.common import log


def evaluate_system(name: str, *, lyapunov_steps: int = 100_000, seed: int = 0, quiet: bool = False, dt: float | None = None,
                    params: dict[str, float] | None = None) -> dict[str, Any]:
    """Lyapunov spectrum (per unit system time) and KY dimension of benchmark system ``name``,
    at its default parameters or with ``params`` overriding some of them.

    When the system has a dysts counterpart (same equations and parameters), dysts' reference
    values and the relative error of λ_max against them are included; so is a literature value
    where we have one (:data:`dsrecon.metrics.reference.LITERATURE_LAMBDA_MAX`). Both are for the
    default parameters: they are left out when ``params`` changes one.
    """
    from dsrecon.errors import DsreconError
    from dsrecon.metrics.lyapunov import system_lyapunov
    from dsrecon.metrics.reference import LITERATURE_LAMBDA_MAX, dysts_reference
    from dsrecon.systems import get_system

    params = dict(params or {})
    default = dict(get_system(name).params)
    sys_ = get_system(name, **params)
    changed = any(default.get(k) != v for k, v in params.items())
    log(f"Lyapunov spectrum of {sys_.name}: {lyapunov_steps} RK4 steps…", quiet)
    res = system_lyapunov(sys_.name, n_steps=int(lyapunov_steps), dt=dt, seed=seed, params=params or None)
    out: dict[str, Any] = {
        "system": sys_.name,
        "params": dict(sys_.params),
        "dt": res.dt,
        "n_steps": res.n_steps,
        "lambda_max": res.lambda_max,
        "spectrum": res.per_second,
        "kaplan_yorke_dimension": res.kaplan_yorke,
        "seconds": res.seconds,
        "seed": seed,
        "versions": versions(),
    }
    if changed:
        return out
    if sys_.name in LITERATURE_LAMBDA_MAX:
        lit = LITERATURE_LAMBDA_MAX[sys_.name]
        out["literature_lambda_max"] = lit
        out["literature_rel_error"] = abs(res.lambda_max - lit) / lit
    if sys_.dysts_name:
        try:
            ref = dysts_reference(sys_.dysts_name)
        except DsreconError as e:
            out["dysts"] = {"error": str(e)}
        else:
            out["dysts_lambda_max"] = ref["lambda_max"]
            out["dysts_rel_error"] = abs(res.lambda_max - ref["lambda_max"]) / abs(ref["lambda_max"])
            out["dysts_spectrum"] = ref["spectrum"]
            out["dysts_kaplan_yorke_dimension"] = ref["kaplan_yorke_dimension"]
    return out
