"""The old system's RSI/MACD rule as a signals frame: same rule, causal, backtestable."""

from __future__ import annotations

import numpy as np
import pandas as pd
import talib

from executor.backtest import run_backtest
from qt.config import Params, SyntheticParams
from data.synthetic import generate_market
from training.baselines import make_rule_signals


def _candles(bars: int = 1500, seed: int = 3) -> pd.DataFrame:
    # fat-tailed, clustered noise: RSI extremes with both MACD signs occur
    return generate_market(["BTC/USDT", "ETH/USDT"], "1h", SyntheticParams(bars=bars, signal_strength=0.0), seed)


def test_rule_actions_follow_rsi_and_macd_histogram():
    candles = _candles()
    signals = make_rule_signals(candles)
    assert list(signals.columns) == ["symbol", "timestamp", "action", "confidence", "expected_return",
                                     "model_version"]
    for symbol, sig in signals.groupby("symbol"):
        close = candles.loc[candles["symbol"] == symbol, "close"].to_numpy()
        rsi = talib.RSI(close, timeperiod=14)
        hist = talib.MACD(close, 12, 26, 9)[2]
        defined = np.isfinite(rsi) & np.isfinite(hist)
        rsi, hist = rsi[defined], hist[defined]
        want = np.full(len(rsi), "hold", dtype=object)
        want[(rsi < 30) & (hist > 0)] = "buy"
        want[(rsi > 70) & (hist < 0)] = "sell"
        assert len(sig) == defined.sum()  # warm-up bars (undefined indicators) are absent
        assert (sig["action"].to_numpy() == want).all()
    counts = signals["action"].value_counts()
    assert counts.get("buy", 0) > 0 and counts.get("sell", 0) > 0 and counts["hold"] > counts["buy"]


def test_rule_signal_at_bar_t_ignores_later_bars():
    candles = _candles()
    full = make_rule_signals(candles)
    cut = candles["timestamp"].unique()[1000]
    early = make_rule_signals(candles[candles["timestamp"] <= cut])
    later = full[full["timestamp"] <= cut].reset_index(drop=True)
    pd.testing.assert_frame_equal(early.reset_index(drop=True), later)


def test_rule_runs_through_the_same_backtest():
    candles = _candles(800)
    result = run_backtest(candles, make_rule_signals(candles), Params())
    assert {"net_return", "sharpe", "max_drawdown", "trades", "fees"} <= set(result.metrics)
    assert result.metrics["trades"] > 0
