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
from dataclasses import dataclass

import ccxt
import pandas as pd

from executor.live.emergency import exit_crossed_guard, refused_as_crossed
from executor.live.journal import client_order_id
from executor.paper import MarketOrder, Protective
from qt.binance import reason_for

log = logging.getLogger(__name__)

GUARD_KINDS = ("stop_loss", "take_profit", "trailing_stop")


@dataclass
class Guard:
    """The protective pair on the exchange for one position."""

    symbol: str
    qty: float
    stop_price: float
    take_profit_price: float
    entry_order_id: int
    entry_cid: str
    stop_id: str | None = None
    take_profit_id: str | None = None
    generation: int = 0
    trail_pct: float = 0.0  # 0 = no trailing stop (qt.fills)
    trail_mode: str = "native"  # native: a TRAILING_STOP_MARKET; managed: stop_price follows the trail
    trail_id: str | None = None  # native trailing order on the exchange
    peak: float = float("nan")  # managed: highest completed high since entry
    fixed_stop: float = float("nan")  # the stop-loss level before any trail moved it

    @property
    def kinds(self) -> tuple[str, ...]:
        native = self.trail_pct > 0 and self.trail_mode == "native"
        return GUARD_KINDS if native else GUARD_KINDS[:2]

    def order_id_of(self, kind: str) -> str | None:
        return {"stop_loss": self.stop_id, "take_profit": self.take_profit_id, "trailing_stop": self.trail_id}[kind]

    def set_order_id(self, kind: str, oid: str | None) -> None:
        setattr(self, {"stop_loss": "stop_id", "take_profit": "take_profit_id", "trailing_stop": "trail_id"}[kind],
                oid)

    def clear_ids(self) -> None:
        self.stop_id = self.take_profit_id = self.trail_id = None

    def exit_reason(self, kind: str) -> str:
        """A managed stop that the trail moved up exits as ``trailing_stop``, as in paper."""
        moved = self.trail_pct > 0 and self.stop_price > self.fixed_stop  # False while fixed_stop is NaN
        return "trailing_stop" if kind == "stop_loss" and moved else kind

    def as_protective(self) -> Protective:
        return Protective(self.symbol, self.qty, self.stop_price, self.take_profit_price, self.entry_order_id,
                          trail_pct=self.trail_pct, peak=self.peak)


class GuardKeeping:
    """The broker's protective orders (mixed into ``CcxtBroker``, whose sends, reads, journal and
    exits it uses)."""

    def ensure_guard(self, guard: Guard, open_algo: list[dict] | None = None) -> list[str]:
        """Place whichever of the stop / take-profit is not open on the exchange; returns the
        kinds placed. ``open_algo``: the symbol's open conditional orders if already read.
        A stop the price is already through is not placed: the position is closed at market
        (``executor.live.emergency``) and the guard dropped."""
        if open_algo is None:
            open_algo = self.read(lambda: self.ex.fetch_open_orders(guard.symbol, params={"trigger": True}))
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
        """Place one protective; returns the exchange's answer when it refused a stop as already
        crossed (the caller exits at market), None otherwise."""
        sym = guard.symbol
        price = guard.stop_price if kind == "stop_loss" else guard.take_profit_price
        if kind == "trailing_stop":  # ccxt: trailingPercent -> callbackRate (percent) on the algo endpoint
            price = round(guard.trail_pct * 100.0, 1)
        cid = client_order_id(self.namespace, pd.Timestamp(0, tz="UTC"), f"{guard.entry_cid}|{sym}", kind,
                              guard.generation)
        guard.generation += 1
        key = {"stop_loss": "stopLossPrice", "take_profit": "takeProfitPrice", "trailing_stop": "trailingPercent"}[kind]
        qty = self.round_amount(sym, guard.qty)
        self.journal.sending(cid, sym, kind, None, guard.entry_order_id, qty, price, entry_cid=guard.entry_cid)
        try:
            placed = self.place(cid, sym, True, lambda: self.ex.create_order(
                sym, "market", "sell", qty, None, {key: price, "reduceOnly": True, "clientOrderId": cid}))
        except ccxt.BaseError as exc:
            msg = self.error_text(exc)
            self.journal.update(cid, status="rejected", reason=reason_for(exc), message=msg)
            if kind == "stop_loss" and refused_as_crossed(exc):
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
            open_algo = self.read(lambda: self.ex.fetch_open_orders(symbol, params={"trigger": True}))
            open_ids = {str(o["id"]) for o in open_algo}
            for kind, oid in ((k, guard.order_id_of(k)) for k in guard.kinds):
                if oid is None or oid in open_ids:
                    continue
                order = self.read(lambda: self.ex.fetch_order(oid, symbol, {"trigger": True}))
                if order.get("status") == "closed":  # triggered: it placed a regular order
                    self._book_trigger(guard, kind, order)
                    return
            if self._position_qty(symbol) <= 0:
                self.alerts.append(("POSITION_GONE", f"{symbol}: position closed outside the executor",
                                    {"symbol": symbol}))
                self.cancel_guard(guard)
                del self.guards[symbol]
                return
            strays = [o for o in open_algo if str(o["id"]) not in (guard.stop_id, guard.take_profit_id, guard.trail_id)]
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

    def _book_trigger(self, guard: Guard, kind: str, algo: dict) -> None:
        sym = guard.symbol
        actual = (algo.get("info") or {}).get("actualOrderId")
        regular = self.read(lambda: self.ex.fetch_order(str(actual), sym)) if actual else algo
        fill = self.fill_from_order(regular, -guard.entry_order_id, "sell", "exit", guard.exit_reason(kind))
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
        left = self._position_qty(sym)
        if left > 0 and fill is not None:
            # the triggered order filled only in part (liquidity): finish the exit at market, reduce-only,
            # bar after bar if need be; the ledger gets one exit fill when the position is flat
            log.warning("%s: %s filled %s, %s left; closing the rest at market", sym, kind, fill.qty, left)
            self._partial_exit_fills.setdefault(sym, []).append(fill)
            self._exit(MarketOrder(-guard.entry_order_id, sym, "sell", "exit", kind, qty=left,
                                   decided_ts=fill.timestamp))
            return
        if fill is not None:
            self.execution.fills.append(fill)

    def cancel_quietly(self, symbol: str, oid: str) -> None:
        try:
            self.read(lambda: self.ex.cancel_order(oid, symbol, {"trigger": True}))
        except ccxt.OrderNotFound:
            pass

    def cancel_guard(self, guard: Guard) -> None:
        for oid in (guard.stop_id, guard.take_profit_id, guard.trail_id):
            if oid is None:
                continue
            try:
                self.read(lambda: self.ex.cancel_order(oid, guard.symbol, {"trigger": True}))
            except ccxt.OrderNotFound:
                pass  # already triggered, expired or cancelled
            rows = self.journal.rows("exchange_id=? AND status='open'", (oid,))
            for r in rows:
                self.journal.update(r["client_id"], status="cancelled")
