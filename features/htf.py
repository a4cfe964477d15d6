"""Higher-timeframe (HTF) features: indicators on completed higher-timeframe bars,
forward-filled to the base bars, with no lookahead.

HTF bars are aggregated from one symbol's base candles by UTC-aligned buckets
``[k x htf_ms, (k+1) x htf_ms)`` (4h buckets start at 00, 04, 08 ... UTC; 1d at 00:00 UTC, like
Binance's own candles): open = first open, high = max, low = min, close = last close. A bucket
is *complete* once its end has passed, i.e. at the base row whose CLOSE time
(``open_ms + bar_ms``) reaches the bucket's end. So a 1h row opening at 10:00 (closing 11:00)
sees the 4h bucket [04:00, 08:00), not the still-forming [08:00, 12:00); the row opening at
11:00 closes at 12:00 and is the first to see [08:00, 12:00). A bucket missing base bars
(exchange outage) is aggregated from the bars that exist; a missing bucket is skipped (the row
sees the latest earlier one).

Columns ``htf<TF>_<indicator>_<params>`` (e.g. ``htf4h_rsi_14``):
``rsi_N`` = ``talib.RSI(htf_close, N)``, ``atr_N`` = ``talib.ATR(htf_high, htf_low,
htf_close, N) / htf_close``, ``logret_N`` = ``ln(htf_close_k / htf_close_{k-N})``.

Warm-up in base bars = ``(HTF warm-up + 1) x timeframe/base_timeframe``: the extra HTF bar
covers the partial first bucket of a history that starts mid-bucket.
"""

from __future__ import annotations

import math

import numpy as np
import talib

from qt.config import HtfFeatureParams
from qt.errors import ConfigError
from qt.timeframes import timeframe_ms


def htf_columns(block: HtfFeatureParams) -> list[str]:
    """The block's columns, in the order ``htf_block_values`` returns them."""
    tag = f"htf{block.timeframe}"
    return [*(f"{tag}_rsi_{n}" for n in block.rsi), *(f"{tag}_atr_{n}" for n in block.atr),
            *(f"{tag}_logret_{n}" for n in block.log_return)]


def check_htf_block(block: HtfFeatureParams, index: int) -> None:
    """ConfigError unless the HTF is a whole multiple (> 1) of the base bar and periods are valid."""
    base_ms, htf_ms = timeframe_ms(block.base_timeframe), timeframe_ms(block.timeframe)
    if htf_ms <= base_ms or htf_ms % base_ms:
        raise ConfigError(f"features.htf[{index}]: timeframe {block.timeframe} must be a whole multiple of "
                          f"base_timeframe {block.base_timeframe} and longer than it")
    if not htf_columns(block):
        raise ConfigError(f"features.htf[{index}]: declares no indicator; list rsi, atr or log_return periods")
    for name, low in (("rsi", 2), ("atr", 2), ("log_return", 1)):
        periods = list(getattr(block, name))
        if any(p < low for p in periods) or len(set(periods)) != len(periods):
            raise ConfigError(f"features.htf[{index}].{name}: periods {periods} must be distinct and >= {low}")


def htf_warmup_base_bars(block: HtfFeatureParams, warmup_memories: float) -> int:
    """Base bars before every HTF value is defined and independent of where history starts."""
    ratio = timeframe_ms(block.timeframe) // timeframe_ms(block.base_timeframe)
    wilder = [n + math.ceil(warmup_memories * (-1.0 / math.log((n - 1) / n))) for n in (*block.rsi, *block.atr)]
    need_htf_bars = max([*wilder, *(n + 1 for n in block.log_return)])
    return (need_htf_bars + 1) * ratio


def htf_block_values(open_ms: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
                     block: HtfFeatureParams, bar_ms: int) -> np.ndarray:
    """One symbol's HTF features on its base rows (rows = ``htf_columns(block)``), NaN until defined.

    ``bar_ms`` is the base bar duration: a row sees the buckets that ended by its close
    (``open_ms + bar_ms``). Passing the HTF duration instead would let every row see its own,
    still-forming bucket: the leak ``features.pit.check_lookahead`` exists to catch.
    """
    htf_ms = timeframe_ms(block.timeframe)
    bucket = open_ms // htf_ms
    firsts = np.flatnonzero(np.concatenate([[True], bucket[1:] != bucket[:-1]])) if len(bucket) else np.arange(0)
    lasts = np.concatenate([firsts[1:], [len(bucket)]]) - 1
    h_high = np.maximum.reduceat(high, firsts) if len(firsts) else high[:0]
    h_low = np.minimum.reduceat(low, firsts) if len(firsts) else low[:0]
    h_close = close[lasts]

    rows = [talib.RSI(h_close, timeperiod=n) for n in block.rsi]
    rows += [talib.ATR(h_high, h_low, h_close, timeperiod=n) / h_close for n in block.atr]
    log_close = np.log(h_close)
    for n in block.log_return:
        ret = np.full_like(log_close, np.nan)
        ret[n:] = log_close[n:] - log_close[:-n]
        rows.append(ret)
    per_bucket = np.vstack(rows) if rows else np.empty((0, len(firsts)))

    # latest bucket whose end (k+1) x htf_ms is <= the row's close
    visible = (open_ms + bar_ms) // htf_ms - 1
    pos = np.searchsorted(bucket[firsts], visible, side="right") - 1
    out = np.full((per_bucket.shape[0], len(open_ms)), np.nan)
    seen = pos >= 0
    out[:, seen] = per_bucket[:, pos[seen]]
    return out
