"""Signal contract: thresholds, the predictions -> signals frame, the 'latest <= as_of' rule."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from executor.signals import FrameSignalSource, action_from_probability, signals_from_predictions
from qt.config import SignalParams
from qt.errors import DataError

from tests.executor.exec_support import signals_frame, ts

SP = SignalParams(buy_threshold=0.55, sell_threshold=0.45)


@pytest.mark.parametrize("prob,action", [(0.55, "buy"), (0.9, "buy"), (0.5499, "hold"), (0.5, "hold"),
                                         (0.4501, "hold"), (0.45, "sell"), (0.01, "sell"), (math.nan, "hold")])
def test_action_from_probability_uses_inclusive_thresholds(prob, action):
    assert action_from_probability(prob, SP) == action


def test_signals_from_predictions_follows_the_contract():
    pred = pd.DataFrame({"symbol": ["B/USDT", "A/USDT", "A/USDT"], "timestamp": [ts(0), ts(1), ts(0)],
                         "prob_up": [0.3, 0.6, 0.5], "expected_return": [-0.01, 0.02, 0.0]})
    out = signals_from_predictions(pred, SP, model_version="12")
    assert out.columns.tolist() == ["symbol", "timestamp", "action", "confidence", "expected_return",
                                    "model_version"]
    assert out[["symbol", "timestamp", "action"]].values.tolist() == [
        ["A/USDT", ts(0), "hold"], ["A/USDT", ts(1), "buy"], ["B/USDT", ts(0), "sell"]]
    assert out["confidence"].tolist() == [0.5, 0.6, 0.3]
    assert (out["model_version"] == "12").all()


def test_signals_from_predictions_names_missing_columns():
    with pytest.raises(DataError, match="prob_up"):
        signals_from_predictions(pd.DataFrame({"symbol": [], "timestamp": []}), SP, "1")


def test_frame_source_returns_latest_signal_at_or_before_as_of():
    src = FrameSignalSource(signals_frame({"A/USDT": ["buy", "sell", "hold"], "B/USDT": ["sell"]}))
    got = {s.symbol: (s.timestamp, s.action) for s in src.fetch(["A/USDT", "B/USDT", "C/USDT"], ts(1))}
    assert got == {"A/USDT": (ts(1), "sell"), "B/USDT": (ts(0), "sell")}
    assert src.fetch(["A/USDT"], ts(0) - pd.Timedelta(minutes=1)) == []


def test_frame_source_rejects_unknown_actions():
    df = signals_frame({"A/USDT": ["buy"]}).assign(action="long")
    with pytest.raises(DataError, match="unknown actions"):
        FrameSignalSource(df)


@settings(max_examples=60, deadline=None)
@given(stamps=st.dictionaries(st.sampled_from(["A/USDT", "B/USDT", "C/USDT"]),
                              st.lists(st.integers(0, 30), min_size=1, max_size=12), min_size=1),
       queries=st.lists(st.integers(-2, 34), min_size=1, max_size=40))
def test_frame_source_answers_latest_at_or_before_as_of_in_any_query_order(stamps, queries):
    """The source remembers where each symbol was last served (a backtest asks in time order);
    asked in any order - backwards, repeated, jumping - it must still answer the rule itself,
    checked here against a plain scan of the rows (duplicated timestamps: the last row wins)."""
    rows = [(sym, ts(h), "buy", k / 100.0, 0.0, "1") for sym, hours in stamps.items() for k, h in enumerate(hours)]
    df = pd.DataFrame(rows, columns=["symbol", "timestamp", "action", "confidence", "expected_return",
                                     "model_version"])
    src = FrameSignalSource(df)
    for q in queries:
        got = {s.symbol: (s.timestamp, s.confidence) for s in src.fetch(["A/USDT", "B/USDT", "C/USDT"], ts(q))}
        want = {}
        for sym, hours in stamps.items():
            seen = sorted(((h, k) for k, h in enumerate(hours) if h <= q))  # stable: ties keep frame order
            if seen:
                want[sym] = (ts(seen[-1][0]), seen[-1][1] / 100.0)
        assert got == want
