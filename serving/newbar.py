"""Model input rows for a whole batch at a new bar: every symbol's window in one panel.

The first ``/signals`` request after a new bar misses the row cache for every symbol
(``serving.engine``). ``latest_feature_rows`` answers it with ``compute_features`` over the
concatenated windows plus ``features.sequence.add_return_windows`` - per-symbol pandas work that
took ~1 s for 566 symbols. ``panel_rows`` computes the same rows from the same windows with
``features.panel.last_rows`` (all symbols' indicators at once) and reads the return windows
straight off the last ``sequence_length`` feature rows: the same numbers, bit for bit
(``tests/serving/test_serving_newbar.py`` compares it with ``latest_feature_rows`` over random
cut points, window lengths and symbol sets).

It answers None - the caller then takes ``latest_feature_rows``, which computes or refuses as
before - whenever it could not give exactly that answer: a feature set with HTF blocks or
multi-input families, a model column it cannot place, a window too short, non-finite candles or
a non-finite feature (each of those is a 422 or a DataError the full path words).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from features.atr import atr_column, atr_only_params, atr_warmup_bars, single_call, with_atr
from features.compute import feature_columns
from features.panel import OHLCV, last_rows, supported
from features.sequence import window_columns
from serving.champion import LoadedModel
from serving.inference import WindowSpan


def column_sources(model_columns: Sequence[str], base_columns: Sequence[str], length: int,
                   exog: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """Where each model column comes from in the feature rows: (feature column index, rows back
    from the last row) - ``seq_<c>_k`` is column ``c`` ``k`` rows earlier (``features.sequence``),
    any other column is itself at the last row. None when a column is neither."""
    index = {c: i for i, c in enumerate(base_columns)}
    place = {c: (i, 0) for c, i in index.items()}
    if length:
        for source in ("logret_1", *exog):
            if source not in index:
                return None
            place.update({c: (index[source], k) for k, c in enumerate(window_columns(length, source))})
    try:
        pairs = [place[c] for c in model_columns]
    except KeyError:
        return None
    return np.array([p[0] for p in pairs], dtype=np.int64), np.array([p[1] for p in pairs], dtype=np.int64)


def stack_windows(spans: Sequence[WindowSpan]) -> np.ndarray:
    """``(5, symbols, bars)`` OHLCV of windows of one length (``features.panel.last_rows``' input)."""
    bars = spans[0].end - spans[0].start
    out = np.empty((len(OHLCV), len(spans), bars))
    for i, span in enumerate(spans):
        out[:, i, :] = span.candles.ohlcv[:, span.start:span.end]
    return out


def panel_rows(spans: Mapping[str, WindowSpan], model: LoadedModel,
               atr_period: int | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(values ``[symbols, model.feature_columns]``, ATR ``[symbols]``) of each window's last bar,
    in ``spans`` order (ATR NaN when ``atr_period`` is None or ATR still warms up), or None (see
    the module docstring)."""
    params = model.feature_params
    if not spans or not supported(params):
        return None
    length = int(model.sequence_length)
    carry_atr = atr_period is not None and single_call(params, atr_period)
    computed = with_atr(params, atr_period) if carry_atr else params
    base = feature_columns(computed)
    sources = column_sources(model.feature_columns, base, length, model.sequence_exog)
    if sources is None:
        return None
    columns, back = sources
    rows = max(1, length)

    names = list(spans)
    values = np.empty((len(names), len(columns)))
    atr = np.full(len(names), np.nan)
    by_length: dict[int, list[int]] = {}
    for i, sym in enumerate(names):
        by_length.setdefault(spans[sym].end - spans[sym].start, []).append(i)
    for members in by_length.values():
        ohlcv = stack_windows([spans[names[i]] for i in members])
        feats = last_rows(ohlcv, computed, rows)  # (symbols, rows, base columns)
        if feats is None:
            return None
        values[members] = feats[:, rows - 1 - back, columns]
        if atr_period is None:
            continue
        if carry_atr:
            atr[members] = feats[:, -1, base.index(atr_column(atr_period))]
        elif ohlcv.shape[2] > atr_warmup_bars(params, atr_period):
            only = atr_only_params(atr_period, params.warmup_memories)
            got = last_rows(ohlcv, only, 1)
            if got is None:
                return None
            atr[members] = got[:, -1, feature_columns(only).index(atr_column(atr_period))]
    if not np.isfinite(values).all():
        return None
    return values, atr
