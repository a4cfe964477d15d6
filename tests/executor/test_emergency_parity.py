"""Parity in the worst case (issue 14, 1e): the price goes through the protective stop.

Hand-made candles and signals go through ``run_backtest`` (what ``qt backtest`` runs for the
strategy, ``training.backtest_model``) and through the paper daemon (``run_paper_replay`` asking a
signal service over HTTP, state in SQLite). Both must exit the same way, and a bar that opens
beyond the stop must exit at that bar's OPEN (``qt.fills.stop_fill``), which is
what live does with a stop the exchange refuses as already crossed. Every expected price below
is worked out from the candles and the declared costs, not read back from the code.
"""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest

from executor.backtest import run_backtest
from executor.daemon import run_paper_replay
from executor.signals import HttpSignalSource

from tests.executor.exec_support import FakeSignalService, candles_from_rows, params, signals_frame, ts

SLIP = 5 / 10_000  # costs.slippage_bps = 5, against us on every fill
FEE = 0.001  # costs.fee_rate
STOP = 0.02  # risk.stop_loss_pct
TRAIL = 0.05  # risk.trailing_stop_pct: wider than the fixed stop, so it only leads after a rise
ENTRY = 100.0 * (1 + SLIP)  # every symbol buys at the open (100) of bar 1
FIXED_STOP = ENTRY * (1 - STOP)  # 98.049

FLAT = (100.0, 100.5, 99.5, 100.0)
# bar 0 decides (buy), bar 1 fills the entry at its open 100, the scenario bar exits
ROWS = {
    # (1) gap: opens at 96, below the fixed stop 98.05 (the trail, 100.8 x 0.95 = 95.76, is lower)
    "BTC/USDT": [FLAT, (100.0, 100.8, 99.2, 99.6), (96.0, 97.0, 95.9, 96.5), FLAT, FLAT, FLAT],
    # (2) no gap: opens at 99.8 above the stop, the low 97.5 goes through it -> at the stop
    "ETH/USDT": [FLAT, (100.0, 100.6, 99.4, 100.2), (99.8, 100.0, 97.5, 98.8), FLAT, FLAT, FLAT],
    # (3) trailed stop: peak 104 then 110 -> trail 104.5 (above the fixed 98.05); bar 3 opens at 102
    "SOL/USDT": [FLAT, (100.0, 104.0, 99.6, 103.5), (104.0, 110.0, 103.5, 109.0), (102.0, 103.0, 101.0, 102.5),
                 FLAT, FLAT],
    # (4) gap through both: trail 104.5 leads, bar 3 opens at 95, below the trail and the fixed stop
    "XRP/USDT": [FLAT, (100.0, 104.0, 99.6, 103.5), (104.0, 110.0, 103.5, 109.0), (95.0, 96.0, 94.0, 95.5),
                 FLAT, FLAT],
    # (5) the exchange has no bar 2 for it; bar 3 then opens at 97, below the fixed stop
    "BNB/USDT": [FLAT, FLAT, FLAT, (97.0, 97.5, 96.5, 97.2), FLAT, FLAT],
}
# symbol -> (exit bar, reason, reference price before the exit's slippage)
EXPECTED = {
    "BTC/USDT": (2, "stop_loss", 96.0),  # the gap bar's open, not the stop level
    "ETH/USDT": (2, "stop_loss", FIXED_STOP),
    "SOL/USDT": (3, "trailing_stop", 102.0),  # the gap bar's open, not 110 x 0.95 = 104.5
    "XRP/USDT": (3, "trailing_stop", 95.0),
    "BNB/USDT": (3, "stop_loss", 97.0),
}
# the stop level in force when the gap bar opened (fixed, or the trail 110 x 0.95 when it is higher)
GAP_LEVELS = {"BTC/USDT": FIXED_STOP, "SOL/USDT": 110.0 * (1 - TRAIL), "XRP/USDT": 110.0 * (1 - TRAIL),
              "BNB/USDT": FIXED_STOP}


def _market() -> pd.DataFrame:
    candles = candles_from_rows(ROWS)
    missing = (candles["symbol"] == "BNB/USDT") & (candles["timestamp"] == ts(2))
    return candles[~missing].reset_index(drop=True)


def _signals() -> pd.DataFrame:
    # buy at the close of bar 0, hold afterwards; one signal per bar but the last (as in the daemon test)
    return signals_frame({sym: ["buy"] + ["hold"] * (len(bars) - 2) for sym, bars in ROWS.items()})


def _params():
    return params(costs={"slippage_bps": SLIP * 10_000, "fee_rate": FEE},
                  risk={"stop_loss_pct": STOP, "take_profit_pct": 0.5, "trailing_stop_pct": TRAIL,
                        "max_open_positions": len(ROWS), "position_fraction": 0.15, "max_holding_bars": 24,
                        "exit_on_signal_flip": False, "cooldown_bars": 0})


def test_emergency_parity_gap_through_stop_backtest_and_paper_daemon_exit_alike(tmp_path):
    candles, signals, p = _market(), _signals(), _params()
    bt = run_backtest(candles, signals, p, close_at_end=False)
    with FakeSignalService(signals) as svc:
        source = HttpSignalSource(svc.url, timeout_s=5)
        try:
            report = run_paper_replay(candles, source, p, tmp_path / "state.sqlite", None,
                                      start=signals["timestamp"].min())
        finally:
            source.close()
    assert svc.requests, "the paper daemon must have asked the signal service over HTTP"
    with sqlite3.connect(tmp_path / "state.sqlite") as db:
        fills = pd.read_sql_query("SELECT order_id, symbol, ts, side, purpose, reason, qty, price, notional_usdt, "
                                  "fee_usdt, pnl_usdt FROM fills ORDER BY rowid", db)
        equity = pd.read_sql_query("SELECT ts, equity_usdt FROM equity ORDER BY ts", db)
        decisions = pd.read_sql_query("SELECT ts, symbol, outcome, reason FROM decisions ORDER BY rowid", db)

    # the backtest, by hand: one entry at 100 (+ slippage) in bar 1 and one exit per symbol
    entries = bt.fills[bt.fills["purpose"] == "entry"].set_index("symbol")
    exits = bt.fills[bt.fills["purpose"] == "exit"].set_index("symbol")
    assert sorted(entries.index) == sorted(exits.index) == sorted(ROWS)
    for sym, (bar, reason, ref) in EXPECTED.items():
        entry, exit_ = entries.loc[sym], exits.loc[sym]
        assert (entry["timestamp"], entry["price"]) == (ts(1), pytest.approx(ENTRY, rel=1e-12)), sym
        assert (exit_["timestamp"], exit_["reason"]) == (ts(bar), reason), sym
        assert exit_["price"] == pytest.approx(ref * (1 - SLIP), rel=1e-12), sym
        assert exit_["qty"] == entry["qty"], sym  # the whole position, no partial
        trade = bt.trades[bt.trades["symbol"] == sym].iloc[0]
        pnl = entry["qty"] * ref * (1 - SLIP) * (1 - FEE) - entry["notional_usdt"] * (1 + FEE)
        assert (trade["exit_reason"], trade["pnl_usdt"]) == (reason, pytest.approx(pnl, rel=1e-9)), sym
    # the gap bars opened below the stop level in force, so "at the open" is a worse price than "at the stop"
    for sym, level in GAP_LEVELS.items():
        bar = EXPECTED[sym][0]
        assert ROWS[sym][bar][0] < level and exits.loc[sym, "price"] < level * (1 - SLIP), sym

    # the paper daemon, fill for fill: same order ids, timestamps, reasons, quantities, prices, fees, PnL
    expected = bt.fills[["order_id", "symbol", "timestamp", "side", "purpose", "reason", "qty", "price",
                         "notional_usdt", "fee_usdt"]]
    assert fills.drop(columns=["ts", "pnl_usdt"]).values.tolist() == \
        expected.drop(columns="timestamp").values.tolist()
    assert fills["ts"].tolist() == [t.isoformat() for t in expected["timestamp"]]
    paper_pnl = fills[fills["purpose"] == "exit"].set_index("symbol")["pnl_usdt"].sort_index()
    assert paper_pnl.tolist() == bt.trades.set_index("symbol")["pnl_usdt"].sort_index().tolist()
    assert decisions["reason"].tolist() == bt.decisions["reason"].tolist()
    assert decisions["ts"].tolist() == [t.isoformat() for t in bt.decisions["timestamp"]]
    assert equity["equity_usdt"].tolist() == bt.equity.tolist()
    assert report.net_pnl == bt.metrics["net_pnl"] and report.metrics == bt.metrics
    assert report.open_positions == 0 and report.fills == len(bt.fills) == 2 * len(ROWS)
