"""The fitted model never sees the holdout labels: permuting them leaves its holdout predictions
bit-identical, while permuting the training labels changes them (so the check has teeth)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.compute import compute_features
from features.labels import make_labels
from qt.config import SyntheticParams, load_params
from data.synthetic import generate_market
from training.train import train_models

SYMBOLS = ["BTC/USDT", "ETH/USDT"]
LABEL_COLUMNS = ["fwd_return", "up", "direction"]


@pytest.fixture(scope="module")
def market():
    params = load_params(overrides={
        "data": {"symbols": SYMBOLS},
        "train": {"folds": 2, "members": ["xgboost", "lightgbm"],
                  "xgboost": {"n_estimators": 30, "max_depth": 3, "learning_rate": 0.1},
                  "lightgbm": {"n_estimators": 30, "num_leaves": 7, "learning_rate": 0.1}}})
    candles = generate_market(SYMBOLS, "1h", SyntheticParams(bars=1200, signal_strength=0.3), seed=3)
    features = compute_features(candles, params.features)
    labels = make_labels(candles, params.labels, params.costs)
    return params, features, labels, train_models(features, labels, params)


def _permute_labels(labels: pd.DataFrame, rows: np.ndarray, seed: int) -> pd.DataFrame:
    """The label columns of ``rows`` shuffled among themselves (row by row, so each stays consistent)."""
    out = labels.copy()
    idx = np.flatnonzero(rows)
    shuffled = np.random.default_rng(seed).permutation(idx)
    out.loc[idx, LABEL_COLUMNS] = labels.loc[shuffled, LABEL_COLUMNS].to_numpy()
    assert not out.loc[idx, "fwd_return"].equals(labels.loc[idx, "fwd_return"])
    return out


def _predictions(result) -> pd.DataFrame:
    return result.holdout_predictions[["symbol", "timestamp", "prob_up", "expected_return"]].reset_index(drop=True)


def test_permuting_the_holdout_labels_leaves_the_holdout_predictions_unchanged(market):
    params, features, labels, base = market
    holdout = (labels["timestamp"] >= base.holdout_range[0]).to_numpy()
    assert holdout.sum() == len(base.holdout_predictions)
    again = train_models(features, _permute_labels(labels, holdout, seed=1), params)
    pd.testing.assert_frame_equal(_predictions(again), _predictions(base), check_exact=True)
    # the holdout's realised labels did move with the permutation (what the metrics are scored on)
    assert not again.holdout_labels["fwd_return"].equals(base.holdout_labels["fwd_return"])


def test_permuting_the_training_labels_changes_the_holdout_predictions(market):
    params, features, labels, base = market
    training = (labels["timestamp"] <= base.train_range[1]).to_numpy()
    again = train_models(features, _permute_labels(labels, training, seed=1), params)
    moved = np.abs(_predictions(again)["prob_up"] - _predictions(base)["prob_up"])
    assert moved.max() > 1e-3
