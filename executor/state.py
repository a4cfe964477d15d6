"""SQLite (WAL) store of everything the executor did: orders, fills, funding, positions, equity, decisions.

One file per executor (``StatePaths.executor_db``). It is the record a person reads after
the fact ("why did it not buy at 10:00?" -> ``decisions.reason``) and what a restarted
daemon will reconcile against. Writes are batched per bar: one transaction per bar, so a
crash loses at most the bar in progress. Timestamps are ISO-8601 UTC strings (bar open
times), money in USDT.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pandas as pd

from executor.core import Decision
from executor.funding import FundingPayment
from executor.loop import LoopListener
from executor.paper import MarketOrder
from executor.portfolio import ClosedTrade, Fill, Portfolio
from executor.risk import RiskAlert, TradingState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    run_id TEXT NOT NULL, order_id INTEGER NOT NULL, symbol TEXT NOT NULL, side TEXT NOT NULL,
    purpose TEXT NOT NULL, reason TEXT NOT NULL, notional_usdt REAL, qty REAL, decided_ts TEXT,
    status TEXT NOT NULL, PRIMARY KEY (run_id, order_id));
CREATE TABLE IF NOT EXISTS fills (
    run_id TEXT NOT NULL, order_id INTEGER NOT NULL, symbol TEXT NOT NULL, ts TEXT NOT NULL,
    side TEXT NOT NULL, purpose TEXT NOT NULL, reason TEXT NOT NULL, qty REAL NOT NULL, price REAL NOT NULL,
    notional_usdt REAL NOT NULL, fee_usdt REAL NOT NULL, pnl_usdt REAL);
CREATE TABLE IF NOT EXISTS positions (  -- qty signed: a short's is negative
    run_id TEXT NOT NULL, symbol TEXT NOT NULL, qty REAL NOT NULL, entry_price REAL NOT NULL, entry_ts TEXT,
    stop_price REAL, take_profit_price REAL, bars_held INTEGER, mark_price REAL, updated_ts TEXT,
    PRIMARY KEY (run_id, symbol));
CREATE TABLE IF NOT EXISTS equity (
    run_id TEXT NOT NULL, ts TEXT NOT NULL, equity_usdt REAL NOT NULL, cash_usdt REAL NOT NULL,
    state TEXT NOT NULL, open_positions INTEGER NOT NULL, PRIMARY KEY (run_id, ts));
CREATE TABLE IF NOT EXISTS decisions (
    run_id TEXT NOT NULL, ts TEXT NOT NULL, symbol TEXT NOT NULL, signal_action TEXT, outcome TEXT NOT NULL,
    reason TEXT NOT NULL, notional_usdt REAL, confidence REAL, model_version TEXT, details TEXT);
CREATE TABLE IF NOT EXISTS funding (
    run_id TEXT NOT NULL, symbol TEXT NOT NULL, funding_ts TEXT NOT NULL, ts TEXT NOT NULL, rate REAL NOT NULL,
    qty REAL NOT NULL, mark_price REAL NOT NULL, notional_usdt REAL NOT NULL, amount_usdt REAL NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
    run_id TEXT NOT NULL, ts TEXT NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL, numbers TEXT);
CREATE INDEX IF NOT EXISTS decisions_ts ON decisions (run_id, ts);
"""


def _iso(ts: pd.Timestamp | None) -> str | None:
    return None if ts is None else pd.Timestamp(ts).isoformat()


def _nan_to_none(x: float) -> float | None:
    return None if x != x else x


class StateStore(LoopListener):
    """Loop listener that persists the run under ``run_id`` in ``path``. ``critical``: when a write
    fails the loop opens nothing new until a whole bar is written again (``executor.listeners``)."""

    critical = True

    def __init__(self, path: Path, run_id: str):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.run_id = run_id
        self.conn = sqlite3.connect(str(path))
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(_SCHEMA)
        self.conn.commit()

    def close(self) -> None:
        self.conn.commit()
        self.conn.close()

    def __enter__(self) -> "StateStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- listener --------------------------------------------------------------------
    def on_order(self, order: MarketOrder, decision: Decision) -> None:
        self.conn.execute(
            "INSERT INTO orders VALUES (?,?,?,?,?,?,?,?,?,?)",
            (self.run_id, order.order_id, order.symbol, order.side, order.purpose, order.reason,
             order.notional_usdt, order.qty, _iso(order.decided_ts), "submitted"))

    def on_cancel(self, order: MarketOrder, ts: pd.Timestamp) -> None:
        self.conn.execute("UPDATE orders SET status='cancelled' WHERE run_id=? AND order_id=?",
                          (self.run_id, order.order_id))

    def on_fill(self, fill: Fill, portfolio: Portfolio, trade: ClosedTrade | None) -> None:
        self.conn.execute(
            "INSERT INTO fills VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (self.run_id, fill.order_id, fill.symbol, _iso(fill.timestamp), fill.side, fill.purpose, fill.reason,
             fill.qty, fill.price, fill.notional_usdt, fill.fee_usdt, trade.pnl_usdt if trade else None))
        if fill.order_id > 0:
            self.conn.execute("UPDATE orders SET status='filled' WHERE run_id=? AND order_id=?",
                              (self.run_id, fill.order_id))
        if fill.purpose == "exit":
            self.conn.execute("DELETE FROM positions WHERE run_id=? AND symbol=?", (self.run_id, fill.symbol))

    def has_fill(self, symbol: str, purpose: str, order_id: int, ts: pd.Timestamp) -> bool:
        """Is this fill in the record already (under any run)?"""
        return self.conn.execute("SELECT 1 FROM fills WHERE symbol=? AND purpose=? AND order_id=? AND ts=? LIMIT 1",
                                 (symbol, purpose, int(order_id), _iso(ts))).fetchone() is not None

    def on_funding(self, p: FundingPayment, portfolio: Portfolio) -> None:
        self.conn.execute("INSERT INTO funding VALUES (?,?,?,?,?,?,?,?,?)",
                          (self.run_id, p.symbol, _iso(p.funding_ts), _iso(p.timestamp), p.rate, p.qty,
                           p.mark_price, p.notional_usdt, p.amount_usdt))

    def on_equity(self, ts: pd.Timestamp, equity_usdt: float, cash_usdt: float, state: TradingState,
                  portfolio: Portfolio) -> None:
        iso = _iso(ts)
        self.conn.execute("INSERT OR REPLACE INTO equity VALUES (?,?,?,?,?,?)",
                          (self.run_id, iso, equity_usdt, cash_usdt, state.value, len(portfolio.positions)))
        self.conn.executemany(
            "INSERT OR REPLACE INTO positions VALUES (?,?,?,?,?,?,?,?,?,?)",
            [(self.run_id, p.symbol, p.sign * p.qty, p.entry_price, _iso(p.entry_ts), p.stop_price, p.take_profit_price,
              p.bars_held, portfolio.marks.get(p.symbol), iso) for p in portfolio.positions.values()])

    def on_decision(self, d: Decision) -> None:
        self.conn.execute(
            "INSERT INTO decisions VALUES (?,?,?,?,?,?,?,?,?,?)",
            (self.run_id, _iso(d.timestamp), d.symbol, d.signal_action, d.outcome, d.reason, d.notional_usdt,
             _nan_to_none(d.confidence), d.model_version, json.dumps(d.details, sort_keys=True, default=str)))

    def on_alert(self, alert: RiskAlert) -> None:
        self.conn.execute("INSERT INTO alerts VALUES (?,?,?,?,?)",
                          (self.run_id, _iso(alert.timestamp), alert.kind, alert.message,
                           json.dumps(alert.numbers, sort_keys=True, default=str)))

    def on_bar_done(self, ts: pd.Timestamp) -> None:
        self.conn.commit()

    # ---- reading ---------------------------------------------------------------------
    def read(self, table: str) -> pd.DataFrame:
        if table not in {"orders", "fills", "positions", "equity", "decisions", "alerts", "funding"}:
            raise ValueError(f"unknown table {table!r}")
        return pd.read_sql_query(f"SELECT * FROM {table} WHERE run_id=?", self.conn, params=(self.run_id,))
