"""The local exchange's order and account endpoints: HTTP in, ``MatchingEngine`` calls, Binance JSON out.

Served (all SIGNED: ``X-MBX-APIKEY`` + HMAC ``signature`` checked against the keys configured
at start, see ``exchange.auth``)

    spot    ``/api/v3``: order (POST/GET/DELETE), openOrders (GET/DELETE), allOrders, account, myTrades
    USDT-M  ``/fapi/v1``: order (POST/GET/DELETE), openOrders, allOpenOrders (DELETE), allOrders,
            userTrades, algoOrder (POST/GET/DELETE), openAlgoOrders, allAlgoOrders, algoOpenOrders
            (DELETE); the account endpoints - leverage, marginType, symbolConfig, positionSide/dual,
            leverageBracket, commissionRate, forceOrders, ``/fapi/v2|v3`` account, balance,
            positionRisk - are ``exchange.futures_routes``

Each symbol's price and filters come from the data dir at the exchange clock: the current bar
is the stored candle containing ``now`` (the one the ticker reports), its filters are those
``exchangeInfo`` serves at that moment. Before every signed request, and when the clock is moved
(``POST /_qt/clock``), the bars opened since the last sync are offered to the resting orders
and to the isolated positions they may liquidate (``exchange.liquidation``), in time order
across symbols (``TradingVenue.sync``), so a wall-clock server and a replayed one match the
same way.

One lock serialises every trading call: the engine's state is one account.
"""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from exchange import oco, shapes
from exchange.auth import verify
from exchange.datadir import Bars, DataDir, MarketFiles
from exchange.futures_routes import futures_routes
from exchange.ledger import Rejected
from exchange.matching import MatchingEngine
from exchange.orders import PERP, SPOT, Bar, FeeRates, Order, OrderRequest, SymbolRules
from exchange.params import bool_param, decimal_param, int_param, mandatory, required
from exchange.views import PERP_MARKET_MAX_QTY, PERP_MAX_QTY, SPOT_MAX_QTY, derive_filters

DEFAULT_SPOT_BALANCES = {"USDT": Decimal(10_000)}
DEFAULT_FUTURES_WALLET = Decimal(10_000)


def _d(value: float) -> Decimal:
    return Decimal(repr(float(value)))


class TradingVenue:
    """The account, its engine and the data dir's prices at the clock, behind one lock."""

    def __init__(self, data: DataDir, clock, api_keys: dict[str, str], markets=None, book=None):
        """``markets(kind)`` lists the tradable markets by exchange id (default: the data dir's
        Binance folders); the Bybit venue passes its own (``exchange.bybit.files``), so one
        engine class serves both protocols, each venue with its own account and prices.
        ``book`` (an ``exchange.book_fills.BookLevels``): MARKET orders of the symbols it covers walk it."""
        self.data, self.clock, self.book = data, clock, book
        self._markets = markets or data.markets
        self._api_keys = dict(api_keys)
        self.lock = threading.Lock()
        self.engine = self._new_engine(MatchingEngine(DEFAULT_SPOT_BALANCES, DEFAULT_FUTURES_WALLET))
        self.synced_ms = clock.now_ms()

    def _new_engine(self, engine: MatchingEngine) -> MatchingEngine:
        """The engine with the spot OCO lists attached (matched each bar, cancelled by a leg) and,
        with a book, market orders priced by walking it."""
        oco.attach(engine)
        if self.book is not None:
            engine.market_price = self._market_price
        return engine

    def _market_price(self, order: Order, bar: Bar, now_ms: int) -> Decimal:
        return self.book.fill_price(order, bar, now_ms) if self.book.covers(order.market, order.symbol) \
            else bar.close

    def __repr__(self) -> str:  # never show the keys
        return f"TradingVenue(keys={len(self._api_keys)}, synced_ms={self.synced_ms})"

    # -- market state at a time ----------------------------------------------------------
    def listed(self, kind: str, symbol: str, now_ms: int) -> tuple[MarketFiles, Bars]:
        market = self._markets(kind).get(symbol)
        if market is None:
            raise Rejected(-1121, "Invalid symbol.")
        bars = self.data.bars(market, market.finest_timeframe)
        if not len(bars) or bars.ts_ms[0] > now_ms:
            raise Rejected(-1121, "Invalid symbol.")
        return market, bars

    @staticmethod
    def _bar(bars: Bars, i: int) -> Bar:
        return Bar(int(bars.ts_ms[i]), _d(bars.open[i]), _d(bars.high[i]), _d(bars.low[i]), _d(bars.close[i]))

    def current(self, kind: str, symbol: str, now_ms: int) -> tuple[SymbolRules, Bar]:
        """The symbol's filters (as exchangeInfo states them now) and its current bar."""
        market, bars = self.listed(kind, symbol, now_ms)
        i = int(np.searchsorted(bars.ts_ms, now_ms, side="right")) - 1
        return self._rules(kind, market, float(bars.close[i])), self._bar(bars, i)

    @staticmethod
    def _rules(kind: str, market: MarketFiles, price: float) -> SymbolRules:
        f = derive_filters(price)
        step = Decimal(f.step_size)
        max_qty = Decimal(SPOT_MAX_QTY if kind == SPOT else PERP_MAX_QTY)
        market_max = max_qty if kind == SPOT else Decimal(PERP_MARKET_MAX_QTY)
        return SymbolRules(kind, market.exchange_id, market.base, market.quote, Decimal(f.tick_size), step, step,
                           max_qty, market_max, Decimal(f.min_notional))

    def marks(self, now_ms: int, extra: tuple[str, ...] = ()) -> dict[str, Decimal]:
        """Mark price (current close) of every perpetual with a position, plus ``extra``."""
        out = {}
        for symbol in {*self.engine.futures.open_symbols(), *extra}:
            _, bars = self.listed(PERP, symbol, now_ms)
            out[symbol] = _d(bars.close[int(np.searchsorted(bars.ts_ms, now_ms, side="right")) - 1])
        return out

    # -- matching as time passes ---------------------------------------------------------
    def sync(self, now_ms: int) -> int:
        """Offer every bar opened in (last sync, now] to the resting orders; returns bars offered."""
        if now_ms <= self.synced_ms:
            return 0
        events = []
        for kind, symbol in self.engine.symbols_to_match():
            market, bars = self.listed(kind, symbol, now_ms)
            lo = int(np.searchsorted(bars.ts_ms, self.synced_ms, side="right"))
            hi = int(np.searchsorted(bars.ts_ms, now_ms, side="right"))
            events += [(int(bars.ts_ms[i]), kind, symbol, market, bars, i) for i in range(lo, hi)]
        events.sort(key=lambda e: (e[0], e[1], e[2]))
        for ts, kind, symbol, market, bars, i in events:
            if (kind, symbol) not in self.engine.symbols_to_match():
                continue
            rules = self._rules(kind, market, float(bars.close[i]))
            marks = self.marks(ts, (symbol,) if kind == PERP else ())
            self.engine.on_bar(rules, self._bar(bars, i), ts, marks)
        self.synced_ms = now_ms
        return len(events)

    # -- entry point for every signed request ---------------------------------------------
    def signed(self, api_key: str | None, query: str, body: str, handler) -> object:
        with self.lock:
            params = verify(self._api_keys, api_key, query, body, int(time.time() * 1000))
            now_ms = self.clock.now_ms()
            self.sync(now_ms)
            return handler(params, now_ms)

    def reset(self, spot: dict[str, Decimal], futures_wallet: Decimal, fees: FeeRates,
              max_fill_qty_per_bar: dict[str, Decimal]) -> None:
        with self.lock:
            self.engine = self._new_engine(MatchingEngine(spot, futures_wallet, fees, max_fill_qty_per_bar))
            self.synced_ms = self.clock.now_ms()

    # -- spot -----------------------------------------------------------------------------
    def _request(self, kind: str, params: dict, algo: bool = False) -> OrderRequest:
        return OrderRequest(
            market=kind, symbol=required(params, "symbol"), side=required(params, "side"),
            type=required(params, "type"), quantity=decimal_param(params, "quantity"),
            price=decimal_param(params, "price"),
            stop_price=decimal_param(params, "triggerPrice" if algo else "stopPrice"),
            quote_qty=decimal_param(params, "quoteOrderQty") if kind == SPOT else None,
            time_in_force=params.get("timeInForce") or "GTC",
            reduce_only=bool_param(params, "reduceOnly"), close_position=bool_param(params, "closePosition"),
            client_id=params.get("clientAlgoId" if algo else "newClientOrderId") or None,
            callback_rate=decimal_param(params, "callbackRate"),
            activation_price=decimal_param(params, "activatePrice"),
            algo=algo)

    def _submit(self, kind: str, params: dict, now_ms: int, algo: bool = False) -> Order:
        if kind == SPOT and params.get("trailingDelta"):
            raise Rejected(-1130, "Data sent for parameter 'trailingDelta' is not valid. "
                                  "(local exchange: spot trailing stops are not simulated)")
        if kind == SPOT and params.get("reduceOnly"):
            raise Rejected(-1106, "Parameter 'reduceOnly' sent when not required.")
        req = self._request(kind, params, algo)
        rules, bar = self.current(kind, req.symbol, now_ms)
        marks = self.marks(now_ms, (req.symbol,) if kind == PERP else ())
        return self.engine.submit(req, rules, bar, now_ms, marks)

    def spot_new_order(self, params: dict, now_ms: int) -> dict:
        order = self._submit(SPOT, params, now_ms)
        resp = params.get("newOrderRespType") or ("FULL" if order.type in ("MARKET", "LIMIT") else "ACK")
        trades = [t for t in self.engine.trades if t.order_id == order.order_id]
        return shapes.spot_order(order, trades, resp)

    def _lookup(self, kind: str, params: dict, algo: bool = False) -> tuple[str, int | None, str | None]:
        symbol = required(params, "symbol")
        if algo:
            return symbol, int_param(params, "algoId"), params.get("clientAlgoId")
        return symbol, int_param(params, "orderId"), params.get("origClientOrderId")

    def spot_query(self, params: dict, now_ms: int) -> dict:
        symbol, oid, cid = self._lookup(SPOT, params, False)
        self.listed(SPOT, symbol, now_ms)
        return shapes.spot_order(self.engine.find(SPOT, symbol, oid, cid))

    def spot_cancel(self, params: dict, now_ms: int) -> dict:
        symbol, oid, cid = self._lookup(SPOT, params, False)
        rules, _ = self.current(SPOT, symbol, now_ms)
        order = self.engine.cancel(SPOT, symbol, oid, cid, now_ms, rules)
        return shapes.spot_cancel(order, params.get("newClientOrderId") or f"cancel-{order.order_id}")

    def spot_open_orders(self, params: dict, now_ms: int) -> list:
        symbol = params.get("symbol") or None
        if symbol:
            self.listed(SPOT, symbol, now_ms)
        return [shapes.spot_order(o) for o in self.engine.open_orders(SPOT, symbol)]

    def spot_cancel_all(self, params: dict, now_ms: int) -> list:
        symbol = required(params, "symbol")
        rules, _ = self.current(SPOT, symbol, now_ms)
        orders = self.engine.open_orders(SPOT, symbol)
        if not orders:
            raise Rejected(-2011, "Unknown order sent.")
        return [shapes.spot_cancel(self.engine.cancel(SPOT, symbol, o.order_id, None, now_ms, rules),
                                   f"cancel-{o.order_id}") for o in orders if o.is_open]  # an OCO leg ends its sibling

    def _history(self, kind: str, params: dict, now_ms: int, algo: bool = False) -> list[Order]:
        symbol = required(params, "symbol")
        self.listed(kind, symbol, now_ms)
        start, end = int_param(params, "startTime"), int_param(params, "endTime")
        first = int_param(params, "algoId" if algo else "orderId")
        limit = min(int_param(params, "limit") or 500, 1000)
        rows = [o for o in self.engine.book(algo).values() if o.market == kind and o.symbol == symbol
                and (first is None or o.order_id >= first) and (start is None or o.created_ms >= start)
                and (end is None or o.created_ms <= end)]
        return rows[:limit] if (first is not None or start is not None) else rows[-limit:]

    def spot_all_orders(self, params: dict, now_ms: int) -> list:
        return [shapes.spot_order(o) for o in self._history(SPOT, params, now_ms)]

    def spot_account(self, params: dict, now_ms: int) -> dict:
        fees = self.engine.fees
        return shapes.spot_account(self.engine.spot, fees.spot_maker, fees.spot_taker, now_ms,
                                   bool_param(params, "omitZeroBalances"))

    def _trades(self, kind: str, params: dict, now_ms: int) -> list:
        symbol = required(params, "symbol")
        self.listed(kind, symbol, now_ms)
        order_id, from_id = int_param(params, "orderId"), int_param(params, "fromId")
        start, end = int_param(params, "startTime"), int_param(params, "endTime")
        limit = min(int_param(params, "limit") or 500, 1000)
        rows = [t for t in self.engine.trades if t.market == kind and t.symbol == symbol
                and (order_id is None or t.order_id == order_id) and (from_id is None or t.trade_id >= from_id)
                and (start is None or t.time_ms >= start) and (end is None or t.time_ms <= end)]
        return rows[:limit] if (from_id is not None or start is not None) else rows[-limit:]

    def spot_my_trades(self, params: dict, now_ms: int) -> list:
        return [shapes.spot_trade(t) for t in self._trades(SPOT, params, now_ms)]

    # -- USDT-M ---------------------------------------------------------------------------
    def perp_new_order(self, params: dict, now_ms: int) -> dict:
        return shapes.perp_order(self._submit(PERP, params, now_ms), with_time=False)

    def perp_query(self, params: dict, now_ms: int) -> dict:
        symbol, oid, cid = self._lookup(PERP, params)
        self.listed(PERP, symbol, now_ms)
        return shapes.perp_order(self.engine.find(PERP, symbol, oid, cid))

    def perp_cancel(self, params: dict, now_ms: int) -> dict:
        symbol, oid, cid = self._lookup(PERP, params)
        rules, _ = self.current(PERP, symbol, now_ms)
        return shapes.perp_order(self.engine.cancel(PERP, symbol, oid, cid, now_ms, rules), with_time=False)

    def perp_open_orders(self, params: dict, now_ms: int) -> list:
        symbol = params.get("symbol") or None
        if symbol:
            self.listed(PERP, symbol, now_ms)
        return [shapes.perp_order(o) for o in self.engine.open_orders(PERP, symbol)]

    def perp_cancel_all(self, params: dict, now_ms: int) -> dict:
        symbol = required(params, "symbol")
        rules, _ = self.current(PERP, symbol, now_ms)
        for o in self.engine.open_orders(PERP, symbol):
            self.engine.cancel(PERP, symbol, o.order_id, None, now_ms, rules)
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def perp_all_orders(self, params: dict, now_ms: int) -> list:
        return [shapes.perp_order(o) for o in self._history(PERP, params, now_ms)]

    def perp_user_trades(self, params: dict, now_ms: int) -> list:
        return [shapes.perp_trade(t) for t in self._trades(PERP, params, now_ms)]

    def _child(self, algo: Order) -> Order | None:
        return self.engine.orders.get(algo.actual_order_id) if algo.actual_order_id is not None else None

    def algo_new(self, params: dict, now_ms: int) -> dict:
        if params.get("algoType") != "CONDITIONAL":
            raise Rejected(-1130, "Data sent for parameter 'algoType' is not valid.")
        order = self._submit(PERP, params, now_ms, algo=True)
        return shapes.algo_order(order, None)

    def algo_query(self, params: dict, now_ms: int) -> dict:
        symbol, oid, cid = self._lookup(PERP, params, algo=True)
        self.listed(PERP, symbol, now_ms)
        order = self.engine.find(PERP, symbol, oid, cid, algo=True)
        return shapes.algo_order(order, self._child(order))

    def algo_cancel(self, params: dict, now_ms: int) -> dict:
        symbol, oid, cid = self._lookup(PERP, params, algo=True)
        rules, _ = self.current(PERP, symbol, now_ms)
        order = self.engine.cancel(PERP, symbol, oid, cid, now_ms, rules, algo=True)
        return {"algoId": order.order_id, "clientAlgoId": order.client_id, "code": "200", "msg": "success"}

    def algo_open(self, params: dict, now_ms: int) -> list:
        symbol = params.get("symbol") or None
        if symbol:
            self.listed(PERP, symbol, now_ms)
        return [shapes.algo_order(o, None) for o in self.engine.open_orders(PERP, symbol, algo=True)]

    def algo_all(self, params: dict, now_ms: int) -> list:
        return [shapes.algo_order(o, self._child(o)) for o in self._history(PERP, params, now_ms, algo=True)]

    def algo_cancel_all(self, params: dict, now_ms: int) -> dict:
        symbol = required(params, "symbol")
        rules, _ = self.current(PERP, symbol, now_ms)
        for o in self.engine.open_orders(PERP, symbol, algo=True):
            self.engine.cancel(PERP, symbol, o.order_id, None, now_ms, rules, algo=True)
        return {"code": 200, "msg": "success"}

    def is_listed(self, kind: str, symbol: str, now_ms: int) -> bool:
        try:
            self.listed(kind, symbol, now_ms)
        except Rejected:
            return False
        return True

    # -- routes ---------------------------------------------------------------------------
    def routes(self) -> list[tuple[str, str, object]]:
        """(method, path, handler(params, now_ms)) of every signed endpoint."""
        return [
            ("POST", "/api/v3/order", self.spot_new_order), ("GET", "/api/v3/order", self.spot_query),
            ("DELETE", "/api/v3/order", self.spot_cancel), ("GET", "/api/v3/openOrders", self.spot_open_orders),
            ("DELETE", "/api/v3/openOrders", self.spot_cancel_all), ("GET", "/api/v3/allOrders", self.spot_all_orders),
            ("GET", "/api/v3/account", self.spot_account), ("GET", "/api/v3/myTrades", self.spot_my_trades),
            ("POST", "/fapi/v1/order", self.perp_new_order), ("GET", "/fapi/v1/order", self.perp_query),
            ("DELETE", "/fapi/v1/order", self.perp_cancel), ("GET", "/fapi/v1/openOrders", self.perp_open_orders),
            ("DELETE", "/fapi/v1/allOpenOrders", self.perp_cancel_all),
            ("GET", "/fapi/v1/allOrders", self.perp_all_orders), ("GET", "/fapi/v1/userTrades", self.perp_user_trades),
            ("POST", "/fapi/v1/algoOrder", self.algo_new), ("GET", "/fapi/v1/algoOrder", self.algo_query),
            ("DELETE", "/fapi/v1/algoOrder", self.algo_cancel), ("GET", "/fapi/v1/openAlgoOrders", self.algo_open),
            ("GET", "/fapi/v1/allAlgoOrders", self.algo_all),
            ("DELETE", "/fapi/v1/algoOpenOrders", self.algo_cancel_all),
            *futures_routes(self),  # leverage, margin type, brackets, account, positions, liquidations
            *order_list_routes(self),  # spot OCO order lists
        ]


def order_list_routes(venue: TradingVenue) -> list[tuple[str, str, object]]:
    """(method, path, handler(params, now_ms)) of the spot OCO order-list endpoints (``exchange.oco``)."""

    def new_oco(params: dict, now_ms: int) -> dict:
        symbol = required(params, "symbol")
        quantity = decimal_param(params, "quantity")
        if quantity is None:
            raise mandatory("quantity")
        req = oco.OcoRequest(symbol=symbol, side=required(params, "side"), quantity=quantity,
                             above_type=required(params, "aboveType"), above_price=decimal_param(params, "abovePrice"),
                             below_type=required(params, "belowType"),
                             below_stop_price=decimal_param(params, "belowStopPrice"),
                             below_price=decimal_param(params, "belowPrice"),
                             below_time_in_force=params.get("belowTimeInForce") or None,
                             list_client_id=params.get("listClientOrderId") or None,
                             above_client_id=params.get("aboveClientOrderId") or None,
                             below_client_id=params.get("belowClientOrderId") or None)
        rules, bar = venue.current(SPOT, symbol, now_ms)
        return oco.list_shape(venue.engine, oco.submit_oco(venue.engine, req, rules, bar, now_ms), "RESULT")

    def query(params: dict, now_ms: int) -> dict:
        lst = oco.find_list(venue.engine, int_param(params, "orderListId"), params.get("origClientOrderId"))
        return oco.list_shape(venue.engine, lst)

    def cancel(params: dict, now_ms: int) -> dict:
        symbol = required(params, "symbol")
        rules, _ = venue.current(SPOT, symbol, now_ms)
        lst = oco.find_list(venue.engine, int_param(params, "orderListId"), params.get("listClientOrderId"),
                            code=-2011)
        if lst.symbol != symbol:
            raise Rejected(-2011, "Order list does not exist.")
        return oco.list_shape(venue.engine, oco.cancel_list(venue.engine, lst, rules, now_ms), "CANCEL")

    def open_lists(params: dict, now_ms: int) -> list:
        return [oco.list_shape(venue.engine, x) for x in oco.order_lists(venue.engine).values() if not x.done]

    def all_lists(params: dict, now_ms: int) -> list:
        limit = min(int_param(params, "limit") or 500, 1000)
        return [oco.list_shape(venue.engine, x) for x in oco.order_lists(venue.engine).values()][-limit:]

    return [("POST", "/api/v3/orderList/oco", new_oco), ("GET", "/api/v3/orderList", query),
            ("DELETE", "/api/v3/orderList", cancel), ("GET", "/api/v3/openOrderList", open_lists),
            ("GET", "/api/v3/allOrderList", all_lists)]


def starlette_routes(venue: TradingVenue) -> list:
    """Starlette routes of the signed endpoints; a refusal is Binance's ``{"code", "msg"}``."""
    def endpoint(handler):
        async def run(request: Request) -> Response:
            body = (await request.body()).decode("latin-1")
            try:
                payload = await run_in_threadpool(venue.signed, request.headers.get("x-mbx-apikey"),
                                                  request.url.query, body, handler)
                status = 200
            except Rejected as err:
                payload, status = {"code": err.code, "msg": err.msg}, err.status
            return Response(json.dumps(payload, separators=(",", ":")), status_code=status,
                            media_type="application/json")
        return run

    return [Route(path, endpoint(handler), methods=[method]) for method, path, handler in venue.routes()]
