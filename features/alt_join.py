"""The one point-in-time join of alternative data onto bars, and the alt inputs' container.

Rule (the project's convention, ``features.multi_input``): a bar opening at ``t`` is decided at
its close ``t + bar_ms``; its features may use an alt observation only if it was published
**strictly before** that close: ``available_at < close``. Strict, because the publication times
are approximate (alternative.me publishes "about" 00:00 UTC), so a decision at exactly 00:00:00
uses day D-1's Fear & Greed value, as the data README asks. Consequences, with 1h bars:

* Fear & Greed of day D (available D 00:00): first used by the bar opening at D 00:00 (it
  closes at 01:00); the bar opening at 23:00 of D-1 closes at exactly 00:00 and sees D-1's;
* on-chain / ETF flow of day D (available D+1 00:00): first used by the bar opening D+1 00:00;
* a headline published at 10:15:00: first used by the bar opening at 10:00 (closing 11:00).

``asof_join`` is used by materialisation, the service and the backtest alike (all go through
``compute_features(..., alt=AltInputs)``), so the stored, the served and the backtested rows see
the same observations. ``AltInputs.cut`` is the point-in-time check's view of what was known at
a time, derived from each row's ``timestamp`` and the documented publication lag
(``data.alt_lake.PUBLICATION_LAG_MS``) - not from the stored ``available_at`` - so data stored
(or joined) as available earlier than the rule allows fails ``features.pit.check_lookahead``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from data.alt_lake import PUBLICATION_LAG_MS


def asof_join(bar_close_ms: np.ndarray, series_available_ms: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each bar close, the value of the latest observation with ``available < close``; NaN
    before the first. ``series_available_ms`` ascending (the lake stores rows sorted)."""
    pos = np.searchsorted(series_available_ms, bar_close_ms, side="left") - 1
    if not len(values):
        return np.full(len(bar_close_ms), np.nan)
    return np.where(pos >= 0, np.asarray(values, dtype=np.float64)[np.maximum(pos, 0)], np.nan)


def window_bounds(bar_close_ms: np.ndarray, series_available_ms: np.ndarray,
                  span_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """Row ranges ``[lo, hi)`` of the observations with ``close - span <= available < close``:
    the events a bar's close has seen within the last ``span_ms`` (the same strict rule)."""
    hi = np.searchsorted(series_available_ms, bar_close_ms, side="left")
    lo = np.searchsorted(series_available_ms, bar_close_ms - span_ms, side="left")
    return lo, hi


def available_ms(frame: pd.DataFrame, column: str = "available_at") -> np.ndarray:
    return frame[column].to_numpy(dtype="datetime64[ms]").view("int64")


@dataclass(frozen=True)
class AltInputs:
    """The alt series as the lake stores them (``data.alt_lake.read_alt``), None when not read:
    ``fear_greed``, ``onchain_btc`` and ``headlines`` frames with ``timestamp``, ``available_at``
    and their value columns, each sorted by time."""

    fear_greed: pd.DataFrame | None = None
    onchain_btc: pd.DataFrame | None = None
    headlines: pd.DataFrame | None = None
    # the order-book family's samples (``features.book_bars.SAMPLE_COLUMNS``), every recorded symbol
    book: pd.DataFrame | None = None

    def cut(self, close_ms: int) -> AltInputs:
        """What was published strictly before ``close_ms`` by the documented publication rule
        (``timestamp + lag < close``), whatever ``available_at`` the rows claim; book samples
        taken at or before ``close_ms`` (a sample holds only events stamped at or before it)."""
        out = {}
        if self.book is not None:
            out["book"] = self.book[available_ms(self.book, "timestamp") <= close_ms].reset_index(drop=True)
        for name in ("fear_greed", "onchain_btc", "headlines"):
            frame = getattr(self, name)
            if frame is not None:
                known = available_ms(frame, "timestamp") + PUBLICATION_LAG_MS[name] < close_ms
                out[name] = frame[known].reset_index(drop=True)
        return replace(self, **out)
