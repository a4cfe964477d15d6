"""Trading on the local exchange through the real ccxt clients over HTTP, as the executor's
broker will: signed requests, fills at the replayed prices, protective orders on the
exchange, refusals as ccxt's exception classes, and faults around order placement.

Expected prices come from the stored candles (read here with pandas), never from the server."""

from __future__ import annotations

import math

import ccxt
import numpy as np
import pandas as pd
import pytest

from exchange import LocalExchange, make_ccxt
from exchange.views import derive_filters
from tests.exchange.support import API_KEY, API_SECRET, NOW, NOW_MS, ts_ms

pytestmark = pytest.mark.slow

HOUR_MS = 3_600_000


def _client(venue: LocalExchange, market: str, secret: str = API_SECRET, key: str = API_KEY):
    client = make_ccxt(market, venue.url, api_key=key, secret=secret)
    client.load_markets()
    return client


def _candles(datadir, market_dir: str, stem: str) -> pd.DataFrame:
    df = pd.read_parquet(datadir / "ohlcv" / market_dir / f"{stem}-1h.parquet")
    df["ts"] = ts_ms(df["timestamp"])
    return df.reset_index(drop=True)


def _bar_index(df: pd.DataFrame, at_ms: int) -> int:
    return int(np.searchsorted(df["ts"].to_numpy(), at_ms, side="right")) - 1


def test_spot_market_buy_fills_at_the_current_bar_and_pays_the_fee_in_base(venue, datadir):
    spot = _client(venue, "spot")
    close = _candles(datadir, "binance", "BTC_USDT")["close"].iloc[_bar_index(
        _candles(datadir, "binance", "BTC_USDT"), NOW_MS)]
    order = spot.create_order("BTC/USDT", "market", "buy", 0.01)
    assert order["status"] == "closed" and order["filled"] == 0.01
    assert order["average"] == pytest.approx(close, rel=1e-12)
    assert order["fee"] == {"currency": "BTC", "cost": pytest.approx(0.01 * 0.001, rel=1e-12)}
    balance = spot.fetch_balance()
    assert balance["BTC"]["free"] == pytest.approx(0.01 - 0.01 * 0.001, rel=1e-12)
    assert balance["USDT"]["free"] == pytest.approx(10_000 - 0.01 * close, rel=1e-12)
    trades = spot.fetch_my_trades("BTC/USDT")
    assert len(trades) == 1 and trades[0]["order"] == order["id"] and trades[0]["takerOrMaker"] == "taker"


def _bar_touching_both_sides(df: pd.DataFrame, start: int) -> int:
    """First i >= start whose next bar trades well below and well above close[i]."""
    for i in range(start, len(df) - 1):
        c, nxt = df["close"].iloc[i], df.iloc[i + 1]
        if nxt["low"] < c * 0.997 and nxt["high"] > c * 1.003:
            return i
    raise AssertionError("no bar in the fixture data spans both levels")


def test_futures_long_with_reduce_only_stop_and_take_profit_the_stop_fills_first(venue, datadir):
    df = _candles(datadir, "binanceusdm", "BTC_USDT")
    i = _bar_touching_both_sides(df, _bar_index(df, NOW_MS))
    venue.move_clock_to(int(df["ts"].iloc[i]) + HOUR_MS // 2)
    entry, nxt = float(df["close"].iloc[i]), df.iloc[i + 1]
    tick = float(derive_filters(entry).tick_size)
    stop = math.floor((nxt["low"] + entry) / 2 / tick) * tick
    take = math.ceil((nxt["high"] + entry) / 2 / tick) * tick

    perp = _client(venue, "perp")
    perp.set_leverage(5, "BTC/USDT:USDT")
    opened = perp.create_order("BTC/USDT:USDT", "market", "buy", 0.1)
    assert opened["status"] == "closed" and opened["average"] == pytest.approx(entry, rel=1e-12)
    sl = perp.create_order("BTC/USDT:USDT", "market", "sell", 0.1, None, {"stopLossPrice": stop, "reduceOnly": True})
    tp = perp.create_order("BTC/USDT:USDT", "market", "sell", 0.1, None,
                           {"takeProfitPrice": take, "reduceOnly": True})
    resting = perp.fetch_open_orders("BTC/USDT:USDT", params={"trigger": True})
    assert sorted(o["id"] for o in resting) == sorted([sl["id"], tp["id"]])
    assert sorted(o["triggerPrice"] for o in resting) == pytest.approx([stop, take])
    (position,) = perp.fetch_positions(["BTC/USDT:USDT"])
    assert (position["side"], position["contracts"]) == ("long", 0.1)
    assert position["entryPrice"] == pytest.approx(entry, rel=1e-12)
    assert perp.fetch_balance()["USDT"]["used"] == pytest.approx(0.1 * entry / 5, rel=1e-9)  # initial margin

    venue.advance(1)  # the next bar reaches both the stop and the take-profit
    assert perp.fetch_order(sl["id"], "BTC/USDT:USDT", {"trigger": True})["status"] == "closed"
    assert perp.fetch_order(tp["id"], "BTC/USDT:USDT", {"trigger": True})["status"] == "expired"
    assert perp.fetch_positions() == []
    assert perp.fetch_open_orders("BTC/USDT:USDT", params={"trigger": True}) == []
    fill = min(stop, float(nxt["open"]))
    closing = perp.fetch_my_trades("BTC/USDT:USDT")[-1]
    assert closing["side"] == "sell" and closing["price"] == pytest.approx(fill, rel=1e-12)
    pnl = 0.1 * (fill - entry)
    assert float(closing["info"]["realizedPnl"]) == pytest.approx(pnl, rel=1e-9)
    fees = 0.1 * entry * 0.0005 + 0.1 * fill * 0.0005
    assert perp.fetch_balance()["USDT"]["total"] == pytest.approx(10_000 + pnl - fees, rel=1e-12)


def test_liquidity_cap_partially_fills_a_limit_order_across_bars(venue, datadir):
    df = _candles(datadir, "binance", "ETH_USDT")
    i = _bar_index(df, NOW_MS)
    close = float(df["close"].iloc[i])
    tick = float(derive_filters(close).tick_size)
    price = math.floor(close * 1.02 / tick) * tick  # marketable now, and likely again on the next bars
    venue.reset_account(max_fill_qty_per_bar={"ETHUSDT": "0.05"})
    spot = _client(venue, "spot")
    order = spot.create_order("ETH/USDT", "limit", "buy", 0.12, price)
    assert (order["status"], order["filled"]) == ("open", 0.05)  # 0.05 now, at the current price
    expected = 0.05
    for k in (1, 2, 3):
        venue.advance(1)
        if df["low"].iloc[i + k] <= price:
            expected = min(0.12, expected + 0.05)
        got = spot.fetch_order(order["id"], "ETH/USDT")
        assert got["filled"] == pytest.approx(expected)
        assert got["status"] == ("closed" if expected == pytest.approx(0.12) else "open")
    assert expected == pytest.approx(0.12), "fixture data: the next bars should reach the limit price"


@pytest.mark.parametrize("market, symbol, amount, error, exchange_says", [
    ("spot", "BTC/USDT", 0.0001, ccxt.BadRequest, "Filter failure: NOTIONAL"),  # ccxt's class for Binance's answer
    ("spot", "ETH/USDT", 9_000_001, ccxt.InvalidOrder, "Filter failure: LOT_SIZE"),
    ("spot", "BTC/USDT", 1, ccxt.InsufficientFunds, "insufficient balance"),
    ("perp", "BTC/USDT:USDT", 0.00005, ccxt.InvalidOrder, "-4164"),
    ("perp", "BTC/USDT:USDT", 10, ccxt.InsufficientFunds, "Margin is insufficient."),
])
def test_refused_orders_raise_ccxts_class_and_leave_no_order(venue, market, symbol, amount, error, exchange_says):
    client = _client(venue, market)
    with pytest.raises(error, match=exchange_says):
        client.create_order(symbol, "market", "buy", amount)
    state = venue.account_state()
    assert state["orders"] == 0 and state["trades"] == 0


def _resting_buy(client, symbol: str, price_factor: float = 0.9, amount: float = 0.01, **params):
    last = client.fetch_ticker(symbol)["last"]
    return client.create_order(symbol, "limit", "buy", amount, last * price_factor, params)


@pytest.mark.parametrize("market, symbol", [("spot", "BTC/USDT"), ("perp", "BTC/USDT:USDT")])
def test_duplicate_client_order_id_is_refused_and_lookup_by_client_id_finds_the_first(venue, market, symbol):
    client = _client(venue, market)
    first = _resting_buy(client, symbol, clientOrderId="dup-1")
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent|ClientOrderId is duplicated"):
        _resting_buy(client, symbol, price_factor=0.8, clientOrderId="dup-1")
    found = client.fetch_order(None, symbol, {"clientOrderId": "dup-1"})
    assert found["id"] == first["id"] and found["clientOrderId"] == "dup-1"
    assert [o["id"] for o in client.fetch_open_orders(symbol)] == [first["id"]]


def test_open_orders_and_cancel_release_the_locked_balance(venue):
    spot = _client(venue, "spot")
    a, b = _resting_buy(spot, "BTC/USDT", 0.9), _resting_buy(spot, "BTC/USDT", 0.8)
    assert sorted(o["id"] for o in spot.fetch_open_orders("BTC/USDT")) == sorted([a["id"], b["id"]])
    locked = 0.01 * a["price"] + 0.01 * b["price"]
    assert spot.fetch_balance()["USDT"]["used"] == pytest.approx(locked, rel=1e-12)
    assert spot.cancel_order(a["id"], "BTC/USDT")["status"] == "canceled"
    with pytest.raises(ccxt.OrderNotFound):
        spot.cancel_order(a["id"], "BTC/USDT")
    with pytest.raises(ccxt.OrderNotFound):
        spot.fetch_order("424242", "BTC/USDT")
    assert [o["id"] for o in spot.fetch_open_orders("BTC/USDT")] == [b["id"]]
    spot.cancel_order(b["id"], "BTC/USDT")
    balance = spot.fetch_balance()["USDT"]
    assert (balance["free"], balance["used"]) == (pytest.approx(10_000), 0)


def test_connection_dropped_after_acceptance_leaves_exactly_one_order_found_by_client_id(venue):
    spot = _client(venue, "spot")
    venue.set_faults({"rules": [{"kind": "drop_after", "path_prefix": "/api/v3/order", "method": "POST",
                                 "first_k": 1}]})
    with pytest.raises(ccxt.NetworkError):
        spot.create_order("BTC/USDT", "market", "buy", 0.01, None, {"clientOrderId": "once-1"})
    assert venue.fault_counts()["drop_after"] == 1
    # the broker's recovery: look the order up by its client id instead of sending it again
    found = spot.fetch_order(None, "BTC/USDT", {"clientOrderId": "once-1"})
    assert found["status"] == "closed" and found["filled"] == 0.01
    assert len(spot.fetch_orders("BTC/USDT")) == 1
    assert spot.fetch_balance()["BTC"]["total"] == pytest.approx(0.01 * (1 - 0.001), rel=1e-12)


@pytest.mark.parametrize("kind, error", [("429", ccxt.DDoSProtection), ("503", ccxt.ExchangeNotAvailable)])
def test_throttled_or_failing_order_route_places_nothing_and_the_retry_succeeds(venue, kind, error):
    perp = _client(venue, "perp")
    venue.set_faults({"rules": [{"kind": kind, "path_prefix": "/fapi/v1/order", "method": "POST", "first_k": 1}]})
    with pytest.raises(error):
        perp.create_order("BTC/USDT:USDT", "market", "buy", 0.01)
    assert venue.account_state()["orders"] == 0
    assert perp.fetch_open_orders("BTC/USDT:USDT") == []  # GETs on the same path are not faulted
    assert perp.create_order("BTC/USDT:USDT", "market", "buy", 0.01)["status"] == "closed"


def test_wrong_secret_or_unknown_key_is_an_authentication_error(venue):
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        _client(venue, "spot", secret="not-the-secret").fetch_balance()
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        _client(venue, "perp", key="unknown-key").fetch_balance()


def test_api_keys_never_reach_the_server_log(datadir, tmp_path):
    key, secret = "key-6f1d2a", "secret-93bc7e"
    log = tmp_path / "server.log"
    with LocalExchange(datadir, now=NOW, api_keys={key: secret}, log_path=log) as ex:
        _client(ex, "spot", key=key, secret=secret).create_order("BTC/USDT", "market", "buy", 0.01)
        with pytest.raises(ccxt.AuthenticationError):
            _client(ex, "spot", key=key, secret="wrong-" + secret).fetch_balance()
    text = log.read_text()
    assert "API key(s)" in text and key not in text and secret not in text


def test_clock_advance_is_refused_backwards_with_open_orders(venue):
    spot = _client(venue, "spot")
    _resting_buy(spot, "BTC/USDT")
    from qt.errors import ConfigError

    with pytest.raises(ConfigError, match="backwards"):
        venue.move_clock_to(NOW_MS - HOUR_MS)
    assert venue.advance(2)["now_ms"] == NOW_MS + 2 * HOUR_MS
    assert spot.fetch_time() == NOW_MS + 2 * HOUR_MS  # market data follows the same clock


def test_malformed_api_keys_are_refused_at_start_in_one_line_without_echoing_them(datadir):
    import os
    import subprocess
    import sys

    from qt.procs import free_port
    from tests.support import PROJECT_ROOT

    env = {**os.environ, "QT_EXCHANGE_API_KEYS": '["leaked-secret-value"]'}
    run = subprocess.run([sys.executable, "-m", "exchange", "--data", str(datadir), "--port", str(free_port())],
                         capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=60)
    assert run.returncode == 2 and run.stderr.strip().count("\n") == 0
    assert "QT_EXCHANGE_API_KEYS" in run.stderr and "leaked-secret-value" not in run.stderr
