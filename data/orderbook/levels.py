"""The book-levels table: the replayed book's top ``depth`` levels per side, sampled on a regular grid.

Why a table: the local exchange walks a recorded book to price a market order
(``exchange.book_fills``) and may import only ``qt`` - no replay logic. The data layer replays the
recording once and writes what the exchange needs as plain Parquet (``levels.parquet`` beside the
other tables of the day)::

    ts_ms   int64    sample time, Binance's *event* clock (ms)
    book_ms int64    event time of the last depth event (or snapshot) in the sampled state
    side    int8     +1 bid, -1 ask
    rank    int16    0 = best
    price   float64  quote units
    qty     float64  base units

Which clock, and why the event clock (not the receive clock ``features.book_sampling`` uses): the
exchange's clock is the candles' clock, and Binance stamps candles on its own event clock; the
recording machine's receive clock differs from it by about a second. A row at ``ts_ms = t`` is the
book after every depth event with event time ``<= t``. A grid time is only written once a later
depth event (event time ``> t``) has been seen - before that it is unknown whether the state still
held - and never while the book is invalid (before the first snapshot, after a gap until a resync),
so a stretch without a valid book has no rows (the reader refuses there, it does not guess).
Floats here are fine: the table is for pricing fills, never for book state (which stays in exact
units in ``data.orderbook.book``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from data.orderbook.book import Book
from data.orderbook.messages import DepthDiff, Message, Snapshot
from data.orderbook.replay import Replay
from data.orderbook.units import SCALE
from qt.atomic import write_bytes_atomic

LEVELS_FILE = "levels.parquet"
SCHEMA = pa.schema([("ts_ms", pa.int64()), ("book_ms", pa.int64()), ("side", pa.int8()), ("rank", pa.int16()),
                    ("price", pa.float64()), ("qty", pa.float64())])


class LevelSampler:
    """Feed messages in receive order; ``rows`` collects (ts_ms, book_ms, side, rank, price, qty)."""

    def __init__(self, market: str, every_ms: int = 1000, depth: int = 20) -> None:
        if every_ms <= 0 or depth < 1:
            raise ValueError("every_ms and depth must be positive")
        self.every_ms, self.depth = every_ms, depth
        self.replay = Replay(market, on_update=self._observe)
        self.state_ms: int | None = None  # event time of the current valid book state
        self._snapshot_ms: int | None = None
        self.next_ms: int | None = None
        self._event_ms: dict[int, int] = {}  # depth event u -> its event time, until applied
        self.rows: list[tuple] = []

    def _observe(self, first_id: int, last_id: int, is_snapshot: bool, book: Book) -> None:
        self.state_ms = self._snapshot_ms if is_snapshot else self._event_ms.get(last_id)

    def feed(self, message: Message) -> None:
        if isinstance(message, DepthDiff):
            self._sample_until(message.event_ms)
            self._event_ms[message.last_id] = message.event_ms
        elif isinstance(message, Snapshot):
            self._snapshot_ms = message.event_ms  # None on spot: no time until the next applied diff
        self.replay.feed(message)
        if self.replay.valid and not self.replay.buffer:
            self._event_ms.clear()

    def _sample_until(self, horizon_ms: int) -> None:
        """Write the current state at every grid time in [its event time, ``horizon_ms``)."""
        if not self.replay.valid or self.state_ms is None:
            return
        first = -(-self.state_ms // self.every_ms) * self.every_ms
        t = first if self.next_ms is None else max(self.next_ms, first)
        if t >= horizon_ms:
            return
        book = self.replay.book
        sides = [(1, book.bids.top(self.depth)), (-1, book.asks.top(self.depth))]
        while t < horizon_ms:
            for side, levels in sides:
                self.rows += [(t, self.state_ms, side, rank, p / SCALE, q / SCALE) for rank, (p, q) in enumerate(levels)]
            t += self.every_ms
        self.next_ms = t

    def table(self) -> pa.Table:
        columns = list(zip(*self.rows)) if self.rows else [[] for _ in SCHEMA]
        return pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(columns, SCHEMA)], schema=SCHEMA)


def sample_levels(messages: Iterable[Message], market: str, every_ms: int = 1000, depth: int = 20) -> pa.Table:
    """The top ``depth`` levels per side every ``every_ms`` of event time (columns ``SCHEMA``)."""
    sampler = LevelSampler(market, every_ms, depth)
    for message in messages:
        sampler.feed(message)
    return sampler.table()


def write_levels(path: Path, table: pa.Table, symbol: str, market: str) -> Path:
    """``table`` as Parquet at ``path``; the symbol and market ride in the file's metadata
    (``qt.symbol``, ``qt.market``) so a reader needs no path convention."""
    meta = {b"qt.symbol": symbol.encode(), b"qt.market": market.encode(),
            b"qt.clock": b"binance event time (ms)"}
    sink = pa.BufferOutputStream()  # Arrow's own buffer, not a Python file (see data.partitions.read_table)
    pq.write_table(table.replace_schema_metadata(meta), sink, compression="zstd")
    write_bytes_atomic(Path(path), sink.getvalue().to_pybytes())
    return Path(path)


__all__ = ["LEVELS_FILE", "SCHEMA", "LevelSampler", "sample_levels", "write_levels"]
