"""The fault injector and the replay clock act on Bybit's v5 routes as on Binance's: one
server, one clock, one fault config, failures in Bybit's dialect so ccxt ``bybit`` raises
the classes it raises against api.bybit.com on a bad day."""

from __future__ import annotations

import ccxt
import httpx
import pytest

from tests.exchange.bybit_support import bybit_client
from tests.exchange.support import NOW_MS

HOUR_MS = 3_600_000
KLINE = "/v5/market/kline"


@pytest.fixture
def bybit_faulty(bybit_exchange):
    bybit_exchange.set_faults({})
    yield bybit_exchange
    bybit_exchange.set_faults({})


@pytest.fixture
def bybit_clock(bybit_exchange):
    yield bybit_exchange
    bybit_exchange.move_clock_to(NOW_MS)


@pytest.mark.parametrize("kind, error", [("429", ccxt.RateLimitExceeded), ("418", ccxt.RateLimitExceeded),
                                         ("503", ccxt.ExchangeNotAvailable), ("refuse", ccxt.BadRequest),
                                         ("drop", ccxt.NetworkError)])
def test_injected_faults_raise_what_bybit_would(bybit_faulty, kind, error):
    client = bybit_client(bybit_faulty.url)
    client.load_markets()
    bybit_faulty.set_faults({"rules": [{"kind": kind, "path_prefix": KLINE, "first_k": 1}]})
    with pytest.raises(error):
        client.fetch_ohlcv("BTC/USDT:USDT", "1h", limit=2)
    assert len(client.fetch_ohlcv("BTC/USDT:USDT", "1h", limit=2)) == 2  # only the first call failed
    assert {k: n for k, n in bybit_faulty.fault_counts().items() if n} == {kind: 1}


def test_a_symbol_rule_matches_bybits_symbol_parameter(bybit_faulty):
    client = bybit_client(bybit_faulty.url)
    client.load_markets()
    bybit_faulty.set_faults({"rules": [{"kind": "429", "path_prefix": "/v5/", "symbol": "ETHUSDT"}]})
    assert client.fetch_ohlcv("BTC/USDT:USDT", "1h", limit=1)
    with pytest.raises(ccxt.RateLimitExceeded):
        client.fetch_ohlcv("ETH/USDT:USDT", "1h", limit=1)


def test_moving_the_replay_clock_reveals_the_next_candles_and_settlements(bybit_clock):
    client = bybit_client(bybit_clock.url)
    before = client.fetch_ohlcv("BTC/USDT:USDT", "1h", limit=1)[-1][0]
    rates_before = client.fetch_funding_rate_history("BTC/USDT:USDT", limit=200)
    bybit_clock.advance(6)
    assert client.fetch_time() == NOW_MS + 6 * HOUR_MS
    assert client.fetch_ohlcv("BTC/USDT:USDT", "1h", limit=1)[-1][0] == before + 6 * HOUR_MS
    rates_after = client.fetch_funding_rate_history("BTC/USDT:USDT", limit=200)
    assert rates_after[-1]["timestamp"] == rates_before[-1]["timestamp"] + 8 * HOUR_MS  # the 16:00 settlement


def test_a_rate_limit_fault_is_bybits_envelope_at_the_exchange_clock(bybit_faulty):
    bybit_faulty.set_faults({"rules": [{"kind": "429", "path_prefix": "/v5/market/time"}]})
    answer = httpx.get(f"{bybit_faulty.url}/v5/market/time")
    assert answer.status_code == 200  # Bybit answers its rate limit with HTTP 200 and retCode 10006
    assert answer.json()["retCode"] == 10006 and answer.json()["time"] == NOW_MS
    assert "x-mbx-used-weight-1m" not in answer.headers  # no Binance header on a Bybit answer
