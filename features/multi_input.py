"""Features that need more than the symbol's own candles: funding, basis, cross-asset, cross-venue.

OFF by default. ``compute_features(candles, params, funding=..., reference=..., other_venue=...)``
must be given the extra inputs when one of these families is enabled (DataError otherwise).
The cross-venue family (``xv_*``, Bybit's series of the same perpetual in ``other_venue``) is
``features.cross_venue``; it follows the point-in-time rules below.
``required_inputs`` says which inputs a symbol needs and ``reference_window`` cuts the
reference candles a window of bars needs: materialisation (``features.materialise``) and
serving (``serving.inference.select_inputs``) both read them from the lake with these two
functions, so a served row is computed from the same inputs as the stored one.

Point in time: a base row opening at ``t`` closes at ``t + bar_ms``; it sees

* funding events with ``timestamp <= t + bar_ms`` (settled at or before its close);
* the reference candle with the latest open time ``<= t`` (its close is at or before the
  row's close). A reference gap therefore carries the last close forward (a stale reference
  price gives a zero reference return for that bar).

=====================  =============================================================
column                 value
=====================  =============================================================
``funding_last``       the last funding rate settled by the bar's close (fraction per interval)
``funding_mean_N``     mean of the last N funding rates settled by the bar's close (N events)
``basis_log``          ``ln(perp close / spot close)``; spot candles (``BASE/QUOTE``) in ``reference``
``<ref>_logret_N``     ``ln(R_t / R_{t-N})`` of the reference closes aligned to the symbol's bars
``beta_<ref>_N``       ``cov(r, b) / var(b)`` over the N one-bar log returns ending at t (ddof=1),
                       r = the symbol's, b = the aligned reference's; 0 when var(b) is 0
``corr_<ref>_N``       ``cov(r, b) / sqrt(var(r) var(b))``; 0 when either variance is 0
=====================  =============================================================

``<ref>`` is the lower-case base of ``params.cross_reference`` (``btc`` for BTC/USDT).
Spot symbols pay no funding and are their own spot: their funding and basis columns are 0.
Rows where an input does not cover the bar yet (before the first funding event, before the
reference starts) are undefined and dropped by ``compute_features``, like warm-up rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.cross_venue import xv_columns, xv_rows
from features.input_frames import align_closes, candles_by_symbol, funding_by_symbol
from qt.config import FeatureParams
from qt.errors import DataError

# variance of one-bar log returns below this is a constant (stale) window: std 1e-10 per bar
_ZERO_VARIANCE = 1e-20


def multi_input_columns(params: FeatureParams) -> list[str]:
    tag = reference_tag(params)
    cols = ["funding_last"] if params.funding_last else []
    cols += [f"funding_mean_{n}" for n in params.funding_mean]
    cols += ["basis_log"] if params.basis else []
    for n in params.cross:
        cols += [f"{tag}_logret_{n}", f"beta_{tag}_{n}", f"corr_{tag}_{n}"]
    return cols + xv_columns(params)


def reference_tag(params: FeatureParams) -> str:
    return params.cross_reference.split("/")[0].lower()


def uses_funding(params: FeatureParams) -> bool:
    """The symbols' own funding history is an input: the funding columns, or xv's funding spread."""
    return _funding_columns_on(params) or params.xv


def uses_other_venue(params: FeatureParams) -> bool:
    """Bybit's series of the perpetuals are an input (``features.cross_venue``)."""
    return params.xv


def needs_other_venue(symbol: str, params: FeatureParams) -> bool:
    """``symbol`` needs Bybit's candles and funding: xv is on and it is a perpetual (spot: 0)."""
    return params.xv and ":" in symbol


def _funding_columns_on(params: FeatureParams) -> bool:
    return params.funding_last or bool(params.funding_mean)


def uses_reference(params: FeatureParams) -> bool:
    return params.basis or bool(params.cross)


def required_inputs(symbol: str, params: FeatureParams) -> tuple[bool, list[str]]:
    """(needs its funding history, reference symbols whose candles it needs) for ``symbol``.

    Funding only for a perpetual (``BASE/QUOTE:SETTLE``; a spot symbol's funding columns are 0);
    basis needs a perpetual's spot symbol (``BASE/QUOTE``); cross needs ``params.cross_reference``.
    """
    perp = ":" in symbol
    references = [symbol.split(":")[0]] if (params.basis and perp) else []
    if params.cross and params.cross_reference not in references:
        references.append(params.cross_reference)
    return uses_funding(params) and perp, references


def reference_window(reference: pd.DataFrame, first_open: pd.Timestamp, last_open: pd.Timestamp) -> pd.DataFrame:
    """The rows of ``reference`` (one symbol's candles, sorted by time) that bars opening in
    ``[first_open, last_open]`` align to: the last candle opening at or before ``first_open``
    (a gap carries it forward) through the last one opening at or before ``last_open``.
    ``align_closes`` gives the same values on this slice as on the whole history."""
    ts = reference["timestamp"]
    lo = max(int(ts.searchsorted(first_open, side="right")) - 1, 0)
    hi = int(ts.searchsorted(last_open, side="right"))
    return reference.iloc[lo:hi]


def split_funding(funding: pd.DataFrame | None, params: FeatureParams) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """symbol -> (event_ms ascending, funding_rate); DataError when missing or malformed."""
    if not uses_funding(params):
        return {}
    if funding is None:
        raise DataError("features.funding_last/funding_mean/xv are enabled but no funding frame was passed; "
                        "call compute_features(..., funding=frame of symbol, timestamp, funding_rate)")
    return funding_by_symbol(funding)


def split_reference(reference: pd.DataFrame | None, params: FeatureParams) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """symbol -> (open_ms ascending, close) of the reference candles; DataError when missing."""
    if not uses_reference(params):
        return {}
    if reference is None:
        raise DataError("features.basis/cross are enabled but no reference candles were passed; call "
                        f"compute_features(..., reference=candles of {params.cross_reference} and the spot "
                        f"symbols of the perpetuals)")
    return candles_by_symbol(reference, "reference candles")


def multi_input_values(symbol: str, open_ms: np.ndarray, close: np.ndarray, bar_ms: int, params: FeatureParams,
                       funding: dict, reference: dict, other_venue: tuple[dict, dict] = ({}, {})) -> np.ndarray:
    """One symbol's multi-input features (rows = ``multi_input_columns``), NaN where undefined.
    ``other_venue``: Bybit's (candles, funding) by symbol (``cross_venue.split_other_venue``)."""
    rows: list[np.ndarray] = []
    is_perp = ":" in symbol
    if _funding_columns_on(params):
        rows += _funding_rows(symbol, open_ms, bar_ms, params, funding) if is_perp else \
            [np.zeros(len(open_ms))] * (int(params.funding_last) + len(params.funding_mean))
    if params.basis:
        if is_perp:
            spot = symbol.split(":")[0]
            if spot not in reference:
                raise DataError(f"features.basis: no spot candles for {spot} in reference (needed for {symbol}); "
                                f"pass them or disable features.basis")
            rows.append(np.log(close / align_closes(open_ms, *reference[spot])))
        else:
            rows.append(np.zeros(len(open_ms)))
    if params.cross:
        ref = params.cross_reference
        if ref not in reference:
            raise DataError(f"features.cross: no {ref} candles in reference; pass them or disable features.cross")
        log_ref = np.log(align_closes(open_ms, *reference[ref]))
        log_close = np.log(close)
        r = pd.Series(_diff(log_close, 1))
        b = pd.Series(_diff(log_ref, 1))
        for n in params.cross:
            rows.append(_diff(log_ref, n))
            rows += cross_beta_corr(r, b, n)
    if params.xv:
        rows += xv_rows(symbol, open_ms, close, bar_ms, params, funding, *other_venue)
    return np.vstack(rows) if rows else np.empty((0, len(open_ms)))


def cross_beta_corr(r: pd.Series, b: pd.Series, window: int) -> list[np.ndarray]:
    """[beta, corr] of r on b over trailing windows (ddof=1); 0 where a variance is 0."""
    var_r = r.rolling(window).var().to_numpy()
    var_b = b.rolling(window).var().to_numpy()
    cov = r.rolling(window).cov(b).to_numpy()
    b_varies = var_b > _ZERO_VARIANCE
    both_vary = b_varies & (var_r > _ZERO_VARIANCE)
    beta = np.where(b_varies, cov / np.where(b_varies, var_b, 1.0), 0.0)
    corr = np.where(both_vary, cov / np.sqrt(np.where(both_vary, var_r * var_b, 1.0)), 0.0)
    undefined = np.isnan(var_b) | np.isnan(var_r)
    beta[undefined] = np.nan
    corr[undefined] = np.nan
    return [beta, np.clip(corr, -1.0, 1.0)]


def _funding_rows(symbol: str, open_ms: np.ndarray, bar_ms: int, params: FeatureParams,
                  funding: dict) -> list[np.ndarray]:
    if symbol not in funding:
        raise DataError(f"features.funding: no funding events for {symbol} in the funding frame; "
                        f"collect its funding history or disable the funding features")
    event_ms, rate = funding[symbol]
    pos = np.searchsorted(event_ms, open_ms + bar_ms, side="right") - 1
    seen = pos >= 0
    rows = []
    series = [rate] if params.funding_last else []
    series += [pd.Series(rate).rolling(n).mean().to_numpy() for n in params.funding_mean]
    for per_event in series:
        row = np.full(len(open_ms), np.nan)
        row[seen] = per_event[pos[seen]]
        rows.append(row)
    return rows


def _diff(x: np.ndarray, lag: int) -> np.ndarray:
    out = np.full_like(x, np.nan)
    if lag < len(x):
        out[lag:] = x[lag:] - x[:-lag]
    return out
