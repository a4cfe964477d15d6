"""The protective orders that guard each open position of the live perps broker on the exchange.

Why this module exists: the broker (``executor.live.broker``) sends orders, looks them up after
a lost answer and books fills; keeping every position guarded is a job of its own, with its
own state (``Guard``: the stop, take-profit and native trailing stop of one position). Right
after an entry fills, reduce-only STOP_MARKET and TAKE_PROFIT_MARKET orders for the filled
quantity are placed; each bar ``check_guard`` books a triggered one as the exit (its sibling
cancelled), re-places a cancelled or missing one (next client id generation) and cancels strays.
A stop the exchange refuses as already crossed closes the position at market
(``executor.live.emergency``). ``GuardKeeping`` is mixed into ``CcxtBroker``; the spot broker
(``executor.live.spot``) overrides it with one OCO list per position.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import ccxt
import pandas as pd

from executor.live.emergency import exit_crossed_guard
from executor.live.ladder import Rung, after_rung, book_rung, fired_at
from executor.live.liquidation import book_liquidation
from executor.live.journal import client_order_id
from executor.paper import MarketOrder, Protective
from executor.portfolio import is_rung
from qt.binance import reason_for

log = logging.getLogger(__name__)

GUARD_KINDS = ("stop_loss", "take_profit", "trailing_stop")


def is_guard_purpose(purpose: str) -> bool:
    """A protective order's journal purpose: stop, take-profit, trailing stop or a ladder rung."""
    return purpose in GUARD_KINDS or is_rung(purpose)


@dataclass
class Guard:
    """The protective orders on the exchange for one position (long: they sell; short: they buy)."""

    symbol: str
    qty: float
    stop_price: float
    take_profit_price: float  # nan with a ladder
    entry_order_id: int
    entry_cid: str
    stop_id: str | None = None
    take_profit_id: str | None = None
    generation: int = 0
    trail_pct: float = 0.0  # 0 = no trailing stop (qt.fills)
    trail_mode: str = "native"  # native: a TRAILING_STOP_MARKET; managed: stop_price follows the trail
    trail_id: str | None = None  # native trailing order on the exchange
    peak: float = float("nan")  # managed: best completed extreme since entry (a long's high, a short's low)
    fixed_stop: float = float("nan")  # the stop-loss level before any trail moved it
    side: str = "long"  # "long" | "short"
    rungs: list[Rung] = field(default_factory=list)  # take-profit ladder rungs not (fully) filled yet
    ladder: bool = False  # the take-profit is a ladder (no single take-profit order)
    breakeven: bool = False  # after a rung fills, the stop moves to the entry price
    entry_price: float = float("nan")
    stop_reason: str = ""  # "breakeven_stop" once the stop sits at the entry price after a rung

    @property
    def selling(self) -> bool:
        return self.side == "long"

    @property
    def close_side(self) -> str:
        """The side of every order that reduces this position."""
        return "sell" if self.side == "long" else "buy"

    def beyond(self, a: float, b: float) -> bool:
        """``a`` is a better (more protective) stop than ``b``: higher for a long, lower for a short."""
        return a > b if self.selling else a < b

    @property
    def kinds(self) -> tuple[str, ...]:
        native = self.trail_pct > 0 and self.trail_mode == "native"
        out = ["stop_loss"] + ([] if self.ladder else ["take_profit"]) + (["trailing_stop"] if native else [])
        return (*out, *(r.kind for r in self.rungs))

    def rung(self, kind: str) -> Rung | None:
        return next((r for r in self.rungs if r.kind == kind), None)

    def order_id_of(self, kind: str) -> str | None:
        if is_rung(kind):
            r = self.rung(kind)
            return None if r is None else r.order_id
        return {"stop_loss": self.stop_id, "take_profit": self.take_profit_id, "trailing_stop": self.trail_id}[kind]

    def set_order_id(self, kind: str, oid: str | None) -> None:
        if is_rung(kind):
            self.rung(kind).order_id = oid
            return
        setattr(self, {"stop_loss": "stop_id", "take_profit": "take_profit_id", "trailing_stop": "trail_id"}[kind],
                oid)

    def order_ids(self) -> list[str]:
        return [oid for oid in (self.stop_id, self.take_profit_id, self.trail_id, *(r.order_id for r in self.rungs))
                if oid is not None]

    def clear_ids(self) -> None:
        self.stop_id = self.take_profit_id = self.trail_id = None
        for r in self.rungs:
            r.order_id = None

    def price_of(self, kind: str) -> float:
        if is_rung(kind):
            return self.rung(kind).price
        return self.stop_price if kind == "stop_loss" else self.take_profit_price

    def qty_of(self, kind: str) -> float:
        return self.rung(kind).qty if is_rung(kind) else self.qty

    def exit_reason(self, kind: str) -> str:
        """A managed stop that the trail moved exits as ``trailing_stop``, one moved to the entry
        after a rung as ``breakeven_stop``, as in paper."""
        if kind != "stop_loss":
            return kind
        if self.stop_reason:
            return self.stop_reason
        moved = self.trail_pct > 0 and self.beyond(self.stop_price, self.fixed_stop)  # False while NaN
        return "trailing_stop" if moved else kind

    def as_protective(self) -> Protective:
        return Protective(self.symbol, self.qty, self.stop_price, self.take_profit_price, self.entry_order_id,
                          trail_pct=self.trail_pct, peak=self.peak, side=self.side,
                          rungs=tuple((r.qty, r.price) for r in self.rungs),
                          rung_numbers=tuple(r.number for r in self.rungs), breakeven=self.breakeven,
                          entry_price=self.entry_price)


class GuardKeeping:
    """The broker's protective orders (mixed into ``CcxtBroker``, whose sends, reads, journal and
    exits it uses)."""

    def ensure_guard(self, guard: Guard, open_algo: list[dict] | None = None) -> list[str]:
        """Place whichever of the stop / take-profit is not open on the exchange; returns the
        kinds placed. ``open_algo``: the symbol's open conditional orders if already read.
        A stop the price is already through is not placed: the position is closed at market
        (``executor.live.emergency``) and the guard dropped."""
        if open_algo is None:
            open_algo = self.read(lambda: self.ex.fetch_open_orders(guard.symbol, params=self.venue.trigger()))
        open_ids = {str(o["id"]) for o in open_algo}
        placed = []
        for kind in guard.kinds:
            current = guard.order_id_of(kind)
            if current is not None and current in open_ids:
                continue
            crossed = self.place_protective(guard, kind)
            if crossed is not None:
                exit_crossed_guard(self, guard, crossed)
                return placed
            placed.append(kind)
        return placed

    def place_protective(self, guard: Guard, kind: str) -> str | None:
        """Place one protective (reduce-only, on the position's closing side); returns the exchange's
        answer when it refused a stop as already crossed (the caller exits at market), None otherwise."""
        sym = guard.symbol
        price = round(guard.trail_pct * 100.0, 1) if kind == "trailing_stop" else guard.price_of(kind)
        # ccxt: trailingPercent -> callbackRate (percent) on the algo endpoint
        cid = client_order_id(self.namespace, pd.Timestamp(0, tz="UTC"), f"{guard.entry_cid}|{sym}", kind,
                              guard.generation)
        guard.generation += 1
        qty = self.round_amount(sym, guard.qty_of(kind))
        if qty <= 0:  # a rung rounded to nothing: the stop covers it
            return None
        self.journal.sending(cid, sym, kind, None, guard.entry_order_id, qty, price, entry_cid=guard.entry_cid,
                             side=guard.close_side)
        try:
            placed = self.place(cid, sym, True, lambda: self.ex.create_order(
                sym, "market", guard.close_side, qty, None, self.venue.protective_params(kind, price, cid)))
        except ccxt.BaseError as exc:
            msg = self.error_text(exc)
            self.journal.update(cid, status="rejected", reason=reason_for(exc), message=msg)
            if kind == "stop_loss" and self.venue.refused_as_crossed(exc):
                return msg
            log.error("%s: could not place the %s at %s: %s (retried next bar)", sym, kind, price, msg)
            self.alerts.append(("UNPROTECTED", f"{sym} {kind} could not be placed: {msg}",
                                {"symbol": sym, "kind": kind, "price": price}))
            return None
        self.journal.update(cid, exchange_id=str(placed["id"]), status="open")
        guard.set_order_id(kind, str(placed["id"]))
        return None

    def _check_guard(self, symbol: str) -> None:
        guard = self.guards[symbol]
        try:
            open_algo = self.read(lambda: self.ex.fetch_open_orders(symbol, params=self.venue.trigger()))
            open_ids = {str(o["id"]) for o in open_algo}
            fired = []
            for kind, oid in ((k, guard.order_id_of(k)) for k in guard.kinds):
                if oid is None or oid in open_ids:
                    continue
                order = self.read(lambda: self.ex.fetch_order(oid, symbol, self.venue.trigger()))
                if order.get("status") == "closed":  # triggered: it placed a regular order
                    fired.append((kind, order))
                elif is_rung(kind):  # a rung cancelled or expired: placed again below
                    guard.set_order_id(kind, None)
            rungs = sorted((f for f in fired if is_rung(f[0])), key=lambda f: fired_at(f[1]))
            for kind, order in rungs:
                book_rung(self, guard, kind, order)
                if symbol not in self.guards:
                    return
            whole = [f for f in fired if not is_rung(f[0])]
            if whole:
                self._book_trigger(guard, *whole[0])
                return
            if rungs:
                after_rung(self, guard)  # the stop for what is left, break-even
                if symbol not in self.guards:
                    return
                open_algo = self.read(lambda: self.ex.fetch_open_orders(symbol, params=self.venue.trigger()))
            if self.position_qty(symbol) <= 0:
                if book_liquidation(self, guard):
                    return
                self.alerts.append(("POSITION_GONE", f"{symbol}: position closed outside the executor",
                                    {"symbol": symbol}))
                self.cancel_guard(guard)
                del self.guards[symbol]
                return
            ours = set(guard.order_ids())
            strays = [o for o in open_algo if str(o["id"]) not in ours]
            for o in strays:  # e.g. a duplicate guard that reached the exchange after a lost answer
                log.warning("%s: cancelling conditional order %s (client id %s) that is not this position's guard",
                            symbol, o["id"], o.get("clientOrderId"))
                self.cancel_quietly(symbol, str(o["id"]))
            placed = self.ensure_guard(guard, [o for o in open_algo if o not in strays])
            if placed:
                log.warning("%s: protective %s was cancelled or missing on the exchange; re-placed", symbol,
                            "+".join(placed))
                self.alerts.append(("PROTECTIVE_REPLACED", f"{symbol}: {'+'.join(placed)} re-placed",
                                    {"symbol": symbol, "placed": placed}))
        except ccxt.BaseError as exc:
            log.error("%s: protective check failed (%s); tried again next bar", symbol,
                      self.error_text(exc))

    def triggered_order(self, symbol: str, algo: dict) -> dict:
        """The order holding a triggered conditional order's fills (Binance: the regular order it
        placed; Bybit: itself), or the algo order."""
        return self.venue.filled_order_of(self, symbol, algo) or algo

    def _book_trigger(self, guard: Guard, kind: str, algo: dict) -> None:
        sym = guard.symbol
        regular = self.triggered_order(sym, algo)
        fill = self.fill_from_order(regular, -guard.entry_order_id, guard.close_side, "exit", guard.exit_reason(kind))
        oid = guard.order_id_of(kind)
        rows = self.journal.rows("exchange_id=? AND purpose=?", (oid, kind))
        if rows:
            self.journal.update(rows[0]["client_id"], status="triggered", filled_qty=fill.qty if fill else 0.0,
                                avg_price=fill.price if fill else None)
        self.cancel_guard(guard)
        del self.guards[sym]
        superseded = self._pending_exits.pop(sym, None)  # the loop's own exit is moot now
        if superseded is not None:
            self.execution.cancelled.append(superseded)
        left = self.position_qty(sym)
        if left > 0 and fill is not None:
            # the triggered order filled only in part (liquidity): finish the exit at market, reduce-only,
            # bar after bar if need be; the ledger gets one exit fill when the position is flat
            log.warning("%s: %s filled %s, %s left; closing the rest at market", sym, kind, fill.qty, left)
            self._partial_exit_fills.setdefault(sym, []).append(fill)
            self._exit(MarketOrder(-guard.entry_order_id, sym, guard.close_side, "exit", fill.reason, qty=left,
                                   decided_ts=fill.timestamp))
            return
        if fill is not None:
            self.execution.fills.append(fill)

    def cancel_quietly(self, symbol: str, oid: str) -> None:
        try:
            self.read(lambda: self.venue.cancel(self.ex, oid, symbol, True))
        except ccxt.OrderNotFound:
            pass

    def cancel_guard(self, guard: Guard) -> None:
        for oid in guard.order_ids():
            try:
                self.read(lambda: self.venue.cancel(self.ex, oid, guard.symbol, True))
            except ccxt.OrderNotFound:
                pass  # already triggered, expired or cancelled
            rows = self.journal.rows("exchange_id=? AND status='open'", (oid,))
            for r in rows:
                self.journal.update(r["client_id"], status="cancelled")
