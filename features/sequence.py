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

Exogenous windows: N-HiTS also reads past values of other feature columns (its ``hist_exog``,
``train.sequence_exog``); ``add_return_windows(..., exog=[...])`` adds them the same way, as
``seq_<column>_<k>`` (e.g. ``seq_rvol_24_0``), aligned bar for bar with the return window.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from qt.errors import ConfigError, DataError

SOURCE_COLUMN = "logret_1"
WINDOW_PREFIX = "seq_ret_"
_KEYS = ["symbol", "timestamp"]


def window_columns(length: int, source: str = SOURCE_COLUMN) -> list[str]:
    """Newest first (``k = 0`` is the row's own bar): ``seq_ret_0 ..`` for the returns,
    ``seq_<source>_0 ..`` for an exogenous column."""
    prefix = WINDOW_PREFIX if source == SOURCE_COLUMN else f"seq_{source}_"
    return [f"{prefix}{k}" for k in range(int(length))]


def all_window_columns(length: int, exog: Sequence[str] = ()) -> list[str]:
    """The return window, then each exogenous window, in ``exog`` order."""
    return [c for source in (SOURCE_COLUMN, *exog) for c in window_columns(length, source)]


def add_return_windows(features: pd.DataFrame, length: int, exog: Sequence[str] = ()) -> pd.DataFrame:
    """A copy of ``features`` with the ``all_window_columns(length, exog)`` added.

    ``features``: any row order, keys ``symbol`` and ``timestamp`` plus ``SOURCE_COLUMN`` (and the
    ``exog`` columns). Per symbol, ordered by timestamp, ``seq_ret_k`` is ``SOURCE_COLUMN`` ``k``
    rows earlier (``seq_<c>_k`` the same for an exogenous column ``c``); rows with fewer than
    ``length`` rows of history (incl. itself) get NaN in every window column. Row order and
    index of the input are preserved. ``length == 0``: an unchanged copy. Vectorised (one sort,
    one strided view per source): float64 throughout, so a window equals its feature column bit
    for bit.
    """
    length = int(length)
    exog = list(exog)
    if length < 0:
        raise ConfigError(f"return window length must be >= 0, got {length}; set train.sequence_length")
    missing = [c for c in (*_KEYS, SOURCE_COLUMN) if c not in features.columns]
    if missing:
        raise DataError(f"features lack columns {missing} needed for the return window; compute them with "
                        f"features.log_return including 1 (the {SOURCE_COLUMN!r} column)")
    absent = [c for c in exog if c not in features.columns]
    if absent:
        raise DataError(f"features lack the exogenous window columns {absent}; declare them in params.yaml "
                        f"features: or remove them from train.sequence_exog")
    if length == 0:
        return features.copy()
    clash = [c for c in all_window_columns(length, exog) if c in features.columns]
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

    n = len(features)
    # rows of history (incl. itself) of each sorted row within its symbol block
    starts = np.concatenate([[0], np.flatnonzero(~same_symbol) + 1]) if n else np.zeros(0, dtype=np.int64)
    block_start = np.repeat(starts, np.diff(np.concatenate([starts, [n]])))
    history = np.arange(n) - block_start + 1
    rows = np.flatnonzero(history >= length)

    blocks = []
    for source in (SOURCE_COLUMN, *exog):
        values = features[source].to_numpy(dtype=np.float64)[order]
        out = np.full((n, length), np.nan)
        if len(rows):
            # window ending at sorted row i = values[i-length+1 .. i]; reversed: newest first
            out[rows] = sliding_window_view(values, length)[rows - length + 1, ::-1]
        result = np.empty_like(out)
        result[order] = out
        blocks.append(pd.DataFrame(result, columns=window_columns(length, source), index=features.index, copy=False))
    return pd.concat([features, *blocks], axis=1)
