"""Suite-wide helpers: the shared real data location beside the project and its skip rule."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = (PROJECT_ROOT.parent / "shared" / "data").resolve()


def require_shared_data() -> Path:
    """The real Binance candles beside the project, or skip saying why."""
    if not (SHARED_DATA / "ohlcv").is_dir():
        pytest.skip(f"../shared/data absent ({SHARED_DATA}): real-candle tests need the shared data set")
    return SHARED_DATA


def require_orderbook_recording(market: str) -> Path:
    """The raw Binance BTCUSDT order-book recording of ``market`` (binance | binanceusdm), or skip."""
    path = SHARED_DATA / "orderbook" / market / "btcusdt_20240808.gz"
    if not path.is_file():
        pytest.skip(f"{path} absent: the order-book replay tests need the shared raw recording")
    return path
