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
  checked intrabar against high/low, conservatively, by the rule of ``qt.fills.stop_fill`` (the
  one the local exchange fills its stops, take-profits and OCO legs with):

  1. ``open <= stop``  -> gap through the stop: fills at the open;
  2. ``low <= stop``   -> fills at the stop (also when the same bar touched the TP: the
     stop is assumed to have come first);
  3. ``open >= tp``    -> gap through the TP: fills at the open;
  4. ``high >= tp``    -> fills at the take-profit price.

  Protective fills pay the same slippage (adverse) and fee as market orders.
* **Trailing stop** (``risk.trailing_stop_pct`` > 0): the rule of ``qt.fills``, the
  same function the local exchange matches its TRAILING_STOP_MARKET with. The peak starts at
  the entry fill price and rises to each completed bar's high; the level in force during a bar
  is ``peak x (1 - pct)`` from the bars before it. It does not replace the fixed stop: the
  effective stop is ``max(fixed, trail)``; a fill is reason ``trailing_stop`` when the trail was
  the higher of the two, ``stop_loss`` otherwise.
* **Limit entries** (``risk.entry_order: limit``), price ``close of the deciding bar x (1 -
  limit_offset_bps / 10 000)``, working from the next bar for ``limit_ttl_bars`` bars of the
  symbol, conservatively:

  1. ``open <= limit`` -> fills at the open (the market came to us);
  2. ``low < limit``   -> fills at the limit price. Strictly below: a bar that only touches
     the limit may have traded the whole queue ahead of us;
  3. otherwise it rests; after ``limit_ttl_bars`` bars without a fill it expires (the loop
     releases the reservation and records ``LIMIT_EXPIRED``).

  A limit fill pays no slippage and the maker fee (``costs.maker_fee_rate``; unset:
  ``costs.fee_rate``). Protective orders are placed from the fill price. After a fill at the open they work that bar like after a market entry; after an intrabar fill only
  the stop is checked in that bar (at its level: the low may have come after the fill, the high
  may have come before it) and the trail's peak stays at the fill price (the bar's high may
  precede the fill).
* **Shorts** (perpetuals): everything mirrored. A short entry sells at ``open * (1 - s)``; its
  stop ``fill * (1 + stop_loss_pct)`` is a buy stop reached rising (``high >= stop``, the open on
  a gap up), its take-profit ``fill * (1 - take_profit_pct)`` is reached falling, its trail is
  ``trough x (1 + pct)`` from the lowest completed low; a limit short rests above the close and
  fills at the open when the open is at or above it, else at the limit when the high goes
  strictly above it. Exits buy, paying the slippage upwards.
* **Take-profit ladder**: instead of one take-profit, rungs ``(fraction, distance)``; rung k
  closes ``fraction x`` the filled quantity at ``fill x (1 +/- distance)`` (reason
  ``take_profit_k``; the last rung takes the exact remainder when the fractions sum to 1). Several
  rungs may fill in one bar, nearest first. With ``breakeven_after_first_tp`` the stop moves to
  the entry fill price after a rung fills, in force from the next bar (the bar's low may have come
  before its high); its fill reads ``breakeven_stop``. The stop covers what is still open.
* **Liquidation** is not simulated here, on purpose: the RiskEngine admits only entries whose
  stop lies strictly between the entry and the liquidation price (``LIQUIDATION_BEFORE_STOP``)
  and the stop is offered each bar first, so a stop always fills before the price can reach the
  liquidation price - also on a gap through both, where the stop fills at the open, as on the
  local exchange (which offers its stops before it liquidates). Live, a liquidation that happens
  anyway (a guard cancelled behind the executor's back) is recorded from the exchange.
* A market exit that fills cancels the position's protective orders.
* Partial fills do not exist in paper (a rung is a whole order of its own).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import pandas as pd

from executor.portfolio import Bar, Fill, make_fill
from qt.fills import step_trail, stop_fill, trail_level
from qt.config import CostParams
from qt.errors import ConfigError
from qt.values import positional_maker

LIMIT_EXPIRED = "LIMIT_EXPIRED"


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
    order_type: str = "market"  # entries: "market" | "limit"
    limit_price: float = 0.0  # limit entries
    ttl_bars: int = 0  # limit entries: bars of the symbol it works before it expires
    trailing_stop_pct: float = 0.0  # entries: the trail the position gets (0 = none)
    trailing_mode: str = "native"  # live: the exchange's trailing order or the executor's moved stop
    # entries: ((fraction of the filled qty, distance from the fill price), ...) sorted by distance
    take_profit_ladder: tuple[tuple[float, float], ...] = ()
    breakeven_after_first_tp: bool = False
    leverage: int = 1

    @property
    def is_limit(self) -> bool:
        return self.order_type == "limit"

    @property
    def opens_short(self) -> bool:
        return self.purpose == "entry" and self.side == "sell"


@dataclass(frozen=True, slots=True)
class Protective:
    """The orders guarding one position: a stop (fixed, and trailing when ``trail_pct``), and a
    take-profit - one order, or a ladder of rungs ``(qty, price)`` each closing part of it."""

    symbol: str
    qty: float  # still open
    stop_price: float
    take_profit_price: float  # nan with a ladder
    entry_order_id: int  # its fills carry order_id = -entry_order_id
    trail_pct: float = 0.0  # 0 = no trailing stop
    peak: float = math.nan  # best completed extreme since entry (the fill price to start with):
    #                         the highest high of a long, the lowest low of a short
    side: str = "long"
    rungs: tuple[tuple[float, float], ...] = ()  # take-profit ladder rungs not filled yet: (qty, price)
    rung_numbers: tuple[int, ...] = ()  # each rung's place in the ladder (1 = nearest), for its fill reason
    breakeven: bool = False  # after the first rung fills, the stop moves to the entry price
    entry_price: float = math.nan

    @property
    def selling(self) -> bool:
        """The guard orders sell (a long's) or buy (a short's)."""
        return self.side == "long"

    @property
    def close_side(self) -> str:
        return "sell" if self.side == "long" else "buy"

    @property
    def trail_price(self) -> float:
        """The trail level in force now (beyond reach without a trail)."""
        if self.trail_pct <= 0:
            return -math.inf if self.selling else math.inf
        return trail_level(self.peak, self.trail_pct, self.selling)

    @property
    def effective_stop(self) -> float:
        """The stop the price reaches first: the higher of fixed and trail for a long, the lower for a short."""
        return max(self.stop_price, self.trail_price) if self.selling else min(self.stop_price, self.trail_price)


@dataclass(frozen=True, slots=True)
class BarExecution:
    fills: list[Fill]  # in execution order: open fills first, then intrabar
    cancelled: list[MarketOrder]  # entries that could not fill (no bar)
    protective_placed: dict[str, Protective]  # placed after this bar's entry fills
    expired: list[MarketOrder] = field(default_factory=list)  # limit entries past their TTL (LIMIT_EXPIRED)


# one per bar the broker steps, and a guard per entry: made field by field (qt.values)
_bar_execution = positional_maker(BarExecution)
_make_protective = positional_maker(Protective)


class PaperBroker:
    def __init__(self, costs: CostParams):
        if costs.fill_model == "book":  # bars carry no order book to walk: refuse rather than fake it
            raise ConfigError("costs.fill_model: book needs a replayed order book at every fill; the paper broker "
                              "and the backtest fill OHLC bars - use costs.fill_model: fixed (slippage_bps)")
        self.costs = costs
        self._slip = costs.slippage_bps / 10_000.0
        self._maker_fee = costs.fee_rate if costs.maker_fee_rate is None else costs.maker_fee_rate
        self._pending: list[MarketOrder] = []
        self._protective: dict[str, Protective] = {}
        self._limit_age: dict[int, int] = {}  # limit order id -> bars of its symbol it has worked

    @property
    def pending_orders(self) -> list[MarketOrder]:
        return list(self._pending)

    @property
    def idle(self) -> bool:
        """No order pending and no position guarded: a bar can fill nothing (the loop's quiet bars)."""
        return not self._pending and not self._protective

    def protective(self, symbol: str) -> Protective | None:
        return self._protective.get(symbol)

    def carry_trail(self, symbol: str, extreme: float) -> None:
        """Set a trail's peak (trough) to ``extreme``: bars offered to the guard that touched
        nothing, stepped at once by the backtest (``executor.spans``); the peak their highs give."""
        self._protective[symbol] = replace(self._protective[symbol], peak=extreme)

    def submit(self, order: MarketOrder) -> None:
        self._pending.append(order)

    def process_bar(self, bars: Mapping[str, Bar]) -> BarExecution:
        """Execute one bar: pending orders at the open (limits also intrabar), then protective orders."""
        if not self._pending and not self._protective:  # idle: nothing to fill
            return _bar_execution([], [], {}, [])
        fills: list[Fill] = []
        cancelled: list[MarketOrder] = []
        expired: list[MarketOrder] = []
        placed: dict[str, Protective] = {}
        intrabar_entries: set[str] = set()
        still_pending: list[MarketOrder] = []
        for order in self._pending:
            bar = bars.get(order.symbol)
            if bar is None:
                keep = order.purpose != "entry" or order.is_limit  # a resting limit waits for the next bar
                (still_pending if keep else cancelled).append(order)
                continue
            if order.purpose == "entry" and order.is_limit:
                fill = self._fill_limit(order, bar)
                if fill is None:
                    age = self._limit_age.get(order.order_id, 0) + 1
                    if age >= order.ttl_bars:
                        self._limit_age.pop(order.order_id, None)
                        expired.append(order)
                    else:
                        self._limit_age[order.order_id] = age
                        still_pending.append(order)
                    continue
                self._limit_age.pop(order.order_id, None)
                if fill.price != bar.open:
                    intrabar_entries.add(order.symbol)
                fills.append(fill)
                placed[order.symbol] = self._protective[order.symbol]
                continue
            fills.append(self._fill_market(order, bar))
            if order.purpose == "entry":
                placed[order.symbol] = self._protective[order.symbol]
        self._pending = still_pending
        for symbol in sorted(self._protective):
            bar = bars.get(symbol)
            if bar is None:
                continue
            done, after = self._work(self._protective[symbol], bar, intrabar_entry=symbol in intrabar_entries)
            fills.extend(done)
            if after is None:
                del self._protective[symbol]
            else:
                self._protective[symbol] = after
        return _bar_execution(fills, cancelled, placed, expired)

    def cancel_all(self) -> list[MarketOrder]:
        """Drop every pending order (end of a run); protective orders stay."""
        dropped, self._pending = self._pending, []
        self._limit_age.clear()
        return dropped

    def close_at_close(self, symbol: str, qty: float, bar: Bar, order_id: int, reason: str = "end_of_run",
                       side: str = "sell") -> Fill:
        """Close at the bar's close (end of a backtest), with slippage and fee; ``side`` closes the position."""
        self._protective.pop(symbol, None)
        self._pending = [o for o in self._pending if o.symbol != symbol]
        return self._make_fill(order_id, symbol, bar.timestamp, side, "exit", reason, qty, bar.close)

    # ---- internals -------------------------------------------------------------------
    def _protect(self, order: MarketOrder, qty: float, price: float) -> None:
        short = order.opens_short
        sign = -1.0 if short else 1.0
        rungs, numbers = [], []
        left = qty
        for k, (fraction, distance) in enumerate(order.take_profit_ladder, start=1):
            rung_qty = left if k == len(order.take_profit_ladder) and abs(
                sum(f for f, _ in order.take_profit_ladder) - 1.0) < 1e-9 else qty * fraction
            left -= rung_qty
            rungs.append((rung_qty, price * (1.0 + sign * distance)))
            numbers.append(k)
        take = math.nan if rungs else price * (1.0 + sign * order.take_profit_pct)
        # Protective(symbol, qty, stop, take, order_id, trail_pct=, peak=price, side=, rungs=, rung_numbers=,
        # breakeven=, entry_price=price)
        self._protective[order.symbol] = _make_protective(
            order.symbol, qty, price * (1.0 - sign * order.stop_loss_pct), take, order.order_id, order.trailing_stop_pct,
            price, "short" if short else "long", tuple(rungs), tuple(numbers), order.breakeven_after_first_tp, price)

    def _fill_market(self, order: MarketOrder, bar: Bar) -> Fill:
        if order.purpose == "entry":
            price = bar.open * (1.0 - self._slip if order.opens_short else 1.0 + self._slip)
            qty = order.notional_usdt / price
            fill = make_fill(order.order_id, order.symbol, bar.timestamp, order.side, "entry", order.reason, qty, price,
                        order.notional_usdt, order.notional_usdt * self.costs.fee_rate)
            self._protect(order, qty, price)
            return fill
        self._protective.pop(order.symbol, None)
        return self._make_fill(order.order_id, order.symbol, bar.timestamp, order.side, "exit", order.reason,
                               order.qty, bar.open)

    def _fill_limit(self, order: MarketOrder, bar: Bar) -> Fill | None:
        """Open at or beyond the limit -> the open; strictly beyond intrabar -> the limit; no slippage.
        (A long's limit is below the market, a short's above it.)"""
        limit = order.limit_price
        if order.opens_short:
            price = bar.open if bar.open >= limit else limit if bar.high > limit else None
        else:
            price = bar.open if bar.open <= limit else limit if bar.low < limit else None
        if price is None:
            return None
        qty = order.notional_usdt / price
        fill = make_fill(order.order_id, order.symbol, bar.timestamp, order.side, "entry", order.reason, qty, price,
                    order.notional_usdt, order.notional_usdt * self._maker_fee)
        self._protect(order, qty, price)
        return fill

    def _work(self, p: Protective, bar: Bar, intrabar_entry: bool = False) -> tuple[list[Fill], Protective | None]:
        """Offer one bar to a position's guards: (exit fills, the guards after the bar or None when flat).

        The stop first (fixed or trailing, whichever the price reaches first), then the take-profit
        or the ladder's rungs in the order the price reaches them. After an intrabar entry only the
        stop works, at its level (the open came before the entry, the bar's other extreme may too).
        """
        oid = -p.entry_order_id
        selling = p.selling
        # a bar opening through the stop exits at the open: the rule live applies when the exchange
        # refuses a stop as already crossed (qt.fills.stop_crossed, executor.live.emergency)
        fixed = stop_fill(p.stop_price, bar, selling)
        trail, peak = step_trail(p.peak, p.trail_pct, bar, selling) if p.trail_pct > 0 else (None, p.peak)
        if intrabar_entry:
            reached = bar.low <= p.stop_price if selling else bar.high >= p.stop_price
            fixed = p.stop_price if reached else None
            trail = p.trail_price if trail is not None else None
        if fixed is not None or trail is not None:
            by_trail = trail is not None and p.trail_price == p.effective_stop and p.trail_price != p.stop_price
            hit = [x for x in (fixed, trail) if x is not None]
            price = max(hit) if selling else min(hit)
            reason = "trailing_stop" if by_trail else "breakeven_stop" if p.stop_price == p.entry_price else "stop_loss"
            return [self._make_fill(oid, p.symbol, bar.timestamp, p.close_side, "exit", reason, p.qty, price)], None
        if intrabar_entry:
            return [], p
        if p.trail_pct > 0:
            p = replace(p, peak=peak)
        if not p.rungs:
            take = stop_fill(p.take_profit_price, bar, selling=not selling)  # reached: a long's rising, a short's falling
            if take is None:
                return [], p
            return [self._make_fill(oid, p.symbol, bar.timestamp, p.close_side, "exit", "take_profit", p.qty, take)], None
        fills = []
        rungs, numbers, qty, stop = list(p.rungs), list(p.rung_numbers), p.qty, p.stop_price
        while rungs:
            take = stop_fill(rungs[0][1], bar, selling=not selling)
            if take is None:
                break
            rung_qty = min(rungs[0][0], qty)
            fills.append(self._make_fill(oid, p.symbol, bar.timestamp, p.close_side, "exit",
                                         f"take_profit_{numbers[0]}", rung_qty, take))
            qty -= rung_qty
            rungs.pop(0)
            numbers.pop(0)
            if p.breakeven:  # from the next bar: this bar's low may have come before its high
                stop = max(stop, p.entry_price) if selling else min(stop, p.entry_price)
        if qty <= p.qty * 1e-12:
            return fills, None
        return fills, replace(p, qty=qty, rungs=tuple(rungs), rung_numbers=tuple(numbers), stop_price=stop)

    def _make_fill(self, order_id: int, symbol: str, ts: pd.Timestamp, side: str, purpose: str, reason: str,
                   qty: float, ref_price: float) -> Fill:
        price = ref_price * (1.0 - self._slip) if side == "sell" else ref_price * (1.0 + self._slip)
        notional = qty * price
        return make_fill(order_id, symbol, ts, side, purpose, reason, qty, price, notional, notional * self.costs.fee_rate)
