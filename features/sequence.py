"""Return windows: the sequence models' input, carried by every feature row.

The N-HiTS / PatchTST members (``training.deep``) read the last ``length`` one-bar log returns
of a symbol. Rather than asking the model for a series history at prediction time, every row
carries its own window as columns ``seq_ret_0 .. seq_ret_{length-1}`` (``seq_ret_k`` = the
``logret_1`` of the row ``k`` rows earlier of the same symbol, ``k = 0`` the row itself). So
training, backtest and serving build the model input with this one function, and the row of
bar t reads bars <= t only (lags, never leads: ``features.pit.check_lookahead`` holds).

Lags count *rows* of the features frame, like every indicator in ``features.compute``: an
exchange outage (a gap in the candles) is not filled, so a window across it spans more time.
A row with fewer than ``length`` rows of history (itself included) gets an all-NaN window: a
partial window would be a different input than the network was trained on, and the training
join drops rows with NaN inputs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from qt.errors import ConfigError, DataError

SOURCE_COLUMN = "logret_1"
WINDOW_PREFIX = "seq_ret_"
_KEYS = ["symbol", "timestamp"]


def window_columns(length: int) -> list[str]:
    """``["seq_ret_0", ..., f"seq_ret_{length-1}"]``: newest first (``seq_ret_0`` is the row's own bar)."""
    return [f"{WINDOW_PREFIX}{k}" for k in range(int(length))]


def add_return_windows(features: pd.DataFrame, length: int) -> pd.DataFrame:
    """A copy of ``features`` with the ``window_columns(length)`` added.

    ``features``: any row order, keys ``symbol`` and ``timestamp`` plus ``SOURCE_COLUMN``.
    Per symbol, ordered by timestamp, ``seq_ret_k`` is ``SOURCE_COLUMN`` ``k`` rows earlier;
    rows with fewer than ``length`` rows of history (incl. itself) get NaN in every window
    column. Row order and index of the input are preserved. ``length == 0``: an unchanged copy.
    Vectorised (one sort, one strided view): float64 throughout, so the window equals the
    feature column bit for bit.
    """
    length = int(length)
    if length < 0:
        raise ConfigError(f"return window length must be >= 0, got {length}; set train.sequence_length")
    missing = [c for c in (*_KEYS, SOURCE_COLUMN) if c not in features.columns]
    if missing:
        raise DataError(f"features lack columns {missing} needed for the return window; compute them with "
                        f"features.log_return including 1 (the {SOURCE_COLUMN!r} column)")
    if length == 0:
        return features.copy()
    clash = [c for c in window_columns(length) if c in features.columns]
    if clash:
        raise DataError(f"features already hold window columns {clash[:3]}...; add_return_windows was applied twice")

    codes, _ = pd.factorize(features["symbol"])
    ts = features["timestamp"].to_numpy(dtype="datetime64[ns]").view("int64")
    order = np.lexsort((ts, codes))  # by symbol, then time
    codes_sorted, ts_sorted = codes[order], ts[order]
    same_symbol = codes_sorted[1:] == codes_sorted[:-1]
    duplicated = same_symbol & (ts_sorted[1:] == ts_sorted[:-1])
    if duplicated.any():
        row = features.iloc[order[int(np.flatnonzero(duplicated)[0]) + 1]]
        raise DataError(f"features hold duplicate rows for {row['symbol']} at {row['timestamp']}; "
                        f"a return window needs one row per bar - de-duplicate them")

    values = features[SOURCE_COLUMN].to_numpy(dtype=np.float64)[order]
    n = len(values)
    # rows of history (incl. itself) of each sorted row within its symbol block
    starts = np.concatenate([[0], np.flatnonzero(~same_symbol) + 1]) if n else np.zeros(0, dtype=np.int64)
    block_start = np.repeat(starts, np.diff(np.concatenate([starts, [n]])))
    history = np.arange(n) - block_start + 1
    valid = history >= length

    out = np.full((n, length), np.nan)
    if valid.any():
        # window ending at sorted row i = values[i-length+1 .. i]; reversed: newest first
        windows = sliding_window_view(values, length)
        rows = np.flatnonzero(valid)
        out[rows] = windows[rows - length + 1, ::-1]
    result = np.empty_like(out)
    result[order] = out
    window = pd.DataFrame(result, columns=window_columns(length), index=features.index, copy=False)
    return pd.concat([features, window], axis=1)
