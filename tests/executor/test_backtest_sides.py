"""The backtest's figures by side (issue 16): long/short trade counts, pnl and funding per side.

Hand-made perpetual candles and signals (and real Binance perpetuals when ../shared/data is
present) go through ``run_backtest`` with ``risk.allow_short``. Each figure is checked against
the trade and funding rows the run recorded, and the counts and signs against what the signals
and funding rates were built to produce - never against numbers the metrics code computed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from executor.backtest import METRIC_KEYS, SIDE_KEYS, buy_and_hold, flat_baseline, run_backtest

from tests.executor.exec_support import candles_from_rows, params, signals_frame, ts
from tests.support import require_shared_data

BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"
FLAT = (100.0, 100.5, 99.5, 100.0)
RATE = 0.001  # positive: longs pay, shorts receive


def _funding(symbols, bars: int, rate: float = RATE) -> pd.DataFrame:
    rows = [(s, ts(i), rate) for s in symbols for i in range(0, bars + 8, 8)]
    return pd.DataFrame(rows, columns=["symbol", "timestamp", "funding_rate"])


def _params(**risk):
    base = {"allow_short": True, "position_fraction": 0.1, "stop_loss_pct": 0.05, "take_profit_pct": 0.1,
            "max_holding_bars": 100, "exit_on_signal_flip": True}
    return params(data={"symbols": [BTC, ETH]}, costs={"slippage_bps": 0.0, "fee_rate": 0.001},
                  risk={**base, **risk})


@pytest.fixture(scope="module")
def both_sides():
    """BTC: short at the 01:00 open, flipped out at 11:00, long from 12:00 to the end.
    ETH: the mirror image. Funding at 08:00 (BTC short, ETH long) and 16:00, 24:00 (BTC long,
    ETH short), all at +0.1 %."""
    bars = 30
    candles = candles_from_rows({BTC: [FLAT] * bars, ETH: [FLAT] * bars})
    btc = ["sell"] + ["hold"] * 9 + ["buy", "buy"] + ["hold"] * (bars - 13)
    eth = ["buy"] + ["hold"] * 9 + ["sell", "sell"] + ["hold"] * (bars - 13)
    return run_backtest(candles, signals_frame({BTC: btc, ETH: eth}), _params(),
                        funding=_funding([BTC, ETH], bars))


def test_trades_by_side_are_counted_from_the_trade_rows(both_sides):
    bt = both_sides
    trades = bt.trades.sort_values(["symbol", "entry_ts"])
    assert list(zip(trades["symbol"], trades["side"], trades["entry_ts"])) == [
        (BTC, "short", ts(1)), (BTC, "long", ts(12)), (ETH, "long", ts(1)), (ETH, "short", ts(12))]
    m = bt.metrics
    assert set(SIDE_KEYS) <= set(m) and set(m) == set(METRIC_KEYS)
    assert (m["long_trades"], m["short_trades"]) == (2, 2)
    assert m["long_trades"] + m["short_trades"] == m["trades"] == len(bt.trades)
    for side in ("long", "short"):
        assert m[f"pnl_{side}_usdt"] == pytest.approx(bt.trades.loc[bt.trades["side"] == side, "pnl_usdt"].sum())


def test_funding_by_side_is_paid_by_longs_and_received_by_shorts(both_sides):
    bt = both_sides
    pay = bt.funding.assign(funding_ts=pd.to_datetime(bt.funding["funding_ts"], utc=True))
    # who held what at each settlement, as the signals were built
    held = {(BTC, ts(8)): "short", (ETH, ts(8)): "long", (BTC, ts(16)): "long", (ETH, ts(16)): "short",
            (BTC, ts(24)): "long", (ETH, ts(24)): "short"}
    assert sorted(zip(pay["symbol"], pay["funding_ts"])) == sorted(held)
    for row in pay.itertuples():
        side = held[(row.symbol, row.funding_ts)]
        assert (row.qty > 0) == (side == "long")
        assert row.amount_usdt == pytest.approx(RATE * row.qty * row.mark_price)
        assert (row.amount_usdt > 0) == (side == "long")  # positive rate: the long pays, the short receives
    m = bt.metrics
    assert m["funding_long_usdt"] == pytest.approx(pay.loc[pay["qty"] > 0, "amount_usdt"].sum())
    assert m["funding_short_usdt"] == pytest.approx(pay.loc[pay["qty"] < 0, "amount_usdt"].sum())
    assert m["funding_long_usdt"] > 0 > m["funding_short_usdt"]
    assert m["funding_long_usdt"] + m["funding_short_usdt"] == pytest.approx(m["funding"])
    # each trade carries the funding booked while it was open
    by_trade = bt.trades.groupby("side")["funding_usdt"].sum()
    assert by_trade["long"] == pytest.approx(m["funding_long_usdt"])
    assert by_trade["short"] == pytest.approx(m["funding_short_usdt"])


def test_long_only_run_and_the_baselines_report_sides():
    bars = 12
    candles = candles_from_rows({BTC: [FLAT] * bars})
    p = params(data={"symbols": [BTC]}, risk={"allow_short": False})
    bt = run_backtest(candles, signals_frame({BTC: ["sell"] * 3 + ["buy"] + ["hold"] * 7}), p,
                      funding=_funding([BTC], bars))
    assert (bt.metrics["long_trades"], bt.metrics["short_trades"]) == (1, 0)  # a sell while flat opens nothing
    assert bt.metrics["funding_short_usdt"] == 0.0 and bt.metrics["pnl_short_usdt"] == 0.0
    bh = buy_and_hold(candles, p, funding=_funding([BTC], bars))
    assert (bh.metrics["long_trades"], bh.metrics["short_trades"]) == (1, 0)
    assert bh.metrics["funding_long_usdt"] == pytest.approx(bh.funding["amount_usdt"].sum())
    assert (bh.funding["qty"] > 0).all() and bh.metrics["funding_long_usdt"] > 0
    assert bh.metrics["funding_short_usdt"] == 0.0
    assert set(bh.metrics) == set(METRIC_KEYS)
    flat = flat_baseline(candles, p)
    assert all(flat.metrics[k] == 0 for k in SIDE_KEYS) and set(flat.metrics) == set(METRIC_KEYS)


@pytest.mark.slow
def test_real_perpetuals_open_both_sides_with_real_funding():
    root = require_shared_data()
    start, end = pd.Timestamp("2024-03-01", tz="UTC"), pd.Timestamp("2024-04-01", tz="UTC")
    frames, funding = [], []
    for sym in (BTC, ETH):
        base = sym.split("/")[0]
        df = pd.read_parquet(root / "ohlcv" / "binanceusdm" / f"{base}_USDT-1h.parquet")
        frames.append(df[(df["timestamp"] >= start) & (df["timestamp"] < end)].assign(symbol=sym))
        f = pd.read_parquet(root / "funding" / "binanceusdm" / f"{base}_USDT-funding.parquet")
        funding.append(f[(f["timestamp"] >= start - pd.Timedelta(hours=8)) & (f["timestamp"] < end)].assign(symbol=sym))
    candles = pd.concat(frames, ignore_index=True)[["symbol", "timestamp", "open", "high", "low", "close", "volume"]]
    funding = pd.concat(funding, ignore_index=True)[["symbol", "timestamp", "funding_rate"]]
    # a 12-bar momentum sign: sell after a fall, buy after a rise
    sig = candles[["symbol", "timestamp"]].copy()
    mom = candles.groupby("symbol")["close"].transform(lambda c: np.log(c).diff(12)).fillna(0.0)
    sig["action"] = np.where(mom > 0.01, "buy", np.where(mom < -0.01, "sell", "hold")).astype(object)
    sig["confidence"] = np.where(sig["action"] == "buy", 0.8, np.where(sig["action"] == "sell", 0.2, 0.5))
    sig["expected_return"], sig["model_version"] = 0.0, "momentum"
    bt = run_backtest(candles, sig, _params(stop_loss_pct=0.03, take_profit_pct=0.06, max_holding_bars=24),
                      funding=funding)
    m = bt.metrics
    sides = bt.trades["side"].value_counts()
    assert m["long_trades"] == sides.get("long", 0) > 0 and m["short_trades"] == sides.get("short", 0) > 0
    entries = bt.fills[bt.fills["purpose"] == "entry"]
    assert (entries["side"] == "sell").sum() == m["short_trades"]  # one short entry per short round trip
    pay = bt.funding
    assert ((pay["qty"] < 0) & (pay["rate"] > 0) <= (pay["amount_usdt"] < 0)).all()  # shorts receive positive funding
    assert ((pay["qty"] > 0) & (pay["rate"] > 0) <= (pay["amount_usdt"] > 0)).all()
    assert m["funding_long_usdt"] == pytest.approx(pay.loc[pay["qty"] > 0, "amount_usdt"].sum())
    assert m["funding_short_usdt"] == pytest.approx(pay.loc[pay["qty"] < 0, "amount_usdt"].sum())
    assert m["funding_short_usdt"] < 0 < m["funding_long_usdt"]  # March 2024: funding was positive
