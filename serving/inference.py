"""The request path of ``/signals`` and ``/predict``, free of HTTP and of the registry.

Steps of ``/signals`` (each refusal is a ``RequestRejected`` with an HTTP status
and one line saying what to do):

1. ``parse_as_of`` / ``check_symbols`` - validate the request;
2. ``select_windows`` - per symbol the last ``bars`` candles with open time
   <= as_of, refusing unknown symbols, an as_of before the data, too little
   history for the feature warm-up, and stale candles;
3. ``compute_signals`` - ONE ``features.compute.compute_features`` call for all
   symbols (the function training used), the row of the last bar per symbol,
   ONE batched ``predict``, and ``executor.signals.action_from_probability``.

Time convention (same as the Signal contract): ``as_of`` selects the last bar
whose OPEN time is <= as_of; that bar's close must already be in the lake. With
``as_of = null`` the reference time is the newest candle over all
symbols of the timeframe in the whole lake, so staleness then means "this symbol
lags the lake"; a live caller passes the wall-clock bar time so that a stalled
collector (all symbols behind) is refused too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from qt.config import SignalParams
from qt.errors import UserError
from serving.candles import CandleCache, UnknownSymbol
from serving.champion import LoadedModel


class RequestRejected(UserError):
    """A request the service refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def parse_as_of(raw: str | None) -> pd.Timestamp | None:
    """ISO-8601 time -> UTC Timestamp (naive = UTC); None = latest bar in the lake."""
    if raw is None:
        return None
    hint = "use an ISO-8601 time such as 2023-05-01T10:00:00Z, or null for the latest bar"
    try:
        ts = pd.Timestamp(raw.strip())
    except (ValueError, TypeError, OverflowError):
        raise RequestRejected(400, f"as_of {raw!r} is not a time; {hint}") from None
    if ts is pd.NaT or pd.isna(ts):
        raise RequestRejected(400, f"as_of {raw!r} is not a time; {hint}")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def check_symbols(symbols: Sequence[str]) -> list[str]:
    """Non-empty list of distinct ccxt symbols (``BASE/QUOTE`` or ``BASE/QUOTE:SETTLE``)."""
    if len(symbols) == 0:
        raise RequestRejected(400, "symbols is empty; list at least one symbol, e.g. [\"BTC/USDT\"]")
    seen: set[str] = set()
    for sym in symbols:
        if "/" not in sym or sym.strip() != sym or not sym:
            raise RequestRejected(400, f"symbol {sym!r} is not a ccxt symbol; write it as BASE/QUOTE, "
                                       f"e.g. BTC/USDT")
        if sym in seen:
            raise RequestRejected(400, f"symbol {sym!r} is listed twice; list each symbol once")
        seen.add(sym)
    return list(symbols)


def select_windows(cache: CandleCache, symbols: Sequence[str], as_of: pd.Timestamp | None, bars: int,
                   warmup_bars: int, timeframe_ms: int, max_staleness_bars: int,
                   ) -> tuple[dict[str, pd.DataFrame], pd.Timestamp]:
    """Per symbol the candles the features of the last bar <= as_of need; and the reference time.

    ``bars`` must exceed ``warmup_bars`` (the caller reads ``max(history_bars, warmup+1)``).
    """
    try:
        series = {sym: cache.get(sym) for sym in symbols}
    except UnknownSymbol as exc:
        raise RequestRejected(404, str(exc)) from None
    if as_of is None:
        ref_ms = cache.latest_open_ms()
        if ref_ms is None:
            raise RequestRejected(422, "the candle lake is empty; collect candles first")
    else:
        ref_ms = int(as_of.value // 1_000_000)
    ref = pd.Timestamp(ref_ms, unit="ms", tz="UTC")
    windows: dict[str, pd.DataFrame] = {}
    for sym, s in series.items():
        window = s.window_before(ref_ms, bars)
        if window.empty:
            first = _iso(pd.Timestamp(int(s.open_ms[0]), unit="ms", tz="UTC")) if len(s.open_ms) else "none"
            raise RequestRejected(422, f"{sym}: as_of {_iso(ref)} is before the first candle ({first}); "
                                       f"ask for a later time")
        last_ms = int(s.open_ms[np.searchsorted(s.open_ms, ref_ms, side="right") - 1])
        lag_bars = (ref_ms - last_ms) / timeframe_ms
        if lag_bars > max_staleness_bars:
            raise RequestRejected(422, f"{sym}: candles are stale: the last one opened "
                                       f"{_iso(pd.Timestamp(last_ms, unit='ms', tz='UTC'))}, {lag_bars:g} bars "
                                       f"before as_of {_iso(ref)} (limit {max_staleness_bars}); "
                                       f"collect fresh candles before asking for signals")
        if len(window) <= warmup_bars:
            raise RequestRejected(422, f"{sym}: only {len(window)} candles at or before {_iso(ref)}; the "
                                       f"features need more than {warmup_bars} (warm-up); ask for a later as_of")
        windows[sym] = window
    return windows, ref


def compute_signals(windows: Mapping[str, pd.DataFrame], model: LoadedModel,
                    signal_params: SignalParams) -> tuple[list[dict], np.ndarray]:
    """One signal per symbol (request order) from the features of each window's last bar.

    Returns the signal dicts and the prob_up array (for the metrics histogram).
    """
    from executor.signals import action_from_probability
    from features.compute import compute_features

    candles = pd.concat(list(windows.values()), ignore_index=True)
    feats = compute_features(candles, model.feature_params)
    last = feats.groupby("symbol", sort=False).tail(1).set_index("symbol")
    symbols = list(windows)
    for sym in symbols:
        want = windows[sym]["timestamp"].iloc[-1]
        if sym not in last.index or last.at[sym, "timestamp"] != want:
            raise RequestRejected(422, f"{sym}: no feature row for the bar {_iso(want)} "
                                       f"(too little history before it); ask for a later as_of")
    rows = last.loc[symbols]
    pred = model.predict(rows.loc[:, list(model.feature_columns)].reset_index(drop=True))
    prob = pred["prob_up"].to_numpy()
    out = []
    for i, sym in enumerate(symbols):
        p = float(prob[i])
        out.append({
            "symbol": sym,
            "action": action_from_probability(p, signal_params),
            "confidence": p,
            "expected_return": float(pred["expected_return"].iat[i]),
            "model_version": model.version,
            "feature_timestamp": _iso(rows["timestamp"].iat[i]),
        })
    return out, prob


def parse_predict_rows(rows: Sequence[Mapping[str, float]], feature_columns: Sequence[str]) -> pd.DataFrame:
    """``/predict`` rows -> model input frame (exactly ``feature_columns``, finite floats)."""
    if len(rows) == 0:
        raise RequestRejected(400, "rows is empty; send at least one row of feature values")
    want = list(feature_columns)
    for i, row in enumerate(rows):
        missing = [c for c in want if c not in row]
        extra = sorted(set(row) - set(want))
        if missing or extra:
            raise RequestRejected(400, f"row {i}: missing features {missing}, unexpected {extra}; "
                                       f"send exactly {want}")
        bad = [c for c in want if not math.isfinite(row[c])]
        if bad:
            raise RequestRejected(400, f"row {i}: non-finite values for {bad}; send finite numbers")
    return pd.DataFrame([[float(r[c]) for c in want] for r in rows], columns=want, dtype="float64")


def _iso(ts: pd.Timestamp) -> str:
    ts = pd.Timestamp(ts)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")
