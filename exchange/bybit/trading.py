"""Bybit v5's signed endpoints over the one matching engine (``exchange.matching``), through a
``TradingVenue`` of its own: Bybit's account is not Binance's (separate wallet, orders and
positions, as on the real exchanges) and its prices are the ``ohlcv/bybit`` candles.

    GET  /v5/user/query-api, /v5/account/info     what ccxt asks first (unified account: uta=1)
    GET  /v5/asset/coin/query-info                ccxt's fetch_currencies when keys are set
    GET  /v5/account/wallet-balance               accountType=UNIFIED, USDT only
    GET  /v5/position/list                        one-way positions (positionIdx 0)
    POST /v5/position/set-leverage                buy == sell leverage; 110043 when unchanged
    POST /v5/order/create                         Market, Limit (GTC), conditional (triggerPrice +
                                                  triggerDirection, reduceOnly); orderLinkId unique
                                                  for the account's life (110072), as on Bybit
    POST /v5/order/amend, /v5/order/cancel
    GET  /v5/order/realtime                       open orders; any order by orderId/orderLinkId
    GET  /v5/order/history                        finished orders (or those of ``orderStatus``), newest first
    GET  /v5/execution/list                       fills, newest first

Refusals are Bybit retCodes (``exchange.bybit.shapes.retcode_for``). Not simulated: hedge mode,
tpsl attached to an order (takeProfit/stopLoss), trailing stops, /v5/position/trading-stop,
batch endpoints, IOC/FOK/PostOnly limit orders (refused with 10001, never treated as GTC).
"""

from __future__ import annotations

import time
from decimal import Decimal

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from exchange.bybit import shapes
from exchange.bybit.auth import verify
from exchange.bybit.envelope import (DUPLICATE_ORDER_LINK_ID, LEVERAGE_NOT_MODIFIED, ORDER_NOT_EXISTS, BybitError,
                                     envelope, error_response, json_response, limit_param, linear_category,
                                     params_error, require)
from exchange.bybit.files import BybitFiles
from exchange.ledger import Rejected
from exchange.orders import PERP, Order, check_filters, would_trigger_now
from exchange.trading import TradingVenue


class BybitAccount:
    """The Bybit handlers: ``handler(params, now_ms) -> result`` over ``venue``."""

    def __init__(self, venue: TradingVenue):
        self.venue = venue

    @property
    def engine(self):
        return self.venue.engine

    # -- lookups --------------------------------------------------------------------------
    def _orders(self) -> list[Order]:
        """Every order the user placed (conditional ones once, not the orders they placed), oldest first."""
        rows = [o for o in self.engine.orders.values() if o.parent_algo_id is None and o.auto_close is None]
        rows += list(self.engine.algo_orders.values())
        return sorted(rows, key=lambda o: (o.created_ms, o.order_id))

    def _child(self, o: Order) -> Order | None:
        return self.engine.orders.get(o.actual_order_id) if o.algo and o.actual_order_id is not None else None

    def _shape(self, o: Order) -> dict:
        child = self._child(o)
        filled_id = child.order_id if child is not None else o.order_id
        fee = sum((t.commission for t in self.engine.trades if t.order_id == filled_id), Decimal(0))
        return shapes.order(o, child, fee)

    def _find(self, params: dict) -> Order:
        order_id, link_id = params.get("orderId") or None, params.get("orderLinkId") or None
        if order_id is None and link_id is None:
            raise params_error("orderId or orderLinkId is required")
        for o in self._orders():
            if o.symbol == params.get("symbol") and ((order_id is not None and str(o.order_id) == str(order_id))
                                                     or (order_id is None and o.client_id == link_id)):
                return o
        raise BybitError(ORDER_NOT_EXISTS, "Order does not exist.")

    def _is_open(self, o: Order) -> bool:
        return self._shape(o)["orderStatus"] in shapes.OPEN_STATUSES

    # -- account --------------------------------------------------------------------------
    def query_api(self, params: dict, now_ms: int) -> dict:
        perms = {"ContractTrade": ["Order", "Position"], "Spot": [], "Wallet": ["AccountTransfer"], "Options": [],
                 "Derivatives": [], "CopyTrading": [], "BlockTrade": [], "Exchange": [], "NFT": []}
        return {"id": "1", "note": "local exchange", "apiKey": "", "readOnly": 0, "secret": "",
                "permissions": perms, "ips": ["*"], "type": 1, "deadlineDay": -1, "expiredAt": "",
                "createdAt": "", "unified": 0, "uta": 1, "userID": 1, "inviterID": 0, "vipLevel": "No VIP",
                "mktMakerLevel": "0", "affiliateID": 0, "rsaPublicKey": "", "isMaster": True}

    def account_info(self, params: dict, now_ms: int) -> dict:
        return {"marginMode": "REGULAR_MARGIN", "updatedTime": str(now_ms), "unifiedMarginStatus": 6,
                "dcpStatus": "OFF", "timeWindow": 10, "smpGroup": 0, "isMasterTrader": False,
                "spotHedgingStatus": "OFF"}

    def coin_info(self, params: dict, now_ms: int) -> dict:
        coins = sorted({"USDT", *(m.base for m in BybitFiles(self.venue.data).markets().values())})
        return {"rows": [{"name": c, "coin": c, "remainAmount": "0", "chains": []} for c in coins]}

    def wallet_balance(self, params: dict, now_ms: int) -> dict:
        if require(params, "accountType") != "UNIFIED":
            raise params_error("accountType only support UNIFIED (local exchange)")
        marks = self.venue.marks(now_ms)
        return {"list": [shapes.wallet(self.engine.futures, marks, self.engine.open_order_margin())]}

    def position_list(self, params: dict, now_ms: int) -> dict:
        linear_category(params)
        symbol = params.get("symbol")
        if symbol:
            self.venue.listed(PERP, symbol, now_ms)
            symbols = [symbol]
        elif params.get("settleCoin") == "USDT":
            symbols = self.engine.futures.open_symbols()
        else:
            raise params_error("symbol or settleCoin is required")
        marks = self.venue.marks(now_ms, tuple(symbols))
        return {"category": "linear", "nextPageCursor": "",
                "list": [shapes.position(self.engine.futures, s, marks[s], now_ms) for s in symbols]}

    def set_leverage(self, params: dict, now_ms: int) -> dict:
        linear_category(params)
        symbol = require(params, "symbol")
        buy, sell = require(params, "buyLeverage"), require(params, "sellLeverage")
        if buy != sell:
            raise params_error("buy leverage must equal sell leverage in one-way mode")
        try:
            leverage = Decimal(buy)
        except ArithmeticError:
            raise params_error("buyLeverage invalid") from None
        if leverage != leverage.to_integral_value():
            raise params_error("leverage invalid (local exchange: whole leverages only)")
        self.venue.listed(PERP, symbol, now_ms)
        if int(leverage) == self.engine.futures.leverage_of(symbol):
            raise BybitError(LEVERAGE_NOT_MODIFIED, "leverage not modified")
        self.engine.set_leverage(symbol, int(leverage), self.venue.marks(now_ms, (symbol,)))
        return {}

    # -- orders ---------------------------------------------------------------------------
    def create(self, params: dict, now_ms: int) -> dict:
        linear_category(params)
        req = shapes.order_request(params)
        if req.client_id is not None and any(o.client_id == req.client_id for o in self._orders()):
            raise BybitError(DUPLICATE_ORDER_LINK_ID, "OrderLinkedID is duplicate")
        rules, bar = self.venue.current(PERP, req.symbol, now_ms)
        order = self.engine.submit(req, rules, bar, now_ms, self.venue.marks(now_ms, (req.symbol,)))
        return {"orderId": str(order.order_id), "orderLinkId": order.client_id}

    def cancel(self, params: dict, now_ms: int) -> dict:
        linear_category(params)
        order = self._find(params)
        if not self._is_open(order):
            raise BybitError(110008, "This order has been completed or cancelled.")
        rules, _ = self.venue.current(PERP, order.symbol, now_ms)
        self.engine.cancel(PERP, order.symbol, order.order_id, None, now_ms, rules, algo=order.algo)
        return {"orderId": str(order.order_id), "orderLinkId": order.client_id}

    def amend(self, params: dict, now_ms: int) -> dict:
        """Changes a resting order in place (Bybit keeps the order id), after the engine's own checks."""
        linear_category(params)
        order = self._find(params)
        if not self._is_open(order) or order.executed_qty:
            raise BybitError(110008, "This order has been completed or cancelled.")
        changes = {"qty": params.get("qty"), "price": params.get("price"), "triggerPrice": params.get("triggerPrice")}
        if not any(v not in (None, "") for v in changes.values()):
            raise params_error("nothing to amend")
        probe = shapes.order_request({"symbol": order.symbol, "side": "Buy" if order.side == "BUY" else "Sell",
                                      "orderType": "Limit" if order.type in ("LIMIT", "STOP", "TAKE_PROFIT")
                                      else "Market",
                                      "qty": changes["qty"] or str(order.qty),
                                      "price": changes["price"] or (str(order.price) if order.price else None),
                                      "triggerPrice": changes["triggerPrice"] or (str(order.stop_price)
                                                                                  if order.algo else None),
                                      "triggerDirection": shapes.order(order)["triggerDirection"],
                                      "reduceOnly": order.reduce_only})
        rules, bar = self.venue.current(PERP, order.symbol, now_ms)
        check_filters(probe, rules, probe.quantity, probe.price if probe.price is not None else bar.close)
        if order.algo and would_trigger_now(order.type, order.side, probe.stop_price, bar.close):
            raise Rejected(-2021, "Order would immediately trigger.")
        if not order.algo and (probe.price >= bar.close if order.side == "BUY" else probe.price <= bar.close):
            raise params_error("amending a resting order to a marketable price is not simulated")
        order.qty, order.price = probe.quantity, probe.price or order.price
        order.stop_price, order.updated_ms = probe.stop_price or order.stop_price, now_ms
        return {"orderId": str(order.order_id), "orderLinkId": order.client_id}

    def _selected(self, params: dict) -> list[Order]:
        symbol, kind = params.get("symbol"), params.get("orderFilter")
        rows = [o for o in self._orders() if (not symbol or o.symbol == symbol)
                and (kind is None or (kind == "StopOrder") == o.algo)]
        if params.get("orderId"):
            rows = [o for o in rows if str(o.order_id) == str(params["orderId"])]
        if params.get("orderLinkId"):
            rows = [o for o in rows if o.client_id == params["orderLinkId"]]
        return rows

    def _page(self, rows: list[dict], params: dict, maximum: int) -> dict:
        limit = limit_param(params, 20, maximum)
        start = int(params["cursor"]) if str(params.get("cursor", "")).isdigit() else 0
        page = rows[start:start + limit]
        more = start + limit < len(rows)
        return {"category": "linear", "list": page, "nextPageCursor": str(start + limit) if more else ""}

    def realtime(self, params: dict, now_ms: int) -> dict:
        linear_category(params)
        rows = self._selected(params)
        by_id = params.get("orderId") or params.get("orderLinkId")
        shaped = [self._shape(o) for o in reversed(rows)]
        if not by_id or str(params.get("openOnly", "0")) != "0":
            shaped = [r for r in shaped if r["orderStatus"] in shapes.OPEN_STATUSES]
        return self._page(shaped, params, 50)

    def history(self, params: dict, now_ms: int) -> dict:
        linear_category(params)
        start, end = params.get("startTime"), params.get("endTime")
        rows = [o for o in self._selected(params) if (not start or o.created_ms >= int(start))
                and (not end or o.created_ms <= int(end))]
        shaped = [self._shape(o) for o in reversed(rows)]
        wanted = params.get("orderStatus")  # without it: the finished orders (ccxt's closed and canceled)
        shaped = [r for r in shaped if (r["orderStatus"] == wanted if wanted
                                        else r["orderStatus"] not in shapes.OPEN_STATUSES)]
        return self._page(shaped, params, 50)

    def executions(self, params: dict, now_ms: int) -> dict:
        linear_category(params)
        symbol, order_id = params.get("symbol"), params.get("orderId")
        start, end = params.get("startTime"), params.get("endTime")
        rows = []
        for t in reversed(self.engine.trades):
            o = self.engine.orders[t.order_id]
            shaped = shapes.execution(t, o, self.engine.fees.rate(PERP, t.maker))
            if ((not symbol or t.symbol == symbol) and (not order_id or shaped["orderId"] == str(order_id))
                    and (not start or t.time_ms >= int(start)) and (not end or t.time_ms <= int(end))):
                rows.append(shaped)
        return self._page(rows, params, 100)

    def routes(self) -> list[tuple[str, str, object]]:
        return [("GET", "/v5/user/query-api", self.query_api), ("GET", "/v5/account/info", self.account_info),
                ("GET", "/v5/asset/coin/query-info", self.coin_info),
                ("GET", "/v5/account/wallet-balance", self.wallet_balance),
                ("GET", "/v5/position/list", self.position_list),
                ("POST", "/v5/position/set-leverage", self.set_leverage),
                ("POST", "/v5/order/create", self.create), ("POST", "/v5/order/amend", self.amend),
                ("POST", "/v5/order/cancel", self.cancel), ("GET", "/v5/order/realtime", self.realtime),
                ("GET", "/v5/order/history", self.history), ("GET", "/v5/execution/list", self.executions)]


def private_routes(venue: TradingVenue, api_keys: dict[str, str], clock) -> list[Route]:
    """Starlette routes of the signed v5 endpoints (checked and run under the venue's lock)."""
    account = BybitAccount(venue)

    def run(request_headers, method: str, query: str, body: str, handler):
        with venue.lock:
            params = verify(api_keys, request_headers, method, query, body, int(time.time() * 1000))
            now_ms = clock.now_ms()
            venue.sync(now_ms)
            return handler(params, now_ms)

    def endpoint(method: str, handler):
        async def serve(request: Request) -> Response:
            body = (await request.body()).decode("utf-8", errors="replace")
            try:
                result = await run_in_threadpool(run, request.headers, method, request.url.query, body, handler)
            except BybitError as exc:
                return error_response(exc, clock.now_ms())
            except Rejected as err:
                return error_response(shapes.retcode_for(err), clock.now_ms())
            return json_response(envelope(result, clock.now_ms()))
        return serve

    return [Route(path, endpoint(method, handler), methods=[method]) for method, path, handler in account.routes()]


__all__ = ["BybitAccount", "private_routes"]
