"""Paper broker: fills market orders and protective orders against candles, deterministically.

Fill rules (the backtest and the paper daemon both use exactly these):

* **Market orders** submitted at the close of bar t fill at the OPEN of the symbol's next
  bar, price moved against us by ``costs.slippage_bps`` (buy: ``open * (1 + s)``, sell:
  ``open * (1 - s)``). Entries are sized by notional: ``qty = notional / fill_price``.
  If the symbol has no next bar at that timestamp (exchange gap), an entry is cancelled
  and an exit stays pending until the symbol's next bar.
* **Fees**: ``costs.fee_rate * notional`` on every fill (taker), in USDT.
* **Protective orders** (one stop + one take-profit per position, one-cancels-other) are
  placed right after the entry fills, at ``entry_fill * (1 - stop_loss_pct)`` and
  ``entry_fill * (1 + take_profit_pct)``; they are live from the entry bar on and are
  checked intrabar against high/low, conservatively:

  1. ``open <= stop``  -> gap through the stop: fills at the open;
  2. ``low <= stop``   -> fills at the stop (also when the same bar touched the TP: the
     stop is assumed to have come first);
  3. ``open >= tp``    -> gap through the TP: fills at the open;
  4. ``high >= tp``    -> fills at the take-profit price.

  Protective fills pay the same slippage (adverse) and fee as market orders.
* A market exit that fills cancels the position's protective orders.
* Partial fills do not exist in paper.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from executor.portfolio import Bar, Fill
from qt.config import CostParams


@dataclass(frozen=True, slots=True)
class MarketOrder:
    order_id: int
    symbol: str
    side: str  # "buy" | "sell"
    purpose: str  # "entry" | "exit"
    reason: str
    notional_usdt: float = 0.0  # entries
    qty: float = 0.0  # exits
    stop_loss_pct: float = 0.0
    take_profit_pct: float = 0.0
    decided_ts: pd.Timestamp | None = None  # open time of the bar whose close decided it


@dataclass(frozen=True, slots=True)
class Protective:
    symbol: str
    qty: float
    stop_price: float
    take_profit_price: float
    entry_order_id: int  # its fills carry order_id = -entry_order_id


@dataclass(frozen=True, slots=True)
class BarExecution:
    fills: list[Fill]  # in execution order: open fills first, then intrabar
    cancelled: list[MarketOrder]  # entries that could not fill (no bar)
    protective_placed: dict[str, Protective]  # placed after this bar's entry fills


class PaperBroker:
    def __init__(self, costs: CostParams):
        self.costs = costs
        self._slip = costs.slippage_bps / 10_000.0
        self._pending: list[MarketOrder] = []
        self._protective: dict[str, Protective] = {}

    @property
    def pending_orders(self) -> list[MarketOrder]:
        return list(self._pending)

    def protective(self, symbol: str) -> Protective | None:
        return self._protective.get(symbol)

    def submit(self, order: MarketOrder) -> None:
        self._pending.append(order)

    def process_bar(self, bars: Mapping[str, Bar]) -> BarExecution:
        """Execute one bar: pending market orders at the open, then protective orders intrabar."""
        fills: list[Fill] = []
        cancelled: list[MarketOrder] = []
        placed: dict[str, Protective] = {}
        still_pending: list[MarketOrder] = []
        for order in self._pending:
            bar = bars.get(order.symbol)
            if bar is None:
                (cancelled if order.purpose == "entry" else still_pending).append(order)
                continue
            fills.append(self._fill_market(order, bar))
            if order.purpose == "entry":
                placed[order.symbol] = self._protective[order.symbol]
        self._pending = still_pending
        for symbol in sorted(self._protective):
            bar = bars.get(symbol)
            if bar is None:
                continue
            fill = self._trigger(self._protective[symbol], bar)
            if fill is not None:
                del self._protective[symbol]
                fills.append(fill)
        return BarExecution(fills, cancelled, placed)

    def cancel_all(self) -> list[MarketOrder]:
        """Drop every pending market order (end of a run); protective orders stay."""
        dropped, self._pending = self._pending, []
        return dropped

    def close_at_close(self, symbol: str, qty: float, bar: Bar, order_id: int, reason: str = "end_of_run") -> Fill:
        """Liquidate at the bar's close (end of a backtest), with slippage and fee."""
        self._protective.pop(symbol, None)
        self._pending = [o for o in self._pending if o.symbol != symbol]
        return self._make_fill(order_id, symbol, bar.timestamp, "sell", "exit", reason, qty, bar.close)

    # ---- internals -------------------------------------------------------------------
    def _fill_market(self, order: MarketOrder, bar: Bar) -> Fill:
        if order.purpose == "entry":
            price = bar.open * (1.0 + self._slip)
            qty = order.notional_usdt / price
            fill = Fill(order.order_id, order.symbol, bar.timestamp, "buy", "entry", order.reason, qty, price,
                        order.notional_usdt, order.notional_usdt * self.costs.fee_rate)
            self._protective[order.symbol] = Protective(order.symbol, qty, price * (1.0 - order.stop_loss_pct),
                                                        price * (1.0 + order.take_profit_pct), order.order_id)
            return fill
        self._protective.pop(order.symbol, None)
        return self._make_fill(order.order_id, order.symbol, bar.timestamp, "sell", "exit", order.reason,
                               order.qty, bar.open)

    def _trigger(self, p: Protective, bar: Bar) -> Fill | None:
        oid = -p.entry_order_id
        if bar.open <= p.stop_price:
            return self._make_fill(oid, p.symbol, bar.timestamp, "sell", "exit", "stop_loss", p.qty, bar.open)
        if bar.low <= p.stop_price:
            return self._make_fill(oid, p.symbol, bar.timestamp, "sell", "exit", "stop_loss", p.qty, p.stop_price)
        if bar.open >= p.take_profit_price:
            return self._make_fill(oid, p.symbol, bar.timestamp, "sell", "exit", "take_profit", p.qty, bar.open)
        if bar.high >= p.take_profit_price:
            return self._make_fill(oid, p.symbol, bar.timestamp, "sell", "exit", "take_profit", p.qty,
                                   p.take_profit_price)
        return None

    def _make_fill(self, order_id: int, symbol: str, ts: pd.Timestamp, side: str, purpose: str, reason: str,
                   qty: float, ref_price: float) -> Fill:
        price = ref_price * (1.0 - self._slip) if side == "sell" else ref_price * (1.0 + self._slip)
        notional = qty * price
        return Fill(order_id, symbol, ts, side, purpose, reason, qty, price, notional, notional * self.costs.fee_rate)
