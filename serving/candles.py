"""In-memory view of the raw candle lake for the request path.

Each symbol's Parquet file is read once and cached keyed by its (inode, mtime,
size): the collector replaces files atomically (write + rename), so any new
data changes the key and the next request re-reads the file. A request then
only slices the cached arrays (binary search on the open-time array), which
keeps ``/signals`` far below the bar interval even for many symbols.

``FundingCache`` does the same for the perpetuals' funding histories, which a model using the
funding features needs (``features.multi_input``); reference candles (cross-asset, basis)
come from the ``CandleCache`` like any symbol's. Both take a ``venue``: the cross-venue
features read Bybit's candles and funding of the perpetual through a ``bybit`` pair of caches.
"""

from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data.lake import available_symbols, candle_path, funding_dir, read_funding, read_symbol


@dataclass(frozen=True)
class SymbolCandles:
    """One symbol's candles (sorted by open time) plus the open times as int64 ms."""

    symbol: str
    frame: pd.DataFrame
    open_ms: np.ndarray
    # (inode, mtime_ns, size) of the symbol's lake directory when it was read: changes on every
    # write (atomic rename), so anything derived from these candles may be cached under it
    generation: tuple[int, int, int] = (0, 0, 0)

    @functools.cached_property
    def ohlcv(self) -> np.ndarray:
        """``(5, bars)`` float64 open, high, low, close, volume: the new-bar path stacks windows of
        566 symbols from these (slicing arrays, not frames: ``serving.newbar``)."""
        return np.ascontiguousarray(self.frame[["open", "high", "low", "close", "volume"]]
                                    .to_numpy(dtype=np.float64).T)

    def window_before(self, as_of_ms: int, bars: int) -> pd.DataFrame:
        """The last ``bars`` candles with open time <= ``as_of_ms`` (empty if none)."""
        end = int(np.searchsorted(self.open_ms, as_of_ms, side="right"))
        return self.frame.iloc[max(0, end - bars):end]


class UnknownSymbol(LookupError):
    """The lake holds no candles for this symbol and timeframe."""


class CandleCache:
    """Thread-safe cache of the lake's per-symbol candle files for one timeframe."""

    def __init__(self, raw_root: Path, timeframe: str, venue: str = "binance"):
        self.raw_root = Path(raw_root)
        self.timeframe = timeframe
        self.venue = venue
        self._entries: dict[str, tuple[tuple[int, int, int], SymbolCandles]] = {}
        self._paths: dict[str, str] = {}
        self._lock = threading.Lock()

    def latest_open_ms(self) -> int | None:
        """Newest candle open time over every symbol of this timeframe in the lake (None if empty).

        "Latest in the lake" for a request without as_of: a symbol whose collector
        stalled is then stale even when it is the only one asked for.
        """
        symbols = available_symbols(self.raw_root, self.timeframe, self.venue)
        lasts = [int(s.open_ms[-1]) for s in map(self.get, symbols) if len(s.open_ms)]
        return max(lasts) if lasts else None

    def cached_generation(self, symbol: str) -> tuple[int, int, int] | None:
        """The generation of the candles cached for ``symbol`` (None: not read yet)."""
        hit = self._entries.get(symbol)
        return None if hit is None else hit[0]

    def get(self, symbol: str) -> SymbolCandles:
        """Cached candles of ``symbol``; UnknownSymbol (naming what exists) if the lake lacks it.

        A malformed symbol raises ``qt.errors.DataError`` from ``data.lake``.
        """
        # a name's path is fixed and building it costs more than the stat: kept for names that exist
        path = self._paths.get(symbol) or str(candle_path(self.raw_root, symbol, self.timeframe, self.venue))
        try:
            st = os.stat(path)
        except FileNotFoundError:
            have = ", ".join(available_symbols(self.raw_root, self.timeframe, self.venue)) or "none"
            raise UnknownSymbol(f"unknown symbol {symbol!r}: no {self.timeframe} candles in the lake "
                                f"(have: {have})") from None
        self._paths[symbol] = path
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._entries.get(symbol)
        if hit is not None and hit[0] == key:
            return hit[1]
        frame = read_symbol(self.raw_root, symbol, self.timeframe, self.venue)
        frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True).assign(symbol=symbol)
        open_ms = frame["timestamp"].dt.tz_convert(None).to_numpy().astype("datetime64[ms]").astype(np.int64)
        entry = SymbolCandles(symbol=symbol, frame=frame, open_ms=open_ms, generation=key)
        entry.ohlcv  # built here, by whoever reads the file (the background refresh): not by the batch
        with self._lock:
            self._entries[symbol] = (key, entry)
        return entry


def refresh_candles(cache: CandleCache, symbols: list[str]) -> int:
    """Bring the cached candles of ``symbols`` up to date with the lake; the number of symbols
    whose files had changed (and were re-read). Unknown or unreadable symbols are skipped: the
    request that asks for them reports them."""
    from qt.errors import DataError

    changed = 0
    for symbol in symbols:
        try:
            before = cache.cached_generation(symbol)
            changed += cache.get(symbol).generation != before
        except (UnknownSymbol, DataError):
            continue
    return changed


class FundingCache:
    """Thread-safe cache of the lake's funding histories (whole, as ``features.materialise``
    reads them, so the rolling funding means start from the same first event)."""

    def __init__(self, raw_root: Path, venue: str = "binance"):
        self.raw_root = Path(raw_root)
        self.venue = venue
        self._entries: dict[str, tuple[tuple, pd.DataFrame]] = {}
        self._lock = threading.Lock()

    def generation(self, symbol: str) -> tuple:
        """The (name, size, mtime) of every funding partition of ``symbol``: the collector replaces
        them atomically, so this changes whenever the history does (empty when none is stored)."""
        directory = funding_dir(self.raw_root, symbol, self.venue)
        files = sorted(directory.glob("*.parquet")) if directory.is_dir() else []
        return tuple((f.name, st.st_size, st.st_mtime_ns) for f in files for st in (f.stat(),))

    def get(self, symbol: str) -> pd.DataFrame:
        """``symbol``, ``timestamp``, ``funding_rate`` of every stored event (sorted; empty when none).

        Cached under ``generation(symbol)``.
        """
        key = self.generation(symbol)
        with self._lock:
            hit = self._entries.get(symbol)
        if hit is not None and hit[0] == key:
            return hit[1]
        frame = read_funding(self.raw_root, symbol, venue=self.venue).assign(symbol=symbol)
        with self._lock:
            self._entries[symbol] = (key, frame)
        return frame
