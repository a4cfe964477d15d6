"""A hand-made order-book recording in a lake: the levels and trades tables the book family reads."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from data.orderbook.levels import SCHEMA, write_levels
from data.orderbook.store import SCHEMAS


def record_book(lake: Path, close_ms: int, ask: float, symbol: str = "BTC/USDT") -> Path:
    """Samples at ``close_ms`` - 2 s, - 1 s and at it: bid 100 x 3, ask ``ask`` x 1, each state 100 ms
    old; a taker buy of 3 (5 s before) and a taker sell of 1 (4 s before). Spot ``symbol``."""
    day = lake / "orderbook" / "binance" / symbol.replace("/", "_") / pd.Timestamp(
        close_ms - 1, unit="ms").strftime("%Y-%m-%d")
    day.mkdir(parents=True, exist_ok=True)
    rows = [(close_ms - k * 1000, close_ms - k * 1000 - 100, side, 0, price, qty)
            for k in (2, 1, 0) for side, price, qty in ((1, 100.0, 3.0), (-1, ask, 1.0))]
    write_levels(day / "levels.parquet", pa.Table.from_pylist([dict(zip(SCHEMA.names, r)) for r in rows], SCHEMA),
                 symbol, "binance")
    trades = [(i, 0, t, t, i, 100, q, m) for i, (t, q, m) in enumerate([(close_ms - 5000, 3, False),
                                                                         (close_ms - 4000, 1, True)])]
    table = pa.Table.from_pylist([dict(zip(SCHEMAS["trades"].names, r)) for r in trades], SCHEMAS["trades"])
    pq.write_table(table, day / "trades.parquet")
    return day
