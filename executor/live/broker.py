"""The live broker: the paper broker's interface over a real ccxt USDT-M client. No decisions here.

The trading loop calls ``submit(order)`` at the close of bar t and ``process_bar(bars)`` at
the close of the next bar, exactly as with ``PaperBroker`` (both are an
``executor.broker.Broker``). Live, ``submit`` sends at once
(the exchange's "now" is the open of t+1, where paper fills), and the fills, protective
triggers and refusals it sees are handed to the loop by the next ``process_bar``, so the
ledger books them at the same step as in paper.

What this adapter guarantees (issue #7):

* **Idempotency.** Every order carries a client order id derived from (namespace, decided
  bar, symbol, purpose) - ``executor.live.journal.client_order_id`` - so a restarted daemon
  recomputes the same id.
  Each send is journalled (``OrderJournal``, same SQLite file as the state) BEFORE it leaves;
  after a lost answer (timeout, 5xx, 429, dropped connection) the order is looked up by its
  client id before anything is re-sent. Binance only refuses a duplicate client id among OPEN
  orders, and a filled market order is no longer open: the look-up is what prevents a double buy.
* **Protection on the exchange.** Right after an entry fills, reduce-only STOP_MARKET and
  TAKE_PROFIT_MARKET orders for the FILLED quantity are placed (``risk.stop_loss_pct`` /
  ``take_profit_pct`` of the fill price, mirrored for a short, as the paper broker does). Each ``process_bar``
  checks them: triggered -> an exit fill; cancelled or missing while the position is open
  -> re-placed (new client id generation); the sibling of a triggered one is cancelled
  (``executor.live.guards``, mixed in: this module sends, looks up and books). With
  ``risk.trailing_stop_pct`` a native TRAILING_STOP_MARKET joins them (or, managed, the stop is
  moved up each bar: ``executor.live.resting``, which also keeps limit entries resting).
* **Exits** (signal flip, max holding) cancel the protectives, then close reduce-only.
* **Filters before sending.** Quantities and prices go through ccxt's ``amount_to_precision``
  / ``price_to_precision``; an entry below the market's min notional or min quantity after
  rounding is refused here (``MIN_NOTIONAL``) without a request.
* **Refusals are values.** ccxt exceptions become ``Rejection(reason, message)`` (one line,
  no traceback, API key and signatures redacted), e.g. ``INSUFFICIENT_FUNDS`` for -2019.

* **Both sides.** An entry that sells (``MarketOrder.opens_short``, ``risk.allow_short``) opens a
  short: a plain market (or limit) sell, not reduce-only; its guards and exits are reduce-only
  BUYs - the stop above the fill, the take-profit below, a trailing stop that follows the lowest
  low - and every fill is booked with the side the exchange executed. With a take-profit ladder
  each rung is its own reduce-only TAKE_PROFIT_MARKET (``executor.live.ladder``); a position the
  exchange liquidates is booked as a ``liquidation`` exit (``executor.live.liquidation``).

This class trades USDT-M perpetuals (``BASE/USDT:USDT``) on Binance (ccxt ``binanceusdm``) and Bybit
(ccxt ``bybit``, linear): what the two venues do differently - conditional-order params, the look-up
by client id (``clientOrderId`` / ``orderLinkId``), a create answer without fills, a triggered order's
fills, crossed-stop codes - is asked of ``self.venue`` (``executor.live.venue``). Spot has no
reduce-only orders, so a stop and a take-profit cannot both guard one spot position as two
orders: ``executor.live.spot.SpotBroker`` subclasses this one with an OCO order list as guard.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import ccxt
import pandas as pd

from executor.broker import Rejection
from executor.live.resting import RestingEntry, check_resting, move_managed_stops, place_limit_entry
from executor.live.guards import Guard, GuardKeeping
from executor.live.journal import OrderJournal, client_order_id
from executor.live.ladder import make_rungs
from executor.live.leverage import LEVERAGE_UNVERIFIED
from executor.live.venue import venue_of
from executor.paper import BarExecution, MarketOrder, Protective
from executor.portfolio import Bar, Fill
from qt.backoff import parse_retry_after_s, retry_call
from qt.binance import is_lost_answer, one_line, reason_for

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_s: float = 0.2
    cap_s: float = 2.0


@dataclass
class _Execution:
    fills: list[Fill] = field(default_factory=list)
    cancelled: list[MarketOrder] = field(default_factory=list)
    placed: dict[str, Protective] = field(default_factory=dict)
    expired: list[MarketOrder] = field(default_factory=list)  # limit entries past their TTL


class CcxtBroker(GuardKeeping):
    """``submit`` / ``process_bar`` / ``protective`` over a ccxt ``binanceusdm`` client."""

    def __init__(self, exchange: ccxt.Exchange, journal: OrderJournal, namespace: str, bar_ms: int,
                 retry: RetryPolicy = RetryPolicy(), sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None, secrets: tuple[str, ...] = ()):
        self.ex = exchange
        self.venue = venue_of(exchange)  # what differs between Binance and Bybit (executor.live.venue)
        self.venue.prepare(exchange)
        self.journal = journal
        self.namespace = namespace
        self.bar_ms = bar_ms
        self.retry = retry
        self.sleep = sleep
        self.rng = rng or random.Random(0)
        self._secrets = secrets
        self.guards: dict[str, Guard] = {}
        self.rejections: list[Rejection] = []
        self.alerts: list[tuple[str, str, dict]] = []  # (kind, message, numbers) for the loop's risk.alert
        self.retries = 0
        self.execution = _Execution()
        self._pending_exits: dict[str, MarketOrder] = {}  # exits not (fully) done yet, re-tried each bar
        self._partial_exit_fills: dict[str, list[Fill]] = {}  # merged into one exit fill when flat
        self._unbooked: list[tuple[MarketOrder, str, dict]] = []  # placed entries whose booking failed
        self.resting: dict[str, RestingEntry] = {}  # limit entries working on the exchange (ccxt_orders)
        # checked once per symbol right before its first entry (``executor.live.leverage``): the line that
        # refuses it, or None; symbols that passed are remembered
        self.before_first_entry: Callable[[str], str | None] | None = None
        self._entry_checked: set[str] = set()

    def error_text(self, exc: BaseException) -> str:
        """The one line an exchange error is logged and recorded as, this account's secrets removed."""
        return one_line(exc, self._secrets)

    # ---- market rules ------------------------------------------------------------------
    def min_notional_usdt(self, symbol: str) -> float:
        limits = self.ex.market(symbol)["limits"]
        return float((limits.get("cost") or {}).get("min") or 0.0)

    def round_amount(self, symbol: str, qty: float) -> float:
        try:
            return float(self.ex.amount_to_precision(symbol, qty))
        except ccxt.InvalidOrder:  # below the precision step: rounds to nothing
            return 0.0

    def round_price(self, symbol: str, price: float) -> float:
        return float(self.ex.price_to_precision(symbol, price))

    # ---- the loop's interface -------------------------------------------------------------
    def protective(self, symbol: str) -> Protective | None:
        g = self.guards.get(symbol)
        return g.as_protective() if g is not None else None

    @property
    def pending_orders(self) -> list[MarketOrder]:
        return list(self._pending_exits.values())

    def cancel_all(self) -> list[MarketOrder]:
        return []  # live orders are sent at once; nothing waits inside the broker

    def submit(self, order: MarketOrder) -> None:
        """Send now (the exchange is at the open of the next bar); the outcome reaches the loop
        through the next ``process_bar``; refusals also through ``rejections``."""
        if order.purpose == "entry":
            self._enter(order)
        else:
            self._exit(order)

    def process_bar(self, bars: Mapping[str, Bar]) -> BarExecution:
        """Everything that happened since the last call: entry/exit fills, protective triggers
        (with the sibling cancelled), protectives re-placed when cancelled or missing."""
        guarded = set(self.guards)  # positions guarded during this bar (their trail sees its high)
        unbooked, self._unbooked = self._unbooked, []
        for order, cid, placed in unbooked:
            self.book_or_defer(order, cid, placed)
        for order in list(self._pending_exits.values()):
            self._exit(order)
        for symbol in sorted(self.guards):
            self._check_guard(symbol)
        move_managed_stops(self, bars, guarded)
        check_resting(self, bars)
        done, self.execution = self.execution, _Execution()
        return BarExecution(done.fills, done.cancelled, done.placed, done.expired)

    # ---- entries ---------------------------------------------------------------------------
    def _enter(self, order: MarketOrder) -> None:
        sym = order.symbol
        cid = client_order_id(self.namespace, order.decided_ts, sym, "entry")
        if self.before_first_entry is not None and sym not in self._entry_checked:
            refused = self.before_first_entry(sym)
            if refused is not None:
                self.reject(order, LEVERAGE_UNVERIFIED, refused, cid)
                return
            self._entry_checked.add(sym)
        try:
            last = float(self.read(lambda: self.ex.fetch_ticker(sym))["last"])
        except ccxt.BaseError as exc:
            self.reject(order, reason_for(exc), self.error_text(exc), cid)
            return
        if order.is_limit:  # sized at its own price
            last = self.round_price(sym, order.limit_price)
        qty = self.round_amount(sym, order.notional_usdt / last)
        min_cost = self.min_notional_usdt(sym)
        min_qty = float((self.ex.market(sym)["limits"].get("amount") or {}).get("min") or 0.0)
        if qty <= 0 or qty < min_qty or qty * last < min_cost:
            self.reject(order, "MIN_NOTIONAL",
                         f"{sym} {order.side} {qty} at ~{last} = {qty * last:.4f} USDT is below the exchange minimum "
                         f"{min_cost} USDT / {min_qty} after rounding; not sent", cid)
            return
        known = self.journal.get(cid)
        if known is not None and known["status"] not in ("not_sent", "rejected"):
            # the same decision again (a bar re-stepped after a crash): the exchange may already
            # have this client id, possibly filled and closed since - never send it twice
            found = self.lookup(cid, sym, False)
            if found is not None:
                self.reject(order, "ALREADY_SENT", f"{sym}: entry {cid} is already on the exchange "
                                                    f"({found.get('status')}); not sent again", cid, journal=False)
                return
        if order.is_limit:
            place_limit_entry(self, order, cid, qty, last)
            return
        self.journal.sending(cid, sym, "entry", order.decided_ts, order.order_id, qty, side=order.side)
        try:
            placed = self.place(cid, sym, False, lambda: self.ex.create_order(
                sym, "market", order.side, qty, None, {"clientOrderId": cid}))
        except ccxt.BaseError as exc:
            self.reject(order, reason_for(exc), self.error_text(exc), cid)
            return
        self.book_or_defer(order, cid, placed)

    def book_or_defer(self, order: MarketOrder, cid: str, placed: dict) -> None:
        """Book a placed entry; if the exchange stops answering half-way (its trades, its guards),
        try again at the next ``process_bar`` - the position must not stay unguarded until a restart."""
        try:
            self.book_entry(order, cid, placed)
        except ccxt.BaseError as exc:
            log.error("%s: entry %s placed but not yet booked/guarded (%s); retried next bar", order.symbol, cid,
                      self.error_text(exc))
            self._unbooked.append((order, cid, placed))

    def book_entry(self, order: MarketOrder, cid: str, placed: dict) -> Guard | None:
        """Record the entry's fill (possibly partial) and guard the filled quantity at once."""
        sym = order.symbol
        fill = self.fill_from_order(placed, order.order_id, order.side, "entry", order.reason)
        status = "filled" if fill is not None and placed.get("status") == "closed" else (
            "partial" if fill is not None else "expired")
        self.journal.update(cid, exchange_id=str(placed["id"]), status=status,
                            filled_qty=fill.qty if fill else 0.0, avg_price=fill.price if fill else None,
                            fee_usdt=fill.fee_usdt if fill else None,
                            fill_ts=str(fill.timestamp) if fill else None)
        if fill is None:
            self.reject(order, "NOT_FILLED", f"{sym} market {order.side} {placed.get('amount')} expired unfilled", cid)
            return None
        # the order's own filled amount: a spot fill's qty is net of the fee paid in the base asset
        if float(placed.get("filled") or fill.qty) < float(placed.get("amount") or fill.qty):
            log.warning("%s entry %s partially filled: %s of %s; protecting the filled quantity", sym, cid,
                        fill.qty, placed.get("amount"))
        short = order.opens_short
        sign = -1.0 if short else 1.0  # a short's stop is above the fill, its take-profit below
        ladder = bool(order.take_profit_ladder)
        guard = Guard(sym, fill.qty, self.round_price(sym, fill.price * (1.0 - sign * order.stop_loss_pct)),
                      float("nan") if ladder else self.round_price(sym, fill.price * (1.0 + sign * order.take_profit_pct)),
                      order.order_id, cid, trail_pct=order.trailing_stop_pct, trail_mode=order.trailing_mode,
                      peak=fill.price, side="short" if short else "long", ladder=ladder,
                      breakeven=order.breakeven_after_first_tp, entry_price=fill.price,
                      rungs=make_rungs(self, sym, fill.qty, fill.price, order.take_profit_ladder, short))
        guard.fixed_stop = guard.stop_price
        self.guards[sym] = guard
        self.execution.fills.append(fill)  # before the guard: an emergency exit's fill comes after it
        self.execution.placed[sym] = guard.as_protective()
        self.ensure_guard(guard, open_algo=[])
        return guard

    # ---- exits -----------------------------------------------------------------------------
    def _exit(self, order: MarketOrder) -> None:
        """Close the position; if the exchange cannot be reached, the exit is tried again next bar."""
        try:
            self.close_position(order)
        except ccxt.BaseError as exc:
            msg = self.error_text(exc)
            log.error("%s: exit not completed (%s); tried again next bar", order.symbol, msg)
            self._pending_exits[order.symbol] = order

    def close_position(self, order: MarketOrder) -> None:
        sym = order.symbol
        guard = self.guards.get(sym)
        if guard is not None:  # a protective may have fired since the last bar: that is the exit
            self._check_guard(sym)
            if sym not in self.guards:
                if order.order_id > 0 and order not in self.execution.cancelled:
                    self.execution.cancelled.append(order)
                return
            self.cancel_guard(guard)
        qty = self.round_amount(sym, self.position_qty(sym))
        if qty <= 0:  # nothing (left) to sell
            self._flat_now(order)
            return
        cid, fill = self.close_at_market(order, qty, {"reduceOnly": True})
        if cid is None:  # refused
            if guard is not None:  # meanwhile the position is guarded again
                guard.clear_ids()
                self.guards[sym] = guard
                self.ensure_guard(guard)
            return
        left = self.position_qty(sym)
        if left > 0:  # partial: keep the rest protected and close it next bar
            self._pending_exits[sym] = order
            if guard is not None:
                guard.qty = left
                guard.clear_ids()
                self.guards[sym] = guard
                self.ensure_guard(guard)
            if fill is not None:
                self._partial_exit_fills.setdefault(sym, []).append(fill)
            return
        self._pending_exits.pop(sym, None)
        self.guards.pop(sym, None)
        parts = self._partial_exit_fills.pop(sym, []) + ([fill] if fill else [])
        if parts:
            self.execution.fills.append(merge_fills(parts))

    def pending_exit_dropped(self, symbol: str) -> MarketOrder | None:
        """Forget the loop's exit still pending for ``symbol`` (the position is gone); returns it."""
        self._partial_exit_fills.pop(symbol, None)
        return self._pending_exits.pop(symbol, None)

    def _flat_now(self, order: MarketOrder) -> None:
        """Nothing (left) to sell: the exit is done - one fill from its parts - or was never needed."""
        sym = order.symbol
        self._pending_exits.pop(sym, None)
        self.guards.pop(sym, None)
        parts = self._partial_exit_fills.pop(sym, [])
        if parts:
            self.execution.fills.append(merge_fills(parts))
        elif order.order_id > 0:
            self.execution.cancelled.append(order)

    def close_at_market(self, order: MarketOrder, qty: float, params: dict) -> tuple[str | None, Fill | None]:
        """Journal, then send a market order of ``qty`` on the exit's side (a long's sell, a short's
        buy): ``(client id, fill or None)``.
        A refusal is journalled and recorded; the broker's own exit (finishing a triggered guard)
        keeps trying next bar, the loop's is decided again: ``(None, None)``."""
        sym = order.symbol
        attempt = self.journal.rows("purpose='exit' AND symbol=? AND order_id=? AND run_id=?",
                                    (sym, order.order_id, self.journal.run_id))
        cid = client_order_id(self.namespace, order.decided_ts, sym, "exit", len(attempt))
        self.journal.sending(cid, sym, "exit", order.decided_ts, order.order_id, qty, side=order.side)
        try:
            placed = self.place(cid, sym, False, lambda: self.ex.create_order(
                sym, "market", order.side, qty, None, {**params, "clientOrderId": cid}))
        except ccxt.BaseError as exc:
            msg = self.error_text(exc)
            self.journal.update(cid, status="rejected", reason=reason_for(exc), message=msg)
            self.rejections.append(Rejection(order.order_id, sym, "exit", reason_for(exc), msg, cid))
            if order.order_id < 0:
                self._pending_exits[sym] = order
            else:
                self._pending_exits.pop(sym, None)
            return None, None
        fill = self.fill_from_order(placed, order.order_id, order.side, "exit", order.reason)
        self.journal.update(cid, exchange_id=str(placed["id"]), status="filled" if fill else "expired",
                            filled_qty=fill.qty if fill else 0.0, avg_price=fill.price if fill else None,
                            fee_usdt=fill.fee_usdt if fill else None)
        return cid, fill

    # ---- plumbing --------------------------------------------------------------------------
    def position_qty(self, symbol: str) -> float:
        """The size of the symbol's position on the exchange (long or short: one-way mode, positive)."""
        positions = self.read(lambda: self.ex.fetch_positions([symbol]))
        return sum(abs(float(p.get("contracts") or 0.0)) for p in positions if p.get("symbol") == symbol)

    def reject(self, order: MarketOrder, reason: str, message: str, cid: str | None, journal: bool = True) -> None:
        log.warning("%s %s refused: %s %s", order.symbol, order.purpose, reason, message)
        if journal and cid is not None and self.journal.get(cid) is not None:
            self.journal.update(cid, status="rejected", reason=reason, message=message)
        self.rejections.append(Rejection(order.order_id, order.symbol, order.purpose, reason, message, cid))

    def _retry_after(self, _exc: BaseException) -> float | None:
        headers = getattr(self.ex, "last_response_headers", None) or {}
        return parse_retry_after_s(headers.get("Retry-After") or headers.get("retry-after"))

    def _on_retry(self, attempt: int, exc: BaseException, wait_s: float) -> None:
        self.retries += 1
        log.warning("exchange call failed (%s), retry %d in %.2fs", self.error_text(exc), attempt, wait_s)

    def read(self, fn):
        """A read (or a cancel, idempotent): retried on timeouts/429/5xx with the project's backoff."""
        r = self.retry
        return retry_call(fn, is_retryable=is_lost_answer, max_attempts=r.max_attempts, base_s=r.base_s,
                          cap_s=r.cap_s, sleep=self.sleep, rng=self.rng, retry_after_s=self._retry_after,
                          on_retry=self._on_retry)

    def lookup(self, cid: str, symbol: str, algo: bool) -> dict | None:
        """The newest order with this client id, or None (the venue's look-up: Binance's ``fetch_order``
        by ``clientOrderId``, Bybit's by ``orderLinkId``)."""
        try:
            return self.venue.lookup(self, cid, symbol, algo)
        except ccxt.OrderNotFound:
            return None

    def place(self, cid: str, symbol: str, algo: bool, create: Callable[[], dict]) -> dict:
        """Send once; after a lost answer, look the client id up before sending again.

        A conditional (algo) order found by its id counts only while it is open (its id is reused
        after a cancellation); a regular order counts in any state (ids are unique per decision).
        """
        sent = False
        timed_out_at: float | None = None

        def attempt() -> dict:
            nonlocal sent, timed_out_at
            if sent:
                if timed_out_at is not None:  # a request that timed out may still reach the server:
                    self.outwait_recv_window(timed_out_at)  # after recvWindow it would be refused
                    timed_out_at = None
                found = self.lookup(cid, symbol, algo)
                if found is not None and (not algo or found.get("status") == "open"):
                    log.warning("%s: order %s was accepted before the answer was lost; not re-sent", symbol, cid)
                    return found
            sent = True
            sent_at = time.time()
            try:
                answer = create()
            except ccxt.RequestTimeout:
                timed_out_at = sent_at
                raise
            return self.venue.placed(self, answer, symbol, algo)  # Bybit answers ids only: read it back

        r = self.retry
        return retry_call(attempt, is_retryable=is_lost_answer, max_attempts=r.max_attempts, base_s=r.base_s,
                          cap_s=r.cap_s, sleep=self.sleep, rng=self.rng, retry_after_s=self._retry_after,
                          on_retry=self._on_retry)

    def outwait_recv_window(self, sent_at_s: float) -> None:
        """Sleep until a request signed at ``sent_at_s`` can no longer be accepted (its
        ``recvWindow`` has passed, plus a margin), so a look-up that finds nothing is final."""
        window_s = float(self.ex.options.get("recvWindow") or 5000) / 1000.0
        wait_s = sent_at_s + window_s + 0.5 - time.time()
        if wait_s > 0:
            log.warning("order request timed out; waiting %.1fs (recvWindow) before looking it up", wait_s)
            self.sleep(wait_s)

    def fill_from_order(self, order: dict, order_id: int, side: str, purpose: str, reason: str) -> Fill | None:
        """One ``Fill`` from the order's trades (quantity, VWAP, USDT fees), None if nothing filled."""
        sym = order["symbol"]
        filled = float(order.get("filled") or 0.0)
        if filled <= 0:
            return None
        trades = self.read(lambda: self.ex.fetch_my_trades(sym, params={"orderId": order["id"]}))
        trades = [t for t in trades if str(t.get("order")) == str(order["id"])]
        if trades:
            qty = sum(float(t["amount"]) for t in trades)
            notional = sum(float(t["cost"]) for t in trades)
            fee = sum(float((t.get("fee") or {}).get("cost") or 0.0) for t in trades)
            ts_ms = int(trades[-1]["timestamp"])
        else:
            qty, notional, fee = filled, filled * float(order["average"]), 0.0
            ts_ms = int(order.get("lastTradeTimestamp") or order.get("timestamp"))
        bar_ts = pd.Timestamp(ts_ms - ts_ms % self.bar_ms, unit="ms", tz="UTC")
        return Fill(order_id, sym, bar_ts, side, purpose, reason, qty, notional / qty, notional, fee)


def merge_fills(parts: list[Fill]) -> Fill:
    """One exit fill from the parts of an exit that took several orders (quantity-weighted price)."""
    qty = sum(f.qty for f in parts)
    notional = sum(f.notional_usdt for f in parts)
    last = parts[-1]
    return Fill(last.order_id, last.symbol, last.timestamp, last.side, last.purpose, last.reason, qty,
                notional / qty, notional, sum(f.fee_usdt for f in parts))

