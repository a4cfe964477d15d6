"""``labels.target``: which label the members train on, and how far it reads (the purge's reach).

Why: a triple-barrier label reads up to ``max_holding_bars + 1`` bars after t, far more than the
forward return's ``horizon_bars``. A purge counted in the horizon would let a training label's
barrier read bars of the test block (or the holdout): the leak these tests pin down.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data.synthetic import generate_market
from features.labels import label_end_times, label_reach_bars, make_labels, training_target
from qt.config import CostParams, LabelParams, RiskParams, SyntheticParams, load_params
from qt.errors import ConfigError, DataError
from training.splits import holdout_split, walk_forward_folds

RISK = RiskParams(stop_loss_pct=0.02, take_profit_pct=0.04, max_holding_bars=10)


@pytest.mark.parametrize("target, expected", [("forward_return", 3), ("triple_barrier", 11)])
def test_label_reach_is_the_horizon_or_the_max_holding_exit(target, expected):
    assert label_reach_bars(LabelParams(horizon_bars=3, target=target), RISK) == expected


def test_forward_return_is_the_default_target_and_leaves_the_labels_as_they_are():
    labels = make_labels(_candles(), LabelParams(horizon_bars=3), CostParams(), RISK)
    assert LabelParams().target == "forward_return"
    assert training_target(labels, LabelParams(horizon_bars=3)) is labels


def test_triple_barrier_target_is_the_trades_outcome():
    labels = make_labels(_candles(), LabelParams(horizon_bars=3), CostParams(), RISK)
    target = training_target(labels, LabelParams(horizon_bars=3, target="triple_barrier"))
    assert list(target.columns) == list(labels.columns)  # make_labels' schema is kept
    np.testing.assert_array_equal(target["fwd_return"], labels["tb_return"])
    np.testing.assert_array_equal(target["up"], (labels["tb_return"] > 0).astype(np.int64))
    # a vertical-barrier exit counts by the sign of its return, not as "not a take-profit"
    vertical = labels["tb_label"] == 0
    assert vertical.any() and target.loc[vertical, "up"].nunique() == 2


def test_triple_barrier_target_without_triple_barrier_columns_is_a_data_error():
    labels = make_labels(_candles(), LabelParams(horizon_bars=3), CostParams())  # no risk: no tb columns
    with pytest.raises(DataError, match="labels.triple_barrier: true"):
        training_target(labels, LabelParams(horizon_bars=3, target="triple_barrier"))


@pytest.mark.parametrize("overrides, fragment", [
    ({"labels": {"target": "triple_barrier", "triple_barrier": False}}, "set labels.triple_barrier: true"),
    ({"labels": {"target": "triple_barrier"}, "train": {"members": ["xgboost", "nhits"]}},
     "train.members ['nhits'] forecast the forward return"),
    ({"labels": {"target": "triple_barrier"}, "train": {"members": ["patchtst"]}}, "['patchtst']"),
    ({"labels": {"target": "trade"}}, "labels.target"),
])
def test_an_impossible_target_is_one_line(overrides, fragment):
    with pytest.raises(ConfigError) as err:
        load_params(None, overrides)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_a_tune_trial_with_an_impossible_target_is_refused_in_one_line():
    from training.tune import trial_params

    base = load_params(None, {"train": {"members": ["xgboost"]}})
    with pytest.raises(ConfigError) as err:
        trial_params(base, {"labels.target": "triple_barrier", "train.members": ["nhits"]})
    assert "forecast the forward return" in str(err.value) and "\n" not in str(err.value)
    assert trial_params(base, {"labels.target": "triple_barrier"}).labels.target == "triple_barrier"


@pytest.mark.parametrize("embargo", [0, 3])
def test_a_label_whose_barrier_reads_past_the_fold_start_is_purged(embargo):
    candles = _candles(bars=300, symbols=2)
    labels_params = LabelParams(horizon_bars=2, target="triple_barrier")
    labels = make_labels(candles, labels_params, CostParams(), RISK)
    reach = label_reach_bars(labels_params, RISK)
    ends = pd.Series(label_end_times(labels, candles, reach))
    # by hand: a gap-free symbol's label at row i reads up to the open of row i + M + 1
    clock = pd.DatetimeIndex(sorted(candles["timestamp"].unique()))
    first = labels["timestamp"].iloc[0]
    assert ends.iloc[0] == clock[clock.searchsorted(first) + RISK.max_holding_bars + 1]

    by_horizon = walk_forward_folds(labels["timestamp"], 3, labels_params.horizon_bars, embargo,
                                    label_end=label_end_times(labels, candles, labels_params.horizon_bars))
    folds = walk_forward_folds(labels["timestamp"], 3, reach, embargo, label_end=ends)
    for (train, test), (train_h, _) in zip(folds, by_horizon):
        start = clock.searchsorted(labels["timestamp"].iloc[test].min())
        cut = clock[start - embargo]
        assert (ends.iloc[train] < cut).all(), "a training label's barrier reads the test block or its embargo"
        # the rows a horizon-counted purge would have kept although their barrier reads past the cut
        leaked = np.setdiff1d(train_h, train)
        assert len(leaked) > 0 and (ends.iloc[leaked] >= cut).all()

    train, hold = holdout_split(labels["timestamp"], 0.25, embargo, reach, label_end=ends)
    start = clock.searchsorted(labels["timestamp"][hold].min())
    assert (ends[train] < clock[start - embargo]).all()


def _candles(bars: int = 400, symbols: int = 1) -> pd.DataFrame:
    names = ["AAA/USDT", "BBB/USDT", "CCC/USDT"][:symbols]
    return generate_market(names, "1h", SyntheticParams(bars=max(bars, 300)), seed=5)


@pytest.mark.parametrize("train, says", [
    ({"label_target": "triple_barrier", "label_reach_bars": 25, "horizon_bars": 4}, "triple barrier over 25 bars"),
    ({"label_target": "forward_return", "label_reach_bars": 4, "horizon_bars": 4}, "log return over 4 bars > 0"),
    ({"horizon_bars": 4}, "log return over 4 bars > 0"),  # a run logged before labels.target existed
])
def test_the_model_card_says_which_label_the_model_learned(train, says):
    from training.report import render_model_card

    line = next(ln for ln in render_model_card(train).splitlines() if ln.startswith("- label:"))
    assert says in line


def test_the_model_digest_knows_the_target_and_its_barriers():
    from training.trials import model_digest

    base = load_params(None, {"train": {"members": ["xgboost"]}})
    tb = load_params(None, {"train": {"members": ["xgboost"]}, "labels": {"target": "triple_barrier"}})
    wider = load_params(None, {"train": {"members": ["xgboost"]}, "labels": {"target": "triple_barrier"},
                               "risk": {"stop_loss_pct": 0.05}})
    assert len({model_digest(base), model_digest(tb), model_digest(wider)}) == 3
    # the default target leaves a forward-return model's digest as it was before labels.target existed
    assert model_digest(base) == model_digest(load_params(None, {"train": {"members": ["xgboost"]},
                                                                 "risk": {"stop_loss_pct": 0.05}}))
