"""Start-up reconciliation: make the executor's picture agree with the exchange BEFORE it trades.

After a crash (``kill -9`` at any point) the exchange is the truth for what exists, the order
journal (``exchange_orders``, written before every send) is the truth for what we may have
sent. In this order:

1. every journalled order still ``sending`` (its answer never arrived) is looked up by its
   client id - after its ``recvWindow`` has passed, so a late request cannot land afterwards:
   found -> adopted with its fills; not found -> ``not_sent``. Nothing is re-sent here, so an
   id the exchange already has is never sent again. Guards that fired while we were away
   have their fills adopted too (they go into the record);
2. resting non-reduce-only orders in the universe are orphans, except this executor's own
   limit entries (journalled ``resting``): those are adopted - tracked again by the broker,
   their notional reserved in the ledger - and left to fill or expire at their TTL as if
   nothing had happened; one that filled while we were away has its fill adopted, a partly
   filled one has its remainder cancelled (its position is adopted and guarded in 3.);
3. every open long position is adopted (quantity and entry price from the exchange, entry
   bar and fees from the journal when it knows the entry) and gets its stop-loss and
   take-profit: an open protective with the right quantity is kept, a wrong one replaced,
   a missing one placed (the prices follow ``risk.stop_loss_pct`` / ``take_profit_pct`` of the
   entry price, as for a fresh entry). With a trailing stop: a native TRAILING_STOP_MARKET of
   the right quantity is kept (its trail state lives on the exchange), a missing one placed;
   a managed stop that the trail had moved up is kept at its level, and the trail's peak is
   taken back from it (``stop / (1 - pct)``);
4. conditional orders of symbols without a position are cancelled (a stale guard could
   otherwise open a short);
5. the ledger is rebuilt: cash = wallet balance - entry notional of the open positions, so
   equity = wallet + unrealised PnL, as the exchange computes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import ccxt
import pandas as pd

from executor.live.broker import CcxtBroker
from executor.live.guards import Guard, is_guard_purpose
from executor.live.ladder import adopt_rungs
from executor.live.levels import adoption_levels, timeframe_of
from executor.live.liquidation import adopt_liquidations
from executor.live.resting import RestingEntry, last_working_bar
from executor.paper import MarketOrder
from executor.portfolio import Fill, Portfolio, Position
from qt.binance import reason_for
from qt.config import RiskParams

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    adopted_orders: list[str] = field(default_factory=list)  # client ids found after a lost answer
    not_sent: list[str] = field(default_factory=list)  # client ids the exchange never got
    cancelled_orphans: list[str] = field(default_factory=list)  # exchange ids
    positions: dict[str, float] = field(default_factory=dict)  # symbol -> qty adopted
    protectives_placed: dict[str, list[str]] = field(default_factory=dict)  # symbol -> kinds placed
    wallet_usdt: float = 0.0
    fills: list[Fill] = field(default_factory=list)  # fills that happened while the executor was away

    def summary(self) -> dict:
        return {"adopted_orders": len(self.adopted_orders), "not_sent": len(self.not_sent),
                "cancelled_orphans": len(self.cancelled_orphans), "positions": self.positions,
                "protectives_placed": self.protectives_placed, "wallet_usdt": self.wallet_usdt,
                "fills_adopted": len(self.fills)}


def resolve_unanswered(broker: CcxtBroker, report: ReconcileReport) -> None:
    journal = broker.journal
    for row in journal.rows("status='sending'"):
        algo = is_guard_purpose(row["purpose"])
        # a request still in flight when we died may reach the server late; after its
        # recvWindow the server refuses it, so only then is "not found" final
        broker.outwait_recv_window(float(row["updated_ms"]) / 1000.0)
        found = broker.lookup(row["client_id"], row["symbol"], algo)
        if found is None:
            journal.update(row["client_id"], status="not_sent")
            report.not_sent.append(row["client_id"])
            continue
        report.adopted_orders.append(row["client_id"])
        if algo:
            journal.update(row["client_id"], exchange_id=str(found["id"]),
                           status="open" if found.get("status") == "open" else str(found.get("status")))
            continue
        side = str(found.get("side") or row.get("side") or ("buy" if row["purpose"] == "entry" else "sell"))
        if row["purpose"] == "entry" and found.get("status") == "open":  # a limit entry, resting
            journal.update(row["client_id"], exchange_id=str(found["id"]), status="resting")
            continue
        fill = broker.fill_from_order(found, int(row["order_id"] or 0), side, row["purpose"],
                                      entry_reason(side) if row["purpose"] == "entry" else "exit_adopted")
        if fill is not None:
            report.fills.append(fill)
        journal.update(row["client_id"], exchange_id=str(found["id"]),
                       status="filled" if fill is not None else str(found.get("status")),
                       filled_qty=fill.qty if fill else 0.0, avg_price=fill.price if fill else None,
                       fee_usdt=fill.fee_usdt if fill else None, fill_ts=str(fill.timestamp) if fill else None)


def _adopt_triggered_guards(broker: CcxtBroker, report: ReconcileReport) -> None:
    """A stop or take-profit that fired while we were down: its fill goes into the record."""
    journal = broker.journal
    for row in journal.rows("status='open' AND (purpose IN ('stop_loss', 'take_profit', 'trailing_stop') "
                            "OR purpose LIKE 'take!_profit!_%' ESCAPE '!')"):
        try:
            order = broker.read(lambda: broker.ex.fetch_order(row["exchange_id"], row["symbol"],
                                                              broker.venue.trigger()))
        except ccxt.OrderNotFound:
            journal.update(row["client_id"], status="missing")
            continue
        if order.get("status") == "open":
            continue
        fill = None
        closed = order.get("status") == "closed"
        regular = broker.venue.filled_order_of(broker, row["symbol"], order) if closed else None
        if regular is not None:
            fill = broker.fill_from_order(regular, -int(row["order_id"] or 0), str(regular.get("side") or "sell"),
                                          "exit", _trigger_reason(journal, row))
        if fill is not None:
            report.fills.append(fill)
        journal.update(row["client_id"], status="triggered" if fill is not None else str(order.get("status")),
                       filled_qty=fill.qty if fill else 0.0, avg_price=fill.price if fill else None,
                       fill_ts=str(fill.timestamp) if fill else None)


def _trigger_reason(journal, row: dict) -> str:
    """The exit reason of a guard that fired while we were down: a stop the managed trail had
    moved past the entry's first stop exits as ``trailing_stop``, one moved to the entry price after
    a rung as ``breakeven_stop``, as it would have live and in paper (a rung: its own ``take_profit_k``)."""
    if row["purpose"] != "stop_loss" or not row.get("entry_cid") or row.get("price") is None:
        return row["purpose"]
    first = journal.rows("purpose='stop_loss' AND entry_cid=? AND price IS NOT NULL", (row["entry_cid"],))
    entry = journal.get(row["entry_cid"])
    if entry and entry.get("avg_price") and abs(row["price"] - entry["avg_price"]) < 1e-9 * row["price"] \
            and journal.rows("entry_cid=? AND purpose LIKE 'take!_profit!_%' ESCAPE '!' AND filled_qty > 0",
                             (row["entry_cid"],)):
        return "breakeven_stop"
    short = (row.get("side") or "sell") == "buy"  # a short's stop buys
    moved = first and (row["price"] < first[0]["price"] if short else row["price"] > first[0]["price"])
    return "trailing_stop" if moved else "stop_loss"


def entry_reason(side: str) -> str:
    return "signal_sell" if side == "sell" else "signal_buy"


def _keep_guard_orders(broker: CcxtBroker, guard: Guard, open_algo: list[dict], report: ReconcileReport) -> list[dict]:
    """The open conditional orders that are this position's guard (right kind, closing side,
    reduce-only, right quantity): adopted into ``guard``; the others cancelled."""
    keep: list[dict] = []
    candidates = {r.order_id: r for r in guard.rungs if r.order_id is not None}  # journalled, maybe open
    for r in guard.rungs:
        r.order_id = None
    for order in open_algo:
        oid = str(order["id"])
        kind = candidates[oid].kind if oid in candidates else broker.venue.guard_kind(order)
        qty = guard.qty_of(kind) if kind in guard.kinds else -1.0
        right = (order.get("side") == guard.close_side and order.get("reduceOnly") and kind in guard.kinds
                 and abs(float(order.get("amount") or 0.0) - qty) <= 1e-9 * max(qty, 1.0)
                 and guard.order_id_of(kind) is None)
        if right:
            guard.set_order_id(kind, oid)
            if kind == "stop_loss":
                guard.stop_price = float(order["triggerPrice"])
                if guard.breakeven and abs(guard.stop_price - broker.round_price(guard.symbol, guard.entry_price)) \
                        < 1e-9 * guard.stop_price:
                    guard.stop_reason = "breakeven_stop"
                elif guard.trail_pct > 0 and guard.beyond(guard.stop_price, guard.fixed_stop):  # moved by the trail
                    extreme = guard.stop_price / (1.0 - guard.trail_pct if guard.selling else 1.0 + guard.trail_pct)
                    guard.peak = max(guard.entry_price, extreme) if guard.selling else min(guard.entry_price, extreme)
            elif kind == "take_profit":
                guard.take_profit_price = float(order["triggerPrice"])
            keep.append(order)
            continue
        try:
            broker.read(lambda: broker.venue.cancel(broker.ex, order["id"], guard.symbol, True))
            report.cancelled_orphans.append(oid)
        except ccxt.OrderNotFound:
            pass
    return keep


def adopt_resting_entries(broker: CcxtBroker, risk: RiskParams, portfolio: Portfolio,
                           report: ReconcileReport) -> set[str]:
    """Our limit entries still working: tracked and reserved again; filled ones: fills adopted;
    partly filled ones: the rest cancelled. Returns the exchange ids kept resting."""
    journal, kept = broker.journal, set()
    for row in journal.rows("purpose='entry' AND status='resting'"):
        sym, cid, oid = row["symbol"], row["client_id"], row["exchange_id"]
        try:
            found = broker.read(lambda: broker.ex.fetch_order(oid, sym))
            if found.get("status") == "open" and float(found.get("filled") or 0.0) > 0:
                try:
                    broker.read(lambda: broker.venue.cancel(broker.ex, oid, sym, False))
                except ccxt.OrderNotFound:
                    pass
                found = broker.read(lambda: broker.ex.fetch_order(oid, sym))
        except ccxt.OrderNotFound:
            journal.update(cid, status="missing")
            continue
        decided = pd.Timestamp(row["decided_ts"])
        qty, price = float(row["qty"] or 0.0), float(row["price"] or 0.0)
        side = str(found.get("side") or row.get("side") or "buy")
        lv = adoption_levels(broker, risk, journal, sym, None, timeframe_of(broker.bar_ms))
        ladder = lv["take_profit_ladder"]
        order = MarketOrder(int(row["order_id"] or 0), sym, side, "entry", entry_reason(side), notional_usdt=qty * price,
                            stop_loss_pct=lv["stop_loss_pct"], take_profit_pct=lv["take_profit_pct"],
                            decided_ts=decided, order_type="limit", limit_price=price, ttl_bars=risk.limit_ttl_bars,
                            trailing_stop_pct=risk.trailing_stop_pct, trailing_mode=risk.trailing_mode,
                            take_profit_ladder=ladder, breakeven_after_first_tp=risk.breakeven_after_first_tp,
                            leverage=risk.leverage_of(sym))
        if found.get("status") == "open":
            broker.resting[sym] = RestingEntry(order, cid, str(oid),
                                               last_working_bar(decided, risk.limit_ttl_bars, broker.bar_ms))
            portfolio.reserved_usdt[sym] = qty * price
            if side == "sell":
                portfolio.reserved_short.add(sym)
            kept.add(str(oid))
            report.adopted_orders.append(cid)
            continue
        fill = broker.fill_from_order(found, order.order_id, side, "entry", entry_reason(side))
        if fill is not None:
            report.fills.append(fill)
        journal.update(cid, status="filled" if fill is not None else str(found.get("status")),
                       filled_qty=fill.qty if fill else 0.0, avg_price=fill.price if fill else None,
                       fee_usdt=fill.fee_usdt if fill else None, fill_ts=str(fill.timestamp) if fill else None)
    return kept


def cancel_orphans(broker: CcxtBroker, symbol: str, report: ReconcileReport,
                   keep: Callable[[dict], bool]) -> None:
    """Cancel ``symbol``'s open (regular) orders the executor does not keep - an order is kept
    when ``keep(order)`` says so (perps: reduce-only ones and our resting limit entries; spot:
    OCO list legs and our resting limit entries) - and note each in ``report.cancelled_orphans``.
    The one rule of both start-up reconciliations (perps here, spot in ``executor.live.spot``)."""
    ex = broker.ex
    for order in broker.read(lambda: ex.fetch_open_orders(symbol)):
        if keep(order):
            continue
        try:
            broker.read(lambda: broker.venue.cancel(ex, order["id"], symbol, False))
            report.cancelled_orphans.append(str(order["id"]))
            log.warning("%s: cancelled resting order %s (client id %s) the executor does not keep", symbol,
                        order["id"], order.get("clientOrderId"))
        except ccxt.OrderNotFound:
            pass


def reconcile(broker: CcxtBroker, symbols: list[str], risk: RiskParams, next_bar_ts: pd.Timestamp,
              bar_ms: int) -> tuple[Portfolio, ReconcileReport]:
    """Bring journal, exchange and ledger into agreement; returns the ledger to trade from."""
    ex, journal = broker.ex, broker.journal
    report = ReconcileReport()
    timeframe = timeframe_of(bar_ms)
    resolve_unanswered(broker, report)

    _adopt_triggered_guards(broker, report)
    held = [p for p in broker.read(lambda: ex.fetch_positions(symbols)) if abs(float(p.get("contracts") or 0.0)) > 0]
    positions = {p["symbol"]: p for p in held}
    report.fills.extend(adopt_liquidations(broker, symbols, set(positions)))

    balance = broker.read(lambda: ex.fetch_balance())
    wallet = broker.venue.wallet_usdt(balance)
    report.wallet_usdt = wallet
    portfolio = Portfolio(cash_usdt=wallet)
    broker.guards.clear()
    broker.resting.clear()
    resting = adopt_resting_entries(broker, risk, portfolio, report)

    for sym in symbols:
        cancel_orphans(broker, sym, report, keep=lambda order: order.get("reduceOnly") or str(order["id"]) in resting)
        open_algo = broker.read(lambda: ex.fetch_open_orders(sym, params=broker.venue.trigger()))
        pos = positions.get(sym)
        if pos is None:
            for order in open_algo:
                try:
                    broker.read(lambda: broker.venue.cancel(ex, order["id"], sym, True))
                    report.cancelled_orphans.append(str(order["id"]))
                except ccxt.OrderNotFound:
                    pass
            continue
        qty, entry_price = abs(float(pos["contracts"])), float(pos["entryPrice"])
        short = pos.get("side") == "short"
        entries = journal.rows("symbol=? AND purpose='entry' AND filled_qty > 0", (sym,))
        last = entries[-1] if entries else None
        if last is None:
            log.warning("%s: adopting a %s position of %s the journal does not know", sym, pos.get("side"), qty)
        entry_ts = pd.Timestamp(last["fill_ts"]) if last and last["fill_ts"] else next_bar_ts
        sign = -1.0 if short else 1.0
        lv = adoption_levels(broker, risk, journal, sym, last["client_id"] if last else None, timeframe)
        ladder = lv["take_profit_ladder"]
        stop = lv["stop_price"] or entry_price * (1.0 - sign * lv["stop_loss_pct"])
        take = lv["take_profit_price"] or entry_price * (1.0 + sign * lv["take_profit_pct"])
        guard = Guard(sym, qty, broker.round_price(sym, stop),
                      float("nan") if ladder else broker.round_price(sym, take),
                      int(last["order_id"] or 0) if last else 0,
                      last["client_id"] if last else f"adopted-{sym}",
                      trail_pct=risk.trailing_stop_pct, trail_mode=risk.trailing_mode, peak=entry_price,
                      side="short" if short else "long", ladder=bool(ladder),
                      breakeven=risk.breakeven_after_first_tp, entry_price=entry_price)
        guard.fixed_stop = guard.stop_price
        guard.generation = len(journal.rows("entry_cid=?", (guard.entry_cid,)))
        if ladder:
            entry_qty = float(last["filled_qty"]) if last else qty
            guard.rungs = adopt_rungs(broker, guard, entry_qty, ladder)
        keep = _keep_guard_orders(broker, guard, open_algo, report)
        guard_and_book(broker, portfolio, report, guard, qty, entry_price, entry_ts, last, next_bar_ts, bar_ms,
                       mark=lambda: float(pos.get("markPrice") or entry_price), open_orders=keep,
                       what="protectives", leverage=risk.leverage_of(sym))
        # margin: the wallet keeps the USDT, the ledger books the notional (spent by a long, received by a short)
        portfolio.cash_usdt += sign * -qty * entry_price
    log.warning("reconciled with the exchange: %s", report.summary())
    return portfolio, report


def guard_and_book(broker: CcxtBroker, portfolio: Portfolio, report: ReconcileReport, guard: Guard, qty: float,
                   entry_price: float, entry_ts, last, next_bar_ts: pd.Timestamp, bar_ms: int,
                   mark: Callable[[], float], open_orders: list[dict] | None = None, what: str = "protectives",
                   leverage: int = 1) -> None:
    """An adopted position (perpetual or spot holding): guard it on the exchange, placing what is
    missing (a failure is logged and retried at the next bar), then book it in the ledger with the
    bars it has been held - the same for both markets, so a restart adopts them alike."""
    sym = guard.symbol
    broker.guards[sym] = guard
    try:
        placed = broker.ensure_guard(guard, open_orders)
    except ccxt.BaseError as exc:
        log.error("%s: %s could not be placed at start-up: %s (reason %s)", sym, what,
                  broker.error_text(exc), reason_for(exc))
        placed = []
    if placed:
        report.protectives_placed[sym] = placed
    fee = float(last["fee_usdt"] or 0.0) if last else 0.0
    bars_held = max(int((next_bar_ts - pd.Timestamp(entry_ts)).value // (bar_ms * 1_000_000)), 0)
    portfolio.positions[sym] = Position(sym, qty, entry_price, entry_ts, qty * entry_price, fee,
                                        guard.stop_price, guard.take_profit_price, bars_held=bars_held,
                                        side=guard.side, leverage=leverage)
    portfolio.marks[sym] = mark()
    report.positions[sym] = qty
