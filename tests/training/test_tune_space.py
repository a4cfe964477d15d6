"""The two search dimensions issue 17 asked for, on a real synthetic state directory.

* ``labels.target: triple_barrier``: the train stage fits the members on the executor's own trade
  (up = tb_return > 0, expected_return mapped to tb_return), predicts the holdout, says so in the
  model card, and purges every training label by its reach (``max_holding_bars + 1`` bars), not by
  ``horizon_bars``; a tune trial's inner folds do the same.
* ``features.*`` dimensions: ``load_tune_data`` computes the union of the base feature set and
  every choice once; a trial reads its own columns only and drops rows by those columns alone.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from data.sources import lake_root
from features.compute import feature_columns
from features.store import read_features, read_labels
from training.tune import iter_folds, load_tune_data, trial_params

from tests.training.support import STRONG_SIGNAL, build_state, make_params

pytestmark = pytest.mark.slow

HTF = [{"timeframe": "4h", "base_timeframe": "1h", "rsi": [14]}]
SPACE = [
    {"path": "features.candle_shape", "kind": "categorical", "choices": [False, True]},
    {"path": "features.htf", "kind": "categorical", "choices": [[], HTF]},
    {"path": "labels.target", "kind": "categorical", "choices": ["forward_return", "triple_barrier"]},
]
FAMILY = ["body_frac", "upper_wick_frac", "lower_wick_frac", "range_log", "htf4h_rsi_14"]
FOLDS = 2


def _params(**labels):
    return make_params(STRONG_SIGNAL, data={"source": "synthetic:7"}, train={"members": ["xgboost", "lightgbm"]},
                       labels=labels, tune={"folds": FOLDS, "space": SPACE})


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    params = _params()
    paths = build_state(tmp_path_factory.mktemp("tune-space"), params, 7)
    return params, paths, load_tune_data(params, paths, lake_root(params, paths))


@pytest.fixture
def fits(monkeypatch):
    """Every member fit of a trial: (columns, the rows it was fitted on), through the real fit."""
    import training.models as models

    real, seen = models.fit_any_member, []

    def spy(name, rows, up, params, columns):
        seen.append((list(columns), rows.copy()))
        return real(name, rows, up, params, columns)

    monkeypatch.setattr(models, "fit_any_member", spy)
    return seen


def test_triple_barrier_target_trains_and_predicts(state):
    from training.report import render_model_card
    from training.stages import train_stage

    base, paths, _ = state
    params = _params(target="triple_barrier")
    train_stage(params, paths)
    train = json.loads((paths.models / "train.json").read_text())
    assert train["label_target"] == "triple_barrier"
    assert train["label_reach_bars"] == params.risk.max_holding_bars + 1
    card = render_model_card(train)
    assert "triple barrier over 25 bars" in card and "log return over" not in card

    pred = pd.read_parquet(paths.models / "holdout_predictions.parquet")
    assert len(pred) > 100 and pred["prob_up"].between(0.0, 1.0).all() and np.isfinite(pred["expected_return"]).all()
    # the realised label beside each prediction is the trade's outcome, not the forward return
    stored = read_labels(paths.features).merge(pred[["symbol", "timestamp", "fwd_return", "up"]],
                                               on=["symbol", "timestamp"], suffixes=("_stored", ""))
    assert len(stored) == len(pred)
    np.testing.assert_allclose(stored["fwd_return"], stored["tb_return"])
    np.testing.assert_array_equal(stored["up"], (stored["tb_return"] > 0).astype(int))
    assert not np.allclose(stored["fwd_return"], stored["fwd_return_stored"])

    # the last training row's barrier reads reach bars on; the purge left the embargo after that
    clock = pd.DatetimeIndex(sorted(read_features(paths.features)["timestamp"].unique()))
    last_train = clock.get_loc(pd.Timestamp(train["train_end"]))
    first_holdout = clock.get_loc(pd.Timestamp(train["holdout_start"]))
    assert last_train + train["label_reach_bars"] == first_holdout - params.train.embargo_bars - 1


@pytest.mark.parametrize("target", ["forward_return", "triple_barrier"])
def test_a_tune_trial_purges_its_folds_by_its_labels_reach(state, fits, target):
    base, _, data = state
    tp = trial_params(base, {"labels.target": target})
    reach = tp.labels.horizon_bars if target == "forward_return" else tp.risk.max_holding_bars + 1
    clock = pd.DatetimeIndex(sorted(data.candles["timestamp"].unique()))
    for fold in iter_folds(tp, data, FOLDS):
        trained = fits[-1][1]  # the fold's last member fit
        last_train = clock.get_loc(trained["timestamp"].max())
        first_test = clock.get_loc(pd.Timestamp(fold["test_start"]))
        assert last_train + reach == first_test - tp.train.embargo_bars - 1
        if target == "triple_barrier":  # fitted on the trade's outcome
            assert (trained["up"] == (trained["fwd_return"] > 0)).all()


def test_a_trial_with_a_feature_family_reads_its_columns_and_one_without_does_not(state, fits):
    base, paths, data = state
    store = read_features(paths.features)
    assert set(FAMILY) <= set(data.features.columns) and not set(FAMILY) & set(store.columns)

    with_family = trial_params(base, {"features.candle_shape": True, "features.htf": HTF})
    next(iter_folds(with_family, data, FOLDS))
    columns, rows = fits[-1]
    assert columns == feature_columns(with_family.features) and set(FAMILY) <= set(columns)
    assert not rows[columns].isna().any().any()  # the family's warm-up rows are dropped for it
    family_rows = len(rows)

    without = trial_params(base, {"features.candle_shape": False, "features.htf": []})
    next(iter_folds(without, data, FOLDS))
    columns, rows = fits[-1]
    assert columns == feature_columns(base.features) and not set(FAMILY) & set(columns)
    assert len(rows) > family_rows  # the htf warm-up does not cost a trial that does not read it
    # ... and it trains on exactly the rows it would have without the union
    plain = dataclasses.replace(data, features=data.features[list(store.columns)])
    next(iter_folds(without, plain, FOLDS))
    pd.testing.assert_frame_equal(rows, fits[-1][1])

