"""The local exchange over the real Binance candles in ../shared/data (skipped when absent)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from exchange import LocalExchange, make_ccxt
from tests.support import require_shared_data
from tests.exchange.support import ts_ms

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_exchange():
    with LocalExchange(require_shared_data()) as ex:  # wall clock: all of the data is history
        yield ex


def _ms(text: str) -> int:
    return int(pd.Timestamp(text, tz="UTC").value // 1_000_000)


def _fetch_range(client, symbol, tf, since, until, limit=1000):
    out = []
    while since < until:
        page = client.fetch_ohlcv(symbol, tf, since=since, limit=limit)
        if not page:
            break
        out += [r for r in page if r[0] < until]
        since = page[-1][0] + 1
    return out


def test_real_markets_are_listed_as_ccxt_expects(real_exchange):
    data = require_shared_data()
    spot = make_ccxt("spot", real_exchange.url).load_markets()
    perps = make_ccxt("perp", real_exchange.url).load_markets()
    stems = lambda market: {p.name.split("-")[0] for p in (data / "ohlcv" / market).glob("*.parquet")}  # noqa: E731
    assert {s.replace("/", "_") for s in spot} == stems("binance")
    assert {s.split(":")[0].replace("/", "_") for s in perps} == stems("binanceusdm")
    assert spot["BTC/USDT"]["precision"]["price"] == 0.01  # Binance's real BTCUSDT tick


def test_real_candles_round_trip_across_pages_and_the_2018_outage(real_exchange):
    client = make_ccxt("spot", real_exchange.url)
    lo, hi = _ms("2018-01-20"), _ms("2018-05-01")  # spans the 34 h gap of 2018-02-08/09
    got = _fetch_range(client, "BTC/USDT", "1h", lo, hi)
    stored = pd.read_parquet(require_shared_data() / "ohlcv" / "binance" / "BTC_USDT-1h.parquet")
    t = np.array(ts_ms(stored["timestamp"]))
    want = stored[(t >= lo) & (t < hi)]
    assert len(got) > 2000
    assert got == [[ts, *v] for ts, v in zip(ts_ms(want["timestamp"]),
                                             want[["open", "high", "low", "close", "volume"]].to_numpy().tolist())]


def test_real_funding_and_1m_perp_candles(real_exchange):
    client = make_ccxt("perp", real_exchange.url)
    data = require_shared_data()
    funding = pd.read_parquet(data / "funding" / "binanceusdm" / "ETH_USDT-funding.parquet")
    got = client.fetch_funding_rate_history("ETH/USDT:USDT", since=_ms("2021-05-01"), limit=200)
    t = np.array(ts_ms(funding["timestamp"]))
    want = funding[t >= _ms("2021-05-01")].head(200)
    assert [(r["timestamp"], r["fundingRate"]) for r in got] == \
        list(zip(ts_ms(want["timestamp"]), want["funding_rate"].tolist()))
    last = client.fetch_ohlcv("TRX/USDT:USDT", "1m", limit=1000)  # ccxt caps at 1000
    stored = pd.read_parquet(data / "ohlcv" / "binanceusdm" / "TRX_USDT-1m.parquet")
    assert len(last) == 1000 and [r[0] for r in last] == ts_ms(stored["timestamp"])[-1000:]


def test_real_5m_series_is_served_at_1h(real_exchange):
    client = make_ccxt("spot", real_exchange.url)
    got = client.fetch_ohlcv("BCH/USDT", "1h", since=_ms("2025-03-01"), limit=48)
    fine = pd.read_parquet(require_shared_data() / "ohlcv" / "binance" / "BCH_USDT-5m.parquet")
    fine = fine[(pd.to_datetime(fine["timestamp"]) >= pd.Timestamp("2025-03-01", tz="UTC"))
                & (pd.to_datetime(fine["timestamp"]) < pd.Timestamp("2025-03-03", tz="UTC"))]
    hourly = fine.set_index("timestamp").resample("1h").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}).dropna()
    assert [r[0] for r in got] == ts_ms(hourly.index.to_series())
    np.testing.assert_allclose([r[1:] for r in got], hourly.to_numpy(), rtol=1e-12)
