"""Spot OCO order lists on the local exchange, through the real ccxt ``binance`` client (its implicit
``/api/v3/orderList`` methods): one base quantity locked once, the stop first when a bar touches
both legs, one leg ends the other, gaps fill at the open, the liquidity cap, Binance's refusals.

Expected prices and balances come from the hand-made candles (``tests.executor.live.support``:
calm bars at 30 000, bar 151 trading -10 %/+10 %, ``TP_BAR`` +10 %, ``GAP_BAR`` opening at -5 %)
and Binance's 0.1 % spot fee, never from the code under test.
"""

from __future__ import annotations

import ccxt
import pytest

from tests.executor.live.support import (GAP_BAR, MARKET_ID, PRICE, SPOT_SYMBOL, TP_BAR, WIDE_BARS, bar_ms,
                                         spot_client, write_spot_market)
from tests.executor.live.support import running_exchange

pytestmark = pytest.mark.slow

QTY = 0.1
STOP, LIMIT = PRICE * 0.97, PRICE * 1.06  # 29 100 and 31 800
FEE = 0.001  # spot, maker and taker


@pytest.fixture(scope="module")
def exchange(tmp_path_factory):
    with running_exchange(write_spot_market(tmp_path_factory.mktemp("oco-market"))) as ex:
        yield ex


@pytest.fixture
def venue(exchange):
    """1 BTC and 10 000 USDT, clock at the open of bar 100 (calm)."""
    exchange.set_faults({})
    exchange.reset_account(spot={"USDT": 10_000, "BTC": 1})
    exchange.move_clock_to(bar_ms(100))
    return exchange


def _oco(c, qty=QTY, stop=STOP, limit=LIMIT, cid="guard-1", **extra) -> dict:
    return c.private_post_orderlist_oco({"symbol": MARKET_ID, "side": "SELL", "quantity": str(qty),
                                         "aboveType": "LIMIT_MAKER", "abovePrice": str(limit),
                                         "belowType": "STOP_LOSS", "belowStopPrice": str(stop),
                                         "listClientOrderId": cid, **extra})


def _legs(c, placed: dict) -> tuple[dict, dict]:
    below, above = (c.fetch_order(str(o["orderId"]), SPOT_SYMBOL) for o in placed["orders"])
    return below, above


def _btc(c) -> dict:
    return c.fetch_balance()["BTC"]


def test_an_oco_locks_the_base_quantity_once_and_lists_both_legs(venue):
    c = spot_client(venue)
    placed = _oco(c)
    assert (placed["contingencyType"], placed["listStatusType"], placed["listOrderStatus"]) == \
        ("OCO", "EXEC_STARTED", "EXECUTING")
    assert [r["type"] for r in placed["orderReports"]] == ["STOP_LOSS", "LIMIT_MAKER"]
    assert _btc(c)["used"] == pytest.approx(QTY) and _btc(c)["free"] == pytest.approx(1 - QTY)
    (listed,) = c.private_get_openorderlist()
    assert listed["listClientOrderId"] == "guard-1"
    legs = c.fetch_open_orders(SPOT_SYMBOL)
    assert sorted(o["info"]["orderListId"] for o in legs) == [placed["orderListId"]] * 2


def test_a_bar_touching_both_legs_fills_the_stop_and_expires_the_limit(venue):
    c = spot_client(venue)
    placed = _oco(c)
    venue.move_clock_to(bar_ms(WIDE_BARS[1]))  # bars 101..151 offered; 151 trades -10 % and +10 %
    below, above = _legs(c, placed)
    assert (below["status"], below["average"], below["filled"]) == ("closed", pytest.approx(STOP), QTY)
    assert above["status"] == "expired" and above["filled"] == 0
    assert c.private_get_orderlist({"orderListId": placed["orderListId"]})["listStatusType"] == "ALL_DONE"
    assert c.private_get_openorderlist() == []
    assert _btc(c)["total"] == pytest.approx(1 - QTY) and _btc(c)["used"] == 0
    assert c.fetch_balance()["USDT"]["total"] == pytest.approx(10_000 + QTY * STOP * (1 - FEE))


def test_a_gap_through_the_stop_fills_at_the_open(venue):
    c = spot_client(venue)
    venue.move_clock_to(bar_ms(GAP_BAR - 1))
    placed = _oco(c, cid="gap")
    venue.advance(1)
    below, above = _legs(c, placed)
    assert below["average"] == pytest.approx(PRICE * 0.95)
    assert above["status"] == "expired"


def test_the_limit_leg_fills_at_its_price_and_expires_the_stop(venue):
    c = spot_client(venue)
    venue.move_clock_to(bar_ms(TP_BAR - 1))
    placed = _oco(c, cid="tp")
    venue.advance(1)
    below, above = _legs(c, placed)
    assert (above["status"], above["average"]) == ("closed", pytest.approx(LIMIT))
    assert below["status"] == "expired"
    assert c.fetch_balance()["USDT"]["total"] == pytest.approx(10_000 + QTY * LIMIT * (1 - FEE))


@pytest.mark.parametrize("how", ["list", "one leg"])
def test_cancelling_the_list_or_one_leg_cancels_both_and_unlocks_the_coins(venue, how):
    c = spot_client(venue)
    placed = _oco(c)
    if how == "list":
        answer = c.private_delete_orderlist({"symbol": MARKET_ID, "listClientOrderId": "guard-1"})
        assert answer["listOrderStatus"] == "ALL_DONE"
    else:
        c.cancel_order(str(placed["orders"][1]["orderId"]), SPOT_SYMBOL)
    assert [leg["status"] for leg in _legs(c, placed)] == ["canceled", "canceled"]
    assert _btc(c)["free"] == pytest.approx(1.0) and _btc(c)["used"] == 0
    with pytest.raises(ccxt.OrderNotFound):
        c.private_delete_orderlist({"symbol": MARKET_ID, "orderListId": placed["orderListId"]})


def test_under_the_liquidity_cap_the_stop_fills_in_part_and_the_rest_is_unlocked(venue):
    venue.reset_account(spot={"USDT": 10_000, "BTC": 1}, max_fill_qty_per_bar={MARKET_ID: "0.04"})
    c = spot_client(venue)
    placed = _oco(c)
    venue.move_clock_to(bar_ms(WIDE_BARS[1]))
    below, above = _legs(c, placed)
    assert (below["status"], below["filled"]) == ("expired", pytest.approx(0.04))  # a market order out of liquidity
    assert above["status"] == "expired"
    assert _btc(c)["free"] == pytest.approx(1 - 0.04) and _btc(c)["used"] == 0
    assert c.private_get_openorderlist() == []


@pytest.mark.parametrize("change, code, exc", [
    ({"abovePrice": str(PRICE * 0.99)}, -2010, ccxt.InvalidOrder),  # limit below the last price
    ({"belowStopPrice": str(PRICE * 1.01)}, -2010, ccxt.InvalidOrder),  # stop above the last price
    ({"quantity": "2"}, "insufficient balance", ccxt.InsufficientFunds),  # more than the 1 BTC held
    ({"quantity": "0.000001"}, -1013, ccxt.InvalidOrder),  # below the lot size
    ({"abovePrice": "31800.001"}, -1013, ccxt.InvalidOrder),  # off the tick
    ({"belowType": "STOP_LOSS_LIMIT"}, -1102, ccxt.BadRequest),  # a stop-limit needs its belowPrice
])
def test_a_malformed_oco_is_refused_with_binances_code_and_nothing_is_locked(venue, change, code, exc):
    c = spot_client(venue)
    with pytest.raises(exc) as err:
        _oco(c, **change)
    assert (f'"code":{code}' if isinstance(code, int) else code) in str(err.value)
    assert _btc(c)["used"] == 0 and c.private_get_openorderlist() == []


def test_a_second_open_list_with_the_same_client_id_is_refused(venue):
    c = spot_client(venue)
    _oco(c)
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
        _oco(c)
    assert len(c.private_get_openorderlist()) == 1


def test_a_stop_limit_leg_becomes_a_limit_at_its_price_when_triggered(venue):
    c = spot_client(venue)
    limit_price = PRICE * 0.965  # 28 950, below the 29 100 stop
    placed = _oco(c, cid="stop-limit", belowType="STOP_LOSS_LIMIT", belowPrice=str(limit_price),
                  belowTimeInForce="GTC")
    venue.move_clock_to(bar_ms(WIDE_BARS[1]))
    below, above = _legs(c, placed)
    assert (below["info"]["type"], below["status"], below["average"]) == \
        ("STOP_LOSS_LIMIT", "closed", pytest.approx(limit_price))
    assert above["status"] == "expired"
