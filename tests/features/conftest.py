"""Candles shared by the feature tests: real Binance 1h (skipped when absent) and synthetic."""

from __future__ import annotations

import pandas as pd
import pytest

from qt.config import SyntheticParams
from data.lake import read_datadir_candles
from data.synthetic import generate_market
from tests.support import require_shared_data

REAL_SYMBOLS = ["BTC/USDT", "ETH/USDT", "BNB/USDT", "SOL/USDT", "XRP/USDT", "ADA/USDT", "DOGE/USDT", "LTC/USDT"]


@pytest.fixture(scope="session")
def real_btc() -> pd.DataFrame:
    """Every real BTC/USDT 1h candle (2017-08 .. 2024-12, ~64k bars, real gaps)."""
    return read_datadir_candles(require_shared_data(), ["BTC/USDT"], "1h")


@pytest.fixture(scope="session")
def real_all() -> pd.DataFrame:
    """All eight real 1h spot series."""
    return read_datadir_candles(require_shared_data(), REAL_SYMBOLS, "1h")


@pytest.fixture(scope="session")
def synthetic() -> pd.DataFrame:
    """Two synthetic symbols, 3000 bars each, with volatility clustering and regime switches."""
    return generate_market(["BTC/USDT", "ETH/USDT"], "1h", SyntheticParams(bars=3000), seed=11)


@pytest.fixture(params=["real", "synthetic"])
def candles(request) -> pd.DataFrame:
    if request.param == "real":
        return request.getfixturevalue("real_btc")
    return request.getfixturevalue("synthetic")
