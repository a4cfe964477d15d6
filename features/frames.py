"""Candle-frame plumbing shared by features and labels: validate the layout once and
find each symbol's contiguous block, so per-symbol work never sees another symbol's rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from qt.errors import DataError
from data.lake import CANDLE_COLUMNS


def sort_candles(candles: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The candles sorted by (symbol, timestamp) and their symbol codes; DataError on
    missing columns or duplicate (symbol, timestamp) rows."""
    missing = [c for c in CANDLE_COLUMNS if c not in candles.columns]
    if missing:
        raise DataError(f"candles lack columns {missing}; expected {CANDLE_COLUMNS} (see data.lake.read_candles)")
    codes, in_order = _symbol_codes_if_sorted(candles)
    if not in_order:
        candles = candles.sort_values(["symbol", "timestamp"], kind="stable")
        codes, in_order = _symbol_codes_if_sorted(candles)
        if not in_order:
            first = candles[candles.duplicated(["symbol", "timestamp"])].iloc[0]
            raise DataError(f"candles hold duplicate rows for {first['symbol']} at {first['timestamp']}; "
                            f"de-duplicate them (re-collect the symbol)")
    return candles, codes


def _symbol_codes_if_sorted(candles: pd.DataFrame) -> tuple[np.ndarray, bool]:
    """Integer symbol codes, and whether the frame is in (symbol, timestamp) order: symbols
    in sorted order, each one contiguous block with strictly increasing timestamps (the
    layout the per-block computation relies on; outputs keep it)."""
    codes, uniques = pd.factorize(candles["symbol"])
    if len(codes) < 2:
        return codes, True
    ts = candles["timestamp"].to_numpy(dtype="datetime64[ms]").view("int64")
    same = codes[1:] == codes[:-1]
    blocks = int(np.count_nonzero(~same)) + 1
    ordered = blocks == len(uniques) and all(a < b for a, b in zip(uniques[:-1], uniques[1:]))
    return codes, ordered and bool(np.all(ts[1:][same] > ts[:-1][same]))


def symbol_blocks(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[start, end) row ranges of the contiguous per-symbol blocks of a sorted frame."""
    if len(codes) == 0:
        return np.arange(0), np.arange(0)
    change = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(codes)]])
    return starts, ends
