"""What a Bybit user relies on: the real ccxt ``bybit`` client, over real HTTP to the local
exchange, gets exactly the rows of the data dir's Bybit files, at the replay clock."""

from __future__ import annotations

import ccxt
import httpx
import pandas as pd
import pytest

from tests.exchange.bybit_support import bybit_client, recorded_paths
from tests.exchange.support import NOW_MS, ts_ms

HOUR_MS = 3_600_000
NOW_TS = pd.Timestamp(NOW_MS, unit="ms", tz="UTC")


def _candles(datadir, stem: str, mark: bool = False) -> pd.DataFrame:
    df = pd.read_parquet(datadir / "ohlcv" / "bybit" / f"{stem}-1h{'-mark' if mark else ''}.parquet")
    return df[pd.to_datetime(df["timestamp"]) <= NOW_TS].reset_index(drop=True)


def _rows(df: pd.DataFrame) -> list[list]:
    volume = df["volume"].tolist() if "volume" in df else [None] * len(df)
    return [[t, *vals, v] for t, vals, v in zip(ts_ms(df["timestamp"]),
                                                df[["open", "high", "low", "close"]].to_numpy().tolist(), volume)]


def _fetch_all(client, since: int, limit: int, params=None) -> list[list]:
    out = []
    while True:
        page = client.fetch_ohlcv("BTC/USDT:USDT", "1h", since=since, limit=limit, params=params or {})
        if not page:
            return out
        out += page
        since = page[-1][0] + 1


def test_load_markets_asks_only_for_linear_instruments_and_lists_perps_listed_by_now(bybit_exchange):
    client = bybit_client(bybit_exchange.url)
    calls = recorded_paths(client)
    markets = client.load_markets()
    assert calls == ["GET v5/market/instruments-info?category=linear&limit=1000",
                     "GET v5/market/instruments-info?category=linear&limit=1000&status=PreLaunch"]
    assert sorted(markets) == ["BTC/USDT:USDT", "ETH/USDT:USDT"]  # SOL's first candle is after now
    btc = markets["BTC/USDT:USDT"]
    assert btc["id"] == "BTCUSDT" and btc["swap"] and btc["linear"] and btc["active"] and btc["settle"] == "USDT"
    assert btc["precision"]["price"] > 0 and btc["precision"]["amount"] > 0
    assert btc["limits"]["leverage"]["max"] == 100


def test_fetch_time_is_the_replay_clock(bybit_exchange):
    assert bybit_client(bybit_exchange.url).fetch_time() == NOW_MS


@pytest.mark.parametrize("limit", [1000, 333])
def test_since_pagination_returns_exactly_the_stored_candles_up_to_now(bybit_exchange, bybit_datadir, limit):
    got = _fetch_all(bybit_client(bybit_exchange.url), since=0, limit=limit)
    expected = _candles(bybit_datadir, "BTC_USDT")
    assert len(got) > 1000  # crossed page boundaries
    assert got == _rows(expected)
    assert got[-1][0] == NOW_MS - 30 * 60_000  # the open candle, served with its stored values


def test_latest_candles_come_back_oldest_first_in_ccxt_though_bybit_sends_them_newest_first(bybit_exchange):
    raw = httpx.get(f"{bybit_exchange.url}/v5/market/kline",
                    params={"category": "linear", "symbol": "ETHUSDT", "interval": "60", "limit": 3}).json()
    starts = [int(row[0]) for row in raw["result"]["list"]]
    assert starts == [NOW_MS - 30 * 60_000 - k * HOUR_MS for k in (0, 1, 2)]  # newest first, like Bybit
    assert all(len(row) == 7 and all(isinstance(x, str) for x in row) for row in raw["result"]["list"])
    got = bybit_client(bybit_exchange.url).fetch_ohlcv("ETH/USDT:USDT", "1h", limit=3)
    assert [r[0] for r in got] == starts[::-1]


def test_mark_price_candles_are_the_mark_file(bybit_exchange, bybit_datadir):
    got = _fetch_all(bybit_client(bybit_exchange.url), since=0, limit=1000, params={"price": "mark"})
    assert got == _rows(_candles(bybit_datadir, "BTC_USDT", mark=True))


def test_daily_candles_are_rolled_up_from_the_hourly_file(bybit_exchange, bybit_datadir):
    got = bybit_client(bybit_exchange.url).fetch_ohlcv("BTC/USDT:USDT", "1d", since=0, limit=1000)
    hourly = _candles(bybit_datadir, "BTC_USDT").set_index("timestamp")
    daily = hourly.resample("1D").agg({"open": "first", "high": "max", "low": "min", "close": "last",
                                       "volume": "sum"}).reset_index()
    assert [r[:5] for r in got] == [r[:5] for r in _rows(daily)]
    assert [r[5] for r in got] == pytest.approx(daily["volume"].tolist(), rel=1e-12)


def test_funding_history_paginated_by_since_is_the_funding_file_up_to_now(bybit_exchange, bybit_datadir):
    client = bybit_client(bybit_exchange.url)
    stored = pd.read_parquet(bybit_datadir / "funding" / "bybit" / "BTC_USDT-funding.parquet")
    stored = stored[pd.to_datetime(stored["timestamp"]) <= NOW_TS]
    since, got = ts_ms(stored["timestamp"])[0], []
    while True:
        page = client.fetch_funding_rate_history("BTC/USDT:USDT", since=since, limit=50)
        if not page:
            break
        got += page
        since = page[-1]["timestamp"] + 1
    assert [(r["timestamp"], r["fundingRate"]) for r in got] == list(zip(ts_ms(stored["timestamp"]),
                                                                         stored["funding_rate"].tolist()))
    assert got[0]["symbol"] == "BTC/USDT:USDT"


def test_funding_history_without_a_range_is_the_latest_settlements_newest_first(bybit_exchange):
    raw = httpx.get(f"{bybit_exchange.url}/v5/market/funding/history",
                    params={"category": "linear", "symbol": "BTCUSDT", "limit": 3}).json()
    times = [int(r["fundingRateTimestamp"]) for r in raw["result"]["list"]]
    assert times == [pd.Timestamp("2023-03-01T08:00", tz="UTC").value // 10**6 - k * 8 * HOUR_MS for k in range(3)]
    assert all(isinstance(r["fundingRate"], str) for r in raw["result"]["list"])


def test_ticker_is_built_from_candles_mark_and_funding_up_to_now(bybit_exchange, bybit_datadir):
    ticker = bybit_client(bybit_exchange.url).fetch_ticker("BTC/USDT:USDT")
    candles, marks = _candles(bybit_datadir, "BTC_USDT"), _candles(bybit_datadir, "BTC_USDT", mark=True)
    assert ticker["last"] == candles["close"].iloc[-1]
    assert ticker["markPrice"] == marks["close"].iloc[-1]
    assert ticker["baseVolume"] == pytest.approx(candles["volume"].iloc[-24:].sum(), rel=1e-12)
    assert ticker["bid"] is None and ticker["ask"] is None  # no order book in the data dir
    info = ticker["info"]
    assert int(info["nextFundingTime"]) == pd.Timestamp("2023-03-01T16:00", tz="UTC").value // 10**6


def test_instruments_are_paged_with_bybits_cursor(bybit_exchange):
    url, seen, cursor = f"{bybit_exchange.url}/v5/market/instruments-info", [], None
    while True:
        params = {"category": "linear", "limit": 1, **({"cursor": cursor} if cursor else {})}
        result = httpx.get(url, params=params).json()["result"]
        seen += [i["symbol"] for i in result["list"]]
        cursor = result["nextPageCursor"]
        if not cursor:
            break
    assert seen == ["BTCUSDT", "ETHUSDT"]


def test_open_interest_is_honestly_empty(bybit_exchange):
    raw = httpx.get(f"{bybit_exchange.url}/v5/market/open-interest",
                    params={"category": "linear", "symbol": "BTCUSDT", "intervalTime": "1h"}).json()
    assert raw["retCode"] == 0 and raw["result"]["list"] == []


def test_errors_raise_the_ccxt_classes_bybit_would(bybit_exchange):
    client = bybit_client(bybit_exchange.url)
    with pytest.raises(ccxt.BadSymbol):
        client.publicGetV5MarketKline({"category": "linear", "symbol": "XRPUSDT", "interval": "60"})
    with pytest.raises(ccxt.BadSymbol):  # listed only from its first candle on
        client.publicGetV5MarketKline({"category": "linear", "symbol": "SOLUSDT", "interval": "60"})
    with pytest.raises(ccxt.BadRequest):
        client.publicGetV5MarketKline({"category": "linear", "symbol": "BTCUSDT", "interval": "60", "limit": 1001})
    with pytest.raises(ccxt.BadRequest):  # startTime alone is refused, as on Bybit
        client.publicGetV5MarketFundingHistory({"category": "linear", "symbol": "BTCUSDT", "startTime": 1})
    with pytest.raises(ccxt.BadRequest):
        client.publicGetV5MarketKline({"category": "spot", "symbol": "BTCUSDT", "interval": "60"})
    answer = httpx.get(f"{bybit_exchange.url}/v5/market/orderbook", params={"category": "linear"})
    assert answer.status_code == 404 and answer.json()["retCode"] == 10017  # not simulated: said loudly


def test_ccxt_funding_rate_and_open_interest_say_only_what_the_data_dir_knows(bybit_exchange, bybit_datadir):
    client = bybit_client(bybit_exchange.url)
    stored = pd.read_parquet(bybit_datadir / "funding" / "bybit" / "BTC_USDT-funding.parquet")
    settled = stored[pd.to_datetime(stored["timestamp"]) <= NOW_TS]
    rate = client.fetch_funding_rate("BTC/USDT:USDT")
    assert rate["fundingRate"] == settled["funding_rate"].iloc[-1]  # the last settled rate, not a guess
    assert rate["fundingTimestamp"] == pd.Timestamp("2023-03-01T16:00", tz="UTC").value // 10**6
    assert client.fetch_open_interest_history("BTC/USDT:USDT", "1h") == []


def test_a_corrupt_file_refuses_only_its_own_symbol_and_says_why(tmp_path):
    import shutil
    import warnings

    from exchange import Clock, FaultInjector, create_app, parse_fault_config
    from tests.exchange.bybit_support import write_bybit_datadir

    root = write_bybit_datadir(tmp_path)
    bad = root / "ohlcv" / "bybit" / "ETH_USDT-1h.parquet"
    bad.write_bytes(b"not parquet")
    shutil.rmtree(root / "funding")  # no funding files: an empty history, not an error
    with warnings.catch_warnings():  # starlette's TestClient warns about httpx at import; in-process is enough here
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

        client = TestClient(create_app(root, Clock(NOW_MS), FaultInjector(parse_fault_config(None))))
    kline = {"category": "linear", "interval": "60", "limit": 1}
    refused = client.get("/v5/market/kline", params={**kline, "symbol": "ETHUSDT"}).json()
    assert refused["retCode"] == 10001 and "Not supported symbols" in refused["retMsg"]
    assert "ETH_USDT-1h.parquet" in refused["retMsg"] and "unreadable" in refused["retMsg"]
    assert client.get("/v5/market/kline", params={**kline, "symbol": "BTCUSDT"}).json()["retCode"] == 0
    funding = client.get("/v5/market/funding/history", params={"category": "linear", "symbol": "BTCUSDT"}).json()
    assert funding["retCode"] == 0 and funding["result"]["list"] == []
