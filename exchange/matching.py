"""The local exchange's matching engine: orders against the replayed price bars (pure, no I/O).

There is no order book. The exchange's price for a symbol is its *current bar* (the stored
candle containing the clock, the one the ticker's ``lastPrice`` comes from):

* A MARKET order, and a LIMIT order that is marketable on arrival, fills at once at the
  current bar's close (taker). Nothing clever: no spread, no slippage model - unless the venue
  sets ``market_price`` (``--book``: a MARKET order walks a recorded book, ``exchange.book_fills``).
* A resting order is matched when the clock advances: each new bar (open time in
  (previous now, now]) is offered to the symbol's open orders, oldest first, stop-type orders
  before take-profits and limits, so a bar that touches both a stop and a take-profit fills the
  stop first (the conservative reading of an OHLC bar).
  - A resting LIMIT buy at P fills when the low goes strictly below P, a sell when the high goes
    strictly above P, at P (maker): a touch is not enough (the queue ahead of the order may take
    all of it) - the executor's paper broker uses the same rule.
  - A stop or take-profit triggers when the bar reaches its trigger price and fills at the
    trigger price, or at the bar's open when the bar opened beyond it (a gap): the paper
    broker's rule, ``qt.fills.stop_fill`` (``exchange.orders.triggered_at``).
  - Spot STOP_LOSS_LIMIT / TAKE_PROFIT_LIMIT become limit orders when triggered.
  - USDT-M conditional orders (STOP_MARKET, TAKE_PROFIT_MARKET, STOP, TAKE_PROFIT,
    TRAILING_STOP_MARKET) live in the separate *algo* book, as on Binance since 2025-12-09:
    when triggered they place a regular order (``actualOrderId``) and end FINISHED; a
    reduce-only one with nothing left to reduce ends EXPIRED; one whose margin fails, REJECTED.
  - TRAILING_STOP_MARKET: the trigger trails the best price seen since activation (the
    current close when placed without ``activatePrice``) by ``callbackRate`` percent, by the
    executor's own rule (``qt.fills``): per bar, the low (high for a buy) is checked
    against the level from the extreme of the bars *before* it (at the open on a gap); only
    an untriggered bar moves the extreme. Several stops of one symbol touched by one bar fill
    in the order a moving price reaches them (a sell's highest level first).
* Partial fills: ``max_fill_qty_per_bar`` caps the quantity one symbol can trade per bar
  (shared by all its orders). A limit order keeps its remainder working
  (PARTIALLY_FILLED); a market order's remainder EXPIRES, as on Binance when liquidity runs out.
* Liquidation (USDT-M isolated positions): checked each bar after the position's stops that
  lie before its liquidation price, before everything else (``exchange.liquidation``).
* Fees: a commission per fill, maker or taker rate by how it filled. Spot charges the asset
  received (base on a buy, quote on a sell); USDT-M charges USDT from the wallet.

Refusals are ``Rejected(code, msg)`` with Binance's codes and messages (see ``rejections``).
Client order ids are unique among *open* orders (Binance's rule, spot and futures alike): a
second order with the id of a filled or cancelled one is accepted. A client that must not
duplicate an order after a lost answer looks it up by ``origClientOrderId`` first.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import replace
from decimal import Decimal
from typing import Protocol

from qt.fills import step_trail
from qt.margin import max_notional
from exchange.ledger import (BRACKETS, CROSSED, ISOLATED, MAX_LEVERAGE, ZERO, FuturesLedger, Rejected, SpotWallet,
                             dec, insufficient_margin, insufficient_spot_balance)
from exchange.liquidation import liquidation_fill, liquidation_order, reached_before_liquidation
from exchange.orders import (ALGO_TYPES, PERP, PERP_TYPES, SIDES, SPOT, SPOT_TYPES, Bar, FeeRates, Order,
                             OrderRequest, SymbolRules, Trade, check_filters, stop_level, triggered_at,
                             would_trigger_now)
from exchange.params import mandatory

_STOP_FIRST = ("STOP_LOSS_LIMIT", "STOP_MARKET", "STOP", "TRAILING_STOP_MARKET")


def _not_found() -> Rejected:
    return Rejected(-2013, "Order does not exist.")


def _unknown_order() -> Rejected:
    return Rejected(-2011, "Unknown order sent.")


class OrderGroups(Protocol):
    """Orders the engine matches and cancels together, not one by one: the spot OCO lists
    (``exchange.oco.OcoLists``). The venue attaches them (``MatchingEngine.attach_groups``), so the
    engine offers them each bar and hands them a cancelled member without importing them."""

    def match_bar(self, rules: SymbolRules, bar: Bar, now_ms: int, marks: dict[str, Decimal]) -> None:
        """Offer one new bar of ``rules.symbol`` to the groups' orders."""

    def cancel_group_of(self, order: Order, rules: SymbolRules, now_ms: int) -> None:
        """Cancel the whole group ``order`` (a member, ``order.order_list_id`` set) belongs to."""


class MatchingEngine:
    """Orders, fills and the one account of the local exchange.

    Every method takes the symbol's rules and current bar from the caller (the HTTP adapter
    reads them from the data dir at the exchange clock), so the engine never looks at time
    or files itself."""

    def __init__(self, spot_balances: dict[str, Decimal] | None = None, futures_wallet: Decimal = ZERO,
                 fees: FeeRates | None = None, max_fill_qty_per_bar: dict[str, Decimal] | None = None):
        self.spot = SpotWallet(free=dict(spot_balances or {}))
        self.futures = FuturesLedger(wallet=futures_wallet)
        self.fees = fees or FeeRates()
        self.max_fill_qty_per_bar = dict(max_fill_qty_per_bar or {})
        self.orders: dict[int, Order] = {}
        self.algo_orders: dict[int, Order] = {}
        self.trades: list[Trade] = []
        self._order_ids = itertools.count(1_000_001)
        self._algo_ids = itertools.count(5_000_001)
        self._trade_ids = itertools.count(1)
        self._used: dict[tuple[str, str, int], Decimal] = {}  # (market, symbol, bar ts) -> traded qty
        self.groups: OrderGroups | None = None  # spot OCO lists, once attached (exchange.oco)
        self.market_price = None  # (order, bar, now_ms) -> a MARKET order's price; None: bar.close

    def attach_groups(self, groups: OrderGroups) -> None:
        """Match ``groups`` each bar (before the single orders) and let them cancel a member's group."""
        self.groups = groups

    def next_order_id(self) -> int:
        """A new id in the regular order book (OCO legs are regular orders)."""
        return next(self._order_ids)

    # -- queries --------------------------------------------------------------------------
    def book(self, algo: bool) -> dict[int, Order]:
        return self.algo_orders if algo else self.orders

    def find(self, market: str, symbol: str, order_id: int | None, client_id: str | None,
             algo: bool = False) -> Order:
        """An order by id or client id (the newest with that client id); -2013 if none."""
        if order_id is None and not client_id:
            id_name, cid_name = ("algoId", "clientAlgoId") if algo else ("orderId", "origClientOrderId")
            raise Rejected(-1102, f"Param '{cid_name}' or '{id_name}' must be sent, but both were empty/null!")
        book = self.book(algo)
        if order_id is not None:
            order = book.get(order_id)
        else:
            matches = [o for o in book.values() if o.client_id == client_id and o.market == market]
            order = matches[-1] if matches else None
        if order is None or order.market != market or order.symbol != symbol:
            raise _not_found()
        return order

    def open_orders(self, market: str, symbol: str | None = None, algo: bool = False) -> list[Order]:
        return [o for o in self.book(algo).values()
                if o.market == market and o.is_open and (symbol is None or o.symbol == symbol)]

    def symbols_with_open_orders(self) -> set[tuple[str, str]]:
        return {(o.market, o.symbol) for book in (self.orders, self.algo_orders) for o in book.values() if o.is_open}

    def symbols_to_match(self) -> set[tuple[str, str]]:
        """(market, symbol) pairs a new bar matters to: open orders, or an isolated position
        the bar may liquidate."""
        isolated = {(PERP, s) for s in self.futures.open_symbols() if self.futures.is_isolated(s)}
        return self.symbols_with_open_orders() | isolated

    def open_order_margin(self, symbol: str | None = None) -> Decimal:
        """Initial margin held by open USDT-M limit orders that can increase a position."""
        total = ZERO
        for o in self.open_orders(PERP, symbol):
            if not (o.reduce_only or o.close_position) and o.type == "LIMIT":
                total += o.remaining * o.price / self.futures.leverage_of(o.symbol)
        return total

    # -- placing --------------------------------------------------------------------------
    def submit(self, req: OrderRequest, rules: SymbolRules, bar: Bar, now_ms: int,
               marks: dict[str, Decimal]) -> Order:
        """Validate, accept and (market / marketable limit) fill an order; Rejected if refused."""
        self._validate_shape(req)
        client_id = req.client_id or f"qt-{uuid.uuid4().hex[:22]}"
        if any(o.client_id == client_id for o in self.open_orders(req.market, algo=req.algo)):
            raise Rejected(-2010, "Duplicate order sent.") if req.market == SPOT else \
                Rejected(-4116, "ClientOrderId is duplicated.")
        qty, quote_qty = req.quantity, ZERO
        if req.type == "MARKET" and req.market == SPOT and req.quote_qty is not None:
            quote_qty = req.quote_qty
            qty = (req.quote_qty / bar.close // rules.step_size) * rules.step_size
            if qty * bar.close < rules.min_notional or qty < rules.min_qty:
                raise Rejected(-1013, "Filter failure: NOTIONAL")
        ref_price = req.price if req.type != "MARKET" and req.price is not None else bar.close
        check_filters(req, rules, None if req.close_position else qty, ref_price)
        if req.stop_price is not None and would_trigger_now(req.type, req.side, req.stop_price, bar.close):
            raise Rejected(-2010, "Order would trigger immediately.") if req.market == SPOT else \
                Rejected(-2021, "Order would immediately trigger.")
        if req.callback_rate is not None and not (Decimal("0.1") <= req.callback_rate <= 10):
            raise Rejected(-2007, "Invalid callBack rate.")
        book = self.book(req.algo)
        order = Order(order_id=next(self._algo_ids if req.algo else self._order_ids), market=req.market,
                      symbol=req.symbol, client_id=client_id, side=req.side, type=req.type,
                      qty=qty if qty is not None else ZERO, price=req.price or ZERO,
                      stop_price=req.stop_price or ZERO, time_in_force=req.time_in_force,
                      reduce_only=req.reduce_only or req.close_position, close_position=req.close_position,
                      algo=req.algo, created_ms=now_ms, updated_ms=now_ms, quote_qty=quote_qty,
                      callback_rate=req.callback_rate, activation_price=req.activation_price,
                      working=req.type in ("MARKET", "LIMIT"))
        if order.type == "TRAILING_STOP_MARKET" and order.activation_price is None:
            order.trail_extreme = bar.close
        price = bar.close
        if order.type == "MARKET" and self.market_price is not None:  # a book walk (exchange.book_fills)
            price = self.market_price(order, bar, now_ms)  # may refuse: before anything is reserved
        if not req.algo:
            self._reserve(order, rules, replace(bar, close=price), marks)
        book[order.order_id] = order
        if order.type == "MARKET" or (order.type == "LIMIT" and self._marketable(order, bar.close)):
            self.fill(order, rules, bar, price, maker=False, now_ms=now_ms, marks=marks)
            if order.type == "MARKET" and order.is_open:
                self._close(order, "EXPIRED", rules, now_ms)
        return order

    def _validate_shape(self, req: OrderRequest) -> None:
        if req.side not in SIDES:
            raise Rejected(-1117, "Invalid side.")
        allowed = ALGO_TYPES if req.algo else SPOT_TYPES if req.market == SPOT else PERP_TYPES
        if req.type not in allowed:
            if req.market == PERP and not req.algo and req.type in ALGO_TYPES:
                raise Rejected(-4120, "Order type not supported for this endpoint. "
                                      "Please use the Algo Order API endpoints instead.")
            raise Rejected(-1116, "Invalid orderType.")
        if req.time_in_force != "GTC":  # refused, never silently treated as GTC
            raise Rejected(-1130, f"Data sent for parameter 'timeInForce' is not valid. "
                                  f"(local exchange: only GTC is simulated, got {req.time_in_force[:8]!r})")
        needs_price = req.type in ("LIMIT", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT", "STOP", "TAKE_PROFIT")
        if needs_price and req.price is None:
            raise mandatory("price")
        if req.type in ("STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT") and req.stop_price is None:
            raise mandatory("stopPrice")
        if req.algo and req.type != "TRAILING_STOP_MARKET" and req.stop_price is None:
            raise mandatory("triggerPrice")
        if req.type == "TRAILING_STOP_MARKET" and req.callback_rate is None:
            raise mandatory("callbackRate")
        if req.close_position:
            if req.type not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
                raise Rejected(-4136, f"Target strategy invalid for orderType {req.type},closePosition true")
            if req.quantity is not None:
                raise Rejected(-1106, "Parameter 'quantity' sent when not required.")
        elif req.quantity is None and not (req.market == SPOT and req.type == "MARKET" and req.quote_qty is not None):
            raise mandatory("quantity")
        if req.reduce_only and req.market == SPOT:
            raise Rejected(-1106, "Parameter 'reduceOnly' sent when not required.")

    @staticmethod
    def _marketable(order: Order, last: Decimal) -> bool:
        return order.price >= last if order.side == "BUY" else order.price <= last

    def _reserve(self, order: Order, rules: SymbolRules, bar: Bar, marks: dict[str, Decimal]) -> None:
        """Spot: lock (or check) the funds; USDT-M: reduce-only and margin checks."""
        if order.market == SPOT:
            if order.type == "MARKET":
                need_quote = order.quote_qty or order.qty * bar.close
                if order.side == "BUY" and need_quote > self.spot.free_of(rules.quote):
                    raise insufficient_spot_balance()
                if order.side == "SELL" and order.qty > self.spot.free_of(rules.base):
                    raise insufficient_spot_balance()
            elif order.side == "BUY":
                self.spot.lock(rules.quote, order.qty * order.price)
            else:
                self.spot.lock(rules.base, order.qty)
            return
        reducible = self.futures.reducible(order.symbol, order.side)
        if order.reduce_only and reducible <= 0:
            raise Rejected(-2022, "ReduceOnly Order is rejected.")
        if not order.reduce_only:
            price = order.price if order.type == "LIMIT" else bar.close
            self._check_margin(order.symbol, order.side, max(ZERO, order.qty - reducible), price, marks)

    def _check_margin(self, symbol: str, side: str, increase: Decimal, price: Decimal,
                      marks: dict[str, Decimal]) -> None:
        """-2027 past the leverage's largest notional (``qt.margin.max_notional``), -2019 past
        the available balance."""
        if increase <= 0:
            return
        leverage = self.futures.leverage_of(symbol)
        adding = not self.futures.reducible(symbol, side)
        held = abs(self.futures.position(symbol).amount) * marks.get(symbol, price) if adding else ZERO
        if held + increase * price > dec(max_notional(leverage, BRACKETS)):
            raise Rejected(-2027, "Exceeded the maximum allowable position at current leverage.")
        need = increase * price / leverage
        if need > self.futures.available(marks, self.open_order_margin()):
            raise insufficient_margin()

    # -- cancelling -----------------------------------------------------------------------
    def cancel(self, market: str, symbol: str, order_id: int | None, client_id: str | None, now_ms: int,
               rules: SymbolRules, algo: bool = False) -> Order:
        try:
            order = self.find(market, symbol, order_id, client_id, algo)
        except Rejected as err:
            if err.code == -2013:
                raise _unknown_order() from None
            raise
        if not order.is_open:
            raise _unknown_order()
        if order.order_list_id is not None and self.groups is not None:  # a leg: the whole OCO list goes (Binance)
            self.groups.cancel_group_of(order, rules, now_ms)
            return order
        self._close(order, "CANCELED", rules, now_ms)
        return order

    def _close(self, order: Order, status: str, rules: SymbolRules, now_ms: int) -> None:
        """End an order and release what it held (spot locks)."""
        if order.market == SPOT and not order.algo and order.type != "MARKET":
            if order.side == "BUY":
                self.spot.unlock(rules.quote, order.remaining * order.price)
            else:
                self.spot.unlock(rules.base, order.remaining)
        order.status, order.updated_ms = status, now_ms

    # -- leverage -------------------------------------------------------------------------
    def set_leverage(self, symbol: str, leverage: int, marks: dict[str, Decimal]) -> None:
        """Binance's checks: 1..125 (-4028), at most the bracket's leverage for the position's
        notional (-2027), enough margin when lowering it (-2028)."""
        if not 1 <= leverage <= MAX_LEVERAGE:
            raise Rejected(-4028, f"Leverage {leverage} is not valid")
        notional = abs(self.futures.position(symbol).amount) * marks.get(symbol, ZERO)
        if notional > dec(max_notional(leverage, BRACKETS)):
            raise Rejected(-2027, "Exceeded the maximum allowable position at current leverage.")
        old = self.futures.leverage_of(symbol)
        self.futures.leverage[symbol] = leverage
        if leverage < old and self.futures.available(marks, self.open_order_margin()) < 0:
            self.futures.leverage[symbol] = old
            raise Rejected(-2028, "Leverage is smaller than permitted: insufficient margin balance.")

    def set_margin_type(self, symbol: str, margin_type: str) -> None:
        """CROSSED / ISOLATED, refused as Binance refuses it: unchanged (-4046), a position
        (-4048) or open orders, regular or algo (-4047)."""
        if margin_type not in (CROSSED, ISOLATED):
            raise Rejected(-1130, "Data sent for parameter 'marginType' is not valid.")
        if margin_type == self.futures.margin_type_of(symbol):
            raise Rejected(-4046, "No need to change margin type.")
        if self.futures.position(symbol).amount:
            raise Rejected(-4048, "Margin type cannot be changed if there exists position.")
        if self.open_orders(PERP, symbol) or self.open_orders(PERP, symbol, algo=True):
            raise Rejected(-4047, "Margin type cannot be changed if there exists open orders.")
        self.futures.margin_type[symbol] = margin_type

    # -- matching a new bar ---------------------------------------------------------------
    def on_bar(self, rules: SymbolRules, bar: Bar, now_ms: int, marks: dict[str, Decimal]) -> None:
        """Offer one new bar of ``rules.symbol`` to its resting orders (stops first) and, for an
        isolated position, check liquidation after the stops the price reaches before the
        liquidation price (``exchange.liquidation``)."""
        key = lambda o: (0 if o.type in _STOP_FIRST else 1, o.created_ms, o.order_id)  # noqa: E731
        algo_key = lambda o: (0 if o.type in _STOP_FIRST else 1, self._stop_rank(o), o.created_ms,  # noqa: E731
                              o.order_id)
        checked = rules.market != PERP
        for order in sorted(self.open_orders(rules.market, rules.symbol, algo=True), key=algo_key):
            if not checked and not reached_before_liquidation(order, self.futures):
                checked = True
                self.liquidate_if_reached(rules, bar, now_ms)
            if order.is_open:
                self._match_algo(order, rules, bar, now_ms, marks)
        if not checked:
            self.liquidate_if_reached(rules, bar, now_ms)
        if self.groups is not None:
            self.groups.match_bar(rules, bar, now_ms, marks)  # OCO legs: matched as a pair
        for order in sorted(self.open_orders(rules.market, rules.symbol), key=key):
            if not order.is_open or order.order_list_id is not None:
                continue
            if not order.working:
                if triggered_at(order, bar) is None:
                    continue
                order.working, order.trigger_ms = True, now_ms
            if order.type == "MARKET":
                continue
            crossed = bar.low < order.price if order.side == "BUY" else bar.high > order.price
            if crossed:
                self.fill(order, rules, bar, order.price, maker=True, now_ms=now_ms, marks=marks)

    def liquidate_if_reached(self, rules: SymbolRules, bar: Bar, now_ms: int) -> Order | None:
        """Liquidate ``rules.symbol``'s isolated position if ``bar`` reaches its liquidation
        price: cancel the symbol's open orders, close it by an ``autoclose-`` order, lose its margin."""
        price = liquidation_fill(self.futures, rules.symbol, bar)
        if price is None:
            return None
        for order in [*self.open_orders(PERP, rules.symbol), *self.open_orders(PERP, rules.symbol, algo=True)]:
            self._close(order, "CANCELED", rules, now_ms)
        pos = self.futures.position(rules.symbol)
        order = liquidation_order(next(self._order_ids), rules.symbol, pos.amount, price, now_ms)
        realized = abs(pos.amount) * (price - pos.entry) * (1 if pos.amount > 0 else -1)
        fee = order.cum_quote * self.fees.rate(PERP, maker=False)
        self.futures.liquidate(rules.symbol, now_ms)
        self.orders[order.order_id] = order
        self.trades.append(Trade(next(self._trade_ids), order.order_id, PERP, rules.symbol, order.side, price,
                                 order.qty, order.cum_quote, fee, self.futures.asset, realized, False, now_ms))
        return order

    def _match_algo(self, order: Order, rules: SymbolRules, bar: Bar, now_ms: int,
                    marks: dict[str, Decimal]) -> None:
        price = self._trailing_trigger(order, bar) if order.type == "TRAILING_STOP_MARKET" \
            else triggered_at(order, bar)
        if price is None:
            return
        order.trigger_ms, order.updated_ms = now_ms, now_ms
        qty = order.qty
        if order.reduce_only:
            reducible = self.futures.reducible(order.symbol, order.side)
            qty = reducible if order.close_position else min(qty, reducible)
            if qty <= 0:
                order.status = "EXPIRED"
                return
        child_type = "LIMIT" if order.type in ("STOP", "TAKE_PROFIT") else "MARKET"
        child = Order(order_id=next(self._order_ids), market=PERP, symbol=order.symbol,
                      client_id=f"autoclose-{order.order_id}", side=order.side, type=child_type, qty=qty,
                      price=order.price if child_type == "LIMIT" else ZERO, stop_price=ZERO,
                      time_in_force="GTC", reduce_only=order.reduce_only, close_position=False, algo=False,
                      created_ms=now_ms, updated_ms=now_ms, parent_algo_id=order.order_id)
        try:
            if not child.reduce_only:
                self._check_margin(order.symbol, order.side, qty, order.price if child_type == "LIMIT" else price,
                                   marks)
        except Rejected:
            order.status = "REJECTED"
            return
        self.orders[child.order_id] = child
        order.actual_order_id, order.status = child.order_id, "TRIGGERED"
        if child_type == "MARKET" or self._marketable(child, price):
            self.fill(child, rules, bar, price, maker=False, now_ms=now_ms, marks=marks)
            if child.type == "MARKET" and child.is_open:
                child.status = "EXPIRED"
        order.actual_price = child.avg_price
        if not child.is_open:
            order.status = "FINISHED"

    @staticmethod
    def _trailing_trigger(order: Order, bar: Bar) -> Decimal | None:
        """``qt.fills.step_trail``, the paper broker's own rule: the level in force is
        the one from the extreme of the bars before this one; the bar's extreme moves it after."""
        selling = order.side == "SELL"
        if order.trail_extreme is None:  # waiting for the activation price
            act = order.activation_price
            if (selling and bar.high < act) or (not selling and bar.low > act):
                return None
            order.trail_extreme = act
        price, order.trail_extreme = step_trail(order.trail_extreme, order.callback_rate / 100, bar, selling)
        return price

    @staticmethod
    def _stop_rank(order: Order) -> Decimal:
        """Among a symbol's stops, the one a falling (rising) price reaches first goes first."""
        level = stop_level(order)
        if level is None:
            return ZERO
        return -level if order.side == "SELL" else level

    # -- filling --------------------------------------------------------------------------
    def _capacity(self, order: Order, bar: Bar) -> Decimal:
        cap = self.max_fill_qty_per_bar.get(order.symbol)
        wanted = order.remaining
        if order.reduce_only and order.market == PERP:
            wanted = min(wanted, self.futures.reducible(order.symbol, order.side))
        if cap is None:
            return wanted
        used = self._used.get((order.market, order.symbol, bar.ts_ms), ZERO)
        return max(ZERO, min(wanted, cap - used))

    def fill(self, order: Order, rules: SymbolRules, bar: Bar, price: Decimal, maker: bool, now_ms: int,
             marks: dict[str, Decimal]) -> None:
        """Fill what the bar's liquidity cap leaves of ``order`` at ``price``: the trade, the fee,
        the balances (spot) or the position (USDT-M); a reduce-only order with nothing left to
        reduce expires."""
        qty = self._capacity(order, bar)
        if qty <= 0:
            if order.market == PERP and order.reduce_only and self.futures.reducible(order.symbol, order.side) <= 0:
                self._close(order, "EXPIRED", rules, now_ms)  # nothing left to reduce
            return
        key = (order.market, order.symbol, bar.ts_ms)
        self._used[key] = self._used.get(key, ZERO) + qty
        rate = self.fees.rate(order.market, maker)
        quote = qty * price
        realized = ZERO
        if order.market == SPOT:
            fee_asset, fee = self._settle_spot(order, rules, qty, price, quote, rate)
        else:
            fee_asset, fee = self.futures.asset, quote * rate
            realized = self.futures.apply_fill(order.symbol, order.side, qty, price, fee, now_ms)
        order.executed_qty += qty
        order.cum_quote += quote
        order.updated_ms = now_ms
        order.status = "FILLED" if order.remaining <= 0 else "PARTIALLY_FILLED"
        self.trades.append(Trade(next(self._trade_ids), order.order_id, order.market, order.symbol, order.side,
                                 price, qty, quote, fee, fee_asset, realized, maker, now_ms))

    def _settle_spot(self, order: Order, rules: SymbolRules, qty: Decimal, price: Decimal, quote: Decimal,
                     rate: Decimal) -> tuple[str, Decimal]:
        locked = order.type != "MARKET"
        if order.side == "BUY":
            if locked:
                self.spot.spend_locked(rules.quote, qty * order.price)
                self.spot.credit(rules.quote, qty * order.price - quote)  # refund a better price
            else:
                self.spot.debit(rules.quote, quote)
            fee = qty * rate
            self.spot.credit(rules.base, qty - fee)
            return rules.base, fee
        if locked:
            self.spot.spend_locked(rules.base, qty)
        else:
            self.spot.debit(rules.base, qty)
        fee = quote * rate
        self.spot.credit(rules.quote, quote - fee)
        return rules.quote, fee


__all__ = ["MatchingEngine", "OrderGroups"]
