"""The local exchange's Bybit v5 routes over the real Bybit files in ../shared/data (skipped when absent):
ccxt ``bybit`` gets every candle, mark candle and funding rate as stored."""

from __future__ import annotations

import pandas as pd
import pytest

from exchange import LocalExchange
from tests.exchange.bybit_support import bybit_client
from tests.exchange.support import ts_ms
from tests.support import require_shared_data

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]


def _bybit_data():
    data = require_shared_data()
    if not (data / "ohlcv" / "bybit" / "BTC_USDT-1h.parquet").is_file():
        pytest.skip(f"{data}/ohlcv/bybit absent: the Bybit tests need the shared Bybit files")
    return data


@pytest.fixture(scope="module")
def real_bybit():
    with LocalExchange(_bybit_data()) as ex:  # wall clock: all of the data is history
        yield ex


def _all_candles(client, symbol: str, params=None) -> list[list]:
    out, since = [], 0
    while True:
        page = client.fetch_ohlcv(symbol, "1h", since=since, limit=1000, params=params or {})
        if not page:
            return out
        out += page
        since = page[-1][0] + 1


def test_real_bybit_perps_are_listed(real_bybit):
    markets = bybit_client(real_bybit.url).load_markets()
    assert sorted(markets) == ["BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT"]


@pytest.mark.parametrize("base, mark", [("BTC", False), ("ETH", True)])
def test_real_candles_come_back_exactly(real_bybit, base, mark):
    stored = pd.read_parquet(_bybit_data() / "ohlcv" / "bybit" / f"{base}_USDT-1h{'-mark' if mark else ''}.parquet")
    got = _all_candles(bybit_client(real_bybit.url), f"{base}/USDT:USDT", {"price": "mark"} if mark else None)
    columns = ["open", "high", "low", "close"] + ([] if mark else ["volume"])
    expected = [[t, *vals] + ([None] if mark else []) for t, vals in zip(ts_ms(stored["timestamp"]),
                                                                         stored[columns].to_numpy().tolist())]
    assert got == expected


def test_real_funding_rates_come_back_exactly(real_bybit):
    stored = pd.read_parquet(_bybit_data() / "funding" / "bybit" / "SOL_USDT-funding.parquet")
    client, since, got = bybit_client(real_bybit.url), ts_ms(stored["timestamp"])[0], []
    while True:
        page = client.fetch_funding_rate_history("SOL/USDT:USDT", since=since, limit=200)
        if not page:
            break
        got += page
        since = page[-1]["timestamp"] + 1
    assert [(r["timestamp"], r["fundingRate"]) for r in got] == list(zip(ts_ms(stored["timestamp"]),
                                                                         stored["funding_rate"].tolist()))
