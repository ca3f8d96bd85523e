"""The estimators floor (`dsrecon.estimators`): one fit skeleton, the ensemble's members built from
the model's own options (none dropped), and the old import paths kept."""

from __future__ import annotations

from dsrecon import ConvSSM
from dsrecon.ensemble import convssm_kwargs


def test_ensemble_members_keep_every_model_option():
    m = ConvSSM(preset="wide", latent_dim=4, kernel="glover", decoder="affine", seed=3, epochs=7)
    kw = convssm_kwargs(m)
    assert kw["preset"] == "wide"
    assert kw == m.get_params()  # every constructor argument travels: no option can be silently dropped
    assert ConvSSM(**kw).get_params() == m.get_params()
