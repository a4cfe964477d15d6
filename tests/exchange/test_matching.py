"""The matching engine and the signature check as pure functions: what the local exchange
promises about fills, fees, refusals and triggers, with hand-made bars."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from exchange.auth import sign, verify
from exchange.ledger import Rejected
from exchange.matching import MatchingEngine
from exchange.orders import Bar, FeeRates, OrderRequest, SymbolRules

T0 = 1_700_000_000_000
HOUR = 3_600_000


def rules(market: str) -> SymbolRules:
    return SymbolRules(market, "BTCUSDT", "BTC", "USDT", tick_size=D("0.01"), step_size=D("0.001"),
                       min_qty=D("0.001"), max_qty=D("1000"), market_max_qty=D("120"), min_notional=D("5"))


SPOT, PERP = rules("spot"), rules("perp")


def bar(k: int, o, h, low, c) -> Bar:
    return Bar(T0 + k * HOUR, D(str(o)), D(str(h)), D(str(low)), D(str(c)))


NOW_BAR = bar(0, 100, 101, 99, 100)


def engine(**kw) -> MatchingEngine:
    return MatchingEngine({"USDT": D("1000")}, D("1000"), **kw)


def req(market="spot", side="BUY", type="MARKET", qty="1", **kw) -> OrderRequest:
    return OrderRequest(market=market, symbol="BTCUSDT", side=side, type=type,
                        quantity=D(qty) if qty is not None else None, **kw)


def marks(price="100") -> dict:
    return {"BTCUSDT": D(price)}


def refused(fn) -> tuple[int, str]:
    with pytest.raises(Rejected) as err:
        fn()
    return err.value.code, err.value.msg


def test_spot_market_buy_fills_at_the_bar_close_and_charges_the_taker_fee_in_the_base_asset():
    e = engine()
    order = e.submit(req(qty="2"), SPOT, NOW_BAR, T0, marks())
    assert (order.status, order.executed_qty, order.avg_price) == ("FILLED", D("2"), D("100"))
    assert e.spot.free_of("USDT") == D("1000") - 2 * 100
    assert e.spot.free_of("BTC") == D("2") - D("2") * D("0.001")
    assert e.trades[0].commission_asset == "BTC" and not e.trades[0].maker


def test_spot_limit_buy_locks_quote_rests_and_fills_at_its_price_as_maker_when_a_bar_reaches_it():
    e = engine()
    order = e.submit(req(type="LIMIT", qty="1", price=D("95")), SPOT, NOW_BAR, T0, marks())
    assert order.status == "NEW" and e.spot.locked_of("USDT") == 95 and e.spot.free_of("USDT") == 905
    e.on_bar(SPOT, bar(1, 100, 102, 96, 101), T0 + HOUR, marks())
    assert order.status == "NEW"  # the low stayed above 95
    e.on_bar(SPOT, bar(2, 101, 101, 94, 97), T0 + 2 * HOUR, marks())
    assert order.status == "FILLED" and order.avg_price == 95
    assert e.spot.locked_of("USDT") == 0 and e.spot.free_of("USDT") == 905
    assert e.spot.free_of("BTC") == 1 - D("0.001") and e.trades[-1].maker


def test_a_resting_limit_is_not_filled_by_a_bar_that_only_touches_its_price():
    """The queue ahead of a resting order may take all of a touch: the same rule as the paper broker."""
    e = engine()
    buy = e.submit(req(type="LIMIT", qty="1", price=D("95")), SPOT, NOW_BAR, T0, marks())
    e.on_bar(SPOT, bar(1, 100, 102, 95, 101), T0 + HOUR, marks())
    assert buy.status == "NEW"  # low == 95: touched, not traded through
    e.on_bar(SPOT, bar(2, 101, 101, 94.99, 97), T0 + 2 * HOUR, marks())
    assert buy.status == "FILLED" and buy.avg_price == 95
    sell = e.submit(req(side="SELL", type="LIMIT", qty="0.5", price=D("105")), SPOT, bar(2, 101, 101, 94.99, 97),
                    T0 + 2 * HOUR, marks("97"))
    e.on_bar(SPOT, bar(3, 97, 105, 96, 104), T0 + 3 * HOUR, marks("104"))
    assert sell.status == "NEW"  # high == 105
    e.on_bar(SPOT, bar(4, 104, 105.5, 103, 105), T0 + 4 * HOUR, marks("105"))
    assert sell.status == "FILLED" and sell.avg_price == 105


def test_marketable_limit_fills_at_once_at_the_current_price_and_refunds_the_difference():
    e = engine()
    order = e.submit(req(type="LIMIT", qty="1", price=D("110")), SPOT, NOW_BAR, T0, marks())
    assert order.status == "FILLED" and order.avg_price == 100
    assert e.spot.free_of("USDT") == 900 and e.spot.locked_of("USDT") == 0


def _long_with_protection(e: MatchingEngine, sl="95", tp="105"):
    e.submit(req("perp", qty="2"), PERP, NOW_BAR, T0, marks())
    stop = e.submit(req("perp", "SELL", "STOP_MARKET", qty="2", stop_price=D(sl), reduce_only=True, algo=True),
                    PERP, NOW_BAR, T0, marks())
    take = e.submit(req("perp", "SELL", "TAKE_PROFIT_MARKET", qty=None, stop_price=D(tp), close_position=True,
                        algo=True), PERP, NOW_BAR, T0, marks())
    return stop, take


def test_a_bar_touching_both_stop_and_take_profit_fills_the_stop_first():
    e = engine()
    stop, take = _long_with_protection(e)
    assert [o.status for o in e.open_orders("perp", algo=True)] == ["NEW", "NEW"]
    wallet_before = e.futures.wallet
    e.on_bar(PERP, bar(1, 100, 106, 94, 104), T0 + HOUR, marks("104"))
    assert stop.status == "FINISHED" and take.status == "EXPIRED"  # nothing left for the take-profit
    child = e.orders[stop.actual_order_id]
    assert child.avg_price == 95 and child.reduce_only and child.status == "FILLED"
    assert e.futures.position("BTCUSDT").amount == 0
    assert e.futures.wallet - wallet_before == 2 * (95 - 100) - 2 * 95 * D("0.0005")


def test_a_stop_gapped_through_fills_at_the_bar_open():
    e = engine()
    stop, _ = _long_with_protection(e)
    e.on_bar(PERP, bar(1, 90, 91, 88, 89), T0 + HOUR, marks("89"))
    assert e.orders[stop.actual_order_id].avg_price == 90


def test_take_profit_alone_fills_at_its_trigger_and_realises_the_gain():
    e = engine()
    stop, take = _long_with_protection(e)
    e.on_bar(PERP, bar(1, 100, 106, 99, 104), T0 + HOUR, marks("104"))
    assert take.status == "FINISHED" and stop.status == "NEW"  # reduce-only stop stays until touched
    assert e.trades[-1].price == 105 and e.trades[-1].realized_pnl == 2 * (105 - 100)
    e.on_bar(PERP, bar(2, 104, 104, 90, 91), T0 + 2 * HOUR, marks("91"))
    assert stop.status == "EXPIRED"  # flat: the reduce-only stop has nothing to reduce


def test_futures_pnl_and_fees_reach_the_wallet():
    e = engine()
    e.submit(req("perp", qty="3"), PERP, NOW_BAR, T0, marks())
    e.submit(req("perp", "SELL", qty="3", reduce_only=True), PERP, bar(1, 110, 111, 109, 110), T0 + HOUR,
             marks("110"))
    fees = 3 * 100 * D("0.0005") + 3 * 110 * D("0.0005")
    assert e.futures.wallet == 1000 + 3 * (110 - 100) - fees
    assert e.futures.position("BTCUSDT").amount == 0


def test_liquidity_cap_gives_partial_fills_limit_keeps_working_market_expires():
    e = engine(max_fill_qty_per_bar={"BTCUSDT": D("0.4")})
    limit = e.submit(req(type="LIMIT", qty="1", price=D("95")), SPOT, NOW_BAR, T0, marks())
    e.on_bar(SPOT, bar(1, 100, 100, 94, 96), T0 + HOUR, marks())
    assert (limit.status, limit.executed_qty) == ("PARTIALLY_FILLED", D("0.4"))
    e.on_bar(SPOT, bar(2, 96, 97, 93, 94), T0 + 2 * HOUR, marks())
    e.on_bar(SPOT, bar(3, 94, 95, 92, 93), T0 + 3 * HOUR, marks())
    assert (limit.status, limit.executed_qty) == ("FILLED", D("1"))
    market = e.submit(req(qty="1"), SPOT, bar(4, 93, 94, 92, 93), T0 + 4 * HOUR, marks())
    assert (market.status, market.executed_qty) == ("EXPIRED", D("0.4"))


@pytest.mark.parametrize("market, request_kw, code, msg", [
    ("spot", dict(qty="0.0015"), -1013, "Filter failure: LOT_SIZE"),
    ("spot", dict(qty="0.01"), -1013, "Filter failure: NOTIONAL"),  # 1 USDT < 5
    ("spot", dict(type="LIMIT", qty="1", price=D("99.995")), -1013, "Filter failure: PRICE_FILTER"),
    ("spot", dict(qty="20"), -2010, "Account has insufficient balance for requested action."),
    ("perp", dict(qty="0.01"), -4164, "Order's notional must be no smaller than 5 (unless you choose reduce only)."),
    ("perp", dict(qty="0.0015"), -1111, "Precision is over the maximum defined for this asset."),
    ("perp", dict(qty="121"), -4005, "Quantity greater than max quantity."),
    ("perp", dict(type="LIMIT", qty="300", price=D("100")), -2019, "Margin is insufficient."),  # 30 000 / 20x
    ("perp", dict(side="SELL", qty="1", reduce_only=True), -2022, "ReduceOnly Order is rejected."),
    ("perp", dict(type="STOP_MARKET", qty="1", stop_price=D("90")), -4120,
     "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead."),
    ("perp", dict(side="SELL", type="STOP_MARKET", qty="1", stop_price=D("101"), algo=True), -2021,
     "Order would immediately trigger."),
    ("perp", dict(type="LIMIT", qty="1", price=D("90"), time_in_force="IOC"), -1130,
     "Data sent for parameter 'timeInForce' is not valid. (local exchange: only GTC is simulated, got 'IOC')"),
])
def test_refusals_carry_binances_code_and_message(market, request_kw, code, msg):
    e = engine()
    kw = {"side": "BUY", **request_kw}
    assert refused(lambda: e.submit(req(market, **kw), rules(market), NOW_BAR, T0, marks())) == (code, msg)
    assert not e.orders and not e.algo_orders and not e.trades


def test_leverage_sets_the_margin_an_order_needs():
    e = engine()
    limit = dict(type="LIMIT", price=D("100"))
    assert refused(lambda: e.submit(req("perp", qty="201", **limit), PERP, NOW_BAR, T0, marks()))[0] == -2019
    e.set_leverage("BTCUSDT", 25, marks())  # 20 100 / 25 = 804 <= 1 000
    assert e.submit(req("perp", qty="201", **limit), PERP, NOW_BAR, T0, marks()).status == "FILLED"
    assert refused(lambda: e.set_leverage("BTCUSDT", 126, marks()))[0] == -4028


def test_duplicate_client_id_is_refused_while_the_first_is_open_and_lookup_finds_the_first():
    e = engine()
    first = e.submit(req(type="LIMIT", qty="1", price=D("90"), client_id="abc"), SPOT, NOW_BAR, T0, marks())
    assert refused(lambda: e.submit(req(qty="1", client_id="abc"), SPOT, NOW_BAR, T0, marks())) == \
        (-2010, "Duplicate order sent.")
    assert e.find("spot", "BTCUSDT", None, "abc") is first and len(e.orders) == 1
    e.submit(req("perp", type="LIMIT", qty="1", price=D("90"), client_id="xyz"), PERP, NOW_BAR, T0, marks())
    assert refused(lambda: e.submit(req("perp", type="LIMIT", qty="1", price=D("90"), client_id="xyz"), PERP,
                                    NOW_BAR, T0, marks()))[0] == -4116


def test_cancel_releases_the_lock_and_unknown_orders_answer_2011_and_2013():
    e = engine()
    order = e.submit(req(type="LIMIT", qty="1", price=D("90")), SPOT, NOW_BAR, T0, marks())
    e.cancel("spot", "BTCUSDT", order.order_id, None, T0, SPOT)
    assert order.status == "CANCELED" and e.spot.free_of("USDT") == 1000 and e.spot.locked_of("USDT") == 0
    assert refused(lambda: e.cancel("spot", "BTCUSDT", order.order_id, None, T0, SPOT)) == \
        (-2011, "Unknown order sent.")
    assert refused(lambda: e.find("spot", "BTCUSDT", 999, None)) == (-2013, "Order does not exist.")


def test_spot_stop_loss_limit_waits_for_its_trigger_then_sells_at_its_limit():
    e = engine()
    e.submit(req(qty="2"), SPOT, NOW_BAR, T0, marks())
    held = e.spot.free_of("BTC")
    stop = e.submit(req(side="SELL", type="STOP_LOSS_LIMIT", qty="1", price=D("94"), stop_price=D("95")),
                    SPOT, NOW_BAR, T0, marks())
    assert not stop.working and e.spot.locked_of("BTC") == 1 and e.spot.free_of("BTC") == held - 1
    e.on_bar(SPOT, bar(1, 100, 101, 96, 97), T0 + HOUR, marks())
    assert stop.status == "NEW" and not stop.working
    e.on_bar(SPOT, bar(2, 97, 98, 93, 94), T0 + 2 * HOUR, marks())
    assert stop.status == "FILLED" and stop.avg_price == 94


def test_trailing_stop_follows_the_high_and_triggers_on_the_pullback():
    e = engine()
    e.submit(req("perp", qty="1"), PERP, NOW_BAR, T0, marks())
    trail = e.submit(req("perp", "SELL", "TRAILING_STOP_MARKET", qty="1", reduce_only=True,
                         callback_rate=D("2"), algo=True), PERP, NOW_BAR, T0, marks())
    e.on_bar(PERP, bar(1, 100, 110, 100, 109), T0 + HOUR, marks("109"))  # extreme 110, level 107.8
    assert trail.status == "NEW"
    e.on_bar(PERP, bar(2, 109, 109, 107, 108), T0 + 2 * HOUR, marks("108"))
    assert trail.status == "FINISHED" and e.trades[-1].price == D("110") * D("0.98")



def test_trailing_stop_level_within_a_bar_comes_from_the_bars_before_it_and_a_gap_fills_at_the_open():
    e = engine()
    e.submit(req("perp", qty="1"), PERP, NOW_BAR, T0, marks())  # long 1 at 100; the trail starts at 100
    trail = e.submit(req("perp", "SELL", "TRAILING_STOP_MARKET", qty="1", reduce_only=True,
                         callback_rate=D("5"), algo=True), PERP, NOW_BAR, T0, marks())
    # in force during bar 1: 100 x 0.95 = 95; its close (104) is below 110 x 0.95 = 104.5 but that
    # level only applies from bar 2 on
    e.on_bar(PERP, bar(1, 100, 110, 99, 104), T0 + HOUR, marks("104"))
    assert trail.status == "NEW"
    e.on_bar(PERP, bar(2, 104, 105, 103, 104), T0 + 2 * HOUR, marks("104"))  # opens below 104.5
    assert trail.status == "FINISHED" and e.trades[-1].price == D("104")


def test_trailing_stop_exits_on_the_bar_and_at_the_price_the_paper_broker_does():
    from executor.paper import MarketOrder, PaperBroker
    from executor.portfolio import Bar as PaperBar
    from qt.config import CostParams

    path = [(100, 103, 99.5, 102), (102, 106, 101, 105), (105, 105.5, 102, 103), (103, 104, 100, 101)]
    e = engine()
    e.submit(req("perp", qty="1"), PERP, NOW_BAR, T0, marks())
    trail = e.submit(req("perp", "SELL", "TRAILING_STOP_MARKET", qty="1", reduce_only=True,
                         callback_rate=D("2.5"), algo=True), PERP, NOW_BAR, T0, marks())
    paper = PaperBroker(CostParams(fee_rate=0.0, slippage_bps=0.0))
    paper.submit(MarketOrder(1, "X", "buy", "entry", "signal_buy", notional_usdt=100.0, stop_loss_pct=0.5,
                             take_profit_pct=5.0, trailing_stop_pct=0.025))
    exits = {}
    for k, (o, h, lo, c) in enumerate(path, start=1):
        if trail.is_open:
            e.on_bar(PERP, bar(k, o, h, lo, c), T0 + k * HOUR, marks(str(c)))
            if not trail.is_open:
                exits["exchange"] = (k, float(e.trades[-1].price))
        for f in paper.process_bar({"X": PaperBar("X", k, o, h, lo, c)}).fills:
            if f.purpose == "exit":
                exits["paper"] = (k, f.price)
    # by hand: peak 103 after bar 1, 106 after bar 2; bar 3's low 102 <= 106 x 0.975 = 103.35
    assert exits["exchange"] == (3, pytest.approx(103.35))
    assert exits["paper"] == exits["exchange"]


def test_when_one_bar_reaches_two_stops_the_higher_sell_stop_fills_first():
    e = engine()
    e.submit(req("perp", qty="1"), PERP, NOW_BAR, T0, marks())
    stop = e.submit(req("perp", "SELL", "STOP_MARKET", qty="1", reduce_only=True, stop_price=D("95"), algo=True),
                    PERP, NOW_BAR, T0, marks())
    trail = e.submit(req("perp", "SELL", "TRAILING_STOP_MARKET", qty="1", reduce_only=True,
                         callback_rate=D("2"), algo=True), PERP, NOW_BAR, T0 + 1, marks())
    e.on_bar(PERP, bar(1, 100, 100.5, 90, 91), T0 + HOUR, marks("91"))  # a falling price meets 98 before 95
    assert trail.status == "FINISHED" and e.trades[-1].price == D("98")
    assert stop.status == "EXPIRED"  # nothing left to reduce

# -- signatures -----------------------------------------------------------------------------
# Binance's documented example (USDT-M futures "SIGNED Endpoint Examples for POST /fapi/v1/order").
DOC_SECRET = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
DOC_PAYLOAD = ("symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC"
               "&recvWindow=5000&timestamp=1591702613943")
DOC_SIGNATURE = "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"


def test_signature_matches_binances_documented_example():
    assert sign(DOC_SECRET, DOC_PAYLOAD) == DOC_SIGNATURE


@pytest.mark.parametrize("where", ["query", "body", "split"])
def test_signed_parameters_are_accepted_in_query_body_or_both(where):
    keys = {"k": DOC_SECRET}
    signed = f"{DOC_PAYLOAD}&signature={DOC_SIGNATURE}"
    wall = 1591702613943 + 100
    if where == "query":
        params = verify(keys, "k", signed, "", wall)
    elif where == "body":
        params = verify(keys, "k", "", signed, wall)
    else:  # totalParams = query + body, no '&' between them (Binance's example 3)
        query, body = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC", \
            "quantity=1&price=9000&recvWindow=5000&timestamp=1591702613943"
        params = verify(keys, "k", query, f"{body}&signature={sign(DOC_SECRET, query + body)}", wall)
    assert params["symbol"] == "BTCUSDT" and params["price"] == "9000"


@pytest.mark.parametrize("api_key, payload, wall_delta, code", [
    ("k", f"{DOC_PAYLOAD}&signature={'0' * 64}", 100, -1022),
    ("nope", f"{DOC_PAYLOAD}&signature={DOC_SIGNATURE}", 100, -2015),
    (None, f"{DOC_PAYLOAD}&signature={DOC_SIGNATURE}", 100, -2014),
    ("k", DOC_PAYLOAD, 100, -1102),
    ("k", f"{DOC_PAYLOAD}&signature={DOC_SIGNATURE}", 6000, -1021),  # older than recvWindow
])
def test_bad_credentials_or_stale_requests_are_refused(api_key, payload, wall_delta, code):
    assert refused(lambda: verify({"k": DOC_SECRET}, api_key, payload, "", 1591702613943 + wall_delta))[0] == code


def test_fee_rates_are_configurable():
    e = engine(fees=FeeRates(spot_taker=D("0")))
    e.submit(req(qty="1"), SPOT, NOW_BAR, T0, marks())
    assert e.spot.free_of("BTC") == 1
