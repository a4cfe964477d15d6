"""Parity with limit entries and a trailing stop: the paper daemon (signals over HTTP, SQLite state)
and ``run_backtest`` give identical orders, fills, decisions and PnL - the code that decides in
paper is the code that decided in the backtest."""

from __future__ import annotations

import sqlite3

import pandas as pd

from executor.backtest import run_backtest
from executor.daemon import run_paper_replay
from executor.signals import HttpSignalSource
from executor.paper import LIMIT_EXPIRED

from tests.executor.exec_support import FakeSignalService, momentum_signals, paper_market, params


def test_backtest_and_http_paper_replay_agree_with_limit_entries_and_a_trailing_stop(tmp_path):
    candles = paper_market()
    signals = momentum_signals(candles)
    p = params(risk={"max_holding_bars": 12, "position_fraction": 0.3, "stop_loss_pct": 0.03,
                     "take_profit_pct": 0.2, "entry_order": "limit", "limit_offset_bps": 10.0,
                     "limit_ttl_bars": 2, "trailing_stop_pct": 0.01, "exit_on_signal_flip": False})
    bt = run_backtest(candles, signals, p, close_at_end=False)
    with FakeSignalService(signals) as svc:
        source = HttpSignalSource(svc.url, timeout_s=5)
        try:
            report = run_paper_replay(candles, source, p, tmp_path / "state.sqlite", None,
                                      start=signals["timestamp"].min())
        finally:
            source.close()
    # the scenario must exercise what it claims to: limit fills, expiries and trailing exits
    reasons = bt.fills["reason"].tolist()
    assert reasons.count("trailing_stop") >= 3, reasons
    assert (bt.decisions["reason"] == LIMIT_EXPIRED).sum() >= 3
    assert len(bt.fills[bt.fills["purpose"] == "entry"]) >= 5
    with sqlite3.connect(tmp_path / "state.sqlite") as db:
        fills = pd.read_sql_query("SELECT symbol, ts, side, reason, qty, price, fee_usdt FROM fills "
                                  "ORDER BY rowid", db)
        orders = pd.read_sql_query("SELECT order_id, symbol, purpose, notional_usdt, status FROM orders "
                                   "ORDER BY rowid", db)
        decisions = pd.read_sql_query("SELECT symbol, outcome, reason FROM decisions ORDER BY rowid", db)
        equity = pd.read_sql_query("SELECT ts, equity_usdt FROM equity ORDER BY ts", db)
    expected = bt.fills[["symbol", "timestamp", "side", "reason", "qty", "price", "fee_usdt"]]
    assert fills.drop(columns="ts").values.tolist() == expected.drop(columns="timestamp").values.tolist()
    assert fills["ts"].tolist() == [t.isoformat() for t in expected["timestamp"]]
    expired = decisions[decisions["reason"] == LIMIT_EXPIRED]
    assert len(expired) == (bt.decisions["reason"] == LIMIT_EXPIRED).sum()
    assert (orders["status"] == "cancelled").sum() == len(expired)  # an expired limit reads cancelled
    assert equity["equity_usdt"].tolist() == bt.equity.tolist()
    assert report.net_pnl == bt.metrics["net_pnl"]
    assert report.metrics == bt.metrics
