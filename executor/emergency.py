"""The live emergency exit: a protective stop the exchange refuses because the price is already
through it (``executor.protection``) closes the position at market at once.

Perps: the guard's other orders are cancelled and the position sold reduce-only at market; the
fill is an exit with reason ``emergency_exit``, an ``EMERGENCY_EXIT`` alert names the symbol,
the stop level and the exchange's answer. The same situation in paper and backtest (a bar that
opens at or below the stop) exits at that open, so live and backtest decide alike. A refused
market sell is tried again at the next bar (the broker's own exit queue), never the stop.
"""

from __future__ import annotations

import logging

import ccxt
import pandas as pd

from executor.paper import MarketOrder
from executor.protection import EMERGENCY_EXIT, EMERGENCY_EXIT_REASON

log = logging.getLogger(__name__)


def exit_crossed_guard(broker, guard, message: str) -> None:
    """Close ``guard``'s position now: cancel what still guards it, sell reduce-only at market."""
    sym = guard.symbol
    log.error("%s: stop at %s is already crossed (%s): exiting at market now", sym, guard.stop_price, message)
    broker.alerts.append((EMERGENCY_EXIT, f"{sym}: stop {guard.stop_price} already crossed; closed at market "
                                          f"({message})", {"symbol": sym, "stop_price": guard.stop_price}))
    broker._cancel_guard(guard)
    guard.clear_ids()
    broker.guards.pop(sym, None)
    qty = broker.round_amount(sym, broker._position_qty(sym))
    if qty <= 0:
        return
    order = MarketOrder(-guard.entry_order_id, sym, "sell", "exit", EMERGENCY_EXIT_REASON, qty=qty,
                        decided_ts=pd.Timestamp.now(tz="UTC"))
    cid, fill = broker._sell_at_market(order, qty, {"reduceOnly": True})
    if cid is None:
        return  # refused: queued by _sell_at_market, tried again next bar
    left = broker._position_qty(sym)
    if left > 0:  # liquidity: the rest at the next bar, one fill when flat
        if fill is not None:
            broker._partial_exit_fills.setdefault(sym, []).append(fill)
        broker._pending_exits[sym] = order
        return
    parts = broker._partial_exit_fills.pop(sym, []) + ([fill] if fill else [])
    if parts:
        from executor.ccxt_broker import _merge
        broker._pending.fills.append(_merge(parts))


def refused_as_crossed(exc: BaseException) -> bool:
    """The exchange refused a stop because the price is already through it (-2021 / -2010)."""
    if isinstance(exc, ccxt.OrderImmediatelyFillable):
        return True
    text = str(exc).lower()
    return isinstance(exc, ccxt.InvalidOrder) and ("would trigger immediately" in text
                                                   or "would immediately trigger" in text)
