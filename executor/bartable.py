"""The bars a trading loop steps, as one table: every symbol's OHLC on one shared time grid.

Why a table: the loop steps all symbols of one open time together (one portfolio, one risk
engine), and the candles frame has one row per symbol-bar; aligning them once, as floats, costs
less than looking bars up per step, and lets the loop see ahead which bars are quiet (nothing
can happen there: ``quiet_bars``) without a pandas object per symbol-bar.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from executor.portfolio import Bar
from qt.errors import DataError

_EPOCH = pd.Timestamp(0, tz="UTC")


@dataclass(frozen=True)
class BarTable:
    timestamps: pd.DatetimeIndex
    symbols: list[str]
    ohlc: np.ndarray  # (n_ts, n_symbols, 4), NaN where the symbol has no bar


def infer_bar_ms(candles: pd.DataFrame) -> int:
    """Smallest spacing between consecutive bars of any symbol (gaps only make it larger)."""
    best = None
    for _, g in candles.groupby("symbol", sort=False):
        ts = ((pd.to_datetime(g["timestamp"], utc=True) - _EPOCH) // pd.Timedelta(milliseconds=1)).to_numpy()
        if len(ts) > 1:
            d = np.diff(np.sort(ts))
            d = d[d > 0]
            if len(d):
                best = int(d.min()) if best is None else min(best, int(d.min()))
    if best is None:
        raise DataError("candles have fewer than two bars per symbol; cannot step a trading loop")
    return best


def present(table: BarTable) -> np.ndarray:
    """(n_ts, n_symbols) bool: the symbol has a bar at that time (open and close known)."""
    return ~np.isnan(table.ohlc[:, :, 0]) & ~np.isnan(table.ohlc[:, :, 3])


def last_bars(table: BarTable) -> dict[str, Bar]:
    """symbol -> its last bar in the table (what a run liquidates at)."""
    has = present(table)
    out = {}
    for j, sym in enumerate(table.symbols):
        rows = np.flatnonzero(has[:, j])
        if len(rows):
            o, h, lo, c = table.ohlc[rows[-1], j].tolist()
            out[sym] = Bar(sym, table.timestamps[rows[-1]], o, h, lo, c)
    return out


def symbol_spans(table: BarTable) -> dict[str, tuple[pd.Timestamp, pd.Timestamp]]:
    """symbol -> (first, last) bar open time in the table."""
    has = present(table)
    spans = {}
    for j, sym in enumerate(table.symbols):
        rows = np.flatnonzero(has[:, j])
        if len(rows):
            spans[sym] = (table.timestamps[rows[0]], table.timestamps[rows[-1]])
    return spans


def bar_table(candles: pd.DataFrame, start: pd.Timestamp | None, end: pd.Timestamp | None) -> BarTable:
    missing = {"symbol", "timestamp", "open", "high", "low", "close"} - set(candles.columns)
    if missing:
        raise DataError(f"candles frame lacks columns {sorted(missing)}")
    df = candles[["symbol", "timestamp", "open", "high", "low", "close"]]
    ts_all = pd.to_datetime(df["timestamp"], utc=True)
    mask = np.ones(len(df), dtype=bool)
    if start is not None:
        mask &= (ts_all >= pd.Timestamp(start)).to_numpy()
    if end is not None:
        mask &= (ts_all <= pd.Timestamp(end)).to_numpy()
    df = df.loc[mask].assign(timestamp=ts_all[mask])
    if df.empty:
        raise DataError(f"no candles between {start} and {end}; widen the range or collect data")
    symbols = sorted(df["symbol"].unique().tolist())
    timestamps = pd.DatetimeIndex(sorted(df["timestamp"].unique()))
    ohlc = np.full((len(timestamps), len(symbols), 4), np.nan)
    ti = timestamps.get_indexer(df["timestamp"])
    si = pd.Index(symbols).get_indexer(df["symbol"])
    ohlc[ti, si, :] = df[["open", "high", "low", "close"]].to_numpy(dtype="float64")
    return BarTable(timestamps, symbols, ohlc)
