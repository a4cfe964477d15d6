"""Trading on the local exchange through the real ccxt ``bybit`` client with API keys: signed
v5 requests over the one matching engine, Bybit's order ids, statuses and refusals."""

from __future__ import annotations

import ccxt
import pandas as pd
import pytest

from tests.exchange.bybit_support import bybit_client, recorded_paths
from tests.exchange.support import API_KEY, API_SECRET, NOW_MS

SYMBOL = "BTC/USDT:USDT"
HOUR_MS = 3_600_000


def _client(venue):
    client = bybit_client(venue.url, API_KEY, API_SECRET)
    client.load_markets()
    return client


def _current_bar(bybit_datadir) -> pd.Series:
    df = pd.read_parquet(bybit_datadir / "ohlcv" / "bybit" / "BTC_USDT-1h.parquet")
    return df[pd.to_datetime(df["timestamp"]) <= pd.Timestamp(NOW_MS, unit="ms", tz="UTC")].iloc[-1]


def test_load_markets_with_keys_asks_for_coins_and_instruments_only(bybit_venue):
    client = bybit_client(bybit_venue.url, API_KEY, API_SECRET)
    calls = recorded_paths(client)
    client.load_markets()
    assert [c.split("?")[0] for c in calls] == ["GET v5/asset/coin/query-info", "GET v5/market/instruments-info",
                                                "GET v5/market/instruments-info"]


def test_market_order_fills_at_the_current_close_and_opens_a_position(bybit_venue, bybit_datadir):
    client = _client(bybit_venue)
    close = float(_current_bar(bybit_datadir)["close"])
    order = client.create_order(SYMBOL, "market", "buy", 0.01, params={"clientOrderId": "entry-1"})
    fetched = client.fetch_order(order["id"], SYMBOL, {"acknowledged": True})
    assert fetched["status"] == "closed" and fetched["filled"] == 0.01 and fetched["average"] == close
    assert fetched["clientOrderId"] == "entry-1" and fetched["side"] == "buy"
    [position] = client.fetch_positions([SYMBOL])
    assert position["side"] == "long" and position["contracts"] == 0.01 and position["entryPrice"] == close
    assert [p["symbol"] for p in client.fetch_positions()] == [SYMBOL]  # all open positions (settleCoin USDT)
    balance = client.fetch_balance()
    fee = 0.01 * close * 0.0005
    assert balance["USDT"]["total"] == pytest.approx(10_000 - fee, abs=1e-6)
    [trade] = client.fetch_my_trades(SYMBOL)
    assert trade["order"] == order["id"] and trade["price"] == close and trade["amount"] == 0.01


def test_a_reused_order_link_id_is_refused_even_after_the_order_filled(bybit_venue):
    client = _client(bybit_venue)
    client.create_order(SYMBOL, "market", "buy", 0.01, params={"clientOrderId": "once"})
    with pytest.raises(ccxt.InvalidOrder):
        client.create_order(SYMBOL, "market", "buy", 0.01, params={"clientOrderId": "once"})


def test_reduce_only_conditional_stop_rests_until_cancelled(bybit_venue, bybit_datadir):
    client = _client(bybit_venue)
    close = float(_current_bar(bybit_datadir)["close"])
    client.create_order(SYMBOL, "market", "buy", 0.01)
    trigger = round(close * 0.8, 1)
    stop = client.create_order(SYMBOL, "market", "sell", 0.01, params={
        "triggerPrice": trigger, "triggerDirection": "descending", "reduceOnly": True})
    [open_order] = client.fetch_open_orders(SYMBOL)
    assert open_order["id"] == stop["id"] and open_order["status"] == "open"
    assert open_order["triggerPrice"] == trigger and open_order["reduceOnly"] is True
    assert open_order["info"]["orderStatus"] == "Untriggered"
    lower = round(close * 0.7, 1)
    client.edit_order(stop["id"], SYMBOL, "market", "sell", 0.01, None, {"triggerPrice": lower})
    [amended] = client.fetch_open_orders(SYMBOL)
    assert amended["id"] == stop["id"] and amended["triggerPrice"] == lower  # amended in place, same id
    client.cancel_order(stop["id"], SYMBOL)
    assert client.fetch_open_orders(SYMBOL) == []
    [closed] = [o for o in client.fetch_canceled_and_closed_orders(SYMBOL) if o["id"] == stop["id"]]
    assert closed["status"] == "canceled" and closed["info"]["orderStatus"] == "Deactivated"
    with pytest.raises(ccxt.InvalidOrder):  # 110008: already cancelled
        client.cancel_order(stop["id"], SYMBOL)


def test_reduce_only_stop_with_no_position_is_refused(bybit_venue, bybit_datadir):
    client = _client(bybit_venue)
    close = float(_current_bar(bybit_datadir)["close"])
    with pytest.raises(ccxt.InvalidOrder):  # 110017 reduce-only rule not satisfied
        client.create_order(SYMBOL, "market", "sell", 0.01, params={"reduceOnly": True})
    with pytest.raises(ccxt.InvalidOrder):  # 110092: a falling trigger above the price fires at once
        client.create_order(SYMBOL, "market", "sell", 0.01, params={
            "triggerPrice": round(close * 1.1, 1), "triggerDirection": "descending"})


def test_limit_order_rests_is_amended_and_fills_when_the_clock_passes_its_price(bybit_venue, bybit_datadir):
    client = _client(bybit_venue)
    df = pd.read_parquet(bybit_datadir / "ohlcv" / "bybit" / "BTC_USDT-1h.parquet")
    ts = pd.to_datetime(df["timestamp"])
    now = pd.Timestamp(NOW_MS, unit="ms", tz="UTC")
    close = float(df[ts <= now].iloc[-1]["close"])
    coming = df[(ts > now) & (ts <= now + pd.Timedelta(hours=24))]
    price = round(float(coming["low"].min()) + 1.0, 1)  # crossed within the next day, below now's close
    assert price < close
    order = client.create_order(SYMBOL, "limit", "buy", 0.01, round(close * 0.5, 1))
    client.edit_order(order["id"], SYMBOL, "limit", "buy", 0.01, price)
    [resting] = client.fetch_open_orders(SYMBOL)
    assert resting["price"] == price and resting["status"] == "open"
    bybit_venue.advance(24)
    filled = client.fetch_order(order["id"], SYMBOL, {"acknowledged": True})
    assert filled["status"] == "closed" and filled["average"] == price


def test_reduce_only_stop_triggers_when_the_price_falls_to_it_and_closes_the_position(bybit_venue, bybit_datadir):
    client = _client(bybit_venue)
    df = pd.read_parquet(bybit_datadir / "ohlcv" / "bybit" / "BTC_USDT-1h.parquet")
    ts = pd.to_datetime(df["timestamp"])
    now = pd.Timestamp(NOW_MS, unit="ms", tz="UTC")
    close = float(df[ts <= now].iloc[-1]["close"])
    coming = df[(ts > now) & (ts <= now + pd.Timedelta(hours=48))]
    trigger = round((close + float(coming["low"].min())) / 2, 1)
    hit = coming[coming["low"] <= trigger].iloc[0]
    expected = min(float(hit["open"]), trigger)  # at the trigger, or at the open on a gap below it
    client.create_order(SYMBOL, "market", "buy", 0.01)
    stop = client.create_order(SYMBOL, "market", "sell", 0.01, params={
        "triggerPrice": trigger, "triggerDirection": "descending", "reduceOnly": True})
    bybit_venue.advance(48)
    done = client.fetch_order(stop["id"], SYMBOL, {"acknowledged": True, "trigger": True})
    assert done["status"] == "closed" and done["filled"] == 0.01 and done["average"] == expected
    assert client.fetch_positions([SYMBOL])[0]["contracts"] == 0


def test_leverage_is_set_once_and_an_unchanged_one_is_refused(bybit_venue):
    client = _client(bybit_venue)
    client.set_leverage(5, SYMBOL)
    assert client.fetch_positions([SYMBOL])[0]["leverage"] == 5
    with pytest.raises(ccxt.BadRequest):  # 110043 leverage not modified
        client.set_leverage(5, SYMBOL)


def test_an_order_beyond_the_balance_is_insufficient_funds(bybit_venue, bybit_datadir):
    client = _client(bybit_venue)
    close = float(_current_bar(bybit_datadir)["close"])
    amount = round(30_000 / close, 3)  # 3x the wallet, at leverage 1
    client.set_leverage(1, SYMBOL)
    with pytest.raises(ccxt.InsufficientFunds):
        client.create_order(SYMBOL, "market", "buy", amount)


def test_bad_credentials_raise_authentication_error(bybit_venue):
    for key, secret in ((API_KEY, "wrong-secret"), ("unknown-key", API_SECRET)):
        client = bybit_client(bybit_venue.url, key, secret)
        with pytest.raises(ccxt.AuthenticationError):
            client.fetch_balance()


def test_the_bybit_account_is_apart_from_the_binance_one(bybit_venue):
    client = _client(bybit_venue)
    client.create_order(SYMBOL, "market", "buy", 0.01)
    assert bybit_venue.account_state()["trades"] == 0  # /_qt/account is the Binance account
    assert bybit_venue._control("GET", "/_qt/bybit/account")["trades"] == 1


def test_an_order_whose_answer_was_lost_is_found_by_its_order_link_id_and_not_placed_twice(bybit_venue):
    client = _client(bybit_venue)
    bybit_venue.set_faults({"rules": [{"kind": "drop_after", "path_prefix": "/v5/order/create", "symbol": "BTCUSDT",
                                       "first_k": 1}]})
    with pytest.raises(ccxt.NetworkError):
        client.create_order(SYMBOL, "market", "buy", 0.01, params={"clientOrderId": "lost-1"})
    found = client.privateGetV5OrderRealtime({"category": "linear", "symbol": "BTCUSDT", "orderLinkId": "lost-1"})
    [order] = found["result"]["list"]
    assert order["orderStatus"] == "Filled" and order["cumExecQty"] == "0.01"
    assert float(order["cumExecFee"]) > 0
    with pytest.raises(ccxt.InvalidOrder):  # a blind retry is refused: 110072
        client.create_order(SYMBOL, "market", "buy", 0.01, params={"clientOrderId": "lost-1"})


def test_pybit_signs_requests_the_local_exchange_accepts(bybit_venue):
    pytest.importorskip("pybit", reason="pybit (a dev dependency) is not installed in this environment")
    from tests.exchange.bybit_support import pybit_session

    session = pybit_session(bybit_venue.url, API_KEY, API_SECRET)
    placed = session.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.01",
                                 orderLinkId="pybit-1")
    assert placed["retCode"] == 0 and placed["result"]["orderLinkId"] == "pybit-1"
    [position] = session.get_positions(category="linear", symbol="BTCUSDT")["result"]["list"]
    assert position["side"] == "Buy" and position["size"] == "0.01"
    wallet = session.get_wallet_balance(accountType="UNIFIED")["result"]["list"][0]
    assert wallet["accountType"] == "UNIFIED" and float(wallet["coin"][0]["walletBalance"]) < 10_000


def test_a_stale_timestamp_and_an_unknown_order_raise_what_bybit_would(bybit_venue):
    client = _client(bybit_venue)
    with pytest.raises(ccxt.OrderNotFound):  # 110001
        client.cancel_order("123", SYMBOL)
    client.options["timeDifference"] = 60_000  # the client's clock a minute behind: outside recv_window
    with pytest.raises(ccxt.InvalidNonce):  # 10002
        client.fetch_balance()


def test_the_clock_control_matches_and_protects_the_bybit_account(bybit_venue, bybit_datadir):
    from qt.errors import ConfigError

    client = _client(bybit_venue)
    close = float(_current_bar(bybit_datadir)["close"])
    client.create_order(SYMBOL, "limit", "buy", 0.01, round(close * 0.5, 1))
    with pytest.raises(ConfigError):  # backwards with a Bybit order open: refused, as for Binance
        bybit_venue.move_clock_to(NOW_MS - HOUR_MS)
    assert bybit_venue.advance(2)["bars_offered"] == 2  # the move itself offers the bars to the Bybit order
