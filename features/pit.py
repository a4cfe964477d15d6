"""Point-in-time checks on a feature function: pure, return human-readable violations.

* ``check_lookahead`` - principle 6: the row of bar t may not change when bars after t
  are removed. Recomputes on candles cut at random bars and demands identical values
  (NaN-aware, tolerance 1e-9 relative / 1e-12 absolute) on every row up to the cut.
* ``check_recursive`` - the declared warm-up is long enough: after it, a recursive
  indicator (EMA, RSI, ATR, MACD, ADX, HTF RSI/ATR) no longer depends on where the history started, so
  serving's last-300-bars computation equals training's full-history one.

``compute_fn`` is any ``candles -> features frame`` callable, e.g.
``functools.partial(compute_features, params=p)``. An empty list means the check passed.

Multi-input features (``features.multi_input``): pass ``funding`` and/or ``reference``; the
checks then call ``compute_fn(candles, funding=..., reference=...)``. The lookahead check
then cuts every input at one common time T (a random candle open time): candles and
reference candles opening <= T, funding events settled <= T + one bar (the close of the
cut bar, when a live run would have known them). The recursive check passes them whole
(their families are windows of the auxiliary series, not recursions on the candles).
The cross-venue family's ``other_venue`` (Bybit's candles and funding, ``features.cross_venue``)
is cut by the same rule: its candles opening <= T, its funding settled <= T + one bar.
The alt families' ``alt`` (``features.alt_join.AltInputs``) is cut to what was published strictly
before the cut bar's close T + one bar by each series' documented publication lag
(``AltInputs.cut``: from the rows' own ``timestamp``, not their stored ``available_at``), so a
series stored or joined as available earlier than its rule (on-chain of day D used on D instead
of D+1) changes a row when the future is removed, and fails the check. Its ``book`` samples (the
order-book family, ``features.book_bars``) are cut to those taken at or before that close.

``check_point_in_time`` is the policy of the pipeline's features stage: both checks on a recent
sample of every symbol, and a violation stops the run before anything is trained on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from features.compute import compute_features, warmup_bars
from features.frames import sort_candles, symbol_blocks
from qt.config import FeatureParams, Params
from qt.errors import DataError

ComputeFn = Callable[[pd.DataFrame], pd.DataFrame]

_KEYS = ["symbol", "timestamp"]
LOOKAHEAD_RTOL = 1e-9
LOOKAHEAD_ATOL = 1e-12
RECURSIVE_RTOL = 1e-6


def check_lookahead(candles: pd.DataFrame, compute_fn: ComputeFn, cuts: int = 20, seed: int = 0,
                    funding: pd.DataFrame | None = None, reference: pd.DataFrame | None = None,
                    other_venue=None, alt=None) -> list[str]:
    """Violations of "the row of bar t uses bars <= t only".

    ``cuts`` times, every symbol is cut at its own random bar (uniform over its history,
    reproducible from ``seed``) - or, with ``funding``/``reference``, all inputs at one common
    random time - and the features recomputed; each row at or before the cut must be present
    and equal to the full-history row, and no row may come after it.
    """
    frame, codes = sort_candles(candles)
    frame = frame.reset_index(drop=True)
    multi = funding is not None or reference is not None or other_venue is not None or alt is not None
    full = _call(compute_fn, frame, funding, reference, other_venue, alt)
    value_columns = _value_columns(full)
    starts, ends = symbol_blocks(codes)
    open_ms = _open_ms(frame)
    bar_ms = _bar_ms(open_ms, starts, ends) if multi else 0
    rng = np.random.default_rng(seed)
    violations: list[str] = []
    for _ in range(cuts):
        if multi:
            cut_ms = int(open_ms[rng.integers(0, len(open_ms))])
            cut_rows = np.array([s + np.searchsorted(open_ms[s:e], cut_ms, side="right") - 1
                                 for s, e in zip(starts, ends)], dtype=np.int64)
            cut_ts = {sym: pd.Timestamp(cut_ms, unit="ms", tz="UTC") for sym in frame["symbol"].to_numpy()[starts]}
            cut_funding = None if funding is None else funding[_open_ms(funding) <= cut_ms + bar_ms]
            cut_reference = None if reference is None else reference[_open_ms(reference) <= cut_ms]
            cut_other = None if other_venue is None else other_venue.cut(cut_ms, bar_ms)
            cut_alt = None if alt is None else alt.cut(cut_ms + bar_ms)
        else:
            cut_rows = np.array([rng.integers(s, e) for s, e in zip(starts, ends)], dtype=np.int64)
            cut_ts = dict(zip(frame["symbol"].to_numpy()[cut_rows], frame["timestamp"].iloc[cut_rows]))
            cut_funding = cut_reference = cut_other = cut_alt = None
        keep = np.concatenate([np.arange(s, c + 1) for s, c in zip(starts, cut_rows)])
        truncated = _call(compute_fn, frame.iloc[keep].reset_index(drop=True), cut_funding, cut_reference,
                          cut_other, cut_alt)
        expected = full[full["timestamp"] <= full["symbol"].map(cut_ts)]
        late = truncated[truncated["timestamp"] > truncated["symbol"].map(cut_ts)]
        for _, row in late.head(3).iterrows():
            violations.append(f"row {row['symbol']} {row['timestamp']} returned from candles that end at "
                              f"{cut_ts[row['symbol']]}: compute_fn invents rows after its input")
        violations += _compare(expected, truncated, value_columns, LOOKAHEAD_RTOL, None,
                               lambda sym: f"when candles end at {cut_ts[sym]}",
                               "the feature uses bars after its own timestamp (lookahead)")
    return violations


def check_recursive(candles: pd.DataFrame, compute_fn: ComputeFn, params: FeatureParams,
                    start_offsets_bars: Sequence[int] = (1, 17, 101), rtol: float = RECURSIVE_RTOL,
                    funding: pd.DataFrame | None = None, reference: pd.DataFrame | None = None,
                    other_venue=None, alt=None) -> list[str]:
    """Violations of "after ``warmup_bars(params)`` bars the start of history no longer matters".

    For each offset, every symbol's first ``offset`` candles are dropped and the features
    recomputed. Rows at least ``warmup_bars(params)`` bars into the shortened history must
    exist and agree with the full-history rows within ``rtol`` relative to
    ``|value| + median |value|`` of that feature (the median keeps zero-crossing features
    such as ``ema_12 = ema/close - 1`` from demanding an exact zero).
    """
    frame, codes = sort_candles(candles)
    frame = frame.reset_index(drop=True)
    full = _call(compute_fn, frame, funding, reference, other_venue, alt)
    value_columns = _value_columns(full)
    scale = {c: float(np.nanmedian(np.abs(full[c].to_numpy(dtype=np.float64)))) if len(full) else 0.0
             for c in value_columns}
    warmup = warmup_bars(params)
    starts, ends = symbol_blocks(codes)
    violations: list[str] = []
    for offset in start_offsets_bars:
        keep = np.concatenate([np.arange(min(s + offset, e), e) for s, e in zip(starts, ends)])
        late_candles = frame.iloc[keep].reset_index(drop=True)
        late = _call(compute_fn, late_candles, funding, reference, other_venue, alt)
        # the first bar that must already agree: `warmup` bars into the shortened history
        first_due = {}
        for s, e in zip(starts, ends):
            if s + offset + warmup < e:
                first_due[frame["symbol"].iat[s]] = frame["timestamp"].iat[s + offset + warmup]
        due = full[full["symbol"].isin(first_due.keys())]
        due = due[due["timestamp"] >= due["symbol"].map(first_due)]
        late = late[late["symbol"].isin(first_due.keys())]
        late = late[late["timestamp"] >= late["symbol"].map(first_due)]
        violations += _compare(due, late, value_columns, rtol, scale,
                               lambda sym, o=offset: f"when history starts {o} bar(s) later",
                               f"the declared warm-up of {warmup} bars is too short for this feature")
    return violations


def _call(compute_fn: ComputeFn, candles: pd.DataFrame, funding: pd.DataFrame | None,
          reference: pd.DataFrame | None, other_venue=None, alt=None) -> pd.DataFrame:
    extra = {k: v for k, v in (("funding", funding), ("reference", reference), ("other_venue", other_venue),
                               ("alt", alt)) if v is not None}
    return compute_fn(candles, **extra)


def _open_ms(frame: pd.DataFrame) -> np.ndarray:
    return frame["timestamp"].to_numpy(dtype="datetime64[ms]").view("int64")


def _bar_ms(open_ms: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> int:
    """The bar duration: the smallest step between consecutive candles of a symbol."""
    steps = [int(np.diff(open_ms[s:e]).min()) for s, e in zip(starts, ends) if e - s >= 2]
    if not steps:
        raise DataError("check_lookahead with funding/reference needs at least two candles of one symbol")
    return min(steps)


def _value_columns(features: pd.DataFrame) -> list[str]:
    return [c for c in features.columns if c not in _KEYS]


def _compare(expected: pd.DataFrame, actual: pd.DataFrame, columns: list[str], rtol: float,
             scale: dict[str, float] | None, context: Callable[[str], str], meaning: str) -> list[str]:
    """One message per (feature, symbol) naming the first differing timestamp and the count."""
    out: list[str] = []
    absent_cols = [c for c in columns if c not in actual.columns]
    if absent_cols:
        return [f"features {absent_cols} missing from the recomputed frame"]
    merged = expected[_KEYS + columns].merge(actual[_KEYS + columns], on=_KEYS, how="left",
                                             suffixes=("", "__re"), indicator=True)
    missing = merged[merged["_merge"] == "left_only"]
    for symbol, rows in missing.groupby("symbol", sort=True):
        out.append(f"{symbol}: {len(rows)} rows from {rows['timestamp'].iloc[0]} exist with full history but "
                   f"not {context(symbol)}")
    both = merged[merged["_merge"] == "both"]
    for col in columns:
        a = both[col].to_numpy(dtype=np.float64)
        b = both[f"{col}__re"].to_numpy(dtype=np.float64)
        atol = rtol * scale[col] if scale is not None else LOOKAHEAD_ATOL
        same = np.isclose(b, a, rtol=rtol, atol=atol, equal_nan=True)
        if same.all():
            continue
        bad = both.loc[~same, _KEYS].assign(full=a[~same], re=b[~same])
        for symbol, rows in bad.groupby("symbol", sort=True):
            first = rows.iloc[0]
            out.append(f"{col} of {symbol} at {first['timestamp']}: {float(first['full']):.10g} with full history "
                       f"but {float(first['re']):.10g} {context(symbol)} ({len(rows)} rows differ): {meaning}")
    return out


def check_point_in_time(candles, params: Params, bars_per_symbol: int = 3000, cuts: int = 20,
                        funding=None, reference=None, other_venue=None, alt=None) -> dict:
    """The lookahead and recursive-indicator checks on the declared feature set, as a stage step.

    Runs on each symbol's last ``bars_per_symbol`` bars (enough for the warm-up many times over,
    cheap enough for every run). A violation stops the run: no model is trained, so none can be
    promoted, on features that see the future or depend on where the history starts.
    ``funding`` / ``reference`` / ``other_venue``: the multi-input families' inputs (``read_feature_inputs``);
    ``alt``: the alt families' series (``features.materialise.read_alt_inputs``).
    """
    sample = candles.groupby("symbol", sort=False).tail(bars_per_symbol).reset_index(drop=True)

    def compute(c, **kw):
        return compute_features(c, params.features, **kw)

    lookahead = check_lookahead(sample, compute, cuts=cuts, seed=params.train.seed, funding=funding,
                                reference=reference, other_venue=other_venue, alt=alt)
    recursive = check_recursive(sample, compute, params.features, funding=funding, reference=reference,
                                other_venue=other_venue, alt=alt)
    if lookahead or recursive:
        shown = "; ".join((lookahead + recursive)[:3])
        raise DataError(f"point-in-time check failed ({len(lookahead)} lookahead, {len(recursive)} "
                        f"recursive violation(s)), e.g. {shown}; fix the feature before training")
    return {"rows_checked": int(len(sample)), "lookahead_cuts": cuts, "lookahead_violations": 0,
            "recursive_violations": 0}
