"""The take-profit ladder of the live perps broker, and moving a protective order safely.

Why this module exists: with ``risk.take_profit_ladder`` a position is guarded by one
reduce-only TAKE_PROFIT_MARKET per rung (rung k closes ``fraction_k x filled qty``, rounded to
the lot step with ``amount_to_precision``; the last rung takes the exact rest when the fractions
sum to 1) and by a stop (and trailing stop) for the whole quantity still open. Booking a rung
is not an exit of the position but a partial close, and what follows it is a job of its own:

* the rung's fill is booked with reason ``take_profit_<k>`` (``executor.portfolio.is_rung``:
  the ledger closes that part only, as in paper);
* a rung that filled only in part (liquidity: the rest of its market order expired) keeps its
  remainder working: the rung is placed again for what it has left;
* the stop (and a native trailing stop) is re-placed for the quantity still open - the new
  order first, then the old one cancelled, so the position is never without a stop - and with
  ``risk.breakeven_after_first_tp`` the stop moves to the entry fill price (reason
  ``breakeven_stop`` when it fires). Paper moves it from the bar after the rung; live the rung is
  seen at the next bar close, so the moved stop also works from the next bar.

``replace_protective`` is the one "new first, then cancel the old" move, also used by the managed
trailing stop (``executor.live.resting``). The functions take the broker (``executor.live.broker``)
and its guard (``executor.live.guards.Guard``); they send through the broker only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import ccxt

from executor.live.emergency import exit_crossed_guard
from executor.portfolio import RUNG_PREFIX

log = logging.getLogger(__name__)


@dataclass
class Rung:
    """One take-profit rung of a ladder on the exchange: a reduce-only TAKE_PROFIT_MARKET."""

    number: int  # its place in the ladder (1 = nearest); its kind and fill reason: take_profit_<number>
    qty: float  # still to close
    price: float
    order_id: str | None = None

    @property
    def kind(self) -> str:
        return f"{RUNG_PREFIX}{self.number}"


def make_rungs(broker, symbol: str, qty: float, price: float, ladder, short: bool) -> list[Rung]:
    """The rungs of ``ladder`` ((fraction, distance), ... nearest first) for a fill of ``qty`` at
    ``price``: quantities rounded to the lot step, the last taking the rest when the fractions sum to 1."""
    sign = -1.0 if short else 1.0
    whole = abs(sum(f for f, _ in ladder) - 1.0) < 1e-9
    rungs, left = [], qty
    for k, (fraction, distance) in enumerate(ladder, start=1):
        last = k == len(ladder)
        rung_qty = broker.round_amount(symbol, left if last and whole else min(qty * fraction, left))
        left = lots(broker, symbol, left - rung_qty)
        rungs.append(Rung(k, rung_qty, broker.round_price(symbol, price * (1.0 + sign * distance))))
    return rungs


def lots(broker, symbol: str, qty: float) -> float:
    """A difference of quantities on the lot step: 0.03333 - 0.02 is 0.01333, not 0.01332 (the float
    0.013329999... that ``amount_to_precision`` would truncate)."""
    return broker.round_amount(symbol, round(qty, 10))


def fired_at(order: dict) -> int:
    """When a triggered conditional order fired (to book several rungs in the order they filled)."""
    info = order.get("info") or {}
    return int(info.get("updateTime") or order.get("lastUpdateTimestamp") or order.get("timestamp") or 0)


def book_rung(broker, guard, kind: str, algo: dict) -> None:
    """A rung fired: book its fill (part of the position), keep what it did not fill working."""
    sym = guard.symbol
    rung = guard.rung(kind)
    regular = broker.triggered_order(sym, algo)
    fill = broker.fill_from_order(regular, -guard.entry_order_id, guard.close_side, "exit", kind)
    for row in broker.journal.rows("exchange_id=? AND purpose=?", (rung.order_id, kind)):
        broker.journal.update(row["client_id"], status="triggered", filled_qty=fill.qty if fill else 0.0,
                              avg_price=fill.price if fill else None, fee_usdt=fill.fee_usdt if fill else None,
                              fill_ts=str(fill.timestamp) if fill else None)
    rung.order_id = None
    if fill is None:  # expired unfilled: placed again by the next ensure_guard
        return
    rung.qty = lots(broker, sym, rung.qty - fill.qty)
    if rung.qty <= 0:
        guard.rungs.remove(rung)
    else:
        log.warning("%s: %s filled %s of its quantity; the rest (%s) keeps working", sym, kind, fill.qty, rung.qty)
    broker.execution.fills.append(fill)
    log.info("%s: %s filled %s at %s", sym, kind, fill.qty, fill.price)


def after_rung(broker, guard) -> None:
    """After rung fills: the guard covers what is still open (from the exchange), the stop moves
    to break-even if asked; flat -> the guard is gone."""
    sym = guard.symbol
    left = broker.round_amount(sym, broker.position_qty(sym))
    if left <= 0:
        broker.cancel_guard(guard)
        broker.guards.pop(sym, None)
        return
    guard.qty = left
    for r in guard.rungs:
        r.qty = min(r.qty, left)
    price = None
    if guard.breakeven and guard.stop_reason != "breakeven_stop":
        level = broker.round_price(sym, guard.entry_price)
        if guard.beyond(level, guard.stop_price):
            price = level
    if not replace_protective(broker, guard, "stop_loss", price):
        return
    if price is not None:
        guard.stop_reason = "breakeven_stop"
        log.info("%s: stop moved to break-even %s after a take-profit rung", sym, price)
    if "trailing_stop" in guard.kinds:
        replace_protective(broker, guard, "trailing_stop")


def replace_protective(broker, guard, kind: str, price: float | None = None, why: str = "LADDER",
                       exit_if_crossed: bool = True) -> bool:
    """Move ``kind`` to ``price`` (None: same level) for the guard's current quantity: the new order
    first, then the old one cancelled. False when the guard is gone (an emergency exit: the new
    stop was refused as crossed) or the old order had fired meanwhile (the next check books it).
    ``exit_if_crossed`` False (the managed trail): a new stop refused as crossed is not placed and
    the old one stays in force."""
    sym = guard.symbol
    old_id, old_price = guard.order_id_of(kind), guard.stop_price
    guard.set_order_id(kind, None)
    if price is not None:
        guard.stop_price = price
    crossed = broker.place_protective(guard, kind)
    if crossed is not None and exit_if_crossed:
        guard.set_order_id(kind, old_id)
        exit_crossed_guard(broker, guard, crossed)
        return False
    if guard.order_id_of(kind) is None:  # not placed (logged, alerted): the old order stays in force
        guard.set_order_id(kind, old_id)
        guard.stop_price = old_price
        return False
    if old_id is None:
        return True
    try:
        broker.read(lambda: broker.venue.cancel(broker.ex, old_id, sym, True))
    except ccxt.OrderNotFound:  # the old order fired meanwhile: that is the exit, booked by the next check
        log.warning("%s: %s %s fired while it was being moved; the new one is withdrawn", sym, kind, old_id)
        new_id = guard.order_id_of(kind)
        broker.cancel_quietly(sym, new_id)
        for row in broker.journal.rows("exchange_id=? AND status='open'", (new_id,)):
            broker.journal.update(row["client_id"], status="cancelled", reason=f"{why}_RACE")
        guard.set_order_id(kind, old_id)
        guard.stop_price = old_price
        return False
    except ccxt.BaseError as exc:  # two orders for now; the old one is a stray at the next check
        log.error("%s: old %s %s not cancelled (%s)", sym, kind, old_id, broker.error_text(exc))
    for row in broker.journal.rows("exchange_id=? AND status='open'", (old_id,)):
        broker.journal.update(row["client_id"], status="cancelled", reason=f"{why}_MOVED")
    return True


def adopt_rungs(broker, guard, entry_qty: float, ladder) -> list[Rung]:
    """Start-up: the rungs still to work for an adopted position. Each rung's price and quantity
    come from the journal when it placed the rung for this entry (so an ATR ladder keeps its
    levels), else from ``ladder`` on the entry price; what the journal says filled (a rung that
    fired while we were down was booked just before, ``reconcile._adopt_triggered_guards``) is
    taken off; a rung whose last order is journalled ``open`` carries that order id as a
    candidate, adopted if it is still open on the exchange with the right quantity."""
    sym = guard.symbol
    rungs = make_rungs(broker, sym, entry_qty, guard.entry_price, ladder, not guard.selling)
    rows = broker.journal.rows("entry_cid=? AND purpose LIKE 'take!_profit!_%' ESCAPE '!'", (guard.entry_cid,))
    out = []
    if guard.breakeven and any(float(r["filled_qty"] or 0.0) > 0 and r["status"] == "triggered" for r in rows):
        guard.stop_price = broker.round_price(sym, guard.entry_price)  # a rung filled: the stop is at break-even
        guard.stop_reason = "breakeven_stop"
    for rung in rungs:
        mine = [r for r in rows if r["purpose"] == rung.kind]
        if mine:
            first = mine[0]
            rung.price = float(first["price"] or rung.price)
            rung.qty = float(first["qty"] or rung.qty)
            filled = sum(float(r["filled_qty"] or 0.0) for r in mine if r["status"] == "triggered")
            rung.qty = lots(broker, sym, rung.qty - filled)
            if mine[-1]["status"] == "open":
                rung.order_id = mine[-1]["exchange_id"]
        rung.qty = min(rung.qty, guard.qty)
        if rung.qty > 0:
            out.append(rung)
    return out
