"""Spot OCO order lists on the local exchange (pure: placing, matching, cancelling, their JSON).

Binance spot has no reduce-only orders; what guards a spot position with a stop-loss AND a
take-profit at once is an OCO order list (``POST /api/v3/orderList/oco``): two SELL legs over
ONE quantity of the base asset, the *below* leg a ``STOP_LOSS`` (market on trigger) or
``STOP_LOSS_LIMIT``, the *above* leg a ``LIMIT_MAKER``. When one leg triggers or (partly) fills,
the other is expired at once; the base quantity is locked once for the whole list (not per
leg), so the held coins guard the sell and nothing can sell them twice.

Matched per bar by the same conservative rule as the paper broker (``qt.fills.stop_fill``):

* the stop leg is looked at first; when the bar reaches its stop price it triggers and
  fills at ``min(stop, open)`` (a gap fills at the open; this exchange has no slippage model
  beyond that), taker fee; the LIMIT_MAKER leg is expired even if the same bar also
  reached it (a bar that touches both is read as "the stop came first");
* otherwise the LIMIT_MAKER leg fills when the bar's high reaches its price, at
  ``max(price, open)`` (the same rule, reached rising), maker fee; the stop leg is expired;
* the per-bar liquidity cap (``max_fill_qty_per_bar``) applies as to every order: a
  STOP_LOSS leg that cannot fill completely has its remainder EXPIRED (a market order out of
  liquidity), a LIMIT_MAKER or triggered STOP_LOSS_LIMIT leg keeps its remainder working;
* the list ends ``ALL_DONE`` when no leg is open; what was locked and not sold is unlocked.

Cancelling the list, or either leg through ``DELETE /api/v3/order``, cancels both legs (as on
Binance). Only SELL lists with LIMIT_MAKER above and STOP_LOSS / STOP_LOSS_LIMIT below are
simulated; other shapes are refused with -1130 naming what is not simulated.

The lists live on the engine (``OcoLists``, attached with ``MatchingEngine.attach_groups``): the
engine offers them each bar and hands them a cancelled leg without importing this module, and an
account reset (a new engine) clears them.

Endpoints (served by ``exchange.trading.order_list_routes``): ``POST /api/v3/orderList/oco``,
``GET|DELETE /api/v3/orderList``, ``GET /api/v3/openOrderList``, ``GET /api/v3/allOrderList``.
Refusals use Binance's codes: -1102 missing parameter, -1013 filter failures, -2010 wrong price
relationship / duplicate / insufficient balance, -2011 cancelling an unknown list, -2013
querying one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from qt.fills import stop_fill
from exchange import shapes
from exchange.ledger import ZERO, Rejected, insufficient_spot_balance
from exchange.matching import MatchingEngine
from exchange.orders import SPOT, Bar, Order, OrderRequest, SymbolRules, check_filters
from exchange.params import mandatory

STOP_LEGS = ("STOP_LOSS", "STOP_LOSS_LIMIT")
LIMIT_LEG = "LIMIT_MAKER"


@dataclass
class OrderList:
    list_id: int
    symbol: str
    client_id: str
    below_id: int  # the stop leg
    above_id: int  # the LIMIT_MAKER leg
    qty: Decimal
    created_ms: int
    updated_ms: int
    done: bool = False

    @property
    def status_type(self) -> str:
        return "ALL_DONE" if self.done else "EXEC_STARTED"

    @property
    def order_status(self) -> str:
        return "ALL_DONE" if self.done else "EXECUTING"


@dataclass(frozen=True)
class OcoRequest:
    symbol: str
    side: str
    quantity: Decimal
    above_type: str
    above_price: Decimal | None
    below_type: str
    below_stop_price: Decimal | None
    below_price: Decimal | None = None
    below_time_in_force: str | None = None
    list_client_id: str | None = None
    above_client_id: str | None = None
    below_client_id: str | None = None


class OcoLists:
    """The spot OCO lists of one engine (``MatchingEngine``'s ``OrderGroups``): matched with it bar
    by bar, and cancelled whole when the engine is asked to cancel one of their legs."""

    def __init__(self, engine: MatchingEngine):
        self.engine = engine
        self.by_id: dict[int, OrderList] = {}

    def match_bar(self, rules: SymbolRules, bar: Bar, now_ms: int, marks: dict[str, Decimal]) -> None:
        if rules.market == SPOT and self.by_id:
            match_lists(self.engine, rules, bar, now_ms, marks)

    def cancel_group_of(self, order: Order, rules: SymbolRules, now_ms: int) -> None:
        cancel_list(self.engine, list_of(self.engine, order), rules, now_ms)


def attach(engine: MatchingEngine) -> OcoLists:
    """The engine's OCO lists, attached to it on first use."""
    groups = engine.groups
    if isinstance(groups, OcoLists):
        return groups
    groups = OcoLists(engine)
    engine.attach_groups(groups)
    return groups


def order_lists(engine: MatchingEngine) -> dict[int, OrderList]:
    """The engine's order lists by id (kept on the engine so an account reset clears them)."""
    return attach(engine).by_id


def _not_simulated(what: str) -> Rejected:
    return Rejected(-1130, f"Data sent for parameter '{what}' is not valid. (local exchange: only SELL OCO lists "
                           f"with aboveType=LIMIT_MAKER and belowType=STOP_LOSS or STOP_LOSS_LIMIT are simulated)")


# -- placing --------------------------------------------------------------------------------
def submit_oco(engine: MatchingEngine, req: OcoRequest, rules: SymbolRules, bar: Bar, now_ms: int) -> OrderList:
    """Validate and accept a SELL OCO; locks ``quantity`` of the base asset once."""
    if req.side not in ("BUY", "SELL"):
        raise Rejected(-1117, "Invalid side.")
    if req.side != "SELL":
        raise _not_simulated("side")
    if req.above_type != LIMIT_LEG:
        raise _not_simulated("aboveType")
    if req.below_type not in STOP_LEGS:
        raise _not_simulated("belowType")
    if req.above_price is None:
        raise mandatory("abovePrice")
    if req.below_stop_price is None:
        raise mandatory("belowStopPrice")
    if req.below_type == "STOP_LOSS_LIMIT":
        if req.below_price is None:
            raise mandatory("belowPrice")
        if req.below_time_in_force is None:
            raise mandatory("belowTimeInForce")
        if req.below_time_in_force != "GTC":
            raise Rejected(-1130, "Data sent for parameter 'belowTimeInForce' is not valid. "
                                  "(local exchange: only GTC is simulated)")
    qty = req.quantity
    for price, stop, type_ in ((req.above_price, None, LIMIT_LEG),
                               (req.below_price, req.below_stop_price, req.below_type)):
        leg = OrderRequest(SPOT, req.symbol, "SELL", type_, quantity=qty, price=price, stop_price=stop)
        check_filters(leg, rules, qty, stop if stop is not None else price)
    if not req.above_price > bar.close > req.below_stop_price:  # SELL: limit > last > stop
        raise Rejected(-2010, "The relationship of the prices for the orders is not correct.")
    lists = order_lists(engine)
    list_cid = req.list_client_id or f"qtl-{uuid.uuid4().hex[:20]}"
    if any(not lst.done and lst.client_id == list_cid for lst in lists.values()):
        raise Rejected(-2010, "Duplicate order sent.")
    leg_cids = [req.below_client_id or f"qt-{uuid.uuid4().hex[:22]}",
                req.above_client_id or f"qt-{uuid.uuid4().hex[:22]}"]
    if leg_cids[0] == leg_cids[1] or any(o.client_id in leg_cids for o in engine.open_orders(SPOT)):
        raise Rejected(-2010, "Duplicate order sent.")
    if qty > engine.spot.free_of(rules.base):
        raise insufficient_spot_balance()
    engine.spot.lock(rules.base, qty)
    list_id = len(lists) + 1

    def leg(cid: str, type_: str, price: Decimal | None, stop: Decimal | None) -> Order:
        order = Order(order_id=engine.next_order_id(), market=SPOT, symbol=req.symbol, client_id=cid, side="SELL",
                      type=type_, qty=qty, price=price or ZERO, stop_price=stop or ZERO, time_in_force="GTC",
                      reduce_only=False, close_position=False, algo=False, created_ms=now_ms, updated_ms=now_ms,
                      working=type_ == LIMIT_LEG, order_list_id=list_id)
        engine.orders[order.order_id] = order
        return order

    below = leg(leg_cids[0], req.below_type, req.below_price, req.below_stop_price)
    above = leg(leg_cids[1], LIMIT_LEG, req.above_price, None)
    lst = OrderList(list_id, req.symbol, list_cid, below.order_id, above.order_id, qty, now_ms, now_ms)
    lists[list_id] = lst
    return lst


def legs(engine: MatchingEngine, lst: OrderList) -> tuple[Order, Order]:
    return engine.orders[lst.below_id], engine.orders[lst.above_id]


# -- matching -------------------------------------------------------------------------------
def match_lists(engine: MatchingEngine, rules: SymbolRules, bar: Bar, now_ms: int,
                marks: dict[str, Decimal]) -> None:
    """Offer one bar of ``rules.symbol`` to its open OCO lists (called by ``MatchingEngine.on_bar``)."""
    for lst in sorted(order_lists(engine).values(), key=lambda x: x.list_id):
        if lst.done or lst.symbol != rules.symbol:
            continue
        below, above = legs(engine, lst)
        stop = stop_fill(below.stop_price, bar)  # the stop leg's fill price, None if not reached
        limit = stop_fill(above.price, bar, selling=False)  # the limit leg's, reached rising
        if below.is_open and not below.working:
            if stop is not None:  # the stop first, also when the bar reached the limit too
                below.working, below.trigger_ms = True, now_ms
                _expire(above, now_ms)
                if below.type == "STOP_LOSS":
                    engine.fill(below, rules, bar, stop, maker=False, now_ms=now_ms, marks=marks)
                    if below.is_open:  # a market order out of liquidity: the rest expires
                        _expire(below, now_ms)
                elif bar.high >= below.price:  # STOP_LOSS_LIMIT: a limit from here on
                    engine.fill(below, rules, bar, below.price, maker=False, now_ms=now_ms, marks=marks)
            elif above.is_open and limit is not None:
                _expire(below, now_ms)
                engine.fill(above, rules, bar, limit, maker=True, now_ms=now_ms, marks=marks)
        elif below.is_open and below.working and bar.high >= below.price:  # a triggered stop-limit's remainder
            engine.fill(below, rules, bar, below.price, maker=True, now_ms=now_ms, marks=marks)
        elif above.is_open and limit is not None:  # a partly filled limit leg keeps working
            engine.fill(above, rules, bar, limit, maker=True, now_ms=now_ms, marks=marks)
        _finish_if_done(engine, lst, rules, now_ms)


def _expire(order: Order, now_ms: int) -> None:
    if order.is_open:
        order.status, order.updated_ms = "EXPIRED", now_ms


def _finish_if_done(engine: MatchingEngine, lst: OrderList, rules: SymbolRules, now_ms: int) -> None:
    below, above = legs(engine, lst)
    if lst.done or below.is_open or above.is_open:
        return
    sold = below.executed_qty + above.executed_qty
    engine.spot.unlock(rules.base, lst.qty - sold)
    lst.done, lst.updated_ms = True, now_ms


def cancel_list(engine: MatchingEngine, lst: OrderList, rules: SymbolRules, now_ms: int) -> OrderList:
    """Cancel both legs (whichever are open) and unlock what is left; -2011 if the list is done."""
    if lst.done:
        raise Rejected(-2011, "Order list does not exist.")
    for order in legs(engine, lst):
        if order.is_open:
            order.status, order.updated_ms = "CANCELED", now_ms
    _finish_if_done(engine, lst, rules, now_ms)
    return lst


def list_of(engine: MatchingEngine, order: Order) -> OrderList | None:
    list_id = order.order_list_id
    return order_lists(engine).get(list_id) if list_id is not None else None


def find_list(engine: MatchingEngine, list_id: int | None, client_id: str | None, code: int = -2013) -> OrderList:
    if list_id is None and not client_id:
        raise Rejected(-1102, "Param 'origClientOrderId' or 'orderListId' must be sent, but both were empty/null!")
    lists = order_lists(engine)
    if list_id is not None:
        lst = lists.get(list_id)
    else:
        matches = [x for x in lists.values() if x.client_id == client_id]
        lst = matches[-1] if matches else None
    if lst is None:
        raise Rejected(code, "Order list does not exist.")
    return lst


# -- shapes ---------------------------------------------------------------------------------
def list_shape(engine: MatchingEngine, lst: OrderList, reports: str | None = None) -> dict:
    """Binance's order-list JSON; ``reports``: "RESULT" (POST), "CANCEL" (DELETE) or None (GET)."""
    below, above = legs(engine, lst)
    out = {"orderListId": lst.list_id, "contingencyType": "OCO", "listStatusType": lst.status_type,
           "listOrderStatus": lst.order_status, "listClientOrderId": lst.client_id,
           "transactionTime": lst.updated_ms if reports == "CANCEL" else lst.created_ms, "symbol": lst.symbol,
           "orders": [{"symbol": o.symbol, "orderId": o.order_id, "clientOrderId": o.client_id}
                      for o in (below, above)]}
    if reports == "RESULT":
        out["orderReports"] = [shapes.spot_order(o, [], "RESULT") for o in (below, above)]
    elif reports == "CANCEL":
        out["orderReports"] = [{**shapes.spot_cancel(o, o.client_id), "orderListId": lst.list_id}
                               for o in (below, above)]
    return out


__all__ = ["OcoLists", "OcoRequest", "OrderList", "attach", "cancel_list", "find_list", "list_of", "list_shape",
           "match_lists", "order_lists", "submit_oco"]
