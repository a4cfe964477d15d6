"""A recording in the lake: four compact Parquet tables per symbol and UTC day.

Layout under the lake root (``<market>`` is ``binance`` (spot) or ``binanceusdm`` (USDT-M),
``<STEM>`` is ``BTC_USDT``, ``<date>`` the UTC day of the local receive time)::

    orderbook/<market>/<STEM>/<date>/depth.parquet        seq, receive_ns, event_ms, U, u, pu, side, price, qty
    orderbook/<market>/<STEM>/<date>/trades.parquet       seq, receive_ns, event_ms, trade_ms, trade_id, price, qty,
                                                          is_buyer_maker
    orderbook/<market>/<STEM>/<date>/book_ticker.parquet  seq, receive_ns, u, bid, bid_qty, ask, ask_qty
    orderbook/<market>/<STEM>/<date>/snapshots.parquet    seq, receive_ns, event_ms, last_update_id, side, price, qty
    orderbook/<market>/<STEM>/<date>/manifest.json        rows per table, units, sha256 per file

Prices and quantities are **int64 counts of 1e-8** (``data.orderbook.units``), not float64:
exact for every Binance decimal, sums included, and they compress as well. A depth event is one
row per level (``side`` +1 bid, -1 ask); an event without levels keeps one row with ``side`` 0 so
the update-id chain stays whole. ``pu`` is null on spot, ``event_ms`` null for spot snapshots.
``seq`` is the message's position in the recording: reading merges the tables back by
(``receive_ns``, ``seq``), so a replay from the lake sees the very messages of the raw file.

Writes are deterministic (fixed writer options, no pandas metadata) and atomic (``qt.atomic``):
importing the same recording again leaves the files unchanged; a different recording for a day
already stored is refused rather than silently merged. Polled REST snapshots are the exception
(``append_recording``): each poll adds to the day, in receive order, never twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import json
from array import array
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from data.orderbook.messages import BookTicker, DepthDiff, Message, Snapshot, Trade
from data.orderbook.units import DECIMALS
from data.partitions import symbol_stem
from qt.atomic import write_bytes_atomic, write_text_atomic
from qt.errors import DataError

MARKETS = ("binance", "binanceusdm")
_I64, _I8 = pa.int64(), pa.int8()
SCHEMAS = {
    "depth": pa.schema([("seq", _I64), ("receive_ns", _I64), ("event_ms", _I64), ("U", _I64), ("u", _I64),
                        ("pu", _I64), ("side", _I8), ("price", _I64), ("qty", _I64)]),
    "trades": pa.schema([("seq", _I64), ("receive_ns", _I64), ("event_ms", _I64), ("trade_ms", _I64),
                         ("trade_id", _I64), ("price", _I64), ("qty", _I64), ("is_buyer_maker", pa.bool_())]),
    "book_ticker": pa.schema([("seq", _I64), ("receive_ns", _I64), ("u", _I64), ("bid", _I64), ("bid_qty", _I64),
                              ("ask", _I64), ("ask_qty", _I64)]),
    "snapshots": pa.schema([("seq", _I64), ("receive_ns", _I64), ("event_ms", _I64), ("last_update_id", _I64),
                            ("side", _I8), ("price", _I64), ("qty", _I64)]),
}
_NULLABLE = {"depth": ("pu",), "snapshots": ("event_ms",)}  # null: spot has no pu, spot snapshots no time
_PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 9, "use_dictionary": False,
                    "write_statistics": True, "version": "2.6", "data_page_version": "1.0"}


def recording_root(root: Path, symbol: str, market: str) -> Path:
    if market not in MARKETS:
        raise DataError(f"market {market!r} is not one of {', '.join(MARKETS)}")
    return Path(root) / "orderbook" / market / symbol_stem(symbol)


def _day(receive_ns: int) -> str:
    return pd.Timestamp(receive_ns, unit="ns", tz="UTC").strftime("%Y-%m-%d")


class _Columns:
    """One table's columns as compact int64 arrays while a recording is imported (a Python tuple per
    row would take ~10x the memory: a day of USDT-M depth is tens of millions of level rows)."""

    def __init__(self, name: str) -> None:
        self.schema = SCHEMAS[name]
        self.values = {f.name: array("q") for f in self.schema}
        self.nulls = {c: array("b") for c in _NULLABLE.get(name, ())}

    def add(self, head: tuple, levels: list[tuple[int, int, int]] | None = None) -> None:
        """One row (``levels`` None), or one row per (side, price, qty) sharing ``head``."""
        n = 1 if levels is None else len(levels)
        names = self.schema.names
        for column, value in zip(names, head):
            if column in self.nulls:
                self.nulls[column].extend([value is None] * n)
                value = 0 if value is None else value
            self.values[column].extend([int(value)] * n)
        if levels is not None:
            for column, i in (("side", 0), ("price", 1), ("qty", 2)):
                self.values[column].extend(level[i] for level in levels)

    def __len__(self) -> int:
        return len(self.values["seq"])

    def table(self) -> pa.Table:
        arrays = []
        for f in self.schema:
            values = np.frombuffer(self.values[f.name], dtype=np.int64) if len(self) else np.zeros(0, np.int64)
            mask = np.frombuffer(self.nulls[f.name], dtype=np.int8).astype(bool) if f.name in self.nulls and len(self) \
                else None
            arrays.append(pa.array(values, mask=mask).cast(f.type))
        table = pa.Table.from_arrays(arrays, schema=self.schema)
        order = np.lexsort((arrays[0].to_numpy(), arrays[1].to_numpy()))  # receive time, then position; stable
        return table if np.array_equal(order, np.arange(len(order))) else table.take(order)


def _rows(messages: Iterable[Message]) -> dict[str, dict[str, _Columns]]:
    """{day: {table: columns}} from a message stream."""
    days: dict[str, dict[str, _Columns]] = defaultdict(lambda: {name: _Columns(name) for name in SCHEMAS})
    for m in messages:
        tables = days[_day(m.receive_ns)]
        if isinstance(m, (DepthDiff, Snapshot)):
            if isinstance(m, DepthDiff):
                head, table = (m.seq, m.receive_ns, m.event_ms, m.first_id, m.last_id, m.prev_id), tables["depth"]
            else:
                head, table = (m.seq, m.receive_ns, m.event_ms, m.last_update_id), tables["snapshots"]
            levels = [(1, p, q) for p, q in m.bids] + [(-1, p, q) for p, q in m.asks]
            table.add(head, levels or [(0, 0, 0)])  # an event without levels keeps one row: the id chain
        elif isinstance(m, Trade):
            tables["trades"].add((m.seq, m.receive_ns, m.event_ms, m.trade_ms, m.trade_id, m.price, m.qty,
                                  m.is_buyer_maker))
        elif isinstance(m, BookTicker):
            tables["book_ticker"].add((m.seq, m.receive_ns, m.update_id, m.bid, m.bid_qty, m.ask, m.ask_qty))
    return days


def _parquet_bytes(columns: _Columns) -> bytes:
    sink = pa.BufferOutputStream()  # Arrow's own buffer, not a Python file (see data.partitions.read_table)
    pq.write_table(columns.table(), sink, **_PARQUET_OPTIONS)
    return sink.getvalue().to_pybytes()


def write_recording(root: Path, symbol: str, market: str, messages: Iterable[Message], source: str = "",
                    replace: bool = False) -> dict:
    """Store a recording's messages; returns {day: {"tables": rows per table, "written": bool}}.
    ``replace`` overwrites a day holding another recording (``append_recording`` merges first)."""
    base = recording_root(root, symbol, market)
    out = {}
    for day, tables in sorted(_rows(messages).items()):
        directory = base / day
        blobs = {name: _parquet_bytes(columns) for name, columns in tables.items()}
        shas = {name: hashlib.sha256(blob).hexdigest() for name, blob in blobs.items()}
        manifest = {"symbol": symbol, "market": market, "day": day, "units": f"1e-{DECIMALS}",
                    "rows": {name: len(columns) for name, columns in tables.items()}, "sha256": shas, "source": source}
        old = _manifest(directory)
        if old is not None and old["sha256"] == shas:
            out[day] = {"tables": manifest["rows"], "written": False}
            continue
        if old is not None and not replace:
            raise DataError(f"{directory} already holds a different recording of {symbol} on {day} "
                            f"(from {old.get('source') or 'another import'}); remove that directory to replace it")
        directory.mkdir(parents=True, exist_ok=True)
        for name, blob in blobs.items():
            write_bytes_atomic(directory / f"{name}.parquet", blob)
        write_text_atomic(directory / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        out[day] = {"tables": manifest["rows"], "written": True}
    return out


def _manifest(directory: Path) -> dict | None:
    path = directory / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else None


def append_recording(root: Path, symbol: str, market: str, messages: Iterable[Message], source: str = "") -> dict:
    """Add messages (e.g. polled snapshots) to the days already stored: the union, in receive
    order, renumbered; a message already stored (same content) is not added twice."""
    by_day: dict[str, list[Message]] = defaultdict(list)
    for m in messages:
        by_day[_day(m.receive_ns)].append(m)
    out = {}
    for day, new in sorted(by_day.items()):
        directory = recording_root(root, symbol, market) / day
        old = list(_messages(directory)) if _manifest(directory) is not None else []
        seen = {dataclasses.replace(m, seq=0) for m in old}
        fresh = [m for m in new if dataclasses.replace(m, seq=0) not in seen]
        merged = sorted(old + fresh, key=lambda m: m.receive_ns)  # stable: stored first, then arrival order
        renumbered = [dataclasses.replace(m, seq=i) for i, m in enumerate(merged)]
        out.update(write_recording(root, symbol, market, renumbered, source, replace=True))
    return out


def stored_days(root: Path, symbol: str, market: str) -> list[str]:
    base = recording_root(root, symbol, market)
    return sorted(p.name for p in base.iterdir() if (p / "manifest.json").is_file()) if base.is_dir() else []


_CHUNK_ROWS = 65_536  # rows turned into Python objects at a time while reading


def _flat(table: pa.Table) -> Iterator[tuple]:
    """Rows of a one-row-per-message table, converted a chunk at a time."""
    for batch in table.to_batches(max_chunksize=_CHUNK_ROWS):
        yield from zip(*(batch.column(i).to_pylist() for i in range(batch.num_columns)))


def _grouped(table: pa.Table, head_columns: int) -> Iterator[tuple[list, tuple, tuple]]:
    """(head values, bids, asks) per message of a one-row-per-level table (rows grouped by ``seq``)."""
    seq = table.column("seq").to_numpy()
    if not len(seq):
        return
    bounds = np.r_[np.flatnonzero(np.r_[True, seq[1:] != seq[:-1]]), len(seq)]
    i = 0
    while i < len(bounds) - 1:
        j = int(np.searchsorted(bounds, bounds[i] + _CHUNK_ROWS, side="left"))
        j = min(max(j, i + 1), len(bounds) - 1)
        lo = int(bounds[i])
        cols = [c.to_pylist() for c in table.slice(lo, int(bounds[j]) - lo).columns]
        side, price, qty = cols[head_columns], cols[head_columns + 1], cols[head_columns + 2]
        for k in range(i, j):
            a, b = int(bounds[k]) - lo, int(bounds[k + 1]) - lo
            levels = list(zip(side[a:b], price[a:b], qty[a:b]))
            yield ([c[a] for c in cols[:head_columns]], tuple((p, q) for s_, p, q in levels if s_ == 1),
                   tuple((p, q) for s_, p, q in levels if s_ == -1))
        i = j


def _messages(directory: Path) -> Iterator[Message]:
    """One day's messages, merged back into receive order, built a chunk at a time."""
    read = lambda name: pq.read_table(directory / f"{name}.parquet", schema=SCHEMAS[name])  # noqa: E731
    depth = (DepthDiff(*head, bids, asks) for head, bids, asks in _grouped(read("depth"), 6))
    snaps = (Snapshot(*head, bids, asks) for head, bids, asks in _grouped(read("snapshots"), 4))
    trades = (Trade(*row) for row in _flat(read("trades")))
    tickers = (BookTicker(*row) for row in _flat(read("book_ticker")))
    yield from heapq.merge(depth, snaps, trades, tickers, key=lambda m: (m.receive_ns, m.seq))


def read_recording(root: Path, symbol: str, market: str, days: list[str] | None = None) -> Iterator[Message]:
    """The stored messages of ``symbol`` on ``market`` (all days, or ``days``), in receive order."""
    have = stored_days(root, symbol, market)
    if not have:
        raise DataError(f"no order-book recording of {symbol} ({market}) under {recording_root(root, symbol, market)}")
    for day in days or have:
        if day not in have:
            raise DataError(f"no order-book recording of {symbol} ({market}) on {day}; stored: {', '.join(have)}")
        yield from _messages(recording_root(root, symbol, market) / day)
