"""Read model of the executor's SQLite state (``executor/state.py``): one run as plain frames.

Opened read-only (``mode=ro``): the dashboard never creates or writes the store a running
executor owns; WAL lets it read while the executor writes. The run shown is the newest
one: the run whose first bar was written last (run ids start with their start second, but two
runs started in the same second are told apart only by insertion order).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


class StateMissing(Exception):
    """No state to show yet; the message says why, in one line."""


@dataclass
class RunView:
    run_id: str
    runs: list[str]  # every run in the store, newest first
    equity: pd.DataFrame  # ts (UTC), equity_usdt, cash_usdt, state, open_positions
    fills: pd.DataFrame  # ts (UTC), symbol, side, purpose, reason, qty, price, pnl_usdt
    positions: pd.DataFrame  # symbol, qty (signed: short < 0), entry_price, entry_ts, stop_price, take_profit_price, mark_price
    decisions: pd.DataFrame  # ts, symbol, signal_action, outcome, reason, confidence, model_version
    alerts: pd.DataFrame  # ts, kind, message (newest first): the alerts and every refused entry (kind = reason)
    symbols: list[str] = field(default_factory=list)
    venue: str | None = None  # live/testnet runs: the ccxt id traded through (binance, binanceusdm, bybit)

    @property
    def state(self) -> str | None:
        """The executor's recorded trading state at its latest bar (ACTIVE / REDUCING / HALTED)."""
        return None if self.equity.empty else str(self.equity["state"].iloc[-1])

    @property
    def last_bar(self) -> pd.Timestamp | None:
        return None if self.equity.empty else self.equity["ts"].iloc[-1]


def _connect(db: Path) -> sqlite3.Connection:
    if not Path(db).is_file():
        raise StateMissing(f"no executor state at {db} yet: start an executor (`qt execute`)")
    return sqlite3.connect(f"file:{Path(db).resolve()}?mode=ro", uri=True, timeout=2.0)


def _frame(conn: sqlite3.Connection, sql: str, run_id: str, ts_cols: tuple[str, ...] = ("ts",)) -> pd.DataFrame:
    df = pd.read_sql_query(sql, conn, params=(run_id,))
    for col in ts_cols:
        if col in df:
            df[col] = pd.to_datetime(df[col], utc=True, format="ISO8601")
    return df


def read_run(db: Path, run_id: str | None = None) -> RunView:
    """The run ``run_id`` (default: the newest) of the store at ``db``; ``StateMissing`` if none."""
    conn = _connect(db)
    try:
        try:
            runs = [r[0] for r in conn.execute(  # newest first: by when the run wrote its first bar
                "SELECT run_id FROM equity GROUP BY run_id ORDER BY MIN(rowid) DESC")]
        except sqlite3.OperationalError:  # the file exists but the executor has not created its tables
            runs = []
        if not runs:
            raise StateMissing(f"the executor state at {db} holds no run yet")
        run_id = run_id if run_id in runs else runs[0]
        equity = _frame(conn, "SELECT ts, equity_usdt, cash_usdt, state, open_positions FROM equity "
                              "WHERE run_id=? ORDER BY ts", run_id)
        fills = _frame(conn, "SELECT ts, symbol, side, purpose, reason, qty, price, fee_usdt, pnl_usdt FROM fills "
                             "WHERE run_id=? ORDER BY rowid", run_id)
        positions = _frame(conn, "SELECT symbol, qty, entry_price, entry_ts, stop_price, take_profit_price, "
                                 "bars_held, mark_price FROM positions WHERE run_id=? ORDER BY symbol", run_id,
                           ts_cols=("entry_ts",))
        decisions = _frame(conn, "SELECT ts, symbol, signal_action, outcome, reason, confidence, model_version "
                                 "FROM decisions WHERE run_id=? ORDER BY rowid", run_id)
        alerts = _frame(conn, "SELECT ts, kind, message FROM alerts WHERE run_id=? ORDER BY rowid DESC", run_id)
        refusals = _frame(conn, "SELECT ts, reason AS kind, symbol || ': entry refused (' || reason || ') ' || "
                                "COALESCE(details, '') AS message FROM decisions "
                                "WHERE run_id=? AND outcome IN ('denied', 'rejected') ORDER BY rowid DESC", run_id)
        venue = _venue_of(conn, run_id)
    finally:
        conn.close()
    symbols = sorted(set(decisions["symbol"]) | set(fills["symbol"]))
    # a refused entry is an alert too: the rule and its numbers, beside the risk engine's own alerts
    merged = pd.concat([alerts, refusals], ignore_index=True) if len(refusals) else alerts
    merged = merged.sort_values("ts", ascending=False, kind="stable").reset_index(drop=True)
    return RunView(run_id=run_id, runs=runs, equity=equity, fills=fills, positions=positions,
                   decisions=decisions, alerts=merged, symbols=symbols, venue=venue)


def _venue_of(conn: sqlite3.Connection, run_id: str) -> str | None:
    """The venue a live run recorded at start (``live_runs``); None for paper runs and older stores."""
    try:
        row = conn.execute("SELECT venue FROM live_runs WHERE run_id=?", (run_id,)).fetchone()
    except sqlite3.OperationalError:  # no live run ever wrote to this store
        return None
    return row[0] if row else None
