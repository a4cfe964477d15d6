"""The backtest's signals carry ``atr`` = the feature ``atr_{risk.atr_period}`` of their bar (issue 16),
from the same candles and feature code as training's features - for ``qt backtest`` and the
champion re-evaluation (``model_predictions``), the evaluate stage's holdout predictions (which
come without it) and the RSI/MACD rule - so ATR-scaled stops open positions in the backtest as
they do live instead of being refused with ATR_UNAVAILABLE."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from executor.backtest import run_backtest
from executor.core import ATR_UNAVAILABLE
from executor.signals import signals_from_predictions
from features.compute import compute_features, feature_columns, warmup_bars
from qt.config import FeatureParams, SyntheticParams, load_params
from data.synthetic import generate_market
from training.backtest_model import evaluate_predictions, model_predictions, strategy_signals

SYMBOLS = ["BTC/USDT", "ETH/USDT"]
CANDLES = generate_market(SYMBOLS, "1h", SyntheticParams(bars=700), 3)
ATR_RISK = {"stop_loss_atr": 2.0, "take_profit_atr": 4.0, "atr_period": 14}


class _Model:
    """Stand-in pyfunc with logged metadata: prob_up alternates 0.7 / 0.3 every 10 rows."""

    def __init__(self, fp: FeatureParams):
        self.metadata = type("Meta", (), {"metadata": {"feature_params": fp.model_dump(mode="json"),
                                                       "feature_columns": feature_columns(fp), "timeframe": "1h"}})()

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        prob = np.where((np.arange(len(frame)) // 10) % 2 == 0, 0.7, 0.3)
        return pd.DataFrame({"prob_up": prob, "expected_return": 0.0})


def _atr_14(candles: pd.DataFrame = CANDLES) -> pd.Series:
    feats = compute_features(candles, FeatureParams())
    return feats.set_index(["symbol", "timestamp"])["atr_14"]


def _check(frame: pd.DataFrame, atr: pd.Series) -> None:
    keys = pd.MultiIndex.from_arrays([frame["symbol"], pd.to_datetime(frame["timestamp"], utc=True)])
    want = atr.reindex(keys).to_numpy()
    assert np.isfinite(want).all()
    assert np.array_equal(frame["atr"].to_numpy(dtype=float), want)


@pytest.mark.parametrize("fp", [FeatureParams(), FeatureParams(atr=[]), FeatureParams(atr=[7])],
                         ids=["model_reads_atr_14", "model_reads_no_atr", "model_reads_atr_7"])
def test_model_predictions_carry_the_atr_14_feature_of_each_bar(fp):
    start = CANDLES["timestamp"].sort_values().unique()[warmup_bars(fp) + 5]
    preds = model_predictions(_Model(fp), CANDLES, start, None, atr_period=14)
    assert list(preds.columns) == ["symbol", "timestamp", "prob_up", "expected_return", "atr"]
    _check(preds, _atr_14())
    without = model_predictions(_Model(fp), CANDLES, start, None)
    assert "atr" not in without.columns  # callers that do not trade them are unchanged
    pd.testing.assert_frame_equal(without, preds.drop(columns="atr"))


def test_strategy_signals_carry_the_predictions_atr_or_compute_it_from_the_candles():
    params = load_params(overrides={"risk": ATR_RISK})
    preds = model_predictions(_Model(FeatureParams()), CANDLES, None, None, atr_period=14)
    shuffled = preds.sample(frac=1.0, random_state=1)  # signals are sorted; the atr must follow its bar
    from_preds = strategy_signals(shuffled, CANDLES, params, "m")
    _check(from_preds, _atr_14())
    # the evaluate stage's holdout predictions have no atr: it comes from the history candles
    computed = strategy_signals(preds.drop(columns="atr"), CANDLES, params, "m")
    _check(computed, _atr_14())
    plain = signals_from_predictions(preds, params.signal, "m")
    pd.testing.assert_frame_equal(computed.drop(columns="atr"), plain)


def test_evaluation_with_atr_levels_opens_positions_for_the_strategy_and_the_rule():
    params = load_params(overrides={"risk": ATR_RISK})
    preds = model_predictions(_Model(FeatureParams()), CANDLES, None, None)  # no atr, as the evaluate stage's
    _, results = evaluate_predictions(CANDLES, preds, params, model_version="m")
    for name in ("strategy", "rule_rsi_macd"):
        res = results[name]
        assert res.metrics["trades"] > 0, name
        assert ATR_UNAVAILABLE not in set(res.decisions["reason"]), name
    # the same predictions traded without their atr open nothing: no entry without a stop
    bare = signals_from_predictions(preds, params.signal, "m")
    candles = CANDLES[CANDLES["timestamp"] >= preds["timestamp"].min()]
    refused = run_backtest(candles, bare, params)
    assert refused.metrics["trades"] == 0 and ATR_UNAVAILABLE in set(refused.decisions["reason"])
