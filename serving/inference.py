"""The request path of ``/signals`` and ``/predict``, free of HTTP and of the registry.

Steps of ``/signals`` (each refusal is a ``RequestRejected`` with an HTTP status
and one line saying what to do):

1. ``parse_as_of`` / ``check_symbols`` - validate the request;
2. ``select_windows`` - per symbol the last ``bars`` candles with open time
   <= as_of, refusing unknown symbols, an as_of before the data, too little
   history for the feature warm-up (plus the model's return window), and stale candles;
   ``select_inputs`` - the funding history and reference candles the model's
   multi-input features need, from the same lake and cut by the same functions as
   ``features.materialise`` uses (a missing one is refused with 422); ``select_other_venue``
   - Bybit's candles and funding for the cross-venue features, likewise;
3. ``compute_signals`` - ONE ``features.compute.compute_features`` call for all
   symbols (the function training used), the return windows of the model's
   ``sequence_length`` (``features.sequence.add_return_windows``, as training adds them),
   the row of the last bar per symbol (``latest_feature_rows``), ONE batched
   ``predict``, and ``executor.signals.action_from_probability``.

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
from dataclasses import dataclass

import numpy as np
import pandas as pd

from qt.config import FeatureParams, SignalParams
from qt.errors import UserError
from serving.candles import CandleCache, FundingCache, SymbolCandles, UnknownSymbol
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


def min_history_bars(warmup_bars: int, sequence_length: int = 0) -> int:
    """Candles a symbol needs for one complete model input row at its last bar: the features
    drop the first ``warmup_bars`` rows, and a return window of ``sequence_length`` bars needs
    that many feature rows (the row itself included)."""
    return int(warmup_bars) + max(1, int(sequence_length))


@dataclass(frozen=True)
class WindowSpan:
    """Rows ``[start, end)`` of one symbol's cached candles: the window its last bar's features need.

    Only the bounds: the frame is sliced (``frame()``) when features must actually be computed.
    """

    candles: SymbolCandles
    start: int
    end: int

    def frame(self) -> pd.DataFrame:
        return self.candles.frame.iloc[self.start:self.end]

    @property
    def last_open_ms(self) -> int:
        return int(self.candles.open_ms[self.end - 1])


def plan_windows(cache: CandleCache, symbols: Sequence[str], as_of: pd.Timestamp | None, bars: int,
                 warmup_bars: int, timeframe_ms: int, max_staleness_bars: int, sequence_length: int = 0,
                 ) -> tuple[dict[str, WindowSpan], int]:
    """Per symbol the bounds of the last ``bars`` candles with open time <= as_of, and the reference
    time (ms). Refuses, in this order per symbol: an unknown symbol (404, checked for all symbols
    first), an as_of before the data, stale candles, too little history (422).

    ``bars`` must be at least ``min_history_bars(warmup_bars, sequence_length)`` (the caller
    reads the larger of that and ``serving.history_bars``).
    """
    need = min_history_bars(warmup_bars, sequence_length)
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
    spans: dict[str, WindowSpan] = {}
    for sym, s in series.items():
        end = int(np.searchsorted(s.open_ms, ref_ms, side="right"))
        if end == 0:
            ref = pd.Timestamp(ref_ms, unit="ms", tz="UTC")
            first = iso_utc(pd.Timestamp(int(s.open_ms[0]), unit="ms", tz="UTC")) if len(s.open_ms) else "none"
            raise RequestRejected(422, f"{sym}: as_of {iso_utc(ref)} is before the first candle ({first}); "
                                       f"ask for a later time")
        last_ms = int(s.open_ms[end - 1])
        lag_bars = (ref_ms - last_ms) / timeframe_ms
        if lag_bars > max_staleness_bars:
            ref = pd.Timestamp(ref_ms, unit="ms", tz="UTC")
            raise RequestRejected(422, f"{sym}: candles are stale: the last one opened "
                                       f"{iso_utc(pd.Timestamp(last_ms, unit='ms', tz='UTC'))}, {lag_bars:g} bars "
                                       f"before as_of {iso_utc(ref)} (limit {max_staleness_bars}); "
                                       f"collect fresh candles before asking for signals")
        start = max(0, end - bars)
        if end - start < need:
            ref = pd.Timestamp(ref_ms, unit="ms", tz="UTC")
            what = f"warm-up {warmup_bars}" + (f" + return window {sequence_length}" if sequence_length else "")
            raise RequestRejected(422, f"{sym}: only {end - start} candles at or before {iso_utc(ref)}; the "
                                       f"features need {need} ({what}); ask for a later as_of")
        spans[sym] = WindowSpan(s, start, end)
    return spans, ref_ms


def select_windows(cache: CandleCache, symbols: Sequence[str], as_of: pd.Timestamp | None, bars: int,
                   warmup_bars: int, timeframe_ms: int, max_staleness_bars: int, sequence_length: int = 0,
                   ) -> tuple[dict[str, pd.DataFrame], pd.Timestamp]:
    """``plan_windows`` with each window sliced: per symbol the candles of the window, and the reference time."""
    spans, ref_ms = plan_windows(cache, symbols, as_of, bars, warmup_bars, timeframe_ms, max_staleness_bars,
                                 sequence_length)
    return {sym: span.frame() for sym, span in spans.items()}, pd.Timestamp(ref_ms, unit="ms", tz="UTC")


def select_inputs(candles: CandleCache, funding: FundingCache, windows: Mapping[str, pd.DataFrame],
                  params: FeatureParams) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """(funding, reference candles) for ``compute_features`` over ``windows`` (None when no enabled
    family needs one), read as ``features.materialise`` reads them: each perpetual's whole funding
    history, and the reference candles the bars of the windows align to (``reference_window``).
    A model needing an input the lake lacks is refused with 422 naming what to collect."""
    from features.input_frames import no_funding, no_reference
    from features.multi_input import reference_window, required_inputs, uses_funding, uses_reference

    if not (uses_funding(params) or uses_reference(params)):
        return None, None  # the default, candle-only feature set
    fundings, spans = [], {}
    for sym, window in windows.items():
        needs_funding, references = required_inputs(sym, params)
        if needs_funding:
            events = funding.get(sym)
            if events.empty:
                raise RequestRejected(422, f"{sym}: the model's funding features need its funding history, "
                                           f"absent from the lake; collect it (collect.funding: true)")
            fundings.append(events)
        first, last = window["timestamp"].iat[0], window["timestamp"].iat[-1]
        for ref in references:
            lo, hi = spans.get(ref, (first, last))
            spans[ref] = (min(lo, first), max(hi, last))
    parts = []
    for ref, (first, last) in spans.items():
        try:
            parts.append(reference_window(candles.get(ref).frame, first, last))
        except UnknownSymbol:
            raise RequestRejected(422, f"the model's basis/cross-asset features need {ref} {candles.timeframe} "
                                       f"candles, absent from the lake; collect {ref}") from None
    funding_frame = (pd.concat(fundings, ignore_index=True) if fundings else no_funding()) \
        if uses_funding(params) else None
    reference_frame = (pd.concat(parts, ignore_index=True) if parts else no_reference()) \
        if uses_reference(params) else None
    return funding_frame, reference_frame


def select_other_venue(candles: CandleCache, funding: FundingCache, windows: Mapping[str, pd.DataFrame],
                       params: FeatureParams):
    """Bybit's series for ``compute_features(..., other_venue=)`` over ``windows`` (None when the
    cross-venue family is off), cut as ``features.materialise`` cuts them: the Bybit candles the
    windows' bars align to (``reference_window``) and the whole Bybit funding history.
    ``candles`` / ``funding``: caches of the Bybit venue. A missing series is refused with 422."""
    from features.cross_venue import COLLECT_HINT, OtherVenue, no_other_venue
    from features.multi_input import needs_other_venue, reference_window, uses_other_venue

    if not uses_other_venue(params):
        return None
    bars, events = [], []
    for sym, window in windows.items():
        if not needs_other_venue(sym, params):
            continue
        try:
            frame = candles.get(sym).frame
        except UnknownSymbol:
            raise RequestRejected(422, f"{sym}: the model's cross-venue features need its Bybit {candles.timeframe} "
                                       f"candles, absent from the lake; {COLLECT_HINT}") from None
        history = funding.get(sym)
        if history.empty:
            raise RequestRejected(422, f"{sym}: the model's cross-venue features need its Bybit funding history, "
                                       f"absent from the lake; {COLLECT_HINT}")
        bars.append(reference_window(frame, window["timestamp"].iat[0], window["timestamp"].iat[-1]))
        events.append(history)
    if not bars:
        return no_other_venue()
    return OtherVenue(pd.concat(bars, ignore_index=True), pd.concat(events, ignore_index=True))


def latest_feature_rows(windows: Mapping[str, pd.DataFrame], model: LoadedModel,
                        funding: pd.DataFrame | None = None, reference: pd.DataFrame | None = None,
                        atr_period: int | None = None, other_venue=None, alt=None) -> pd.DataFrame:
    """The model input of each window's last bar: ``symbol``, ``timestamp`` and the model's
    feature columns, one row per symbol in request order; 422 when a row is missing or incomplete.
    With ``atr_period`` also ``atr``: ``atr_{atr_period}`` of that bar (``features.atr``; NaN
    while ATR warms up, which does not make the row incomplete).

    Features by ONE ``compute_features`` call (with the multi-input families' inputs), then the
    return windows of ``model.sequence_length`` bars (and the windows of ``model.sequence_exog``):
    the functions training and backtest use.
    Only the last row of each symbol is wanted, so the return window is built on each symbol's
    last ``sequence_length`` feature rows (the last row's window is exactly those rows), and the
    candles are concatenated in symbol order, the order ``compute_features`` works in (no re-sort).
    """
    from features.atr import ATR, features_with_atr
    from features.compute import compute_features
    from features.sequence import add_return_windows

    symbols = list(windows)
    ordered = sorted(symbols)
    parts = [windows[sym] for sym in ordered]
    empty = [sym for sym, part in zip(ordered, parts) if len(part) == 0]
    if empty:
        raise RequestRejected(422, f"{empty[0]}: no candles in its window; ask for a later as_of")
    candles = pd.concat(parts, ignore_index=True)
    # each window's last bar, read off the concatenation (566 column look-ups cost ~15 ms)
    last_bars = candles["timestamp"].array[np.cumsum([len(part) for part in parts]) - 1]
    position = {sym: i for i, sym in enumerate(ordered)}
    wanted = [last_bars[position[sym]] for sym in symbols]
    if atr_period is None:
        feats = compute_features(candles, model.feature_params, funding=funding, reference=reference,
                                 other_venue=other_venue, alt=alt)
    else:
        feats = features_with_atr(candles, model.feature_params, atr_period, funding=funding, reference=reference,
                                  other_venue=other_venue, alt=alt)
    length = int(model.sequence_length)
    tail = feats.groupby("symbol", sort=False).tail(max(1, length))
    if length:
        exog = {"exog": list(model.sequence_exog)} if model.sequence_exog else {}
        tail = add_return_windows(tail, length, **exog)
    last = tail.groupby("symbol", sort=False).tail(1).set_index("symbol").reindex(symbols)
    present = last["timestamp"].notna().to_numpy()
    for i in np.flatnonzero(~present | (last["timestamp"].to_numpy() != pd.Series(wanted).to_numpy())):
        raise RequestRejected(422, f"{symbols[i]}: no feature row for the bar {iso_utc(wanted[i])} "
                                   f"(too little history before it); ask for a later as_of")
    columns = list(model.feature_columns)
    rows = last.loc[:, ["timestamp", *columns, *([ATR] if atr_period is not None else [])]].reset_index()
    finite = np.isfinite(rows[columns].to_numpy(dtype=np.float64))
    if not finite.all():
        i = int(np.flatnonzero(~finite.all(axis=1))[0])
        undefined = [c for c, ok in zip(columns, finite[i]) if not ok]
        raise RequestRejected(422, f"{symbols[i]}: features {undefined[:3]} of the bar "
                                   f"{iso_utc(rows['timestamp'].iat[i])} are undefined (too little history before "
                                   f"it for the return window); ask for a later as_of")
    return rows


def compute_signals(windows: Mapping[str, pd.DataFrame], model: LoadedModel, signal_params: SignalParams,
                    funding: pd.DataFrame | None = None, reference: pd.DataFrame | None = None,
                    atr_period: int | None = None, other_venue=None, alt=None) -> tuple[list[dict], np.ndarray]:
    """One signal per symbol (request order) from the model input of each window's last bar.

    ``funding`` / ``reference``: from ``select_inputs`` when the model uses those families;
    ``other_venue``: from ``select_other_venue`` (the cross-venue family); ``alt``: the alt families'
    series (``serving.alt_inputs.AltCache.select``).
    ``atr_period``: each signal carries ``atr`` = ``atr_{atr_period}`` of its bar (``risk.atr_period``).
    Returns the signal dicts and the prob_up array (for the metrics histogram).
    """
    rows = latest_feature_rows(windows, model, funding, reference, atr_period, other_venue, alt)
    pred = model.predict(rows.loc[:, list(model.feature_columns)])
    prob = pred["prob_up"].to_numpy()
    stamps = [iso_utc(ts) for ts in rows["timestamp"]]
    atr = rows["atr"].to_numpy(dtype=np.float64) if atr_period is not None else None
    return signal_dicts(list(windows), prob, pred["expected_return"].to_numpy(), stamps, model.version,
                        signal_params, atr), prob


def signal_dicts(symbols: Sequence[str], prob_up: np.ndarray, expected_return: np.ndarray,
                 feature_timestamps: Sequence[str], model_version: str, signal_params: SignalParams,
                 atr: np.ndarray | None = None) -> list[dict]:
    """The Signal contract's dicts, one per symbol in order (``feature_timestamp`` already ISO).
    ``atr`` (ATR / close of each signal's bar) adds the key ``atr``: a float, or None while ATR warms up."""
    from executor.signals import action_from_probability

    out = [{"symbol": sym, "action": action_from_probability(p, signal_params), "confidence": p,
            "expected_return": e, "model_version": model_version, "feature_timestamp": ts}
           for sym, p, e, ts in zip(symbols, prob_up.tolist(), expected_return.tolist(), feature_timestamps)]
    if atr is not None:
        for signal, value in zip(out, atr.tolist()):
            signal["atr"] = value if math.isfinite(value) else None
    return out


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


def iso_utc(ts: pd.Timestamp) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` of a time (naive = UTC): the Signal contract's time format."""
    ts = pd.Timestamp(ts)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")
