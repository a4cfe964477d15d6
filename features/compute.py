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
``adx_N``              ``talib.ADX(high, low, close, N)`` as is (0..100)
``stoch_k_K_D_S``      ``talib.STOCH(high, low, close, fastk_period=K, slowk_period=S,
                       slowd_period=D, SMA)[0]`` (slow %K, 0..100)
``stoch_d_K_D_S``      ``[1]`` of the same call (slow %D)
``obv_z_N``            the N-bar OBV change in units of its standard error:
                       ``(OBV_t - OBV_{t-N}) / (sqrt(N) x std(dOBV))``, OBV = ``talib.OBV(close,
                       volume)``, std (ddof=1) of the N one-bar changes dOBV (signed volumes)
                       ending at t - the t-statistic of the mean signed volume. Scale-free and
                       blind to OBV's arbitrary seed; 0 when those N changes are all equal.
                       (A z-score of the OBV *level* would be the natural choice, but OBV drifts
                       to 1e9+ and a rolling variance on such levels is not reproducible to 1e-6.)
``vwap_dist_N``        ``close / vwap - 1``, vwap = sum(typical x volume) / sum(volume) over the N
                       bars ending at t, typical = (high + low + close) / 3; 0 when those N bars
                       traded nothing (no VWAP exists)
``body_frac``          ``(close - open) / (high - low)`` (signed, -1..1); 0 when high == low
``upper_wick_frac``    ``(high - max(open, close)) / (high - low)``; 0 when high == low
``lower_wick_frac``    ``(min(open, close) - low) / (high - low)``; 0 when high == low
``range_log``          ``ln(high / low)``
=====================  =============================================================

The four candle-shape columns are off by default (``params.candle_shape``; see its comment).

Higher-timeframe blocks (``params.htf``, off by default) are in ``features.htf``; the
funding, basis and cross-asset families (off by default, extra inputs) in
``features.multi_input``, the cross-venue one (Bybit's series as ``other_venue``) in
``features.cross_venue``. Rolling means, sums and standard deviations are pandas' rolling
kernels (Kahan-compensated sums, online variance that is exactly 0 on a constant window),
O(rows) instead of one pass over every window.

Warm-up: the first ``warmup_bars(params)`` rows of every symbol are dropped, so every
value is defined and the recursive indicators (EMA, RSI, ATR, MACD, ADX) no longer depend on
where the history happened to start (verified by ``features.pit.check_recursive``).
A symbol with no more than ``warmup_bars`` candles therefore yields no rows: callers
(serving) must read at least ``warmup_bars(params) + 1`` candles per symbol.
"""

from __future__ import annotations

import hashlib
import json
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import talib

from features.frames import sort_candles, symbol_blocks
from features.alt_features import alt_columns, alt_rows, require_alt, uses_alt
from features.alt_join import AltInputs
from features.cross_venue import OtherVenue, split_other_venue
from features.feature_params import check_params
from features.htf import htf_block_values, htf_columns, htf_warmup_base_bars
from features.multi_input import (multi_input_columns, multi_input_values, split_funding, split_reference,
                                  uses_funding)
from qt.config import FeatureParams
from qt.errors import ConfigError, DataError
from qt.timeframes import timeframe_ms

# Bump when a formula changes without a params change: it invalidates the feature-set hash,
# so a model trained on the old formulas is never served features computed by the new ones.
FEATURE_CODE_VERSION = "2"
_THREADS = 2
# FeatureParams fields added after models were logged, with their "off" value (feature_set_hash)
_ADDED_WHEN_OFF = {"xv": False, "xv_z": [], "fng": False, "fng_change": [], "fng_z": [], "onchain": False,
                   "etf_flow_z": [], "news_hours": [], "alt_scope": "all", "book": False, "book_levels": 5,
                   "book_flow_seconds": 10, "book_max_age_seconds": 60.0}
_PARALLEL_MIN_ROWS = 50_000


def feature_columns(params: FeatureParams) -> list[str]:
    """The model's input columns, in the order ``compute_features`` returns them.

    Raises ConfigError when the declared set is malformed (duplicate or too-short period).
    """
    check_params(params)
    columns = _candle_columns(params)
    for block in params.htf:
        columns += htf_columns(block)
    columns += multi_input_columns(params)
    columns += alt_columns(params)
    if len(set(columns)) != len(columns):
        raise ConfigError(f"features.htf: two blocks produce the same columns ({columns}); list each "
                          f"timeframe once")
    return columns


def _candle_columns(params: FeatureParams) -> list[str]:
    fast, slow, signal = params.macd
    bb_period, bb_k = params.bbands
    macd_tag = f"{fast}_{slow}_{signal}"
    bb_tag = f"{bb_period}_{_fmt(bb_k)}"
    stoch_tag = "_".join(str(p) for p in params.stoch)
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
        *(f"adx_{n}" for n in params.adx),
        f"stoch_k_{stoch_tag}", f"stoch_d_{stoch_tag}",
        *(f"obv_z_{n}" for n in params.obv_z),
        *(f"vwap_dist_{n}" for n in params.vwap_dist),
        *(["body_frac", "upper_wick_frac", "lower_wick_frac", "range_log"] if params.candle_shape else []),
    ]


def warmup_bars(params: FeatureParams) -> int:
    """Leading bars per symbol dropped before the first feature row.

    Each recursive indicator forgets its seed geometrically; its *memory* is the number of
    bars for the seed's weight to shrink by e: ``-1/ln(decay)`` with decay ``(N-1)/(N+1)``
    for EMA(N) and ``(N-1)/N`` for Wilder's RSI(N)/ATR(N)/ADX(N). The warm-up is the largest
    of (TA-Lib's own look-back + ``params.warmup_memories`` memories) over the recursive
    indicators, and never less than the longest window any feature needs to be defined.
    exp(-warmup_memories) is the share of the start-up transient left after warm-up.

    Measured with ``features.pit.check_recursive`` (1e-6 relative tolerance) from ~5000
    start offsets on the 8 real 1h spot series, MACD needs at most 248 bars (macd_hist on
    DOGE/XRP); 16 memories would declare 241 (too few), 17 254 (6 bars of margin). ADX(14)
    (Wilder smoothing of Wilder-smoothed DX; look-back 27) was measured the same way from
    2400 start offsets (300 per series): it needs at most 252 bars (XRP); 18 memories declare
    270. The default set therefore declares 270 bars (ADX), about 10x the slowest period.
    Re-measured on the whole default set (v2) with the same tolerance from 200 start offsets
    on all 8 series: worst adx_14 244 (DOGE), macd_signal 239, ema_26 224, rsi_14 197,
    atr_14 195 bars; the windowed columns (rvol, volz, obv_z, vwap_dist, stoch, shape) never
    differ once defined.
    HTF blocks add ``features.htf.htf_warmup_base_bars``. Serving must read more than that
    many candles per symbol.
    """
    check_params(params)
    fast, slow, signal = params.macd
    bb_period, _ = params.bbands
    stoch_k, stoch_d, stoch_s = params.stoch
    needs = [
        *(n + 1 for n in params.log_return),
        *(n + 1 for n in params.realised_vol),
        *(n for n in params.volume_z),
        *(n for n in params.sma),
        *(n + 1 for n in params.obv_z),
        *(n for n in params.vwap_dist),
        *(n + 1 for n in params.cross),
        *(n for n in params.xv_z),
        stoch_k + stoch_d + stoch_s - 2,
        bb_period,
    ]
    recursive = [
        *((n, _ema_memory(n)) for n in params.ema),
        *((n, _wilder_memory(n)) for n in params.rsi),
        *((n, _wilder_memory(n)) for n in params.atr),
        *((2 * n - 1, _wilder_memory(n)) for n in params.adx),
        # the signal EMA smooths the macd line: its transient decays like the slower of the two
        (slow + signal - 2, max(_ema_memory(slow), _ema_memory(signal))),
    ]
    needs += [lookback + math.ceil(params.warmup_memories * memory) for lookback, memory in recursive]
    needs += [htf_warmup_base_bars(block, params.warmup_memories) for block in params.htf]
    return int(max(needs))


def feature_set_hash(params: FeatureParams) -> str:
    """sha256 (hex) of the canonical JSON of the feature params and FEATURE_CODE_VERSION.

    Stored in every model's metadata: features of another hash must not be fed to that model.
    Params added later are left out while they are off (``_ADDED_WHEN_OFF``): a feature set that
    does not use them computes what it computed before, so models and stores made before they
    existed keep their hash (the service would otherwise refuse every existing champion).
    """
    dump = params.model_dump(mode="json")
    dump.pop("book_lake", None)  # where the recordings live, not what is computed from them
    for key, off in _ADDED_WHEN_OFF.items():
        if dump.get(key) == off:
            del dump[key]
    blob = json.dumps({"code_version": FEATURE_CODE_VERSION, "params": dump},
                      sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def compute_features(candles: pd.DataFrame, params: FeatureParams, funding: pd.DataFrame | None = None,
                     reference: pd.DataFrame | None = None, other_venue: OtherVenue | None = None,
                     alt: AltInputs | None = None) -> pd.DataFrame:
    """Features frame (``symbol``, ``timestamp``, float64 ``feature_columns(params)``).

    ``candles`` is the Candles frame (any row order; it is sorted by symbol, timestamp).
    ``funding`` (symbol, timestamp, funding_rate) and ``reference`` (a Candles frame) are
    needed only by the multi-input families (``features.multi_input``), ``other_venue`` (Bybit's
    candles and funding) only by the cross-venue one (``features.cross_venue``); DataError when an
    enabled family lacks its input; ``alt`` (the lake's alt series) only by the alt families
    (``features.alt_features``). Raises DataError on missing columns, duplicate
    (symbol, timestamp) rows or non-finite prices/volumes: a NaN would poison every
    recursive indicator after it.
    """
    frame, codes = sort_candles(candles)
    starts, ends = symbol_blocks(codes)
    return _compute_blocks(frame, starts, ends, params, funding, reference, other_venue, alt)


def compute_features_windows(candles: pd.DataFrame, params: FeatureParams, windows: list[tuple[int, int]],
                             funding: pd.DataFrame | None = None, reference: pd.DataFrame | None = None,
                             other_venue: OtherVenue | None = None, alt: AltInputs | None = None) -> pd.DataFrame:
    """``compute_features`` of several row windows of ONE symbol's candles, in one pass.

    ``candles``: one symbol, sorted by timestamp (``features.materialise`` reads them so);
    ``windows``: ``[start, end)`` row ranges, possibly overlapping. The result is the
    concatenation, in window order, of ``compute_features(candles.iloc[start:end], ...)`` for
    each window (each computed from its own first row on, warm-up dropped), without the
    per-call overhead: materialisation computes every period from its own warm-up prefix.
    """
    frame, codes = sort_candles(candles)
    if len(codes) and codes.max() > 0:
        raise DataError("compute_features_windows takes one symbol's candles; call it once per symbol")
    if frame is not candles:
        raise DataError("compute_features_windows needs candles sorted by timestamp (windows are row ranges)")
    bounds = np.asarray(windows, dtype=np.int64).reshape(-1, 2)
    if len(bounds) and (bounds.min() < 0 or bounds[:, 1].max() > len(frame) or (bounds[:, 0] > bounds[:, 1]).any()):
        raise DataError(f"windows {windows} are not row ranges of the {len(frame)} candles")
    return _compute_blocks(frame, bounds[:, 0], bounds[:, 1], params, funding, reference, other_venue, alt)


def _compute_blocks(frame: pd.DataFrame, starts: np.ndarray, ends: np.ndarray, params: FeatureParams,
                    funding: pd.DataFrame | None, reference: pd.DataFrame | None,
                    other_venue: OtherVenue | None = None, alt: AltInputs | None = None) -> pd.DataFrame:
    """The features of each row block ``[starts[i], ends[i])`` of the sorted ``frame``, each
    computed on its own (warm-up dropped per block), concatenated in block order."""
    columns = feature_columns(params)
    warmup = warmup_bars(params)
    n_candle = len(_candle_columns(params))
    n_multi = len(multi_input_columns(params)) + len(alt_columns(params))
    n_alt = len(alt_columns(params))
    alt = require_alt(alt, params)
    funding_by_symbol = split_funding(funding, params)
    reference_by_symbol = split_reference(reference, params)
    other_by_symbol = split_other_venue(other_venue, params)
    ohlcv = {c: frame[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close", "volume")}
    _check_finite(frame, ohlcv)
    open_ms = frame["timestamp"].to_numpy(dtype="datetime64[ms]").view("int64")

    long_enough = (ends - starts) > warmup
    starts, ends = starts[long_enough], ends[long_enough]
    bar_ms = _bar_ms(open_ms, starts, ends) if (params.htf or uses_funding(params) or uses_alt(params)) \
        and len(starts) else 0
    for i, block in enumerate(params.htf):
        if len(starts) and bar_ms != timeframe_ms(block.base_timeframe):
            raise DataError(f"features.htf[{i}] declares base_timeframe {block.base_timeframe} but the candles "
                            f"are {bar_ms // 60_000} minutes apart; set base_timeframe to the data's timeframe")

    kept_rows = ends - starts - warmup
    offsets = np.concatenate([[0], np.cumsum(kept_rows)]).astype(np.int64)
    keep = np.empty(int(offsets[-1]), dtype=np.int64)
    values = np.empty((len(columns), len(keep)))

    def fill(i: int) -> None:
        """Block i's rows of ``values`` and ``keep``: disjoint slices, so blocks run in parallel."""
        start, end, at = int(starts[i]), int(ends[i]), int(offsets[i])
        block = {c: arr[start:end] for c, arr in ohlcv.items()}
        out = values[:, at:at + end - start - warmup]
        _candle_block(block, params, out[:n_candle], warmup)
        row = n_candle
        for htf in params.htf:
            got = htf_block_values(open_ms[start:end], block["high"], block["low"], block["close"], htf, bar_ms)
            out[row:row + len(got)] = got[:, warmup:]
            row += len(got)
        symbol = str(frame["symbol"].iat[start])
        if n_multi > n_alt:
            out[row:row + n_multi - n_alt] = multi_input_values(
                symbol, open_ms[start:end], block["close"], bar_ms, params, funding_by_symbol, reference_by_symbol,
                other_by_symbol)[:, warmup:]
        if n_alt:
            got = alt_rows(symbol, open_ms[start:end], block["close"], bar_ms, params, alt)
            out[row + n_multi - n_alt:] = np.vstack(got)[:, warmup:]
        keep[at:at + end - start - warmup] = np.arange(start + warmup, end)

    _run_blocks(fill, kept_rows)
    if n_multi:  # rows an auxiliary input does not cover yet (see features.multi_input)
        covered = ~np.isnan(values[len(columns) - n_multi:]).any(axis=0)
        keep, values = keep[covered], values[:, covered]
    data = pd.DataFrame(values.T, columns=columns, copy=False)
    data.insert(0, "timestamp", frame["timestamp"].array.take(keep))
    data.insert(0, "symbol", frame["symbol"].array.take(keep))
    return data


def _run_blocks(fill, kept_rows: np.ndarray) -> None:
    """Run ``fill`` on every block; on two threads for large inputs. TA-Lib, numpy and pandas'
    rolling kernels release the GIL, so two threads use both cores of the machines we run on;
    small inputs (serving: a few symbols x 300 bars) stay on the calling thread."""
    order = [int(i) for i in np.argsort(-kept_rows, kind="stable")]  # largest first: balanced threads
    if len(order) < 2 or int(kept_rows.sum()) < _PARALLEL_MIN_ROWS:
        for i in order:
            fill(i)
        return
    with ThreadPoolExecutor(max_workers=_THREADS) as pool:
        for _ in pool.map(fill, order):  # re-raises the first block's exception
            pass


def _candle_block(bar: dict[str, np.ndarray], params: FeatureParams, out: np.ndarray, warmup: int) -> None:
    """One symbol's candle-only features written into ``out`` (rows = ``_candle_columns``),
    dropping the first ``warmup`` bars: ``candle_panel`` on a panel of one symbol."""
    candle_panel({c: a[None, :] for c, a in bar.items()}, params, out[:, None, :], warmup)


def candle_panel(bar: dict[str, np.ndarray], params: FeatureParams, out: np.ndarray, keep_from: int) -> None:
    """The candle-only features of a PANEL of symbols, written into ``out``.

    ``bar``: ``open, high, low, close, volume`` as ``(symbols, bars)`` float64 arrays, one row per
    symbol, every row that symbol's own consecutive candles (the panel has one length: callers
    group symbols by window length). ``out``: ``(len(_candle_columns), symbols, bars - keep_from)``,
    the values of bars ``keep_from..`` (``keep_from = warmup`` gives ``compute_features``' rows).

    Why a panel: the serving path computes ~566 short windows at once, and per-symbol pandas
    rolling calls cost ~50 us of overhead each - more than the arithmetic. Every formula here is
    element-wise along a row or a per-row kernel, so a row's values do not depend on the other
    rows: TA-Lib (1-D only) is called row by row; a rolling statistic is pandas' rolling kernel
    run on each column of a ``(bars, symbols)`` frame, the same kernel a Series uses, so a panel
    row equals the one-symbol computation bit for bit (``tests/features/test_panel.py``).
    """
    open_, close, high, low, volume = bar["open"], bar["close"], bar["high"], bar["low"], bar["volume"]
    rows = iter(out)

    def put(values: np.ndarray) -> None:
        next(rows)[:] = values[:, keep_from:]

    for p in params.rsi:
        put(_talib_rows(talib.RSI, close, timeperiod=p))
    for p in params.ema:
        put(_talib_rows(talib.EMA, close, timeperiod=p) / close - 1.0)
    for p in params.sma:
        put(_talib_rows(talib.SMA, close, timeperiod=p) / close - 1.0)
    fast, slow, signal = params.macd
    macd, macd_signal, macd_hist = _talib_rows(talib.MACD, close, fastperiod=fast, slowperiod=slow,
                                               signalperiod=signal)
    put(macd / close)
    put(macd_signal / close)
    put(macd_hist / close)
    bb_period, bb_k = params.bbands
    upper, middle, lower = _talib_rows(talib.BBANDS, close, timeperiod=bb_period, nbdevup=bb_k, nbdevdn=bb_k,
                                       matype=0)
    put(upper / close - 1.0)
    put(lower / close - 1.0)
    put((upper - lower) / middle)
    for p in params.atr:
        put(_talib_rows(talib.ATR, high, low, close, timeperiod=p) / close)

    log_close = np.log(close)
    for h in params.log_return:
        put(_lagged_difference(log_close, h))
    one_bar = _lagged_difference(log_close, 1)
    for w in params.realised_vol:
        put(np.sqrt(_rolling(one_bar, w, "var")))
    for w in params.volume_z:
        put(_trailing_zscore(volume, w))
    for p in params.adx:
        put(_talib_rows(talib.ADX, high, low, close, timeperiod=p))
    stoch_k, stoch_d, stoch_s = params.stoch
    slow_k, slow_d = _talib_rows(talib.STOCH, high, low, close, fastk_period=stoch_k, slowk_period=stoch_s,
                                 slowk_matype=0, slowd_period=stoch_d, slowd_matype=0)
    put(slow_k)
    put(slow_d)
    if params.obv_z:
        obv = _talib_rows(talib.OBV, close, volume)
        obv_step = _lagged_difference(obv, 1)
        for w in params.obv_z:
            step_std = _rolling(obv_step, w, "std")
            varies = step_std > 1e-9 * _rolling(np.abs(obv_step), w, "mean")
            change = _lagged_difference(obv, w)
            z = np.where(varies, change / (math.sqrt(w) * np.where(varies, step_std, 1.0)), 0.0)
            z[np.isnan(step_std)] = np.nan
            put(z)
    if params.vwap_dist:
        price_volume = (high + low + close) / 3.0 * volume
        for w in params.vwap_dist:
            traded = _rolling(volume, w, "sum")
            vwap = _rolling(price_volume, w, "sum") / np.where(traded > 0, traded, np.nan)
            put(np.where(traded > 0, close / vwap - 1.0, np.where(np.isnan(traded), np.nan, 0.0)))
    if params.candle_shape:
        span = high - low
        flat = span <= 0
        safe = np.where(flat, 1.0, span)
        put(np.where(flat, 0.0, (close - open_) / safe))
        put(np.where(flat, 0.0, (high - np.maximum(open_, close)) / safe))
        put(np.where(flat, 0.0, (np.minimum(open_, close) - low) / safe))
        put(np.log(high / low))


def _talib_rows(fn, *inputs: np.ndarray, **kwargs):
    """``fn`` (a 1-D TA-Lib function) on each row of the ``(symbols, bars)`` inputs: an array of
    that shape, or a tuple of them for a function with several outputs."""
    if len(inputs[0]) == 1:  # the one-symbol path: no copies
        result = fn(*(x[0] for x in inputs), **kwargs)
        return tuple(r[None, :] for r in result) if isinstance(result, tuple) else result[None, :]
    results = [fn(*(x[i] for x in inputs), **kwargs) for i in range(len(inputs[0]))]
    if isinstance(results[0], tuple):
        return tuple(np.vstack(part) for part in zip(*results))
    return np.vstack(results)


def _rolling(x: np.ndarray, window: int, stat: str) -> np.ndarray:
    """pandas' rolling ``stat`` (mean, sum, var, std) over the bars of each row of a
    ``(symbols, bars)`` array. One row goes through a Series (a frame costs ~40% more per call on
    the one-symbol path training takes); both run the same kernel on each row."""
    if len(x) == 1:
        return getattr(pd.Series(x[0]).rolling(window), stat)().to_numpy()[None, :]
    return getattr(pd.DataFrame(x.T, copy=False).rolling(window), stat)().to_numpy().T


def _lagged_difference(x: np.ndarray, lag: int) -> np.ndarray:
    """``x_t - x_{t-lag}`` along the last axis (NaN for the first ``lag`` bars)."""
    out = np.full_like(x, np.nan)
    if lag < x.shape[-1]:
        out[..., lag:] = x[..., lag:] - x[..., :-lag]
    return out


def _trailing_zscore(x: np.ndarray, window: int) -> np.ndarray:
    """z-score of each value within its trailing window (ddof=1), per row of a ``(symbols, bars)``
    array; 0 for a constant window.
    "Constant" allows rounding noise (std <= 1e-9 x |mean|): 24 volumes of 0.1 have a
    computed std of ~1e-17, and dividing rounding noise by rounding noise would give an
    arbitrary z."""
    mean = _rolling(x, window, "mean")
    std = _rolling(x, window, "std")
    varies = std > 1e-9 * np.abs(mean)
    z = np.where(varies, (x - mean) / np.where(varies, std, 1.0), 0.0)
    z[np.isnan(std)] = np.nan
    return z


def _bar_ms(open_ms: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> int:
    """The candles' bar duration: the smallest step between consecutive bars of a symbol
    (gaps only lengthen steps). DataError when symbols disagree (mixed timeframes)."""
    steps = {int(np.diff(open_ms[s:e]).min()) for s, e in zip(starts, ends) if e - s >= 2}
    if len(steps) != 1:
        raise DataError(f"candles mix bar sizes (smallest steps {sorted(steps)} ms across symbols); "
                        f"compute features on one timeframe at a time")
    return steps.pop()


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
