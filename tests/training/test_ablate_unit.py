"""``qt ablate``'s pure parts and its option errors (fast): the family registry's arms, the paired
bootstrap and the rank metrics, with expected values worked out by hand, not by the code under test."""

from __future__ import annotations

import numpy as np
import pytest

from features.families import FAMILIES, family_arms, off_value
from qt.config import FeatureParams
from qt.errors import UserError
from tests.cli.support import assert_one_line_error, run_qt
from training.ablate_stats import auc, paired_sharpe_change, rank_ic


def test_family_arms_turn_only_that_family_off_and_on():
    base = FeatureParams(candle_shape=True, cross=[24])
    without, with_ = family_arms(base, "candle_shape")
    assert (without.candle_shape, with_.candle_shape) == (False, True)
    assert without.cross == with_.cross == [24]  # the rest of the base is kept in both arms
    assert (off_value(True), off_value([3]), off_value("x")) == (False, [], None)
    assert {"candle_shape", "htf", "funding", "basis", "cross", "xv"} <= set(FAMILIES)


def test_an_unknown_family_names_the_known_ones():
    with pytest.raises(UserError) as err:
        family_arms(FeatureParams(), "astrology")
    assert "candle_shape" in str(err.value) and "\n" not in str(err.value)


def test_identical_arms_change_nothing_and_a_constant_gain_is_found():
    rng = np.random.default_rng(1)
    a = [rng.normal(0.0, 0.01, 400), rng.normal(0.0, 0.01, 300)]
    same = paired_sharpe_change(a, a, samples=200, mean_block=10, confidence=0.95, seed=3)
    assert same["change"] == 0 and same["low"] == 0 and same["high"] == 0
    # adding c to every bar raises a block's Sharpe by exactly c / sd (the sd is unchanged)
    c = 0.002
    shifted = paired_sharpe_change(a, [x + c for x in a], samples=200, mean_block=10, confidence=0.95, seed=3)
    expected = np.mean([c / x.std(ddof=1) for x in a])
    assert shifted["change"] == pytest.approx(expected)
    assert shifted["low"] > 0  # every paired resample sees the same shift


def test_auc_and_ic_by_hand():
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert rank_ic(np.array([1.0, 2.0, 3.0]), np.array([10.0, 30.0, 20.0])) == pytest.approx(0.5)


def test_cli_unknown_family_is_one_line_exit_2(tmp_path):
    res = run_qt(["ablate", "--family", "astrology", "--source", "synthetic:1"], tmp_path)
    assert_one_line_error(res, "choose from")
    assert "candle_shape" in res.stderr


def test_cli_bad_members_is_one_line_exit_2(tmp_path):
    res = run_qt(["ablate", "--family", "htf", "--members", "xgboost,catboost"], tmp_path)
    assert_one_line_error(res, "--members")
