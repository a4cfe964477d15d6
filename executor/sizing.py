"""Position sizing for entries: a fixed fraction of equity, or volatility-targeted - capped.

``risk.sizing: fixed_fraction`` buys ``position_fraction x equity``. ``volatility_target`` buys
``equity x vol_target_annual / sigma_annual`` of a symbol, where ``sigma_annual`` is the standard
deviation of its last ``vol_lookback_bars`` one-bar log returns, annualised over a 24/7 year.
Then a calm symbol gets a larger position and a wild one a smaller, so that each position carries
about the same risk; ``position_fraction`` is the cap (the most equity one position may take).
The RiskEngine applies its caps after this (max notional, gross exposure, cash, minimum notional).

Why close-to-close returns the loop has itself seen: the loop observes the close of bar t before
it decides at that close, so the estimate uses nothing after t, and the backtest, the paper
replay and the live daemon (primed with the candles before their first bar) see the same
numbers. A symbol without ``vol_lookback_bars`` returns yet has no size: no entry, said so
(``VOL_WARMING_UP``), never a silent fallback to another size.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from qt.config import RiskParams

VOL_WARMING_UP = "VOL_WARMING_UP"
_YEAR_MS = 365.25 * 24 * 3_600_000  # crypto trades every hour of the year


class RealisedVolatility:
    """Per symbol, the standard deviation of the last ``lookback`` one-bar log returns."""

    def __init__(self, lookback: int, bar_ms: int):
        self.lookback = lookback
        self._annualise = math.sqrt(_YEAR_MS / bar_ms)
        self._closes: dict[str, deque[float]] = {}

    def observe(self, symbol: str, close: float) -> None:
        closes = self._closes.get(symbol)
        if closes is None:
            closes = self._closes[symbol] = deque(maxlen=self.lookback + 1)
        closes.append(close)

    def annual(self, symbol: str) -> float | None:
        """Annualised volatility, or None until ``lookback`` returns were seen."""
        closes = self._closes.get(symbol)
        if closes is None or len(closes) <= self.lookback:
            return None
        returns = np.diff(np.log(np.fromiter(closes, dtype=np.float64, count=len(closes))))
        return float(returns.std(ddof=1)) * self._annualise


def entry_fraction(risk: RiskParams, sigma_annual: float | None) -> float | None:
    """Fraction of equity for a new position; None when volatility sizing has no estimate yet."""
    if risk.sizing == "fixed_fraction":
        return risk.position_fraction
    if sigma_annual is None or not sigma_annual >= 0.0:  # also NaN: no estimate, no size
        return None
    if sigma_annual == 0.0:  # a price that did not move: as calm as it gets, the cap
        return risk.position_fraction
    return min(risk.position_fraction, risk.vol_target_annual / sigma_annual)
