"""A tune trial's folds: the ensemble weights and the return map come from out-of-fold rows only,
and the study's confidence interval of a score has the width the Sharpe's sampling error gives.

Why: ``signal.min_edge_bps`` and rank mode trade on the expected return; fitted on the rows a
fold's own members were trained on, it would promise their training fit and the search would
select configurations by an in-sample number. The interval is what the selected configuration's
holdout Sharpe is held against (issue 17's positive control): too narrow, and every honest
holdout would look like overfitting; too wide, and none would.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import t as student_t

from data.lake import read_candles
from data.sources import lake_root
from features.store import read_features
from tests.training.support import SYMBOLS, build_state, make_params
from training.gates import compute_sharpe
from training.tune import (
    TuneData,
    iter_folds,
    out_of_selection_sharpes,
    prediction_interval,
    sharpe_interval,
    sharpe_standard_error,
)


def test_sharpe_standard_error_is_the_spread_of_sharpes_across_samples():
    rng = np.random.default_rng(5)
    n, samples = 400, 3000
    # fat-tailed, skewed returns with an edge: the normal-returns formula would be off
    draws = student_t.rvs(4, size=(samples, n), random_state=rng) * 0.01 + 0.004 * rng.exponential(1.0, (samples, n))
    sharpes = np.array([compute_sharpe(r) for r in draws])
    estimated = np.median([sharpe_standard_error(r) for r in draws[:300]])
    assert estimated == pytest.approx(sharpes.std(ddof=1), rel=0.1)


def test_the_interval_of_a_score_combines_its_folds_errors():
    folds = [{"sharpe": 0.03, "sharpe_se": 0.02}, {"sharpe": 0.01, "sharpe_se": 0.01}]
    got = sharpe_interval(folds)
    se = math.sqrt(0.02**2 + 0.01**2) / 2  # the mean of two independent estimates
    assert got["sharpe"] == pytest.approx(0.02) and got["se"] == pytest.approx(se)
    assert (got["low"], got["high"]) == pytest.approx((0.02 - 1.96 * se, 0.02 + 1.96 * se))


def test_out_of_selection_exposes_a_trial_that_won_by_fitting_one_fold():
    # trials x traded folds: two trials each brilliant on one fold only, one steady trial
    grid = np.array([[0.5, 0.0], [0.0, 0.5], [0.2, 0.2]])
    # the study's best score is 0.25; picked on one fold, each winner earns 0.0 on the other
    assert out_of_selection_sharpes(grid).tolist() == [0.0, 0.0]
    # with the steady trial clearly ahead, what it shows out of selection is what it earns
    assert out_of_selection_sharpes(np.array([[0.1, 0.0], [0.3, 0.3]])).tolist() == [0.3, 0.3]
    assert out_of_selection_sharpes(np.array([[0.1], [0.3]])) is None  # one fold: nothing held out


@pytest.mark.parametrize("folds", [3, 4])
@pytest.mark.parametrize("tau", [0.05, 0.15])
def test_prediction_interval_covers_a_new_periods_sharpe_as_often_as_it_says(folds, tau):
    """Random-effects market: each period's true per-bar Sharpe varies around 0.1 by tau."""
    rng = np.random.default_rng(folds * 100 + int(tau * 100))
    sims, hits = 400, 0
    for _ in range(sims):
        theta = 0.1 + tau * rng.standard_normal(folds + 1)
        inner = []
        for j in range(folds):
            r = theta[j] + rng.standard_normal(500)
            inner.append({"sharpe": compute_sharpe(r), "sharpe_se": sharpe_standard_error(r), "bars": 500})
        new = compute_sharpe(theta[folds] + rng.standard_normal(600))
        pi = prediction_interval(inner, 600)
        hits += pi["low"] <= new <= pi["high"]
    assert 0.9 <= hits / sims <= 1.0  # 95 % nominal; conservative (t on K-1 df) rather than short


@pytest.mark.slow
def test_weights_and_return_map_of_a_traded_fold_come_from_the_folds_before_it(tmp_path, monkeypatch):
    from training import tune

    params = make_params(0.4, bars=1500, data={"source": "synthetic:3"},
                         train={"members": ["xgboost", "lightgbm"], "folds": 4})
    paths = build_state(tmp_path, params, 3)
    candles = read_candles(lake_root(params, paths), SYMBOLS, params.data.timeframe, params.data.start,
                           params.data.end)
    data = TuneData(candles, read_features(paths.features, SYMBOLS), None,
                    candles["timestamp"].max() + pd.Timedelta(hours=1), candles["timestamp"].max())
    seen: list[int] = []
    real = tune.oof_calibration

    def spy(member_probs, up, fwd_return):
        seen.append(len(up))
        return real(member_probs, up, fwd_return)

    monkeypatch.setattr(tune, "oof_calibration", spy)
    folds = list(iter_folds(params, data, 4))

    assert [f["fold"] for f in folds] == [0, 1, 2]  # four folds: the first calibrates, three are traded
    starts = [pd.Timestamp(f["test_start"]) for f in folds]
    ends = [pd.Timestamp(f["test_end"]) for f in folds]
    # fold 0 is fitted on the calibration fold's test block; each later one on that plus every
    # traded test block before it - never its own rows, never a later one
    assert seen[0] > 0 and seen == [seen[0] + sum(f["rows"] for f in folds[:j]) for j in range(len(folds))]
    assert all(s > e for s, e in zip(starts[1:], ends[:-1]))
    assert all(np.isfinite(f["sharpe"]) and f["sharpe_se"] > 0 for f in folds)
