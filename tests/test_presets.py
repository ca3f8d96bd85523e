"""Data-aware defaults (--preset): the choice by training samples, what a fit fills in, what it records."""

from __future__ import annotations

import numpy as np
import pytest

from dsrecon import ConvSSM, Recording
from dsrecon.errors import DsreconError
from dsrecon.group import group_preset
from dsrecon.options import DEFAULT_ALPHA, LONG_MIN_SAMPLES, PRESETS, choose_preset


def _rec(n: int) -> Recording:
    x = np.cumsum(np.random.default_rng(n).standard_normal((n, 3)), axis=0)
    return Recording(data=x, tr=1.0, names=["a", "b", "c"], source=f"x{n}.tsv")


def test_choose_preset_by_training_samples():
    assert choose_preset("auto", LONG_MIN_SAMPLES - 1) == "short"
    assert choose_preset("auto", LONG_MIN_SAMPLES) == "long"
    assert choose_preset("short", 10**7) == "short" and choose_preset("long", 10) == "long"


@pytest.mark.parametrize("preset", ["short", "long"])
def test_resolved_fills_only_what_is_unset(preset):
    # 20 000 frames keep 15 000 for training (test fraction 0.25): the auto preset is long there
    n = 600 if preset == "short" else 20_000
    r = ConvSSM().resolved([_rec(n)])
    p = PRESETS[preset]
    assert r.preset == preset
    assert (r.hidden_dim, r.alpha, r.l2, r.teacher_weight) == (p["hidden_dim"], p["alpha"], p["l2"], p["teacher_weight"])
    mine = ConvSSM(hidden_dim=7, alpha="0.3", l2=0.5, teacher_weight=2.0).resolved([_rec(n)])
    assert (mine.hidden_dim, mine.alpha, mine.l2, mine.teacher_weight) == (7, "0.3", 0.5, 2.0)
    other = "long" if preset == "short" else "short"
    forced = ConvSSM(preset=other).resolved([_rec(n)])  # an explicit preset wins over the length
    assert forced.preset == other and forced.hidden_dim == PRESETS[other]["hidden_dim"]
    assert ConvSSM().get_params()["hidden_dim"] is None  # the estimator's parameters stay as given


def test_annealed_alpha_starts_from_the_fixed_default():
    r = ConvSSM(alpha_end=0.02, preset="long").resolved([_rec(600)])
    assert r.alpha == DEFAULT_ALPHA and r.alpha_end == 0.02
    with pytest.raises(DsreconError, match="`alpha_end` anneals"):
        ConvSSM(alpha="adaptive", alpha_end=0.02).resolved([_rec(600)])


def test_a_group_takes_its_median_subjects_preset():
    short, long_ = [_rec(600)], [_rec(20_000)]
    assert group_preset("auto", {"01": short, "02": short, "03": long_}, 0.25) == "short"
    assert group_preset("auto", {"01": short, "02": long_, "03": long_}, 0.25) == "long"
    assert group_preset("short", {"01": long_}, 0.25) == "short"


def _wide(n_frames: int = 400, n_regions: int = 60) -> Recording:
    x = np.random.default_rng(0).standard_normal((n_frames, n_regions))
    return Recording(data=x, tr=0.72, names=[f"r{i}" for i in range(n_regions)], source="wide.tsv")


def test_whole_brain_data_take_the_wide_preset():
    from dsrecon.options import WIDE_MIN_REGIONS

    assert choose_preset("auto", 10**6, WIDE_MIN_REGIONS) == "wide"
    assert choose_preset("auto", 500, WIDE_MIN_REGIONS - 1) == "short"
    assert choose_preset("short", 500, 400) == "short"  # an explicit preset wins
    r = ConvSSM().resolved([_wide()])
    p = PRESETS["wide"]
    assert r.preset == "wide" and (r.epochs, r.generation, r.hidden_dim) == (p["epochs"], "stochastic", p["hidden_dim"])
    mine = ConvSSM(epochs=7, generation="deterministic").resolved([_wide()])
    assert (mine.epochs, mine.generation) == (7, "deterministic")
    short = ConvSSM().resolved([_rec(600)])
    assert (short.epochs, short.generation) == (PRESETS["short"]["epochs"], "deterministic")


def test_resume_takes_alpha_as_text_or_number_alike():
    """The annealed default α is the number DEFAULT_ALPHA; runs written when it was the text "0.15"
    (and fits given --alpha on the command line) still resume: the same α either way."""
    from dsrecon.io.runs import differences
    from dsrecon.options import TrainOptions

    base = TrainOptions().public()
    assert differences({"train_options": {**base, "alpha": "0.15"}}, {"train_options": {**base, "alpha": DEFAULT_ALPHA}}) == []
    assert differences({"train_options": {**base, "alpha": "adaptive"}}, {"train_options": {**base, "alpha": "adaptive"}}) == []
    diffs = differences({"train_options": {**base, "alpha": "0.3"}}, {"train_options": {**base, "alpha": DEFAULT_ALPHA}})
    assert diffs == ["--alpha: 0.3 in the run, 0.15 now"]
