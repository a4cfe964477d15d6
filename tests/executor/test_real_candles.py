"""The backtest on real Binance candles (../shared/data): real prices, real gaps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from executor.backtest import buy_and_hold, run_backtest
from executor.signals import signals_from_predictions

from tests.support import require_shared_data
from tests.executor.exec_support import params

pytestmark = pytest.mark.slow


def _real(symbols, start, end):
    root = require_shared_data() / "ohlcv" / "binance"
    frames = []
    for sym in symbols:
        df = pd.read_parquet(root / f"{sym.split('/')[0]}_USDT-1h.parquet")
        df = df[(df["timestamp"] >= pd.Timestamp(start, tz="UTC")) & (df["timestamp"] < pd.Timestamp(end, tz="UTC"))]
        frames.append(df.assign(symbol=sym))
    return pd.concat(frames, ignore_index=True)[["symbol", "timestamp", "open", "high", "low", "close", "volume"]]


def test_buy_and_hold_on_real_candles_matches_first_open_and_last_close():
    candles = _real(["BTC/USDT", "ETH/USDT"], "2024-03-01", "2024-04-01")
    p = params()
    res = buy_and_hold(candles, p)
    f, s = p.costs.fee_rate, p.costs.slippage_bps / 1e4
    final = 0.0
    for sym, g in candles.groupby("symbol"):
        qty = 5000 / (1 + f) / (g["open"].iloc[0] * (1 + s))
        final += qty * g["close"].iloc[-1] * (1 - s) * (1 - f)
    assert res.metrics["net_pnl"] == pytest.approx(final - 10_000, rel=1e-12)


def test_strategy_entries_fill_at_the_real_next_open():
    candles = _real(["BTC/USDT", "SOL/USDT"], "2024-05-01", "2024-06-01")
    p = params()
    pred = candles[["symbol", "timestamp"]].copy()
    mom = candles.groupby("symbol")["close"].transform(lambda c: np.log(c).diff(12)).fillna(0.0)
    pred["prob_up"] = 0.5 + (mom * 5).clip(-0.4, 0.4)
    pred["expected_return"] = mom
    res = run_backtest(candles, signals_from_predictions(pred, p.signal, "rule"), p)
    entries = res.fills[res.fills["purpose"] == "entry"]
    assert len(entries) > 5
    opens = candles.set_index(["symbol", "timestamp"])["open"]
    expected = [opens[(r.symbol, r.timestamp)] * (1 + p.costs.slippage_bps / 1e4) for r in entries.itertuples()]
    np.testing.assert_allclose(entries["price"].to_numpy(), expected, rtol=1e-12)
    assert res.equity.index.is_monotonic_increasing and np.isfinite(res.equity).all()
