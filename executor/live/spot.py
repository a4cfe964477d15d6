"""The live broker for Binance spot (ccxt ``binance``): ``CcxtBroker`` with an OCO order list as guard.

Spot has no reduce-only orders, so the USDT-M pair of a reduce-only stop and take-profit cannot
guard a spot position: two independent sells of the same coins would sell them twice. Binance's
answer is one OCO order list (``POST /api/v3/orderList/oco``): a SELL of the held quantity with
a ``STOP_LOSS`` leg below and a ``LIMIT_MAKER`` leg above; the exchange locks the coins once and
expires one leg when the other triggers or fills. ccxt 4.5 has no unified OCO call for binance,
so the implicit endpoints are used (``private_post_orderlist_oco``, ``private_get_orderlist``,
``private_delete_orderlist``).

What differs from the perpetual broker, everything else (idempotent client ids journalled
before sending, look-up after a lost answer, refusals as values, retries) is shared:

* **The position is the base balance** (free + locked in the list), rounded down to the lot
  step; a remainder below the market's minimum quantity or notional is dust, i.e. flat (it
  cannot be sold). Entry fees are charged in the base asset: an entry ``Fill`` has the
  quantity actually received and the fee converted to USDT at the fill price, so the ledger's
  cash and PnL match the wallet.
* **Guard** = one OCO list for the held quantity, client id ``qto-...`` from (namespace, entry
  client id, generation). Each bar: a leg with fills -> the exit is booked (a partly filled leg
  ends the list; whatever is still held is sold at market, re-guarded while it is not sold);
  the list cancelled or expired without fills, or a held quantity that no longer matches the
  list (a partial entry fill that grew, coins moved by hand) -> the list is replaced
  (``PROTECTIVE_REPLACED``).
* **Exits** cancel the list first (its coins are locked), then sell the base balance at market.
  A partial fill keeps the rest guarded by a new list for the remaining quantity and sells it
  at the next bar.
* **Limit entries** are the perpetual broker's (``executor.live.resting``): the GTC buy locks its
  USDT while it rests; its fill reaches ``book_entry`` and so this class's ``ensure_guard``.
* **Managed trailing stop** (``move_oco_stop``): the shared trail rule gives the level; the list
  is replaced by one with its stop leg there. Unlike perpetuals (new stop first), the old list
  is cancelled first: the coins it locks cannot back two lists. ``native`` is refused upstream.
* ``reconcile_spot`` is the start-up reconciliation for spot: it adopts an open list the journal
  knows (by its list client id) when it still matches the holding (a trail-moved one with its
  peak recovered), records a list that fired while the executor was away, keeps our resting
  limit entries, cancels other resting orders and lists, and guards every holding.
"""

from __future__ import annotations

import logging

import ccxt
import pandas as pd

from executor.live.broker import CcxtBroker, merge_fills
from executor.live.guards import Guard
from executor.live.journal import client_order_id
from executor.live.emergency import exit_crossed_guard, oco_stop_crossed
from executor.paper import MarketOrder
from executor.portfolio import Fill, Portfolio
from executor.live.reconcile import (ReconcileReport, adopt_resting_entries, cancel_orphans, guard_and_book,
                                      resolve_unanswered)
from qt.binance import reason_for
from qt.config import RiskParams

log = logging.getLogger(__name__)

_EPOCH = pd.Timestamp(0, tz="UTC")
OCO_PREFIX = "qto-"


def is_spot_client(exchange: ccxt.Exchange) -> bool:
    return getattr(exchange, "id", "") == "binance"


def _as_spot_guard(g: Guard) -> Guard:
    """A ``Guard`` whose stop and take-profit are the two legs of one OCO list: it also carries
    the list's id and client id (``list_id`` / ``list_cid``, None while no list guards it)."""
    if not hasattr(g, "list_id"):
        g.list_id = g.list_cid = None
    return g


class SpotBroker(CcxtBroker):
    """``submit`` / ``process_bar`` / ``protective`` over a ccxt ``binance`` spot client."""

    # ---- holdings ----------------------------------------------------------------------
    def held(self, symbol: str) -> float:
        """The base asset held (free + locked), rounded down to the lot step; 0 for dust."""
        base = self.ex.market(symbol)["base"]
        balance = self.read(lambda: self.ex.fetch_balance())
        total = float((balance.get(base) or {}).get("total") or 0.0)
        qty = self.round_amount(symbol, total)
        limits = self.ex.market(symbol)["limits"]
        if qty <= 0 or qty < float((limits.get("amount") or {}).get("min") or 0.0):
            return 0.0
        min_cost = self.min_notional_usdt(symbol)
        if min_cost > 0:
            last = float(self.read(lambda: self.ex.fetch_ticker(symbol))["last"])
            if qty * last < min_cost:
                return 0.0
        return qty

    def position_qty(self, symbol: str) -> float:
        return self.held(symbol)

    def fill_from_order(self, order: dict, order_id: int, side: str, purpose: str, reason: str) -> Fill | None:
        """One ``Fill`` from the order's trades. A buy's fee is paid in the base asset: the fill's
        quantity is what was received, its fee that amount at the fill price (cash and PnL then
        match the wallet); a fee in a third asset (BNB) is converted at its USDT ticker."""
        sym = order["symbol"]
        if float(order.get("filled") or 0.0) <= 0:
            return None
        market = self.ex.market(sym)
        trades = self.read(lambda: self.ex.fetch_my_trades(sym, params={"orderId": order["id"]}))
        trades = [t for t in trades if str(t.get("order")) == str(order["id"])]
        if trades:
            gross = sum(float(t["amount"]) for t in trades)
            notional = sum(float(t["cost"]) for t in trades)
            ts_ms = int(trades[-1]["timestamp"])
            fee_base = fee_usdt = 0.0
            for t in trades:
                fee = t.get("fee") or {}
                cost, cur = float(fee.get("cost") or 0.0), fee.get("currency")
                if not cost:
                    continue
                if cur == market["base"]:
                    fee_base += cost
                elif cur == market["quote"]:
                    fee_usdt += cost
                else:
                    fee_usdt += cost * self._usdt_price(cur)
        else:
            gross, notional, fee_base, fee_usdt = float(order["filled"]), float(order["filled"]) * float(
                order["average"]), 0.0, 0.0
            ts_ms = int(order.get("lastTradeTimestamp") or order.get("timestamp"))
        price = notional / gross
        qty = gross - fee_base if side == "buy" else gross
        bar_ts = pd.Timestamp(ts_ms - ts_ms % self.bar_ms, unit="ms", tz="UTC")
        return Fill(order_id, sym, bar_ts, side, purpose, reason, qty, price, qty * price,
                    fee_usdt + fee_base * price)

    def _usdt_price(self, asset: str) -> float:
        try:
            return float(self.read(lambda: self.ex.fetch_ticker(f"{asset}/USDT"))["last"])
        except ccxt.BaseError as exc:
            log.warning("fee in %s not converted to USDT (%s); booked as 0", asset, self.error_text(exc))
            return 0.0

    # ---- the OCO list ------------------------------------------------------------------
    def lookup(self, cid: str, symbol: str, algo: bool) -> dict | None:
        """Orders by client id as in ``CcxtBroker``; an OCO list (``qto-``) by its list client id,
        as ``{"id": list id, "status": "open" | "closed", "info": list}``."""
        if not cid.startswith(OCO_PREFIX):
            return super().lookup(cid, symbol, algo)
        try:
            lst = self.read(lambda: self.ex.private_get_orderlist({"origClientOrderId": cid}))
        except ccxt.OrderNotFound:
            return None
        return _list_view(lst)

    def fetch_list(self, list_id: str) -> dict | None:
        try:
            return _list_view(self.read(lambda: self.ex.private_get_orderlist({"orderListId": list_id})))
        except ccxt.OrderNotFound:
            return None

    def ensure_guard(self, guard: Guard, open_algo: list[dict] | None = None) -> list[str]:
        """Place an OCO list for ``guard.qty`` unless the guard's list is open; returns the kinds placed."""
        guard = _as_spot_guard(guard)
        if guard.list_id is not None and guard.stop_id is not None:
            found = self.fetch_list(guard.list_id)
            if found is not None and found["status"] == "open":
                return []
        return ["stop_loss", "take_profit"] if self._place_oco(guard) else []

    def _place_oco(self, guard: Guard) -> bool:
        sym = guard.symbol
        qty = self.round_amount(sym, guard.qty)
        if qty <= 0:
            return False
        cid = client_order_id(self.namespace, _EPOCH, f"{guard.entry_cid}|{sym}", "oco", guard.generation)
        guard.generation += 1
        self.journal.sending(cid, sym, "oco", None, guard.entry_order_id, qty, guard.stop_price,
                             entry_cid=guard.entry_cid)
        request = {"symbol": self.ex.market_id(sym), "side": "SELL", "quantity": self.ex.amount_to_precision(sym, qty),
                   "aboveType": "LIMIT_MAKER", "abovePrice": self.ex.price_to_precision(sym, guard.take_profit_price),
                   "aboveClientOrderId": f"{cid}-t", "belowType": "STOP_LOSS",
                   "belowStopPrice": self.ex.price_to_precision(sym, guard.stop_price),
                   "belowClientOrderId": f"{cid}-s", "listClientOrderId": cid, "newOrderRespType": "RESULT"}
        try:
            placed = self.place(cid, sym, True, lambda: _list_view(self.ex.private_post_orderlist_oco(request)))
        except ccxt.BaseError as exc:
            msg = self.error_text(exc)
            self.journal.update(cid, status="rejected", reason=reason_for(exc), message=msg)
            if oco_stop_crossed(self, guard, exc):  # the stop leg is already through: sell the coins now
                return exit_crossed_guard(self, guard, msg)
            log.error("%s: could not place the OCO (stop %s, take-profit %s): %s (retried next bar)", sym,
                      guard.stop_price, guard.take_profit_price, msg)
            self.alerts.append(("UNPROTECTED", f"{sym} OCO could not be placed: {msg}",
                                {"symbol": sym, "stop": guard.stop_price, "take_profit": guard.take_profit_price}))
            guard.list_id = guard.list_cid = guard.stop_id = guard.take_profit_id = None
            return False
        guard.qty = qty
        _adopt_list(guard, placed, cid)
        self.journal.update(cid, exchange_id=guard.list_id, status="open")
        return True

    def legs(self, guard: Guard) -> list[tuple[str, dict]]:
        """(kind, ccxt order) of the guard's two legs."""
        out = []
        for kind, oid in (("stop_loss", guard.stop_id), ("take_profit", guard.take_profit_id)):
            if oid is not None:
                out.append((kind, self.read(lambda: self.ex.fetch_order(oid, guard.symbol))))
        return out

    def _check_guard(self, symbol: str) -> None:
        guard = _as_spot_guard(self.guards[symbol])
        try:
            if guard.list_id is not None:
                open_ids = {str(o["id"]): o for o in self.read(lambda: self.ex.fetch_open_orders(symbol))}
                intact = all(i in open_ids and not float(open_ids[i].get("filled") or 0.0)
                             for i in (guard.stop_id, guard.take_profit_id))
                if not intact:
                    for kind, leg in self.legs(guard):
                        if float(leg.get("filled") or 0.0) > 0:  # triggered or (partly) filled: the exit
                            self._book_trigger(guard, kind, leg)
                            return
                    self.cancel_guard(guard)  # cancelled or expired unfilled: replaced below
            held = self.held(symbol)
            if held <= 0:
                self.alerts.append(("POSITION_GONE", f"{symbol}: position closed outside the executor",
                                    {"symbol": symbol}))
                self.cancel_guard(guard)
                del self.guards[symbol]
                return
            if guard.list_id is not None and self.round_amount(symbol, guard.qty) != held:
                log.warning("%s: holding %s no longer matches the OCO's %s; replacing it", symbol, held, guard.qty)
                self.cancel_guard(guard)
            guard.qty = held
            placed = self.ensure_guard(guard) if guard.list_id is None else []
            if placed:
                log.warning("%s: OCO guard was cancelled, missing or mis-sized on the exchange; re-placed", symbol)
                self.alerts.append(("PROTECTIVE_REPLACED", f"{symbol}: OCO re-placed for {held}",
                                    {"symbol": symbol, "placed": placed, "qty": held}))
        except ccxt.BaseError as exc:
            log.error("%s: protective check failed (%s); tried again next bar", symbol,
                      self.error_text(exc))

    def _book_trigger(self, guard: Guard, kind: str, leg: dict) -> None:
        """A leg fired (or filled in part): book it as the exit; sell what is still held."""
        sym = guard.symbol
        reason = guard.exit_reason(kind)  # a stop the managed trail moved up exits as trailing_stop
        self.cancel_guard(guard)  # ends the list if the leg is still working on a remainder
        fill = self.fill_from_order(leg, -guard.entry_order_id, "sell", "exit", reason)
        for row in self.journal.rows("client_id=?", (guard.list_cid or "",)):
            self.journal.update(row["client_id"], status="triggered", filled_qty=fill.qty if fill else 0.0,
                                avg_price=fill.price if fill else None)
        del self.guards[sym]
        superseded = self._pending_exits.pop(sym, None)  # the loop's own exit is moot now
        if superseded is not None:
            self.execution.cancelled.append(superseded)
        left = self.held(sym)
        if left > 0 and fill is not None:
            log.warning("%s: %s filled %s, %s left; closing the rest at market", sym, kind, fill.qty, left)
            self._partial_exit_fills.setdefault(sym, []).append(fill)
            rest = _as_spot_guard(Guard(sym, left, guard.stop_price, guard.take_profit_price, guard.entry_order_id,
                                        guard.entry_cid, generation=guard.generation))
            self.guards[sym] = rest  # guarded again if the market sell does not finish it
            self._exit(MarketOrder(-guard.entry_order_id, sym, "sell", "exit", reason, qty=left,
                                   decided_ts=fill.timestamp))
            return
        if fill is not None:
            parts = self._partial_exit_fills.pop(sym, [])
            self.execution.fills.append(merge_fills(parts + [fill]))

    def move_oco_stop(self, guard: Guard, level: float) -> None:
        """The managed trail rose above the list's stop leg: replace the list by one whose stop is
        at ``level`` (the take-profit stays). Spot coins are locked by the list, so the old list is
        cancelled first and the new one placed after (next client id generation, journalled). If
        the old list fired meanwhile, that is the exit (booked now). A level at or above the last
        price cannot be a resting stop (Binance refuses the list): the old list stays."""
        sym = guard.symbol
        last = float(self.read(lambda: self.ex.fetch_ticker(sym))["last"])
        if level >= last:
            log.warning("%s: trail level %s is not below the last price %s; the OCO keeps its stop %s", sym,
                        level, last, guard.stop_price)
            return
        old_list, old_price = guard.list_id, guard.stop_price
        try:
            self.read(lambda: self.ex.private_delete_orderlist({"symbol": self.ex.market_id(sym),
                                                               "orderListId": old_list}))
        except ccxt.OrderNotFound:
            pass  # already done: fired (booked below) or expired (re-placed below)
        except ccxt.BaseError as exc:
            log.error("%s: OCO %s not cancelled to move the trail (%s); tried again next bar", sym, old_list,
                      self.error_text(exc))
            return
        for kind, leg in self.legs(guard):
            if float(leg.get("filled") or 0.0) > 0:
                log.warning("%s: OCO %s fired while the trail moved; that is the exit", sym, old_list)
                self._book_trigger(guard, kind, leg)
                return
        for r in self.journal.rows("exchange_id=? AND purpose='oco' AND status='open'", (old_list,)):
            self.journal.update(r["client_id"], status="cancelled", reason="TRAIL_MOVED")
        guard.list_id = guard.list_cid = guard.stop_id = guard.take_profit_id = None
        guard.stop_price = level
        if self._place_oco(guard):
            log.info("%s: trailing stop moved %s -> %s (peak %s)", sym, old_price, level, guard.peak)
            return
        guard.stop_price = old_price  # not placed (logged, alerted): back at the old level, at once
        self._place_oco(guard)  # if this fails too, the next bar's check re-places it

    def cancel_guard(self, guard: Guard) -> None:
        guard = _as_spot_guard(guard)
        if guard.list_id is not None:
            try:
                self.read(lambda: self.ex.private_delete_orderlist({"symbol": self.ex.market_id(guard.symbol),
                                                                   "orderListId": guard.list_id}))
            except ccxt.OrderNotFound:
                pass  # already done (fired, expired or cancelled)
            for r in self.journal.rows("exchange_id=? AND purpose='oco' AND status='open'", (guard.list_id,)):
                self.journal.update(r["client_id"], status="cancelled")
        guard.list_id = guard.list_cid = guard.stop_id = guard.take_profit_id = None

    # ---- exits -------------------------------------------------------------------------
    def close_position(self, order: MarketOrder) -> None:
        """Cancel the OCO (its coins are locked), then sell the base balance at market."""
        sym = order.symbol
        guard = self.guards.get(sym)
        if guard is not None and _as_spot_guard(guard).list_id is not None:
            self._check_guard(sym)  # a leg may have fired since the last bar: that is the exit
            if self.guards.get(sym) is not guard:
                if order.order_id > 0 and order not in self.execution.cancelled:
                    self.execution.cancelled.append(order)
                return
            self.cancel_guard(guard)
        qty = self.held(sym)
        if qty <= 0:
            self._flat_now(order)
            return
        cid, fill = self.close_at_market(order, qty, {})  # spot: the coins held are the position
        if cid is None:  # refused
            if guard is not None:  # meanwhile the holding is guarded again
                self.guards[sym] = guard
                guard.qty = qty
                self.ensure_guard(guard)
            return
        if fill is not None:
            self._partial_exit_fills.setdefault(sym, []).append(fill)
        left = self.held(sym)
        if left > 0:  # partial (liquidity): the rest is guarded by a new list and sold next bar
            log.warning("%s: exit sold %s, %s left; re-guarded and sold at the next bar", sym,
                        fill.qty if fill else 0.0, left)
            self._pending_exits[sym] = order
            if guard is None:
                guard = _as_spot_guard(Guard(sym, left, float("nan"), float("nan"), abs(order.order_id),
                                             f"exit-{cid}"))
            guard.qty = left
            self.guards[sym] = guard
            if guard.stop_price == guard.stop_price:  # known levels (not NaN)
                self.ensure_guard(guard)
            return
        self._pending_exits.pop(sym, None)
        self.guards.pop(sym, None)
        parts = self._partial_exit_fills.pop(sym, [])
        if parts:
            self.execution.fills.append(merge_fills(parts))


def _list_view(lst: dict) -> dict:
    """A Binance order list as the broker reads it: id, open/closed, the raw list."""
    return {"id": str(lst["orderListId"]), "status": "open" if lst.get("listOrderStatus") == "EXECUTING" else "closed",
            "clientOrderId": lst.get("listClientOrderId"), "info": lst}


def _adopt_list(guard: Guard, view: dict, cid: str) -> None:
    """Take the list's ids into the guard: the leg whose client id ends ``-s`` (or the first)
    is the stop, the other the take-profit."""
    lst = view["info"]
    orders = lst.get("orders") or []
    stop = next((o for o in orders if str(o.get("clientOrderId", "")).endswith("-s")), orders[0] if orders else None)
    take = next((o for o in orders if o is not stop), None)
    guard.list_id, guard.list_cid = view["id"], cid
    guard.stop_id = str(stop["orderId"]) if stop else None
    guard.take_profit_id = str(take["orderId"]) if take else None


# ---- start-up reconciliation -------------------------------------------------------------
def reconcile_spot(broker: SpotBroker, symbols: list[str], risk: RiskParams, next_bar_ts: pd.Timestamp,
                   bar_ms: int) -> tuple[Portfolio, ReconcileReport]:
    """The spot counterpart of ``executor.live.reconcile.reconcile`` (same report, same order of steps):
    unanswered sends looked up by client id, lists that fired while away recorded, resting
    orders and lists the executor does not keep cancelled, every holding adopted and guarded
    (its open list adopted by list client id when it still fits), cash = the USDT balance."""
    ex, journal = broker.ex, broker.journal
    report = ReconcileReport()
    for row in journal.rows("status='sending' AND purpose='oco'"):
        broker.outwait_recv_window(float(row["updated_ms"]) / 1000.0)
        found = broker.lookup(row["client_id"], row["symbol"], True)
        if found is None:
            journal.update(row["client_id"], status="not_sent")
            report.not_sent.append(row["client_id"])
        else:
            journal.update(row["client_id"], exchange_id=found["id"], status=found["status"])
            report.adopted_orders.append(row["client_id"])
    resolve_unanswered(broker, report)
    ours = {r["client_id"]: r for r in journal.rows("purpose='oco'")}
    for row in journal.rows("purpose='oco' AND status IN ('open', 'closed')"):
        view = broker.fetch_list(row["exchange_id"]) if row["exchange_id"] else None
        if view is None or view["status"] == "open":
            continue
        first = journal.rows("entry_cid=? AND purpose='oco'", (row["entry_cid"] or "",))
        guard = _as_spot_guard(Guard(row["symbol"], float(row["qty"]), float(row["price"] or 0.0), 0.0,
                                     int(row["order_id"] or 0), row["entry_cid"] or "",
                                     trail_pct=risk.trailing_stop_pct,  # the list's stop vs the entry's first
                                     fixed_stop=float(first[0]["price"] or 0.0) if first else float("nan")))
        _adopt_list(guard, view, row["client_id"])
        fills = [(kind, leg) for kind, leg in broker.legs(guard) if float(leg.get("filled") or 0.0) > 0]
        fill = broker.fill_from_order(fills[0][1], -guard.entry_order_id, "sell", "exit",
                                      guard.exit_reason(fills[0][0])) if fills else None
        if fill is not None:
            report.fills.append(fill)
        journal.update(row["client_id"], status="triggered" if fill else "cancelled",
                       filled_qty=fill.qty if fill else 0.0, avg_price=fill.price if fill else None)

    balance = broker.read(lambda: ex.fetch_balance())
    wallet = float((balance.get("USDT") or {}).get("total") or 0.0)
    report.wallet_usdt = wallet
    portfolio = Portfolio(cash_usdt=wallet)
    broker.guards.clear()
    broker.resting.clear()
    resting = adopt_resting_entries(broker, risk, portfolio, report)  # our limit buys: kept, reserved
    open_lists = [_list_view(x) for x in broker.read(lambda: ex.private_get_openorderlist())]
    for sym in symbols:
        market_id = ex.market_id(sym)
        mine = [v for v in open_lists if v["info"].get("symbol") == market_id]
        # kept: a list leg (handled with its list below) or our resting limit entry
        cancel_orphans(broker, sym, report,
                       keep=lambda o: int((o.get("info") or {}).get("orderListId", -1)) != -1 or str(o["id"]) in resting)
        held = broker.held(sym)
        keep = None
        if held > 0:
            for view in reversed(mine):
                row = ours.get(view["clientOrderId"])
                if row is not None and broker.round_amount(sym, float(row["qty"] or 0.0)) == held:
                    keep = view
                    break
        for view in mine:
            if view is keep:
                continue
            try:
                broker.read(lambda: ex.private_delete_orderlist({"symbol": market_id, "orderListId": view["id"]}))
                report.cancelled_orphans.append(f"list:{view['id']}")
            except ccxt.OrderNotFound:
                pass
        if held <= 0:
            continue
        entries = journal.rows("symbol=? AND purpose='entry' AND filled_qty > 0", (sym,))
        last = entries[-1] if entries else None
        if last is not None and last["avg_price"]:
            entry_price = float(last["avg_price"])
        else:
            entry_price = float(broker.read(lambda: ex.fetch_ticker(sym))["last"])
            log.warning("%s: adopting a holding of %s the journal does not know, at the last price %s", sym, held,
                        entry_price)
        entry_ts = pd.Timestamp(last["fill_ts"]) if last and last["fill_ts"] else next_bar_ts
        guard = _as_spot_guard(Guard(sym, held, broker.round_price(sym, entry_price * (1.0 - risk.stop_loss_pct)),
                                     broker.round_price(sym, entry_price * (1.0 + risk.take_profit_pct)),
                                     int(last["order_id"] or 0) if last else 0,
                                     last["client_id"] if last else f"adopted-{sym}",
                                     trail_pct=risk.trailing_stop_pct, trail_mode=risk.trailing_mode,
                                     peak=entry_price))
        guard.fixed_stop = guard.stop_price
        guard.generation = len(journal.rows("entry_cid=?", (guard.entry_cid,)))
        if keep is not None:
            _adopt_list(guard, keep, keep["clientOrderId"])
            row = ours[keep["clientOrderId"]]
            guard.stop_price = float(row["price"] or guard.stop_price)
            if guard.trail_pct > 0 and guard.stop_price > guard.fixed_stop:  # moved by the managed trail
                guard.peak = max(entry_price, guard.stop_price / (1.0 - guard.trail_pct))
            report.adopted_orders.append(keep["clientOrderId"])
        guard_and_book(broker, portfolio, report, guard, held, entry_price, entry_ts, last, next_bar_ts, bar_ms,
                       mark=lambda: float(broker.read(lambda: ex.fetch_ticker(sym))["last"]), what="OCO")
    log.warning("reconciled with the exchange (spot): %s", report.summary())
    return portfolio, report
