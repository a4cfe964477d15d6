"""A liquidation by the exchange, recorded: the exit fill, a loud log line and a ``LIQUIDATION`` alert.

Why this module exists: an isolated position whose price reaches its liquidation price is closed
by the exchange itself - every open order of the symbol cancelled, one order it places
(clientOrderId ``autoclose-<digits>``, listed by ccxt ``fetch_my_liquidations``, Binance's
``GET /fapi/v1/forceOrders``) - so
the position vanishes without any of our guards firing. Treating that as "closed outside the
executor" would lose the exit from the record; instead the autoclose order's trades become the
exit fill (reason ``liquidation``, at its average price, its fee), the alert goes to the loop's
``raise_alert`` (through ``broker.alerts``, as every broker alert) and the line is logged at
CRITICAL. Nothing is cancelled but our own guard orders (the exchange has cancelled them already).
The autoclose order is journalled under its own client id (purpose ``liquidation``), so a bar
stepped again or a restart never books it twice; ``adopt_liquidations`` does the same at start-up
for positions liquidated while the executor was down.
"""

from __future__ import annotations

import logging

import pandas as pd

from executor.portfolio import Fill

log = logging.getLogger(__name__)

LIQUIDATION = "LIQUIDATION"  # the alert kind
LIQUIDATION_REASON = "liquidation"  # the exit fill's reason


def autoclose_orders(broker, symbol: str, since: pd.Timestamp | None) -> list[dict]:
    """The exchange's liquidation orders of ``symbol`` at or after ``since`` not journalled yet,
    oldest first: ccxt ``fetch_my_liquidations`` (Binance's ``forceOrders``; a triggered stop's
    order also carries an ``autoclose-`` client id, so the client id alone does not say liquidation),
    each read back as an order (its trades give the fee)."""
    since_ms = None if since is None else int(pd.Timestamp(since).value // 1_000_000)
    found = []
    for liq in broker.read(lambda: broker.ex.fetch_my_liquidations(symbol, since_ms)):
        info = liq.get("info") or {}
        cid = str(info.get("clientOrderId") or "")
        if not cid or broker.journal.get(cid) is not None:
            continue
        if since_ms is not None and int(liq.get("timestamp") or 0) < since_ms:
            continue
        order = broker.read(lambda: broker.ex.fetch_order(str(info["orderId"]), symbol))
        if float(order.get("filled") or 0.0) > 0:
            found.append(order)
    return sorted(found, key=lambda o: int(o.get("timestamp") or 0))


def record_liquidation(broker, order: dict, entry_order_id: int, entry_cid: str | None) -> Fill | None:
    """Journal the autoclose ``order``, alert, log; its exit fill (None if it filled nothing)."""
    sym = order["symbol"]
    fill = broker.fill_from_order(order, -entry_order_id, str(order.get("side") or "sell"), "exit",
                                  LIQUIDATION_REASON)
    cid = str(order["clientOrderId"])
    broker.journal.sending(cid, sym, "liquidation", None, entry_order_id, float(order.get("filled") or 0.0),
                           float(order.get("average") or order.get("price") or 0.0), entry_cid=entry_cid,
                           side=order.get("side"))
    broker.journal.update(cid, exchange_id=str(order["id"]), status="filled", filled_qty=fill.qty if fill else 0.0,
                          avg_price=fill.price if fill else None, fee_usdt=fill.fee_usdt if fill else None,
                          fill_ts=str(fill.timestamp) if fill else None, reason=LIQUIDATION)
    if fill is None:
        return None
    message = (f"{sym}: position of {fill.qty:g} LIQUIDATED by the exchange at {fill.price:g} "
               f"(order {cid}); its isolated margin is lost")
    log.critical("%s", message)
    broker.alerts.append((LIQUIDATION, message, {"symbol": sym, "qty": fill.qty, "price": fill.price,
                                                 "client_id": cid}))
    return fill


def book_liquidation(broker, guard) -> bool:
    """The guarded position is gone: if the exchange liquidated it, book that exit and drop the
    guard (True); otherwise False (the caller reports the position as closed outside). A venue whose
    liquidations are not read (``executor.live.venue``: Bybit) always answers False."""
    if not broker.venue.liquidations:
        return False
    sym = guard.symbol
    entry = broker.journal.get(guard.entry_cid)
    since = pd.Timestamp(entry["fill_ts"]) if entry and entry.get("fill_ts") else None
    found = autoclose_orders(broker, sym, since)
    if not found:
        return False
    fills = [f for f in (record_liquidation(broker, o, guard.entry_order_id, guard.entry_cid) for o in found) if f]
    broker.cancel_guard(guard)  # ours only; the exchange cancelled them already
    broker.guards.pop(sym, None)
    superseded = broker.pending_exit_dropped(sym)
    if superseded is not None:
        broker.execution.cancelled.append(superseded)
    broker.execution.fills.extend(fills)
    return True


def adopt_liquidations(broker, symbols, held: set[str]) -> list[Fill]:
    """Start-up: positions the exchange liquidated while the executor was down (a symbol flat now,
    an autoclose order after our last entry there): recorded, alerted; their exit fills."""
    fills = []
    if not broker.venue.liquidations:
        return fills
    for sym in symbols:
        if sym in held:
            continue
        entries = broker.journal.rows("symbol=? AND purpose='entry' AND filled_qty > 0", (sym,))
        if not entries or not entries[-1]["fill_ts"]:
            continue
        last = entries[-1]
        for order in autoclose_orders(broker, sym, pd.Timestamp(last["fill_ts"])):
            fill = record_liquidation(broker, order, int(last["order_id"] or 0), last["client_id"])
            if fill is not None:
                fills.append(fill)
    return fills
