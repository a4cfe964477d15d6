"""Limit entries and the managed trailing stop of the live broker (``executor.live.broker``).

Kept apart from the broker so that it stays one job (send, look up, guard); these two
features only add orders that live longer than one bar.

* **Limit entries** (``risk.entry_order: limit``) rest on the exchange as GTC limit buys at the
  price the decision core computed (rounded to the tick). Every ``process_bar`` looks at them:
  filled -> booked and guarded at once (protectives from the fill price); partly filled -> the
  remainder is cancelled and the filled quantity is booked and guarded (a position must never
  wait unguarded for the rest); still unfilled on the bar ``decided + limit_ttl_bars`` ->
  cancelled, journalled ``expired`` and handed to the loop as expired (it releases the
  reservation and records ``LIMIT_EXPIRED``). A fill that races the cancel is still booked.
* **Managed trailing stop** (``risk.trailing_mode: managed``): at each bar close the guard's
  peak takes the bar's high (bars completed while the position was guarded; the entry fill
  price to start with) and, when ``peak x (1 - pct)`` - rounded to the tick - is above the
  stop on the exchange, the STOP_MARKET is moved: a new one with the next client id generation
  (journalled before it is sent, so a restart recomputes the same ids), then the old one is
  cancelled - new first, so the position is never without a stop on the exchange. If the cancel
  finds the old stop already gone, it has fired: the new one is withdrawn and the next check
  books the exit.
  Spot (one OCO list guards the coins, ``executor.live.spot``): the same peak and level, but the
  list is replaced by one whose stop leg is at the level (``SpotBroker.move_oco_stop``) - old
  list cancelled first, because the coins it locks cannot be locked twice.
  Limit entries work unchanged for spot: a GTC limit buy locks the USDT; its fill is guarded by
  the OCO list through the broker's own ``ensure_guard``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import ccxt
import pandas as pd

from executor.paper import LIMIT_EXPIRED, MarketOrder
from executor.portfolio import Bar
from qt.binance import reason_for
from executor.live.ladder import replace_protective
from qt.fills import trail_level

log = logging.getLogger(__name__)


@dataclass
class RestingEntry:
    order: MarketOrder
    cid: str
    exchange_id: str
    last_bar_ts: pd.Timestamp  # open time of the last bar it works; unfilled after it -> cancelled


def last_working_bar(decided_ts: pd.Timestamp, ttl_bars: int, bar_ms: int) -> pd.Timestamp:
    return pd.Timestamp(decided_ts) + pd.Timedelta(milliseconds=bar_ms * max(ttl_bars, 1))


def place_limit_entry(broker, order: MarketOrder, cid: str, qty: float, price: float) -> None:
    """Send the limit order - a buy below the market, a short's sell above it - (journalled first);
    a marketable one that filled is booked at once."""
    sym = order.symbol
    broker.journal.sending(cid, sym, "entry", order.decided_ts, order.order_id, qty, price, side=order.side)
    try:
        placed = broker.place(cid, sym, False, lambda: broker.ex.create_order(
            sym, "limit", order.side, qty, price, {"clientOrderId": cid, "timeInForce": "GTC"}))
    except ccxt.BaseError as exc:
        broker.reject(order, reason_for(exc), broker.error_text(exc), cid)
        return
    if placed.get("status") == "closed":
        broker.book_or_defer(order, cid, placed)
        return
    broker.journal.update(cid, exchange_id=str(placed["id"]), status="resting")
    broker.resting[sym] = RestingEntry(order, cid, str(placed["id"]),
                                       last_working_bar(order.decided_ts, order.ttl_bars, broker.bar_ms))


def check_resting(broker, bars: Mapping[str, Bar]) -> None:
    """Book filled limit entries, cut partly filled ones, expire those past their last bar."""
    now = max((b.timestamp for b in bars.values()), default=None)
    for sym in sorted(broker.resting):
        entry = broker.resting[sym]
        try:
            found = broker.read(lambda: broker.ex.fetch_order(entry.exchange_id, sym))
            status, filled = found.get("status"), float(found.get("filled") or 0.0)
            if status == "open" and filled <= 0 and (now is None or now < entry.last_bar_ts):
                continue  # still working
            if status == "open":
                try:
                    broker.read(lambda: broker.venue.cancel(broker.ex, entry.exchange_id, sym, False))
                except ccxt.OrderNotFound:
                    pass  # it filled (or was cancelled) in the meantime: the re-read says which
                found = broker.read(lambda: broker.ex.fetch_order(entry.exchange_id, sym))
                filled = float(found.get("filled") or 0.0)
        except ccxt.BaseError as exc:
            log.error("%s: resting entry %s not checked (%s); tried again next bar", sym, entry.cid,
                      broker.error_text(exc))
            continue
        del broker.resting[sym]
        if filled > 0:
            broker.book_or_defer(entry.order, entry.cid, found)
            continue
        expired = found.get("status") != "closed" and now is not None and now >= entry.last_bar_ts
        broker.journal.update(entry.cid, status="expired" if expired else "cancelled",
                              reason=LIMIT_EXPIRED if expired else "CANCELLED_ON_EXCHANGE")
        if expired:
            log.info("%s: limit entry %s at %s unfilled after %d bar(s); cancelled", sym, entry.cid,
                     entry.order.limit_price, entry.order.ttl_bars)
            broker.execution.expired.append(entry.order)
        else:
            log.warning("%s: limit entry %s was cancelled on the exchange, not by the executor", sym, entry.cid)
            broker.execution.cancelled.append(entry.order)


def move_managed_stops(broker, bars: Mapping[str, Bar], guarded: set[str]) -> None:
    """Move the exchange stop of each managed-trailing guard in ``guarded`` (guards that existed
    during this bar) to the trail level when the trail has moved past it: up for a long (peak =
    highest high), down for a short (trough = lowest low, level = trough x (1 + pct))."""
    for sym in sorted(guarded):
        guard, bar = broker.guards.get(sym), bars.get(sym)
        if guard is None or bar is None or guard.trail_pct <= 0 or guard.trail_mode != "managed":
            continue
        guard.peak = max(guard.peak, bar.high) if guard.selling else min(guard.peak, bar.low)
        level = broker.round_price(sym, trail_level(guard.peak, guard.trail_pct, guard.selling))
        if not guard.beyond(level, guard.stop_price):
            continue
        if hasattr(guard, "list_id"):  # spot: one OCO list, replaced (executor.live.spot)
            broker.move_oco_stop(guard, level)
            continue
        old_price = guard.stop_price
        if not replace_protective(broker, guard, "stop_loss", level, why="TRAIL", exit_if_crossed=False):
            continue  # not placed (the old stop stays) or fired meanwhile (booked at the next check)
        guard.stop_reason = "trailing_stop"
        log.info("%s: trailing stop moved %s -> %s (peak %s)", sym, old_price, level, guard.peak)
