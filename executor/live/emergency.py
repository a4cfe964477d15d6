"""The live emergency exit: a protective stop the exchange refuses because the price is already
through it (``qt.fills.stop_crossed``) closes the position at market at once.

Perps: the guard's other orders are cancelled and the position closed reduce-only at market (a
long sold, a short bought back: a short's buy stop is crossed when the price is at or above it)
(spot: the OCO list, refused as -2010, and the coins held sold at market); the
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
from qt.fills import EMERGENCY_EXIT, EMERGENCY_EXIT_REASON, stop_crossed

log = logging.getLogger(__name__)


def exit_crossed_guard(broker, guard, message: str) -> bool:
    """Close ``guard``'s position now: cancel what still guards it (spot: the list locking the
    coins), then the broker's own market exit - reduce-only on perps, the coins held on spot -
    which finishes a partial fill at the next bar and books one exit fill when flat. Returns
    False: no guard was placed (what ``_place_oco`` reports)."""
    sym = guard.symbol
    log.error("%s: stop at %s is already crossed (%s): exiting at market now", sym, guard.stop_price, message)
    broker.alerts.append((EMERGENCY_EXIT, f"{sym}: stop {guard.stop_price} already crossed; closed at market "
                                          f"({message})", {"symbol": sym, "stop_price": guard.stop_price}))
    broker.cancel_guard(guard)
    guard.clear_ids()
    broker.guards.pop(sym, None)
    broker.close_position(MarketOrder(-guard.entry_order_id, sym, guard.close_side, "exit", EMERGENCY_EXIT_REASON,
                                       decided_ts=pd.Timestamp.now(tz="UTC")))
    return False


def refused_as_crossed(exc: BaseException) -> bool:
    """The exchange refused a stop because the price is already through it (-2021 / -2010)."""
    if isinstance(exc, ccxt.OrderImmediatelyFillable):
        return True
    text = str(exc).lower()
    return isinstance(exc, ccxt.InvalidOrder) and ("would trigger immediately" in text
                                                   or "would immediately trigger" in text)


def refused_oco_prices(exc: BaseException) -> bool:
    """Binance spot refuses a sell OCO whose stop is not below the last price (or whose limit is
    not above it) with -2010 "The relationship of the prices for the orders is not correct";
    the caller asks ``qt.fills.stop_crossed`` with the last price which side it was."""
    return isinstance(exc, ccxt.InvalidOrder) and "relationship of the prices" in str(exc).lower()


def oco_stop_crossed(broker, guard, exc: BaseException) -> bool:
    """A spot OCO list was refused because the price is already at or below its stop: the same
    rule as paper and backtest (``qt.fills.stop_crossed``) on the last price."""
    if refused_as_crossed(exc):
        return True
    if not refused_oco_prices(exc):
        return False
    last = float(broker.read(lambda: broker.ex.fetch_ticker(guard.symbol))["last"])
    return stop_crossed(guard.stop_price, last)
