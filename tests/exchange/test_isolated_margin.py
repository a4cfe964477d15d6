"""Isolated margin, brackets and liquidation in the matching engine (pure, hand-made bars):
margin moved into the position and back, Binance's refusals, when and at what price a bar
liquidates, and which comes first - a stop or the liquidation."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from qt.margin import liquidation_price
from exchange.ledger import Rejected
from exchange.liquidation import force_orders
from exchange.matching import MatchingEngine
from exchange.orders import Bar, OrderRequest, SymbolRules

T0, HOUR = 1_700_000_000_000, 3_600_000
TAKER = D("0.0005")
PERP = SymbolRules("perp", "BTCUSDT", "BTC", "USDT", tick_size=D("0.01"), step_size=D("0.001"), min_qty=D("0.001"),
                   max_qty=D("1000"), market_max_qty=D("120"), min_notional=D("5"))


def bar(k: int, o, h, low, c) -> Bar:
    return Bar(T0 + k * HOUR, D(str(o)), D(str(h)), D(str(low)), D(str(c)))


NOW_BAR = bar(0, 100, 101, 99, 100)


def req(market="perp", side="BUY", type="MARKET", qty="1", **kw) -> OrderRequest:
    return OrderRequest(market=market, symbol="BTCUSDT", side=side, type=type, quantity=D(qty), **kw)


def marks(price="100") -> dict:
    return {"BTCUSDT": D(price)}


def refused(fn) -> tuple[int, str]:
    with pytest.raises(Rejected) as err:
        fn()
    return err.value.code, err.value.msg


def isolated_engine(wallet="1000", leverage=10) -> MatchingEngine:
    e = MatchingEngine({}, D(wallet))
    e.set_margin_type("BTCUSDT", "ISOLATED")
    e.set_leverage("BTCUSDT", leverage, marks())
    return e


def open_position(e: MatchingEngine, side="BUY", qty="1"):
    return e.submit(req("perp", side, qty=qty), PERP, NOW_BAR, T0, marks())


def stop(e: MatchingEngine, side: str, level: str, qty="1"):
    return e.submit(req("perp", side, "STOP_MARKET", qty=qty, stop_price=D(level), reduce_only=True, algo=True),
                    PERP, NOW_BAR, T0, marks())


def lp(side: str, entry=100.0, qty=1.0, leverage=10) -> D:
    return D(repr(liquidation_price(side, entry, qty, qty * entry / leverage)))


def test_an_isolated_position_holds_notional_over_leverage_taken_from_the_available_balance():
    e = isolated_engine()
    open_position(e)
    fee = 100 * TAKER
    assert e.futures.isolated_wallet("BTCUSDT") == 10  # 1 x 100 / 10
    assert e.futures.wallet == 1000 - fee  # Binance's walletBalance still holds it
    assert e.futures.cross_wallet() == 1000 - fee - 10
    assert e.futures.available(marks("95"), D(0)) == 1000 - fee - 10  # its loss is not the cross wallet's
    assert e.futures.liquidation_price("BTCUSDT") == lp("long")


def test_a_reduce_fill_releases_margin_pro_rata_and_books_pnl_and_fee_to_the_wallet():
    e = isolated_engine()
    open_position(e, qty="2")
    assert e.futures.isolated_wallet("BTCUSDT") == 20
    e.submit(req("perp", "SELL", qty="0.5", reduce_only=True), PERP, bar(1, 100, 104, 99, 104), T0 + HOUR, marks("104"))
    assert e.futures.isolated_wallet("BTCUSDT") == 15
    fees = 200 * TAKER + D("0.5") * 104 * TAKER
    assert e.futures.wallet == 1000 + D("0.5") * 4 - fees
    e.submit(req("perp", "SELL", qty="1.5", reduce_only=True), PERP, bar(1, 100, 104, 99, 104), T0 + HOUR, marks("104"))
    assert e.futures.isolated_wallet("BTCUSDT") == 0 and e.futures.cross_wallet() == e.futures.wallet


def test_margin_type_changes_are_refused_as_binance_refuses_them():
    e = MatchingEngine({}, D("1000"))
    assert refused(lambda: e.set_margin_type("BTCUSDT", "CROSSED")) == (-4046, "No need to change margin type.")
    e.submit(req("perp", type="LIMIT", qty="1", price=D("90")), PERP, NOW_BAR, T0, marks())
    assert refused(lambda: e.set_margin_type("BTCUSDT", "ISOLATED")) == (
        -4047, "Margin type cannot be changed if there exists open orders.")
    open_position(e)
    assert refused(lambda: e.set_margin_type("BTCUSDT", "ISOLATED")) == (
        -4048, "Margin type cannot be changed if there exists position.")
    assert e.futures.margin_type_of("BTCUSDT") == "CROSSED"


def test_leverage_above_the_brackets_maximum_for_the_position_is_refused_with_2027():
    e = MatchingEngine({}, D("100000"))
    e.submit(req("perp", qty="100"), PERP, NOW_BAR, T0, marks())
    e.submit(req("perp", qty="100"), PERP, NOW_BAR, T0, marks())  # 20 000 USDT at 20x...
    e.on_bar(PERP, bar(1, 100, 301, 99, 300), T0 + HOUR, marks("300"))  # ... now 60 000: past 125x's 50 000 cap
    assert refused(lambda: e.set_leverage("BTCUSDT", 125, marks("300")))[0] == -2027
    e.set_leverage("BTCUSDT", 100, marks("300"))
    big = req("perp", type="LIMIT", qty="900", price=D("700"))  # 60 000 + 630 000 > 100x's 600 000
    code, msg = refused(lambda: e.submit(big, PERP, bar(1, 100, 301, 99, 300), T0 + HOUR, marks("300")))
    assert (code, msg) == (-2027, "Exceeded the maximum allowable position at current leverage.")


def test_a_bar_reaching_a_longs_liquidation_price_cancels_its_orders_closes_it_there_and_takes_the_margin():
    e = isolated_engine()
    open_position(e)
    take = e.submit(req("perp", "SELL", "TAKE_PROFIT_MARKET", qty="1", stop_price=D("120"), reduce_only=True,
                        algo=True), PERP, NOW_BAR, T0, marks())
    far_stop = stop(e, "SELL", "80")  # beyond the liquidation price: the liquidation comes first
    wallet = e.futures.wallet
    e.on_bar(PERP, bar(1, 100, 101, 91, 95), T0 + HOUR, marks("95"))
    assert e.futures.position("BTCUSDT").amount == 1  # 91 > LP 90.36
    e.on_bar(PERP, bar(2, 95, 96, 79, 85), T0 + 2 * HOUR, marks("85"))
    assert e.futures.position("BTCUSDT").amount == 0
    assert (take.status, far_stop.status) == ("CANCELED", "CANCELED")
    (liq,) = force_orders(list(e.orders.values()), "BTCUSDT", None, None, None, None, T0 + 2 * HOUR)
    assert liq.client_id.startswith("autoclose-") and liq.client_id[10:].isdigit()
    assert (liq.type, liq.time_in_force, liq.status, liq.side) == ("LIMIT", "IOC", "FILLED", "SELL")
    assert liq.avg_price == lp("long") and liq.executed_qty == 1
    assert e.futures.wallet == wallet - 10  # exactly the isolated margin
    trade = e.trades[-1]
    assert trade.order_id == liq.order_id and trade.realized_pnl == lp("long") - 100
    assert trade.commission == lp("long") * TAKER


def test_a_gap_through_the_liquidation_price_closes_at_the_open_and_still_costs_only_the_margin():
    e = isolated_engine()
    open_position(e, "SELL")
    wallet = e.futures.wallet
    e.on_bar(PERP, bar(1, 115, 118, 114, 116), T0 + HOUR, marks("116"))  # LP 109.56: opened beyond it
    assert e.futures.position("BTCUSDT").amount == 0
    assert e.orders[max(e.orders)].avg_price == 115 and e.orders[max(e.orders)].side == "BUY"
    assert e.futures.wallet == wallet - 10


@pytest.mark.parametrize("side, stop_side, level, extreme", [("BUY", "SELL", "92", "low"),
                                                            ("SELL", "BUY", "108", "high")])
def test_a_stop_before_the_liquidation_price_fills_first_and_nothing_is_liquidated(side, stop_side, level, extreme):
    e = isolated_engine()
    open_position(e, side)
    guard = stop(e, stop_side, level)
    crossing = bar(1, 100, 125, 97, 100) if extreme == "high" else bar(1, 100, 103, 75, 100)
    wallet = e.futures.wallet
    e.on_bar(PERP, crossing, T0 + HOUR, marks())
    assert guard.status == "FINISHED" and e.futures.position("BTCUSDT").amount == 0
    assert force_orders(list(e.orders.values()), None, None, None, None, None, T0 + HOUR) == []
    pnl = (D(level) - 100) * (1 if side == "BUY" else -1)
    assert e.futures.wallet == wallet + pnl - D(level) * TAKER  # the margin came back, less the loss


def test_short_liquidation_mirrors_the_long():
    e = isolated_engine()
    open_position(e, "SELL")
    e.on_bar(PERP, bar(1, 100, 109, 99, 105), T0 + HOUR, marks("105"))
    assert e.futures.position("BTCUSDT").amount == -1
    e.on_bar(PERP, bar(2, 105, 111, 104, 106), T0 + 2 * HOUR, marks("106"))
    assert e.futures.position("BTCUSDT").amount == 0
    assert e.orders[max(e.orders)].avg_price == lp("short") == D(repr(110 / 1.004))


def test_cross_positions_are_not_liquidated_and_show_no_liquidation_price():
    e = MatchingEngine({}, D("1000"))
    e.set_leverage("BTCUSDT", 10, marks())
    open_position(e)
    assert e.futures.liquidation_price("BTCUSDT") == 0
    e.on_bar(PERP, bar(1, 100, 101, 50, 60), T0 + HOUR, marks("60"))
    assert e.futures.position("BTCUSDT").amount == 1


def test_force_orders_refuses_a_bad_auto_close_type_and_adl_is_empty():
    e = isolated_engine()
    open_position(e)
    e.on_bar(PERP, bar(1, 100, 101, 50, 60), T0 + HOUR, marks("60"))
    rows = list(e.orders.values())
    assert len(force_orders(rows, None, "LIQUIDATION", None, None, None, T0 + HOUR)) == 1
    assert force_orders(rows, None, "ADL", None, None, None, T0 + HOUR) == []
    assert force_orders(rows, None, None, T0 + 2 * HOUR, None, None, T0 + 3 * HOUR) == []
    assert refused(lambda: force_orders(rows, None, "BOTH", None, None, None, T0))[0] == -1130
