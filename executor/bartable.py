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
    ms = pd.to_datetime(candles["timestamp"], utc=True).to_numpy(dtype="datetime64[ms]").view(np.int64)
    codes = pd.factorize(candles["symbol"])[0]
    if len(ms) > 1 and not np.all((codes[1:] > codes[:-1]) | ((codes[1:] == codes[:-1]) & (ms[1:] >= ms[:-1]))):
        order = np.lexsort((ms, codes))  # by symbol, then time (a frame sorted so already is the usual case)
        ms, codes = ms[order], codes[order]
    steps = np.diff(ms)[(codes[1:] == codes[:-1])]
    steps = steps[steps > 0]
    if not len(steps):
        raise DataError("candles have fewer than two bars per symbol; cannot step a trading loop")
    return int(steps.min())


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
    ts_all = pd.to_datetime(candles["timestamp"], utc=True)
    mask = np.ones(len(candles), dtype=bool)
    if start is not None:
        mask &= (ts_all >= pd.Timestamp(start)).to_numpy()
    if end is not None:
        mask &= (ts_all <= pd.Timestamp(end)).to_numpy()
    if not mask.any():
        raise DataError(f"no candles between {start} and {end}; widen the range or collect data")
    # integers, not Timestamp objects: the grid is the sorted distinct open times (the frame's unit),
    # the symbols the sorted distinct ones in the window (hashed, then the few distinct ones sorted)
    unit = ts_all.dtype.unit
    t_codes, t_uniq = pd.factorize(ts_all.to_numpy(dtype=f"datetime64[{unit}]").view(np.int64)[mask])
    t_order = np.argsort(t_uniq, kind="stable")
    t_rank = np.empty_like(t_order)
    t_rank[t_order] = np.arange(len(t_order))
    timestamps = pd.DatetimeIndex(t_uniq[t_order].view(f"datetime64[{unit}]")).tz_localize("UTC")
    s_codes, s_names = pd.factorize(candles["symbol"], sort=True)
    s_codes = s_codes[mask]
    used = np.flatnonzero(np.bincount(s_codes, minlength=len(s_names)))
    s_rank = np.full(len(s_names), -1)
    s_rank[used] = np.arange(len(used))
    symbols = [str(s_names[k]) for k in used.tolist()]
    ohlc = np.full((len(timestamps), len(symbols), 4), np.nan)
    cells, rows = ohlc.reshape(-1, 4), t_rank[t_codes] * len(symbols) + s_rank[s_codes]
    for k, name in enumerate(("open", "high", "low", "close")):  # column by column: no 4-column frame copied
        cells[rows, k] = candles[name].to_numpy(dtype="float64")[mask]
    return BarTable(timestamps, symbols, ohlc)
