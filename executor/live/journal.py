"""The order journal: every order the live executor sends, by client id, in SQLite.

Written BEFORE a request leaves, so that after ``kill -9`` the restarted daemon knows which
client ids it may have sent and asks the exchange about those instead of sending again.
``client_order_id`` makes those ids: deterministic, so a restart recomputes the same ones.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time

import pandas as pd

PURPOSE_CODES = {"entry": "e", "exit": "x", "stop_loss": "s", "take_profit": "t", "trailing_stop": "r",
                 "oco": "o"}  # oco: a spot OCO order list (executor.live.spot)


def client_order_id(namespace: str, decided_ts: pd.Timestamp, symbol: str, purpose: str,
                    generation: int = 0) -> str:
    """Deterministic client order id, e.g. ``qte-3f9a...``: the same (namespace, bar, symbol,
    purpose, generation) always gives the same id, so a restart cannot mint a new order for a
    decision it already sent. 24 characters, within Binance's ``^[.A-Z:/a-z0-9_-]{1,36}$``."""
    key = f"{namespace}|{pd.Timestamp(decided_ts).value}|{symbol}|{purpose}|{generation}"
    return f"qt{purpose_code(purpose)}-{hashlib.blake2b(key.encode(), digest_size=10).hexdigest()}"


def purpose_code(purpose: str) -> str:
    """The id's purpose letter(s); a take-profit ladder's rung k (``take_profit_k``) is ``t<k>``."""
    if purpose.startswith("take_profit_"):
        return "t" + str(int(purpose.rsplit("_", 1)[1]))
    return PURPOSE_CODES[purpose]


class OrderJournal:
    """Every order this executor sends, by client id, written BEFORE the request leaves.

    Shares the state store's SQLite connection (one writer per file) and commits each row at
    once: after ``kill -9`` the restarted daemon knows which client ids it may have sent.
    """

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS exchange_orders (
        client_id TEXT PRIMARY KEY, namespace TEXT NOT NULL, run_id TEXT, symbol TEXT NOT NULL,
        purpose TEXT NOT NULL, decided_ts TEXT, order_id INTEGER, entry_cid TEXT, exchange_id TEXT,
        qty REAL, price REAL, status TEXT NOT NULL, filled_qty REAL, avg_price REAL, fee_usdt REAL,
        reason TEXT, message TEXT, fill_ts TEXT, updated_ms INTEGER, side TEXT);
    CREATE INDEX IF NOT EXISTS exchange_orders_status ON exchange_orders (namespace, status);
    """

    def __init__(self, conn: sqlite3.Connection, namespace: str, run_id: str):
        self.conn, self.namespace, self.run_id = conn, namespace, run_id
        self.conn.executescript(self.SCHEMA)
        columns = {r[1] for r in self.conn.execute("PRAGMA table_info(exchange_orders)")}
        if "side" not in columns:  # a journal written before shorts: every order then was a long's
            self.conn.execute("ALTER TABLE exchange_orders ADD COLUMN side TEXT")
        self.conn.commit()

    def sending(self, cid: str, symbol: str, purpose: str, decided_ts, order_id: int, qty: float,
                price: float | None = None, entry_cid: str | None = None, side: str | None = None) -> None:
        """``side``: the order's side (buy | sell); an entry's says whether it opened a long or a short."""
        self.conn.execute(
            "INSERT INTO exchange_orders (client_id, namespace, run_id, symbol, purpose, decided_ts, order_id, "
            "entry_cid, qty, price, status, updated_ms, side) VALUES (?,?,?,?,?,?,?,?,?,?, 'sending', ?, ?) "
            "ON CONFLICT(client_id) DO UPDATE SET status='sending', qty=excluded.qty, price=excluded.price, "
            "run_id=excluded.run_id, updated_ms=excluded.updated_ms, side=excluded.side",
            (cid, self.namespace, self.run_id, symbol, purpose, None if decided_ts is None else str(decided_ts),
             order_id, entry_cid, qty, price, int(time.time() * 1000), side))
        self.conn.commit()

    def update(self, cid: str, **cols) -> None:
        cols["updated_ms"] = int(time.time() * 1000)
        sets = ", ".join(f"{k}=?" for k in cols)
        self.conn.execute(f"UPDATE exchange_orders SET {sets} WHERE client_id=?", (*cols.values(), cid))
        self.conn.commit()

    def rows(self, where: str = "1=1", params: tuple = ()) -> list[dict]:
        cur = self.conn.execute(f"SELECT * FROM exchange_orders WHERE namespace=? AND ({where}) ORDER BY rowid",
                                (self.namespace, *params))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def get(self, cid: str) -> dict | None:
        rows = self.rows("client_id=?", (cid,))
        return rows[0] if rows else None
