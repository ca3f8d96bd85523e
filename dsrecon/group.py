"""The hierarchical group model (`dsrecon.estimators.group`; this module re-exports its names)."""

from __future__ import annotations

from dsrecon.estimators.group import GroupConvSSM
from dsrecon.estimators.group_run import (FEATURES_FILE, FEATURES_SIDECAR, GROUP_FORMAT, GROUP_KEYS, SUBJECT_KEYS, group_preset,
                                          is_group_config, run_feature_decay, subject_id, write_features)
from dsrecon.estimators.load import load_group_run, select_subject

__all__ = ["GroupConvSSM", "FEATURES_FILE", "FEATURES_SIDECAR", "GROUP_FORMAT", "GROUP_KEYS", "SUBJECT_KEYS", "group_preset",
           "is_group_config", "run_feature_decay", "subject_id", "write_features", "load_group_run", "select_subject"]
