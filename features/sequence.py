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
    index of the input are preserved. ``length == 0``: an unchanged copy. The windows are
    ``ReturnWindows.matrix`` of every row (one implementation): float64 throughout, so a window
    equals its feature column bit for bit. For many rows, ``ReturnWindows`` itself builds them
    a batch at a time instead (training: 192 columns per row would be most of its memory).
    """
    length = int(length)
    if length < 0:
        raise ConfigError(f"return window length must be >= 0, got {length}; set train.sequence_length")
    if length == 0:
        _require_sources(features, exog)
        return features.copy()
    clash = [c for c in all_window_columns(length, exog) if c in features.columns]
    if clash:
        raise DataError(f"features already hold window columns {clash[:3]}...; add_return_windows was applied twice")
    windows = ReturnWindows(features, length, exog)
    block = pd.DataFrame(windows.matrix(np.arange(len(features))), columns=windows.columns, index=features.index,
                         copy=False)
    return pd.concat([features, block], axis=1)


def _require_sources(features: pd.DataFrame, exog: Sequence[str]) -> None:
    missing = [c for c in (*_KEYS, SOURCE_COLUMN) if c not in features.columns]
    if missing:
        raise DataError(f"features lack columns {missing} needed for the return window; compute them with "
                        f"features.log_return including 1 (the {SOURCE_COLUMN!r} column)")
    absent = [c for c in exog if c not in features.columns]
    if absent:
        raise DataError(f"features lack the exogenous window columns {absent}; declare them in params.yaml "
                        f"features: or remove them from train.sequence_exog")


class ReturnWindows:
    """The return (and exogenous) windows of a features frame's rows, made for the rows asked.

    Why: training scores millions of rows with 64-bar windows of three columns; as columns that
    is 192 float64 per row - 5 GB at 566 symbols x 6000 bars, several times over once split into
    folds. This keeps each source column once, sorted by symbol then time, and builds the windows
    of any rows on demand (``matrix``), a batch at a time. ``matrix`` is what ``add_return_windows``
    writes as columns (it calls it), so a batch equals those columns bit for bit.
    """

    def __init__(self, features: pd.DataFrame, length: int, exog: Sequence[str] = ()):
        self.length, self.exog = int(length), list(exog)
        if self.length < 1:
            raise ConfigError(f"return window length must be >= 1, got {self.length}; set train.sequence_length")
        _require_sources(features, self.exog)
        self.columns = all_window_columns(self.length, self.exog)
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
        self._history = np.arange(n) - block_start + 1
        self._rank = np.empty(n, dtype=np.int64)  # a frame row -> its position in the sorted order
        self._rank[order] = np.arange(n)
        self._sources = [features[c].to_numpy(dtype=np.float64)[order] for c in (SOURCE_COLUMN, *self.exog)]

    def __len__(self) -> int:
        return len(self._rank)

    def matrix(self, rows: np.ndarray) -> np.ndarray:
        """``[len(rows), len(columns)]`` windows of the frame's rows ``rows`` (positions), newest
        first per source; all NaN where a row has fewer than ``length`` rows of history."""
        sorted_rows = self._rank[np.asarray(rows, dtype=np.int64)]
        length = self.length
        out = np.full((len(sorted_rows), len(self.columns)), np.nan)
        full = self._history[sorted_rows] >= length
        if full.any():
            lags = sorted_rows[full][:, None] - np.arange(length)[None, :]  # k rows earlier, k = 0 newest
            for b, values in enumerate(self._sources):
                out[full, b * length:(b + 1) * length] = values[lags]
        return out

    def complete(self) -> np.ndarray:
        """Per frame row: its window is defined and holds no NaN in any source - the rows a frame
        with the window columns keeps after ``dropna`` over them."""
        length, n = self.length, len(self._rank)
        ok = self._history >= length
        for values in self._sources:
            nan_before = np.concatenate([[0], np.cumsum(np.isnan(values))])  # NaNs among sorted rows < i
            top = np.arange(n) + 1
            ok &= (nan_before[top] - nan_before[np.maximum(top - length, 0)]) == 0
        return ok[self._rank]
