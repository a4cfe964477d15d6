"""Point-in-time technical features from candles: the one implementation used by
training, backtest and the serving service (principle 5).

Row of bar t uses bars <= t of the same symbol only (principle 6): every indicator is a
causal TA-Lib call or a trailing window, computed per symbol on that symbol's rows.
Indicators count *bars* (rows), not wall-clock time: exchange outages (gaps) are not
filled, so a 24-bar window across a gap spans more than 24 hours.

Column names are ``<indicator>_<params>``. Price-level indicators are made scale-free
so one model can serve BTC at 30 000 and DOGE at 0.08:

=====================  =============================================================
column                 value (``close`` = close of bar t)
=====================  =============================================================
``rsi_N``              ``talib.RSI(close, N)`` as is (already 0..100, scale-free)
``ema_N``              ``talib.EMA(close, N) / close - 1``
``sma_N``              ``talib.SMA(close, N) / close - 1``
``macd_F_S_G``         ``talib.MACD(...)[0] / close``   (macd line)
``macd_signal_F_S_G``  ``talib.MACD(...)[1] / close``   (signal line)
``macd_hist_F_S_G``    ``talib.MACD(...)[2] / close``   (histogram)
``bb_upper_N_K``       ``upper / close - 1``  from ``talib.BBANDS(close, N, K, K, matype=0)``
``bb_lower_N_K``       ``lower / close - 1``
``bb_width_N_K``       ``(upper - lower) / middle``
``atr_N``              ``talib.ATR(high, low, close, N) / close``
``logret_N``           ``ln(close_t / close_{t-N})``
``rvol_N``             sample std (ddof=1) of the N one-bar log returns ending at t
``volz_N``             ``(volume_t - mean) / std`` over the N volumes ending at t (ddof=1);
                       0 when the window is constant (std 0: volume equals its mean)
=====================  =============================================================

Warm-up: the first ``warmup_bars(params)`` rows of every symbol are dropped, so every
value is defined and the recursive indicators (EMA, RSI, ATR, MACD) no longer depend on
where the history happened to start (verified by ``features.pit.check_recursive``).
A symbol with no more than ``warmup_bars`` candles therefore yields no rows: callers
(serving) must read at least ``warmup_bars(params) + 1`` candles per symbol.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pandas as pd
import talib

from features.frames import sort_candles, symbol_blocks
from qt.config import FeatureParams
from qt.errors import ConfigError, DataError

# Bump when a formula changes without a params change: it invalidates the feature-set hash,
# so a model trained on the old formulas is never served features computed by the new ones.
FEATURE_CODE_VERSION = "1"


def feature_columns(params: FeatureParams) -> list[str]:
    """The model's input columns, in the order ``compute_features`` returns them.

    Raises ConfigError when the declared set is malformed (duplicate or too-short period).
    """
    _check_params(params)
    fast, slow, signal = params.macd
    bb_period, bb_k = params.bbands
    macd_tag = f"{fast}_{slow}_{signal}"
    bb_tag = f"{bb_period}_{_fmt(bb_k)}"
    return [
        *(f"rsi_{n}" for n in params.rsi),
        *(f"ema_{n}" for n in params.ema),
        *(f"sma_{n}" for n in params.sma),
        f"macd_{macd_tag}", f"macd_signal_{macd_tag}", f"macd_hist_{macd_tag}",
        f"bb_upper_{bb_tag}", f"bb_lower_{bb_tag}", f"bb_width_{bb_tag}",
        *(f"atr_{n}" for n in params.atr),
        *(f"logret_{n}" for n in params.log_return),
        *(f"rvol_{n}" for n in params.realised_vol),
        *(f"volz_{n}" for n in params.volume_z),
    ]


def warmup_bars(params: FeatureParams) -> int:
    """Leading bars per symbol dropped before the first feature row.

    Each recursive indicator forgets its seed geometrically; its *memory* is the number of
    bars for the seed's weight to shrink by e: ``-1/ln(decay)`` with decay ``(N-1)/(N+1)``
    for EMA(N) and ``(N-1)/N`` for Wilder's RSI(N)/ATR(N). The warm-up is the largest of
    (TA-Lib's own look-back + ``params.warmup_memories`` memories) over the recursive
    indicators, and never less than the longest window any feature needs to be defined.
    exp(-warmup_memories) is the share of the start-up transient left after warm-up.

    Measured with ``features.pit.check_recursive`` (1e-6 relative tolerance) from ~5000
    start offsets on the 8 real 1h spot series, the default feature set needs at most 248
    bars (macd_hist on DOGE/XRP); 16 memories would declare 241 (too few), 17 254 (6 bars
    of margin); the default 18 declares 267 (MACD 12/26/9: look-back 33 + 18 x 13.0 bars),
    about 10x the slowest period. Serving must read more than that many candles per symbol.
    """
    _check_params(params)
    fast, slow, signal = params.macd
    bb_period, _ = params.bbands
    needs = [
        *(n + 1 for n in params.log_return),
        *(n + 1 for n in params.realised_vol),
        *(n for n in params.volume_z),
        *(n for n in params.sma),
        bb_period,
    ]
    recursive = [
        *((n, _ema_memory(n)) for n in params.ema),
        *((n, _wilder_memory(n)) for n in params.rsi),
        *((n, _wilder_memory(n)) for n in params.atr),
        # the signal EMA smooths the macd line: its transient decays like the slower of the two
        (slow + signal - 2, max(_ema_memory(slow), _ema_memory(signal))),
    ]
    needs += [lookback + math.ceil(params.warmup_memories * memory) for lookback, memory in recursive]
    return int(max(needs))


def feature_set_hash(params: FeatureParams) -> str:
    """sha256 (hex) of the canonical JSON of the feature params and FEATURE_CODE_VERSION.

    Stored in every model's metadata: features of another hash must not be fed to that model.
    """
    blob = json.dumps({"code_version": FEATURE_CODE_VERSION, "params": params.model_dump(mode="json")},
                      sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def compute_features(candles: pd.DataFrame, params: FeatureParams) -> pd.DataFrame:
    """Features frame (``symbol``, ``timestamp``, float64 ``feature_columns(params)``).

    ``candles`` is the Candles frame (any row order; it is sorted by symbol, timestamp).
    Raises DataError on missing columns, duplicate (symbol, timestamp) rows or non-finite
    prices/volumes: a NaN would poison every recursive indicator after it.
    """
    columns = feature_columns(params)
    warmup = warmup_bars(params)
    frame, codes = sort_candles(candles)
    ohlcv = {c: frame[c].to_numpy(dtype=np.float64) for c in ("high", "low", "close", "volume")}
    _check_finite(frame, ohlcv)

    starts, ends = symbol_blocks(codes)
    keep_parts, value_parts = [], []
    for start, end in zip(starts, ends):
        if end - start <= warmup:
            continue
        block = {c: arr[start:end] for c, arr in ohlcv.items()}
        value_parts.append(_compute_block(block, params)[:, warmup:])
        keep_parts.append(np.arange(start + warmup, end))

    keep = np.concatenate(keep_parts) if keep_parts else np.arange(0)
    values = np.concatenate(value_parts, axis=1) if value_parts else np.empty((len(columns), 0))
    data = {"symbol": frame["symbol"].array.take(keep), "timestamp": frame["timestamp"].array.take(keep)}
    data.update(zip(columns, values))
    return pd.DataFrame(data)


def _compute_block(bar: dict[str, np.ndarray], params: FeatureParams) -> np.ndarray:
    """All features of one symbol, rows = features in ``feature_columns`` order, NaN in warm-up."""
    close, high, low, volume = bar["close"], bar["high"], bar["low"], bar["volume"]
    rows: list[np.ndarray] = []
    rows += [talib.RSI(close, timeperiod=p) for p in params.rsi]
    rows += [talib.EMA(close, timeperiod=p) / close - 1.0 for p in params.ema]
    rows += [talib.SMA(close, timeperiod=p) / close - 1.0 for p in params.sma]
    fast, slow, signal = params.macd
    macd, macd_signal, macd_hist = talib.MACD(close, fastperiod=fast, slowperiod=slow, signalperiod=signal)
    rows += [macd / close, macd_signal / close, macd_hist / close]
    bb_period, bb_k = params.bbands
    upper, middle, lower = talib.BBANDS(close, timeperiod=bb_period, nbdevup=bb_k, nbdevdn=bb_k, matype=0)
    rows += [upper / close - 1.0, lower / close - 1.0, (upper - lower) / middle]
    rows += [talib.ATR(high, low, close, timeperiod=p) / close for p in params.atr]

    log_close = np.log(close)
    rows += [_lagged_difference(log_close, h) for h in params.log_return]
    one_bar = _lagged_difference(log_close, 1)
    rows += [_trailing_std(one_bar, w, first_valid=1) for w in params.realised_vol]
    rows += [_trailing_zscore(volume, w) for w in params.volume_z]

    return np.vstack(rows)


def _lagged_difference(x: np.ndarray, lag: int) -> np.ndarray:
    out = np.full_like(x, np.nan)
    if lag < len(x):
        out[lag:] = x[lag:] - x[:-lag]
    return out


def _windows(x: np.ndarray, window: int) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(x, window)


def _trailing_std(x: np.ndarray, window: int, first_valid: int = 0) -> np.ndarray:
    """Sample std over the ``window`` values ending at each row; each window on its own
    (two-pass, no running sums), so the value never depends on where history starts."""
    out = np.full_like(x, np.nan)
    valid = x[first_valid:]
    if len(valid) >= window:
        out[first_valid + window - 1:] = _windows(valid, window).std(axis=1, ddof=1)
    return out


def _trailing_zscore(x: np.ndarray, window: int) -> np.ndarray:
    """z-score of each value within its trailing window; 0 for a constant window. "Constant"
    allows rounding noise (std <= 1e-9 x |mean|): 24 volumes of 0.1 have a computed std of
    ~1e-17, and dividing rounding noise by rounding noise would give an arbitrary z."""
    out = np.full_like(x, np.nan)
    if len(x) >= window:
        win = _windows(x, window)
        mean = win.mean(axis=1)
        std = win.std(axis=1, ddof=1)
        varies = std > 1e-9 * np.abs(mean)
        dev = x[window - 1:] - mean
        out[window - 1:] = np.where(varies, dev / np.where(varies, std, 1.0), 0.0)
    return out


def _check_finite(frame: pd.DataFrame, ohlcv: dict[str, np.ndarray]) -> None:
    for name, arr in ohlcv.items():
        bad = ~np.isfinite(arr) if name == "volume" else ~(np.isfinite(arr) & (arr > 0))
        if name == "volume":
            bad |= arr < 0
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"candle {name} is {arr[i]!r} for {frame['symbol'].iat[i]} at "
                            f"{frame['timestamp'].iat[i]}; run the validation stage and repair the data")


def _ema_memory(period: int) -> float:
    return -1.0 / math.log((period - 1) / (period + 1))


def _wilder_memory(period: int) -> float:
    return -1.0 / math.log((period - 1) / period)


def _fmt(x: float) -> str:
    return f"{x:g}"


def _check_params(params: FeatureParams) -> None:
    for name in ("rsi", "ema", "sma", "atr", "log_return", "realised_vol", "volume_z"):
        periods = list(getattr(params, name))
        low = 1 if name == "log_return" else 2
        for p in periods:
            if p < low:
                raise ConfigError(f"features.{name}: period {p} is below {low}; use periods >= {low}")
        if len(set(periods)) != len(periods):
            raise ConfigError(f"features.{name}: a period is listed twice ({periods}); list each once")
    fast, slow, signal = params.macd
    if not (2 <= fast < slow and signal >= 2):
        raise ConfigError(f"features.macd: need 2 <= fast < slow and signal >= 2, got {params.macd}")
    if params.bbands[0] < 2 or params.bbands[1] <= 0:
        raise ConfigError(f"features.bbands: need period >= 2 and k > 0, got {params.bbands}")
