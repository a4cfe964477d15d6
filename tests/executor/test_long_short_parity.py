"""Parity of a long/short run with leverage, a take-profit ladder and ATR levels (issue 16):
``run_backtest`` (what ``qt backtest`` runs) and the paper daemon (``run_paper_replay`` asking a
signal service over HTTP, state in SQLite) agree trade for trade on real Binance perpetual candles
and funding (../shared/data). The signals are a crude causal momentum rule with the feature code's
own ATR (``features.compute``: ``atr_14``), so both paths see the signal the service would send.
"""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest

from executor.backtest import run_backtest
from executor.daemon import run_paper_replay
from executor.signals import HttpSignalSource
from features.compute import compute_features
from qt.config import FeatureParams

from tests.executor.exec_support import FakeSignalService, params
from tests.support import require_shared_data

SYMBOLS = ["BTC/USDT:USDT", "ETH/USDT:USDT"]
START, END = pd.Timestamp("2024-08-01", tz="UTC"), pd.Timestamp("2024-08-15", tz="UTC")


def _market() -> tuple[pd.DataFrame, pd.DataFrame]:
    root = require_shared_data()
    candles, funding = [], []
    for sym in SYMBOLS:
        stem = sym.split("/")[0] + "_USDT"
        c = pd.read_parquet(root / "ohlcv" / "binanceusdm" / f"{stem}-1h.parquet")
        c = c[(c["timestamp"] >= START - pd.Timedelta(days=10)) & (c["timestamp"] < END)]
        candles.append(c.assign(symbol=sym))
        f = pd.read_parquet(root / "funding" / "binanceusdm" / f"{stem}-funding.parquet")
        funding.append(f[(f["timestamp"] >= START - pd.Timedelta(days=4)) & (f["timestamp"] < END + pd.Timedelta(days=1))]
                       .assign(symbol=sym))
    cols = ["symbol", "timestamp", "open", "high", "low", "close", "volume"]
    return pd.concat(candles, ignore_index=True)[cols], pd.concat(funding, ignore_index=True)


def _signals(candles: pd.DataFrame) -> pd.DataFrame:
    """6-bar momentum -> prob_up, both ways; atr = the feature code's atr_14 of the same bar."""
    feats = compute_features(candles, FeatureParams())
    rows = []
    for sym, g in candles.sort_values("timestamp").groupby("symbol"):
        atr = feats[feats["symbol"] == sym].set_index("timestamp")["atr_14"]
        mom = np.log(g["close"]).diff(6).to_numpy()
        for t, m in zip(g["timestamp"], mom):
            if t < START or not np.isfinite(m):
                continue
            p = 0.5 + float(np.clip(m * 10, -0.4, 0.4))
            rows.append((sym, t, "buy" if p >= 0.55 else "sell" if p <= 0.45 else "hold", p, m, "9", atr.get(t)))
    return pd.DataFrame(rows, columns=["symbol", "timestamp", "action", "confidence", "expected_return",
                                       "model_version", "atr"])


def test_long_short_leverage_ladder_atr_levels_backtest_and_paper_daemon_agree_trade_for_trade(tmp_path):
    wide, funding = _market()
    signals = _signals(wide)  # the ATR warms up on the days before START
    candles = wide[wide["timestamp"] >= START].reset_index(drop=True)
    p = params(data={"symbols": SYMBOLS},
               risk={"allow_short": True, "leverage": 5, "leverage_by_symbol": {"ETH/USDT:USDT": 3},
                     "margin_mode": "isolated", "position_fraction": 0.1, "max_gross_exposure": 3.0,
                     "max_position_notional_usdt": 1e6, "stop_loss_atr": 2.0, "take_profit_ladder_unit": "atr",
                     "take_profit_ladder": [[0.5, 2.0], [0.5, 4.0]], "breakeven_after_first_tp": True,
                     "max_holding_bars": 12, "cooldown_bars": 1})
    bt = run_backtest(candles, signals, p, funding=funding, close_at_end=False)
    with FakeSignalService(signals) as svc:
        source = HttpSignalSource(svc.url, timeout_s=5)
        try:
            report = run_paper_replay(candles, source, p, tmp_path / "state.sqlite", None, start=START,
                                      funding=funding)
        finally:
            source.close()
    with sqlite3.connect(tmp_path / "state.sqlite") as db:
        fills = pd.read_sql_query("SELECT order_id, symbol, side, purpose, reason, qty, price, fee_usdt "
                                  "FROM fills ORDER BY rowid", db)
        equity = pd.read_sql_query("SELECT equity_usdt FROM equity ORDER BY ts", db)["equity_usdt"]
    # the run exercises what it claims to: both sides, leverage, rungs, break-even stops
    entries = bt.fills[bt.fills["purpose"] == "entry"]
    assert {"buy", "sell"} <= set(entries["side"])
    assert set(bt.fills["reason"]) & {"take_profit_1"}, "no ladder rung filled in the window"
    assert (entries["notional_usdt"] > 0.1 * 10_000 * 2).any()  # notional = margin x leverage, above the margin
    # trade for trade
    expected = bt.fills[["order_id", "symbol", "side", "purpose", "reason", "qty", "price", "fee_usdt"]]
    assert fills.values.tolist() == expected.values.tolist()
    assert equity.tolist() == bt.equity.tolist()
    assert report.fills == len(bt.fills)
