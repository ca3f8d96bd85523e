"""Ensembles (`dsrecon.estimators.ensemble`; this module re-exports its names)."""

from __future__ import annotations

from dsrecon.estimators.ensemble import ENSEMBLE_FORMAT, EnsembleFit, convssm_kwargs, fit_ensemble, member_alphas, member_seeds, select_best

__all__ = ["ENSEMBLE_FORMAT", "EnsembleFit", "convssm_kwargs", "fit_ensemble", "member_alphas", "member_seeds", "select_best"]
