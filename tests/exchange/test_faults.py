"""Each injected fault reaches the client as the ccxt exception class the collector handles,
is counted, and stays inside its scope."""

from __future__ import annotations

import time

import ccxt
import pytest

from exchange import make_ccxt


def _spot(exchange, timeout_ms: int = 10_000):
    client = make_ccxt("spot", exchange.url, timeout_ms=timeout_ms)
    client.load_markets()  # before the faults: only the klines call below is hit
    return client


@pytest.mark.parametrize("kind, expected", [
    ("429", ccxt.DDoSProtection),  # ccxt's binance maps 418 and 429 to DDoSProtection (a NetworkError)
    ("418", ccxt.DDoSProtection),
    ("500", ccxt.ExchangeNotAvailable),
    ("502", ccxt.ExchangeNotAvailable),
    ("503", ccxt.ExchangeNotAvailable),
    ("drop", ccxt.NetworkError),
])
def test_fault_kind_raises_the_ccxt_class_and_is_counted(faulty, kind, expected):
    client = _spot(faulty)
    faulty.set_faults({"rules": [{"kind": kind, "path_prefix": "/api/v3/klines"}]})
    with pytest.raises(expected) as raised:
        client.fetch_ohlcv("BTC/USDT", "1h", limit=3)
    assert isinstance(raised.value, ccxt.NetworkError)  # retryable for the collector
    assert faulty.fault_counts()[kind] == 1
    assert client.fetch_time() > 0  # paths outside the prefix are untouched


def test_429_carries_retry_after(faulty):
    client = _spot(faulty)
    faulty.set_faults({"rules": [{"kind": "429", "retry_after_s": 7}]})
    with pytest.raises(ccxt.DDoSProtection):
        client.fetch_ohlcv("BTC/USDT", "1h", limit=3)
    assert client.last_response_headers["Retry-After"] == "7"


def test_timeout_raises_request_timeout_when_the_answer_comes_too_late(faulty):
    client = _spot(faulty, timeout_ms=500)
    faulty.set_faults({"rules": [{"kind": "timeout", "timeout_s": 2.0, "first_k": 1}]})
    started = time.monotonic()
    with pytest.raises(ccxt.RequestTimeout):
        client.fetch_ohlcv("BTC/USDT", "1h", limit=3)
    assert time.monotonic() - started < 1.9  # the client gave up, it did not wait for the answer
    assert faulty.fault_counts()["timeout"] == 1
    assert len(client.fetch_ohlcv("BTC/USDT", "1h", limit=3)) == 3  # only the first request stalls


def test_fault_scoped_to_one_symbol_leaves_others_untouched(faulty):
    client = _spot(faulty)
    faulty.set_faults({"rules": [{"kind": "503", "symbol": "BTCUSDT"}]})
    for _ in range(3):
        assert len(client.fetch_ohlcv("ETH/USDT", "1h", limit=2)) == 2
        with pytest.raises(ccxt.ExchangeNotAvailable):
            client.fetch_ohlcv("BTC/USDT", "1h", limit=2)
    report = faulty.fault_report()
    assert report["injected"]["503"] == 3 and report["rules"] == [{"matched": 3, "injected": 3}]


def test_first_k_and_every_nth_limit_which_requests_fail(faulty):
    client = _spot(faulty)
    faulty.set_faults({"rules": [{"kind": "500", "path_prefix": "/api/v3/klines", "every_nth": 2, "first_k": 4}]})
    outcomes = []
    for _ in range(6):
        try:
            client.fetch_ohlcv("BTC/USDT", "1h", limit=1)
            outcomes.append("ok")
        except ccxt.ExchangeNotAvailable:
            outcomes.append("500")
    assert outcomes == ["ok", "500", "ok", "500", "ok", "ok"]


def test_latency_delays_every_answer(faulty):
    client = _spot(faulty)
    faulty.set_faults({"latency_ms": 300})
    started = time.monotonic()
    client.fetch_ohlcv("BTC/USDT", "1h", limit=1)
    assert time.monotonic() - started >= 0.3


def test_bad_fault_config_is_refused_and_the_old_one_stays(faulty):
    from qt.errors import ConfigError

    faulty.set_faults({"rules": [{"kind": "503", "symbol": "ETHUSDT"}]})
    with pytest.raises(ConfigError, match="kind"):
        faulty.set_faults({"rules": [{"kind": "404"}]})
    assert faulty.fault_report()["config"]["rules"][0]["symbol"] == "ETHUSDT"
