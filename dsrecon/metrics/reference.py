"""Reference invariants of chaotic systems, read from dysts' packaged JSON (docs/method.md §6).

dysts ships ``dysts/data/chaotic_attractors.json`` (135 systems): per system its parameters, an
estimated largest Lyapunov exponent (``maximum_lyapunov_estimated``), an estimated spectrum
(``lyapunov_spectrum_estimated``), the correlation and Kaplan–Yorke dimensions. We read the file
directly (importing ``dysts.flows`` needs gluonts). dysts is a dev dependency: functions here raise
DsreconError when it is not installed.

dysts' two Lyapunov fields are independent numerical estimates and disagree with each other (and
with careful literature values) by more than 3 % for several systems, e.g. Rössler: maximum
0.151, spectrum 0.076, literature 0.0714. :data:`LITERATURE_LAMBDA_MAX` holds values from long
QR-method runs published in the literature, as a second reference.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from dsrecon.errors import DsreconError

#: λ_max per unit time from Sprott, "Chaos and Time-Series Analysis" (OUP 2003), Appendix A
#: (standard parameters: Lorenz σ=10, ρ=28, β=8/3; Rössler a=b=0.2, c=5.7).
LITERATURE_LAMBDA_MAX: dict[str, float] = {"lorenz63": 0.9056, "rossler": 0.0714}


@lru_cache(maxsize=1)
def dysts_table() -> dict[str, dict[str, Any]]:
    """All entries of dysts' ``chaotic_attractors.json``, keyed by dysts' system name."""
    try:
        from importlib.resources import files

        path = files("dysts") / "data" / "chaotic_attractors.json"
        return json.loads(path.read_text())
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise DsreconError(f"dysts reference data unavailable ({e}); install the dev extra: pip install 'dsrecon[dev]'") from e


def dysts_reference(dysts_name: str) -> dict[str, Any]:
    """Reference invariants of one dysts system (per unit system time).

    Returns {"name", "parameters", "lambda_max" (maximum_lyapunov_estimated), "spectrum"
    (lyapunov_spectrum_estimated), "lambda_max_from_spectrum", "kaplan_yorke_dimension",
    "correlation_dimension", "dim"}.
    """
    table = dysts_table()
    if dysts_name not in table:
        raise DsreconError(f"dysts has no system named '{dysts_name}'")
    e = table[dysts_name]
    spec = e.get("lyapunov_spectrum_estimated") or []
    return {
        "name": dysts_name,
        "parameters": e.get("parameters", {}),
        "lambda_max": e.get("maximum_lyapunov_estimated"),
        "spectrum": spec,
        "lambda_max_from_spectrum": max(spec) if spec else None,
        "kaplan_yorke_dimension": e.get("kaplan_yorke_dimension"),
        "correlation_dimension": e.get("correlation_dimension"),
        "dim": len(e.get("initial_conditions", [])) or e.get("embedding_dimension"),
    }


def numeric_params(params: dict[str, Any]) -> dict[str, float]:
    """dysts parameters that are plain numbers (what ``get_system(**overrides)`` accepts)."""
    return {k: float(v) for k, v in params.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
