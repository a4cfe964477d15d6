"""Constants and helpers shared by the local-exchange tests and their fixtures (conftest.py):
the fixed replay instant (``NOW``), the trading server's API key, timestamps as epoch ms."""

from __future__ import annotations

import pandas as pd

NOW = "2023-03-01T10:30"
NOW_MS = int(pd.Timestamp(NOW, tz="UTC").value // 1_000_000)

API_KEY, API_SECRET = "qt-test-key", "qt-test-secret"


def ts_ms(series: pd.Series) -> list[int]:
    return (pd.to_datetime(series, utc=True).astype("datetime64[ms, UTC]").astype("int64")).tolist()
