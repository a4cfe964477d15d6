"""Liquidation of isolated USDT-M positions on the local exchange (pure: when, at what price,
the order Binance shows for it, and the ``forceOrders`` query).

**When.** Binance liquidates on the MARK price. Here the mark within a bar is the bar's low for
a long and its high for a short (the adverse extreme), so a bar liquidates an isolated position
when it reaches the position's liquidation price (``FuturesLedger.liquidation_price``, i.e.
``qt.margin.liquidation_price`` with the position's margin): ``low <= LP`` for a long,
``high >= LP`` for a short.

**In which order within a bar** (``MatchingEngine.on_bar``): the position's own stops whose
trigger lies BEFORE the liquidation price (a long's sell stop at or above LP, a short's buy
stop at or below it - the price reaches them first on its way) are offered first, so such a
stop always fills first and the position is not liquidated; then the liquidation check; then
stops beyond the liquidation price, take-profits and limit orders (the conservative reading of
an OHLC bar, like "the stop before the take-profit").

**At what price.** At the liquidation price, or at the bar's open when the bar opened beyond it
(a gap) - ``qt.fills.stop_fill``, the stops' own rule. The per-bar liquidity cap does not apply
(the liquidation engine takes the whole position).

**What happens** (Binance's semantics): every open order of the symbol, regular and algo, is
cancelled; the position is closed by one order the exchange places itself - clientOrderId
``autoclose-<digits>``, type LIMIT, timeInForce IOC, status FILLED, price = avgPrice = the fill
price - listed by ``allOrders``, ``userTrades`` (one taker trade, its realised PnL and taker
commission as any fill reports them) and ``GET /fapi/v1/forceOrders``; the wallet loses the
position's whole isolated margin and nothing else (``FuturesLedger.liquidate``: what closing at
the liquidation price leaves of the margin is the liquidation clearance fee, paid to the
insurance fund, which also bears a loss beyond the margin after a gap).

Cross positions are not liquidated (see ``exchange.ledger``); ADL is not simulated (a
``forceOrders`` query for ``autoCloseType=ADL`` answers an empty list).
"""

from __future__ import annotations

from decimal import Decimal

from qt.fills import stop_fill
from exchange.ledger import ZERO, FuturesLedger, Rejected
from exchange.orders import PERP, Bar, Order, stop_level

LIQUIDATION, ADL = "LIQUIDATION", "ADL"
WEEK_MS = 7 * 24 * 3_600_000


def liquidation_fill(ledger: FuturesLedger, symbol: str, bar: Bar) -> Decimal | None:
    """The price ``bar`` liquidates ``symbol``'s isolated position at, or None (not reached,
    cross, flat, or a long that cannot be liquidated)."""
    level = ledger.liquidation_price(symbol)
    if level <= 0:
        return None
    return stop_fill(level, bar, selling=ledger.position(symbol).amount > 0)


def reached_before_liquidation(order: Order, ledger: FuturesLedger) -> bool:
    """True for a stop of the position's closing side whose trigger the price reaches before
    (or at) the liquidation price; False for every other order or when nothing can liquidate."""
    level, lp = stop_level(order), ledger.liquidation_price(order.symbol)
    amount = ledger.position(order.symbol).amount
    if level is None or lp <= 0 or not amount:
        return False
    if amount > 0:
        return order.side == "SELL" and level >= lp
    return order.side == "BUY" and level <= lp


def liquidation_order(order_id: int, symbol: str, amount: Decimal, price: Decimal, now_ms: int) -> Order:
    """The FILLED IOC LIMIT order that closes a liquidated position of ``amount`` at ``price``."""
    qty = abs(amount)
    return Order(order_id=order_id, market=PERP, symbol=symbol, client_id=f"autoclose-{now_ms}{order_id}",
                 side="SELL" if amount > 0 else "BUY", type="LIMIT", qty=qty, price=price, stop_price=ZERO,
                 time_in_force="IOC", reduce_only=False, close_position=False, algo=False, created_ms=now_ms,
                 updated_ms=now_ms, status="FILLED", executed_qty=qty, cum_quote=qty * price,
                 auto_close=LIQUIDATION)


def force_orders(orders: list[Order], symbol: str | None, auto_close_type: str | None, start_ms: int | None,
                 end_ms: int | None, limit: int | None, now_ms: int) -> list[Order]:
    """``GET /fapi/v1/forceOrders``: the account's liquidation orders, newest last, within
    [startTime, endTime] (Binance: without startTime, the 7 days before endTime, itself
    defaulting to now); ``limit`` default 50, at most 100."""
    if auto_close_type not in (None, LIQUIDATION, ADL):
        raise Rejected(-1130, "Data sent for parameter 'autoCloseType' is not valid.")
    limit = 50 if limit is None else limit
    if not 1 <= limit <= 100:
        raise Rejected(-1130, "Data sent for parameter 'limit' is not valid.")
    end = now_ms if end_ms is None else end_ms
    start = end - WEEK_MS if start_ms is None else start_ms
    rows = [o for o in orders if o.auto_close is not None
            and (auto_close_type is None or o.auto_close == auto_close_type)
            and (symbol is None or o.symbol == symbol) and start <= o.created_ms <= end]
    return rows[-limit:]


__all__ = ["ADL", "LIQUIDATION", "force_orders", "liquidation_fill", "liquidation_order",
           "reached_before_liquidation"]
