"""Many fits at once: cohorts (one model per subject) and hyperparameter sweeps, on Ray.

Ray is optional (``pip install 'dsrecon[distributed]'``); without it, or with the environment
variable ``DSRECON_NO_RAY=1``, jobs run on a local process pool.

>>> from dsrecon.distributed import FitSettings, fit_cohort          # doctest: +SKIP
>>> fit_cohort("tables/", "cohort", FitSettings(epochs=500))         # doctest: +SKIP
"""

from dsrecon.distributed.cohort import evaluate_fitted, fit_cohort
from dsrecon.distributed.executor import ray_available, run_jobs
from dsrecon.distributed.settings import FitSettings, parse_grid
from dsrecon.distributed.subjects import Subject, discover_subjects, run_state
from dsrecon.distributed.sweep import run_sweep

__all__ = ["FitSettings", "Subject", "discover_subjects", "evaluate_fitted", "fit_cohort", "parse_grid", "ray_available",
           "run_jobs", "run_state", "run_sweep"]
