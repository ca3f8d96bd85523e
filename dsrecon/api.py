"""The Python API: the options and defaults of the CLI (scikit-learn style).

>>> model = ConvSSM(latent_dim=3, epochs=500).fit(recordings, run_dir="run")   # doctest: +SKIP
>>> out = model.simulate(10_000)            # {"observed": (n, N), "latent": (n, M)}
>>> model.score(test_recording)             # {"D_stsp": …, "D_H": …, "PE_n": …}
>>> model = load_run("run")

The code lives in `dsrecon.estimators` (this module re-exports its names).
"""

from __future__ import annotations

from dsrecon.estimators.convssm import ConvSSM
from dsrecon.estimators.fitted import LONG_RUN_STEPS
from dsrecon.estimators.load import load_run
from dsrecon.estimators.params import PARAM_DEFAULTS
from dsrecon.io.runs import CONFIG_FILE, LOG_FILE, MODEL_FILE, TEACHER_DIR, check_resumable

__all__ = ["ConvSSM", "load_run", "LONG_RUN_STEPS", "PARAM_DEFAULTS", "CONFIG_FILE", "LOG_FILE", "MODEL_FILE", "TEACHER_DIR",
           "check_resumable"]
