"""Cross-venue features: a Binance USDT perpetual against the same perpetual on Bybit.

Why: the two venues' prices and funding rates are tied by arbitrage, so a widening basis or a
funding spread says where positioning is crowded before the price moves. OFF by default
(``features.xv``); ``compute_features(..., other_venue=OtherVenue(candles, funding))`` must be
given Bybit's candles and funding events (symbols named like the Binance perpetual,
``BTC/USDT:USDT``) when it is on, and the symbol's own (Binance) funding in ``funding=``.

Point in time (the rules of ``features.multi_input``): a Binance row opening at ``t`` closes at
``t + bar_ms``; it sees

* the Bybit candle with the latest open time ``<= t`` (its close is at or before the row's
  close) - the reference alignment of ``input_frames.align_closes``. A missing Bybit bar
  therefore carries Bybit's last close forward (the basis of that row compares Binance's fresh
  close with Bybit's previous one) rather than dropping the row: a gap of one venue must not
  shift the bar count of the rolling z-score;
* funding events of either venue with ``timestamp <= t + bar_ms`` (settled at or before the
  close; a rate settled exactly at the close is seen).

=======================  ===========================================================
column                   value
=======================  ===========================================================
``xv_basis_log``         ``ln(Bybit close / Binance close)``
``xv_basis_z_N``         ``(b_t - mean) / std`` of the N ``xv_basis_log`` values ending at t
                         (ddof=1); 0 when the window is constant (std <= 1e-12)
``xv_funding_spread``    Bybit's last settled funding rate - Binance's (fraction per interval)
=======================  ===========================================================

Rows before Bybit's first candle or either venue's first settlement are undefined (NaN) and
dropped by ``compute_features`` like warm-up rows. Spot symbols have no Bybit counterpart in
the lake (it keeps Bybit's USDT perpetuals only) and pay no funding: their columns are 0, so
a universe mixing spot and perpetuals can still use the family (as with funding and basis).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.input_frames import align_closes, candles_by_symbol, funding_by_symbol, no_funding, no_reference
from qt.config import FeatureParams
from qt.errors import DataError

COLLECT_HINT = "collect it with `qt collect --exchange bybit`"
_CONSTANT_STD = 1e-12  # a basis window whose std is below this is constant (rounding noise)


@dataclass(frozen=True)
class OtherVenue:
    """Bybit's series of the perpetuals: ``candles`` (a Candles frame) and ``funding``
    (symbol, timestamp, funding_rate). Symbols are the ccxt perpetual symbols, as on Binance."""

    candles: pd.DataFrame
    funding: pd.DataFrame

    def cut(self, cut_ms: int, bar_ms: int) -> OtherVenue:
        """What a run at the close of the bar opening at ``cut_ms`` knew: candles opening
        <= cut_ms, funding settled <= cut_ms + bar_ms (the point-in-time check's cut)."""
        return OtherVenue(self.candles[_ms(self.candles) <= cut_ms], self.funding[_ms(self.funding) <= cut_ms + bar_ms])


def xv_columns(params: FeatureParams) -> list[str]:
    if not params.xv:
        return []
    return ["xv_basis_log", *(f"xv_basis_z_{n}" for n in params.xv_z), "xv_funding_spread"]


def check_xv_params(params: FeatureParams) -> str | None:
    """A one-line problem with the declared xv family, or None."""
    if params.xv_z and not params.xv:
        return "features.xv_z lists z-score windows but features.xv is false; set features.xv: true or xv_z: []"
    return None


def no_other_venue() -> OtherVenue:
    """Empty Bybit inputs: the input when xv is on but no symbol is a perpetual."""
    return OtherVenue(no_reference(), no_funding())


def split_other_venue(other: OtherVenue | None, params: FeatureParams) -> tuple[dict, dict]:
    """(symbol -> (open_ms, close) of Bybit's candles, symbol -> (event_ms, rate) of its funding)."""
    if not params.xv:
        return {}, {}
    if other is None:
        raise DataError("features.xv is enabled but no Bybit series were passed; call compute_features(..., "
                        "other_venue=OtherVenue(bybit candles, bybit funding))")
    return candles_by_symbol(other.candles, "Bybit candles"), funding_by_symbol(other.funding)


def xv_rows(symbol: str, open_ms: np.ndarray, close: np.ndarray, bar_ms: int, params: FeatureParams,
            own_funding: dict, bybit_candles: dict, bybit_funding: dict) -> list[np.ndarray]:
    """One symbol's xv rows (``xv_columns`` order), NaN where undefined."""
    n_rows = len(xv_columns(params))
    if ":" not in symbol:
        return [np.zeros(len(open_ms))] * n_rows
    for have, what in ((bybit_candles, "candles"), (bybit_funding, "funding")):
        if symbol not in have:
            raise DataError(f"features.xv: no Bybit {what} for {symbol}; {COLLECT_HINT} or set features.xv: false")
    if symbol not in own_funding:
        raise DataError(f"features.xv: no Binance funding for {symbol}; collect its funding history "
                        f"(collect.funding: true) or set features.xv: false")
    basis = basis_log(close, align_closes(open_ms, *bybit_candles[symbol]))
    rows = [basis, *(rolling_zscore(basis, n) for n in params.xv_z)]
    closes_at = open_ms + bar_ms
    rows.append(last_settled(closes_at, *bybit_funding[symbol]) - last_settled(closes_at, *own_funding[symbol]))
    return rows


def basis_log(binance_close: np.ndarray, bybit_close: np.ndarray) -> np.ndarray:
    return np.log(bybit_close / binance_close)


def rolling_zscore(x: np.ndarray, window: int) -> np.ndarray:
    """z of each value in its trailing ``window`` values (ddof=1); 0 when constant; NaN while
    the window holds a NaN (an undefined basis before Bybit starts)."""
    series = pd.Series(x)
    mean = series.rolling(window).mean().to_numpy()
    std = series.rolling(window).std().to_numpy()
    varies = std > _CONSTANT_STD
    z = np.where(varies, (x - mean) / np.where(varies, std, 1.0), 0.0)
    z[np.isnan(std)] = np.nan
    return z


def last_settled(at_ms: np.ndarray, event_ms: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """The last rate settled at or before each time of ``at_ms``; NaN before the first event."""
    pos = np.searchsorted(event_ms, at_ms, side="right") - 1
    return np.where(pos >= 0, rate[np.maximum(pos, 0)], np.nan) if len(rate) else np.full(len(at_ms), np.nan)


def _ms(frame: pd.DataFrame) -> np.ndarray:
    return frame["timestamp"].to_numpy(dtype="datetime64[ms]").view("int64")
