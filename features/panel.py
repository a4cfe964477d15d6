"""The last feature rows of many symbols at once: the serving path's new-bar computation.

On a new bar every symbol's model input row is new, and ``compute_features`` over 566 windows of
400 candles spends most of its time in per-symbol pandas overhead (~8 rolling calls of ~50 us
each per symbol), not in arithmetic. ``last_rows`` stacks the windows into ``(symbols, bars)``
arrays and runs ``features.compute.candle_panel`` - the very formulas ``compute_features`` runs
per symbol, with TA-Lib called row by row and pandas' rolling kernels run once over all
symbols - so each row equals ``compute_features`` on that symbol's window bit for bit
(``tests/features/test_panel.py``: random windows, lengths and cut points).

No state is carried from one bar to the next: every answer is recomputed from the window's
candles, so there is nothing that can go stale across a gap, a rewritten candle or another
model (the serving row cache keys the answer by the candles' generation, as before).

Only candle-only feature sets are supported (``supported``): the higher-timeframe blocks and
the funding/basis/cross-asset families read time stamps and auxiliary inputs per symbol; their
callers take ``compute_features`` instead.
"""

from __future__ import annotations

import numpy as np

from features.compute import candle_panel, feature_columns, warmup_bars
from features.multi_input import multi_input_columns
from qt.config import FeatureParams

OHLCV = ("open", "high", "low", "close", "volume")


def supported(params: FeatureParams) -> bool:
    """True when the feature set is candle-only (no HTF block, no multi-input family)."""
    return not params.htf and not multi_input_columns(params)


def last_rows(ohlcv: np.ndarray, params: FeatureParams, rows: int) -> np.ndarray | None:
    """Feature values of the last ``rows`` bars of each symbol: ``(symbols, rows, columns)`` in
    ``features.compute.feature_columns(params)`` order, or None when this path cannot answer
    exactly as ``compute_features`` would (then call that instead: it raises the proper error).

    ``ohlcv``: ``(5, symbols, bars)`` float64, ``OHLCV`` order, each ``[:, s, :]`` one symbol's
    consecutive candles sorted by time (a window; all of one length). None when the feature set
    is not ``supported``, a price or volume is not finite and positive (``compute_features``
    refuses such candles) or a window has fewer than ``warmup_bars(params) + rows`` bars (the
    first kept feature row is bar ``warmup_bars``).
    """
    if not supported(params) or ohlcv.ndim != 3 or len(ohlcv) != len(OHLCV):
        return None
    _, n_symbols, bars = ohlcv.shape
    if rows < 1 or bars - warmup_bars(params) < rows:
        return None
    prices, volume = ohlcv[:4], ohlcv[4]
    if not (np.isfinite(prices).all() and (prices > 0).all() and np.isfinite(volume).all() and (volume >= 0).all()):
        return None
    out = np.empty((len(feature_columns(params)), n_symbols, rows))  # candle-only: all columns
    candle_panel(dict(zip(OHLCV, ohlcv)), params, out, bars - rows)
    return out.transpose(1, 2, 0)
