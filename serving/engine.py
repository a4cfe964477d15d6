"""The ``/signals`` request path over the lake, free of HTTP: what the service runs per request.

``SignalEngine.signals(model, symbols, as_of)`` validates the request, finds each symbol's
window in the cached lake (``serving.inference.plan_windows``), takes the model input row of
the window's last bar from ``FeatureRowCache`` or computes it with the one feature code path
(``serving.inference.latest_feature_rows``: ``compute_features`` + the return window), makes
ONE batched model call and returns the signals, each with the ATR of its bar (``atr_period``:
``risk.atr_period``; ``features.atr``), which the row cache keeps beside the row.

On a new bar every row misses; for a candle-only feature set the missing rows are computed all
symbols at once (``serving.newbar.panel_rows``: the same formulas as ``compute_features``, bit for
bit), and any request that path cannot answer exactly goes to ``latest_feature_rows``.

The BentoML service calls it inside its request handler; ``bench.serving`` calls the very same
object in process, so the ratio HTTP / in-process measures the HTTP layer alone.

Why a row cache is correct: a row is a pure function of the window's candles (rows
``[start, end)`` of the symbol's lake data as read), the model's feature definition (feature
params, return window, column order) and, for the multi-input families, the funding history and
reference candles. The key holds each of them: the lake directory's generation (changes on every
write: a new candle, a repair), the window bounds (a moved ``as_of`` moves ``end``), the model's
feature definition and the generations of the auxiliary inputs. The executor asks for the whole
universe once per bar, so after the first request of a bar every symbol is a hit.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from qt.config import FeatureParams, RiskParams, ServingParams, SignalParams
from serving.alt_inputs import AltCache
from serving.candles import CandleCache, FundingCache, refresh_candles
from serving.champion import LoadedModel
from serving.inference import (WindowSpan, check_symbols, iso_utc, latest_feature_rows, min_history_bars,
                               parse_as_of, plan_windows, select_inputs, select_other_venue, signal_dicts)
from serving.newbar import panel_rows


@dataclass(frozen=True)
class FeatureRow:
    """One symbol's model input at one bar: the values in the model's column order."""

    feature_timestamp: str  # ISO open time of the bar
    values: np.ndarray  # float64, finite, len(model.feature_columns)
    atr: float = float("nan")  # atr_{atr_period} of the bar (NaN: no ATR asked for, or still warming up)


class FeatureRowCache:
    """The last served row per symbol, valid while its key is unchanged (see the module docstring).

    One entry per symbol (the executor moves forward bar by bar; a request for another bar
    replaces it), so memory is bounded by the universe, not by the requests.
    """

    def __init__(self) -> None:
        self._rows: dict[str, tuple[tuple, FeatureRow]] = {}
        self._lock = threading.Lock()

    def get(self, symbol: str, key: tuple) -> FeatureRow | None:
        hit = self._rows.get(symbol)
        return hit[1] if hit is not None and hit[0] == key else None

    def put(self, symbol: str, key: tuple, row: FeatureRow) -> None:
        with self._lock:
            self._rows[symbol] = (key, row)


class RowsNotCached(Exception):
    """``signals(..., compute=False)`` met a symbol whose input row is not cached: the answer needs
    the feature computation, and the caller chooses where it runs (the service moves it off its
    event loop, ``serving.service``)."""


class SignalEngine:
    """Signals from the lake for any loaded model; thread-safe (the caches lock their own maps)."""

    def __init__(self, lake: Path, serving: ServingParams, signal: SignalParams,
                 atr_period: int | None = RiskParams().atr_period, bybit_lake: Path | None = None):
        """``atr_period``: ``risk.atr_period``, the ATR each signal carries; None: signals without ``atr``.
        ``bybit_lake``: the lake holding Bybit's series (cross-venue features); default ``lake``."""
        self.lake = Path(lake)
        self.bybit_lake = self.lake if bybit_lake is None else Path(bybit_lake)
        self._bybit_candles: dict[str, CandleCache] = {}
        self._bybit_funding = FundingCache(self.bybit_lake, venue="bybit")
        self._alt = AltCache(self.lake)  # the alt families' series (lake's alt/)
        self.serving = serving
        self.signal = signal
        self.atr_period = atr_period
        self.rows = FeatureRowCache()
        self._candles: dict[str, CandleCache] = {}
        self._funding = FundingCache(self.lake)
        self._warmups: dict[str, int] = {}
        self._warmups_by_id: dict[int, tuple[FeatureParams, int]] = {}
        self._atr_warmups: dict[int, tuple[FeatureParams, int]] = {}
        self._universe: tuple[str, tuple[str, ...]] | None = None

    def refresh_candles(self) -> int:
        """Re-read the candle files of the last batch's symbols that the collector has rewritten
        since (``serving.candles.refresh_candles``); the number re-read. The service calls it in
        the background (``serving.refresher``) so that the first batch after a new bar finds the
        candles read: re-reading 566 files costs ~1.4 s, ten times the rows' computation. A
        request still re-reads whatever the refresh has not reached yet: never a stale candle."""
        universe = self._universe
        if universe is None:
            return 0
        timeframe, symbols = universe
        return refresh_candles(self.candles(timeframe), list(symbols))

    def candles(self, timeframe: str) -> CandleCache:
        cache = self._candles.get(timeframe)
        if cache is None:
            cache = self._candles.setdefault(timeframe, CandleCache(self.lake, timeframe))
        return cache

    def bybit_candles(self, timeframe: str) -> CandleCache:
        cache = self._bybit_candles.get(timeframe)
        if cache is None:
            cache = self._bybit_candles.setdefault(timeframe, CandleCache(self.bybit_lake, timeframe, venue="bybit"))
        return cache

    def signals(self, model: LoadedModel, symbols: list[str], as_of: str | None,
                compute: bool = True) -> tuple[list[dict], np.ndarray]:
        """One signal per symbol (request order) and the prob_up array; ``RequestRejected`` on bad input.

        ``compute=False``: answer only from cached rows, else raise ``RowsNotCached`` (after the
        request was validated: a bad request is refused either way)."""
        from qt.timeframes import timeframe_ms

        wanted = check_symbols(symbols)
        when = parse_as_of(as_of)
        if len(wanted) > 1:
            self._universe = (model.timeframe, tuple(wanted))  # what refresh_candles keeps read
        warmup = self._warmup(model.feature_params)
        cache = self.candles(model.timeframe)
        need = min_history_bars(warmup, model.sequence_length)
        # read enough candles for the ATR too (refusing still depends on the model's own need only)
        atr_need = 0 if self.atr_period is None else self._atr_warmup(model.feature_params) + 1
        spans, _ = plan_windows(cache, wanted, when, bars=max(self.serving.history_bars, need, atr_need),
                                warmup_bars=warmup,
                                timeframe_ms=timeframe_ms(model.timeframe),
                                max_staleness_bars=self.serving.max_staleness_bars,
                                sequence_length=model.sequence_length)
        rows = self.feature_rows(model, spans, compute)
        pred = model.predict_values(np.vstack([r.values for r in rows]))
        prob = pred[:, 0]
        atr = np.array([r.atr for r in rows]) if self.atr_period is not None else None
        return signal_dicts(wanted, prob, pred[:, 1], [r.feature_timestamp for r in rows], model.version,
                            self.signal, atr), prob

    def feature_rows(self, model: LoadedModel, spans: dict[str, WindowSpan], compute: bool = True) -> list[FeatureRow]:
        """The input row of each window's last bar (spans' order): cached, or computed for the
        missing symbols in ONE ``latest_feature_rows`` call (422 when a row is incomplete);
        ``RowsNotCached`` instead of computing when ``compute`` is False."""
        from features.alt_features import uses_alt
        from features.multi_input import uses_funding, uses_other_venue, uses_reference

        model_key = (model.feature_params, model.sequence_length, model.sequence_exog, model.feature_columns,
                     self.atr_period)
        fp = model.feature_params
        inputs = uses_funding(fp) or uses_reference(fp) or uses_other_venue(fp) or uses_alt(fp)
        alt = self._alt.generation(fp) if uses_alt(fp) else ()  # once per request: the series are market-wide
        keys = {sym: (model_key, span.candles.generation, span.start, span.end,
                      self._inputs_key(model, sym) if inputs else (), alt)
                for sym, span in spans.items()}
        found = {sym: self.rows.get(sym, keys[sym]) for sym in spans}
        missing = [sym for sym, row in found.items() if row is None]
        if missing and not compute:
            raise RowsNotCached(f"{len(missing)} of {len(spans)} rows to compute")
        if missing:
            computed = self.compute_rows(model, {sym: spans[sym] for sym in missing}, inputs)
            for sym, row in computed.items():
                self.rows.put(sym, keys[sym], row)
                found[sym] = row
        return [found[sym] for sym in spans]

    def compute_rows(self, model: LoadedModel, spans: dict[str, WindowSpan], inputs: bool) -> dict[str, FeatureRow]:
        """The input rows of ``spans`` (all cache misses): all symbols at once by
        ``serving.newbar.panel_rows`` (candle-only models), else - or when that path cannot answer
        exactly - ONE ``latest_feature_rows`` call (which refuses with 422 what cannot be answered)."""
        if not inputs:
            fast = panel_rows(spans, model, self.atr_period)
            if fast is not None:
                values, atr = fast
                return {sym: FeatureRow(_iso_ms(span.last_open_ms), values[i].copy(), float(atr[i]))
                        for i, (sym, span) in enumerate(spans.items())}
        windows = {sym: span.frame() for sym, span in spans.items()}
        funding, reference = select_inputs(self.candles(model.timeframe), self._funding, windows,
                                           model.feature_params)
        other = select_other_venue(self.bybit_candles(model.timeframe), self._bybit_funding, windows,
                                   model.feature_params)
        alt = self._alt.select(model.feature_params)
        computed = latest_feature_rows(windows, model, funding, reference, self.atr_period, other, alt)
        values = computed.loc[:, list(model.feature_columns)].to_numpy(dtype=np.float64)
        atr = computed["atr"].to_numpy(dtype=np.float64) if self.atr_period is not None else None
        return {sym: FeatureRow(iso_utc(ts), values[i].copy(), float("nan") if atr is None else float(atr[i]))
                for i, (sym, ts) in enumerate(zip(spans, computed["timestamp"]))}

    def _inputs_key(self, model: LoadedModel, symbol: str) -> tuple:
        """Generations of the funding history, reference candles and Bybit series ``symbol``'s row
        reads (called only for a model using the funding, basis, cross-asset or cross-venue families)."""
        from features.multi_input import needs_other_venue, required_inputs

        needs_funding, references = required_inputs(symbol, model.feature_params)
        cache = self.candles(model.timeframe)
        refs = []
        for ref in references:
            try:
                refs.append((ref, cache.get(ref).generation))
            except LookupError:
                refs.append((ref, None))  # select_inputs refuses it with 422 when computing
        bybit = None
        if needs_other_venue(symbol, model.feature_params):
            try:
                bybit = (self.bybit_candles(model.timeframe).get(symbol).generation,
                         self._bybit_funding.generation(symbol))
            except LookupError:
                bybit = ("absent",)  # select_other_venue refuses it with 422 when computing
        return (self._funding.generation(symbol) if needs_funding else None, tuple(refs), bybit)

    def _atr_warmup(self, params: FeatureParams) -> int:
        """``features.atr.atr_warmup_bars(params, atr_period)``, cached like ``_warmup``."""
        from features.atr import atr_warmup_bars

        hit = self._atr_warmups.get(id(params))
        if hit is not None and hit[0] is params:
            return hit[1]
        if len(self._atr_warmups) > 16:
            self._atr_warmups.clear()
        value = atr_warmup_bars(params, self.atr_period)
        self._atr_warmups[id(params)] = (params, value)
        return value

    def _warmup(self, params: FeatureParams) -> int:
        """``warmup_bars(params)``, cached by the params object (a model keeps one for its
        lifetime) and then by their hash: hashing them costs ~0.1 ms, a request's budget."""
        from features.compute import feature_set_hash, warmup_bars

        hit = self._warmups_by_id.get(id(params))
        if hit is not None and hit[0] is params:
            return hit[1]
        key = feature_set_hash(params)  # FeatureParams holds lists: not hashable itself
        if key not in self._warmups:
            self._warmups[key] = warmup_bars(params)
        if len(self._warmups_by_id) > 16:  # models come and go: keep the map small
            self._warmups_by_id.clear()
        self._warmups_by_id[id(params)] = (params, self._warmups[key])  # holds params: the id stays theirs
        return self._warmups[key]


@functools.lru_cache(maxsize=4096)
def _iso_ms(open_ms: int) -> str:
    """``iso_utc`` of an open time in ms (a batch shares one bar: cached)."""
    return iso_utc(pd.Timestamp(open_ms, unit="ms", tz="UTC"))
