"""The pure parts of the Bybit side: the v5 signature check, the order translation onto the
engine's vocabulary and the refusal codes (no server)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from exchange.auth import sign
from exchange.bybit.auth import verify
from exchange.bybit.envelope import BybitError
from exchange.bybit.shapes import order_request, retcode_for
from exchange.ledger import Rejected

KEYS = {"key": "secret"}
WALL_MS = 1_700_000_000_000


def _headers(timestamp: int, payload: str, secret: str = "secret", key: str = "key", window: str = "5000") -> dict:
    return {"x-bapi-api-key": key, "x-bapi-timestamp": str(timestamp), "x-bapi-recv-window": window,
            "x-bapi-sign": sign(secret, f"{timestamp}{key}{window}{payload}")}


def test_a_signed_get_and_post_give_their_parameters():
    query = "category=linear&symbol=BTCUSDT"
    assert verify(KEYS, _headers(WALL_MS, query), "GET", query, "", WALL_MS) == {"category": "linear",
                                                                                   "symbol": "BTCUSDT"}
    body = '{"category":"linear","qty":"0.01"}'
    assert verify(KEYS, _headers(WALL_MS - 100, body), "POST", "", body, WALL_MS)["qty"] == "0.01"


@pytest.mark.parametrize("headers, code", [
    (_headers(WALL_MS, "a=1", key="other"), 10003),  # unknown key
    (_headers(WALL_MS, "a=1", secret="wrong"), 10004),  # bad signature
    (_headers(WALL_MS, "a=2"), 10004),  # signed another payload
    (_headers(WALL_MS - 6000, "a=1"), 10002),  # older than the recv window
    (_headers(WALL_MS + 1000, "a=1"), 10002),  # from the future
])
def test_bad_requests_get_bybits_codes(headers, code):
    with pytest.raises(BybitError) as err:
        verify(KEYS, headers, "GET", "a=1", "", WALL_MS)
    assert err.value.ret_code == code and "secret" not in err.value.msg


@pytest.mark.parametrize("side, direction, kind, expected", [
    ("Sell", "2", "Market", "STOP_MARKET"),  # a sell when the price falls to it: a stop-loss of a long
    ("Sell", "1", "Market", "TAKE_PROFIT_MARKET"),
    ("Buy", "1", "Market", "STOP_MARKET"),  # a buy when the price rises to it: a stop of a short
    ("Buy", "2", "Limit", "TAKE_PROFIT"),
])
def test_conditional_orders_become_the_engines_algo_orders(side, direction, kind, expected):
    req = order_request({"symbol": "BTCUSDT", "side": side, "orderType": kind, "qty": "0.01", "price": "100",
                         "triggerPrice": "99", "triggerDirection": direction, "reduceOnly": True})
    assert req.algo and req.type == expected and req.stop_price == Decimal("99") and req.reduce_only


def test_plain_orders_and_refused_shapes():
    req = order_request({"symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit", "qty": "0.5", "price": "10",
                         "orderLinkId": "x"})
    assert (req.type, req.side, req.quantity, req.price, req.client_id, req.algo) == \
        ("LIMIT", "BUY", Decimal("0.5"), Decimal("10"), "x", False)
    for bad in ({"side": "Long"}, {"orderType": "StopLimit"}, {"qty": ""}, {"timeInForce": "GTD"},
                {"triggerPrice": "9"}, {"positionIdx": 1}):
        with pytest.raises(BybitError) as err:
            order_request({"symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit", "qty": "1", "price": "10", **bad})
        assert err.value.ret_code == 10001


@pytest.mark.parametrize("binance, bybit", [(-2019, 110007), (-2013, 110001), (-2022, 110017), (-4116, 110072),
                                            (-2021, 110092), (-1013, 110094), (-4003, 10001)])
def test_engine_refusals_map_to_bybit_codes(binance, bybit):
    assert retcode_for(Rejected(binance, "msg")).ret_code == bybit
