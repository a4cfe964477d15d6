"""What the collector relies on: real ccxt over real HTTP gets exactly the stored data, at the
replay clock, with Binance's errors."""

from __future__ import annotations

import ccxt
import numpy as np
import pandas as pd
import pytest

from exchange import make_ccxt
from tests.exchange.support import NOW_MS, ts_ms

HOUR_MS = 3_600_000


def _stored(datadir, market: str, stem: str, tf: str) -> pd.DataFrame:
    return pd.read_parquet(datadir / "ohlcv" / market / f"{stem}-{tf}.parquet")


def _rows(df: pd.DataFrame) -> list[list]:
    return [[t, *vals] for t, vals in zip(ts_ms(df["timestamp"]),
                                          df[["open", "high", "low", "close", "volume"]].to_numpy().tolist())]


def _fetch_all(client, symbol: str, tf: str, since: int, limit: int = 1000) -> list[list]:
    """The collector's loop: pages of ``limit`` from ``since`` until an empty page."""
    out = []
    while True:
        page = client.fetch_ohlcv(symbol, tf, since=since, limit=limit)
        if not page:
            return out
        out += page
        since = page[-1][0] + 1


def test_load_markets_lists_spot_and_perps_listed_by_now(exchange):
    spot = make_ccxt("spot", exchange.url).load_markets()
    assert sorted(spot) == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]  # ADA starts after now: not listed
    btc = spot["BTC/USDT"]
    assert btc["spot"] and btc["active"] and btc["id"] == "BTCUSDT"
    assert btc["precision"]["price"] > 0 and btc["precision"]["amount"] > 0 and btc["limits"]["cost"]["min"] == 5
    perps = make_ccxt("perp", exchange.url).load_markets()
    assert sorted(perps) == ["BTC/USDT:USDT"]
    perp = perps["BTC/USDT:USDT"]
    assert perp["swap"] and perp["linear"] and perp["settle"] == "USDT" and perp["active"]


def test_paginated_fetch_returns_exactly_the_stored_candles_up_to_now(exchange, datadir):
    client = make_ccxt("spot", exchange.url)
    stored = _stored(datadir, "binance", "BTC_USDT", "1h")
    got = _fetch_all(client, "BTC/USDT", "1h", since=0)
    visible = stored[pd.to_datetime(stored["timestamp"]) <= pd.Timestamp(NOW_MS, unit="ms", tz="UTC")]
    assert len(got) > 1000  # crossed page boundaries
    assert got == _rows(visible)  # the last one is the open candle (10:00, clock at 10:30)
    assert got[-1][0] == NOW_MS - 30 * 60_000


def test_since_and_small_pages_cross_boundaries_without_gaps_or_duplicates(exchange, datadir):
    client = make_ccxt("perp", exchange.url)
    stored = _stored(datadir, "binanceusdm", "BTC_USDT", "1h")
    since = ts_ms(stored["timestamp"])[100] + 1  # mid-candle: starts at the next open
    got = _fetch_all(client, "BTC/USDT:USDT", "1h", since=since, limit=333)
    expected = stored.iloc[101:][pd.to_datetime(stored["timestamp"].iloc[101:]) <=
                                 pd.Timestamp(NOW_MS, unit="ms", tz="UTC")]
    assert got == _rows(expected)


def test_latest_candles_without_since_end_with_the_open_one(exchange, datadir):
    client = make_ccxt("spot", exchange.url)
    got = client.fetch_ohlcv("ETH/USDT", "1h", limit=5)
    stored = _stored(datadir, "binance", "ETH_USDT", "1h")
    open_row = stored[pd.to_datetime(stored["timestamp"]) == pd.Timestamp(NOW_MS - 30 * 60_000, unit="ms", tz="UTC")]
    assert [r[0] for r in got] == [NOW_MS - 30 * 60_000 - k * HOUR_MS for k in (4, 3, 2, 1, 0)]
    assert got[-1] == _rows(open_row)[0]  # served with that bar's values, like Binance


def test_rolled_up_interval_matches_resampled_finer_candles_and_open_bar_is_partial(exchange, datadir):
    client = make_ccxt("spot", exchange.url)
    got = client.fetch_ohlcv("SOL/USDT", "1h", limit=1000)
    fine = _stored(datadir, "binance", "SOL_USDT", "5m")
    fine = fine[pd.to_datetime(fine["timestamp"]) <= pd.Timestamp(NOW_MS, unit="ms", tz="UTC")]
    hourly = fine.set_index("timestamp").resample("1h").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}).dropna().reset_index()
    assert len(got) == len(hourly)
    np.testing.assert_allclose(np.array(got), np.array(_rows(hourly), dtype=float), rtol=1e-12)
    # the open 10:00 bar holds only the 5m candles opened by 10:30 (7 of them)
    assert got[-1][4] == fine["close"].iloc[-1]


def test_funding_history_equals_the_stored_settlements_up_to_now(exchange, datadir):
    client = make_ccxt("perp", exchange.url)
    stored = pd.read_parquet(datadir / "funding" / "binanceusdm" / "BTC_USDT-funding.parquet")
    stored = stored[pd.to_datetime(stored["timestamp"]) <= pd.Timestamp(NOW_MS, unit="ms", tz="UTC")]
    got, since = [], 0
    while True:
        page = client.fetch_funding_rate_history("BTC/USDT:USDT", since=since, limit=50)
        if not page:
            break
        got += [(r["timestamp"], r["fundingRate"]) for r in page]
        since = page[-1]["timestamp"] + 1
    assert got == list(zip(ts_ms(stored["timestamp"]), stored["funding_rate"].tolist()))
    assert len(got) > 50


def test_unknown_or_unlisted_symbol_is_bad_symbol(exchange):
    client = make_ccxt("spot", exchange.url)
    client.load_markets()
    with pytest.raises(ccxt.BadSymbol):
        client.fetch_ohlcv("BTC/USDT", "1h", params={"symbol": "NOPEUSDT"})
    with pytest.raises(ccxt.BadSymbol):  # stored, but its first candle opens after now
        client.fetch_ohlcv("BTC/USDT", "1h", params={"symbol": "ADAUSDT"})


def test_interval_that_cannot_be_built_is_bad_request_naming_what_exists(exchange):
    client = make_ccxt("spot", exchange.url)
    with pytest.raises(ccxt.BadRequest, match="only 5m candles"):
        client.fetch_ohlcv("SOL/USDT", "1m")
    with pytest.raises(ccxt.BadRequest, match="Invalid interval"):
        client.fetch_ohlcv("BTC/USDT", "1h", params={"interval": "7h"})


def test_server_time_is_the_replay_clock_and_weight_header_is_sent(exchange):
    client = make_ccxt("spot", exchange.url)
    assert client.fetch_time() == NOW_MS
    assert int(client.last_response_headers["X-MBX-USED-WEIGHT-1M"]) >= 1
    assert make_ccxt("perp", exchange.url).fetch_time() == NOW_MS


def test_tickers_rank_by_quote_volume_over_the_last_24h(exchange, datadir):
    client = make_ccxt("spot", exchange.url)
    tickers = client.fetch_tickers()
    assert sorted(tickers) == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
    stored = _stored(datadir, "binance", "ETH_USDT", "1h")
    t = pd.to_datetime(stored["timestamp"])
    now = pd.Timestamp(NOW_MS, unit="ms", tz="UTC")
    window = stored[(t > now - pd.Timedelta("24h")) & (t <= now)]
    assert tickers["ETH/USDT"]["baseVolume"] == pytest.approx(window["volume"].sum(), rel=1e-12)
    assert tickers["ETH/USDT"]["last"] == window["close"].iloc[-1]


def test_premium_index_and_open_interest_answer_in_binance_shapes(exchange):
    client = make_ccxt("perp", exchange.url)
    rate = client.fetch_funding_rate("BTC/USDT:USDT")
    assert rate["fundingTimestamp"] == pd.Timestamp("2023-03-01T16:00", tz="UTC").value // 1_000_000
    assert client.fetch_open_interest_history("BTC/USDT:USDT", "1h") == []  # no OI in the data dir


def test_order_endpoints_need_a_key_and_unsimulated_routes_fail_loudly(exchange):
    import httpx

    response = httpx.post(f"{exchange.url}/api/v3/order", timeout=5)  # issue #7: served, but signed
    assert response.status_code == 401 and response.json()["code"] == -2014
    response = httpx.post(f"{exchange.url}/api/v3/orderList/oco", timeout=5)  # OCO lists: served, signed
    assert response.status_code == 401 and response.json()["code"] == -2014
    response = httpx.post(f"{exchange.url}/api/v3/orderList/oto", timeout=5)
    assert response.status_code == 501 and "not simulated" in response.json()["msg"]
