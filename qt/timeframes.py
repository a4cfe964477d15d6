"""The one table of candle intervals: Binance's names and their length in milliseconds.

Every bar boundary in the project is ``epoch ms // timeframe_ms(tf)``, so only intervals aligned
to the epoch are listed; Binance aligns 3d/1w/1M differently, and the local exchange refuses them
rather than serve misaligned candles. ``params.yaml`` narrows this further (``data.timeframe``).
"""

from __future__ import annotations

import pandas as pd

from qt.errors import DataError

TIMEFRAME_MS: dict[str, int] = {
    "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
    "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000,
    "8h": 28_800_000, "12h": 43_200_000, "1d": 86_400_000,
}


def timeframe_ms(timeframe: str) -> int:
    """Length of one bar; a name not in the table is a one-line DataError listing the valid ones."""
    try:
        return TIMEFRAME_MS[timeframe]
    except KeyError:
        raise DataError(f"timeframe {timeframe!r} is not one of {list(TIMEFRAME_MS)}") from None


def utc_timestamp(value) -> pd.Timestamp | None:
    """A user's date or instant (``YYYY-MM-DD``, ISO, epoch-aware Timestamp) as a UTC Timestamp;
    None stays None; anything else is one DataError that says the format."""
    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise DataError(f"{value!r} is not a date; use YYYY-MM-DD") from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
