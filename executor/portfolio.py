"""Value types shared by the decision core, the risk engine and the brokers, plus the ledger.

Units: prices in USDT per base unit, ``qty`` in base units, ``*_usdt`` in USDT. Timestamps
are bar OPEN times (UTC); a fill's ``timestamp`` is the open time of the bar in which it
happened. A position is long or short (``side``; shorts on perpetuals only), its ``qty`` always
positive. The ledger is signed: an entry long spends its notional, an entry short receives it,
so equity = cash + sum(sign x qty x mark) - for a perpetual that is wallet + unrealised PnL, the
margin arithmetic of the exchange. An exit may close part of a position (a take-profit rung):
each partial exit is a ``ClosedTrade`` of the quantity it closed, with that share of the entry's
notional, fee and funding.

The ``Portfolio`` is the executor's own ledger, changed only by ``apply_fill``,
``apply_funding`` (perpetuals, see ``executor.funding``) and the reservation bookkeeping for
approved-but-unfilled entries, so that the backtest and the paper daemon account for money
in exactly one way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from qt.values import positional_maker


RUNG_PREFIX = "take_profit_"  # a ladder rung's fill reason: take_profit_1, take_profit_2, ...


def is_rung(reason: str) -> bool:
    return reason.startswith(RUNG_PREFIX)


@dataclass(frozen=True, slots=True)
class Bar:
    symbol: str
    timestamp: pd.Timestamp  # open time
    open: float
    high: float
    low: float
    close: float


make_bar = positional_maker(Bar)  # Bar(symbol, timestamp, open, high, low, close) on hot paths (qt.values)


@dataclass(frozen=True, slots=True)
class Fill:
    order_id: int
    symbol: str
    timestamp: pd.Timestamp  # open time of the bar in which the fill happened
    side: str  # "buy" | "sell"
    purpose: str  # "entry" | "exit"
    reason: str  # entry: "signal_buy" / "signal_sell"; exit: "stop_loss", "take_profit", "signal_flip", ...
    qty: float
    price: float  # after slippage
    notional_usdt: float  # qty * price
    fee_usdt: float


make_fill = positional_maker(Fill)  # Fill(order_id, ..., fee_usdt), every field, on hot paths (qt.values)


@dataclass(slots=True)
class Position:
    symbol: str
    qty: float
    entry_price: float
    entry_ts: pd.Timestamp
    entry_notional_usdt: float
    entry_fee_usdt: float
    stop_price: float
    take_profit_price: float
    bars_held: int = 0  # closes of this symbol seen while open (the entry bar counts as 1)
    funding_usdt: float = 0.0  # funding paid (+) / received (-) while open (perpetuals)
    side: str = "long"  # "long" | "short"
    leverage: int = 1

    @property
    def sign(self) -> int:
        return 1 if self.side == "long" else -1

    @property
    def close_side(self) -> str:
        """The order side that reduces this position."""
        return "sell" if self.side == "long" else "buy"


@dataclass(frozen=True, slots=True)
class ClosedTrade:
    symbol: str
    entry_ts: pd.Timestamp
    exit_ts: pd.Timestamp
    qty: float
    entry_price: float
    exit_price: float
    fees_usdt: float
    pnl_usdt: float  # net of both fees and of funding (slippage is already in the prices)
    exit_reason: str
    bars_held: int
    funding_usdt: float = 0.0  # funding paid (+) / received (-) during the trade
    side: str = "long"


_closed_trade = positional_maker(ClosedTrade)  # one per round trip (qt.values)


@dataclass(slots=True)
class Portfolio:
    cash_usdt: float
    positions: dict[str, Position] = field(default_factory=dict)
    marks: dict[str, float] = field(default_factory=dict)  # last close per symbol
    reserved_usdt: dict[str, float] = field(default_factory=dict)  # approved entries not yet filled (notional)
    reserved_short: set[str] = field(default_factory=set)  # of those, the ones that open a short
    pending_exits: set[str] = field(default_factory=set)
    last_exit_ts: dict[str, pd.Timestamp] = field(default_factory=dict)  # open time of the exit bar
    closed_trades: list[ClosedTrade] = field(default_factory=list)
    funding_paid_usdt: float = 0.0  # total funding paid (+) / received (-) so far

    def equity_usdt(self) -> float:
        """Cash plus open positions marked at the last close (no exit costs deducted)."""
        total, marks = 0, self.marks  # sum()'s order and start, without a generator (several calls per stepped bar)
        for s, p in self.positions.items():
            total += (1 if p.side == "long" else -1) * p.qty * marks.get(s, p.entry_price)
        return self.cash_usdt + total

    def notional_usdt(self, symbol: str) -> float:
        """The open position's notional at the last close (0 when flat)."""
        p = self.positions.get(symbol)
        return 0.0 if p is None else p.qty * self.marks.get(symbol, p.entry_price)

    def gross_notional_usdt(self) -> float:
        return sum(self.notional_usdt(s) for s in self.positions)

    def signed_exposure_usdt(self, symbols=None) -> float:
        """Long minus short notional (open positions at the marks plus reserved entries) of ``symbols`` (all)."""
        total = 0.0
        for s, p in self.positions.items():
            if symbols is None or s in symbols:
                total += p.sign * self.notional_usdt(s)
        for s, n in self.reserved_usdt.items():
            if symbols is None or s in symbols:
                total += -n if s in self.reserved_short else n
        return total

    def reserved_total_usdt(self) -> float:
        return sum(self.reserved_usdt.values())

    def release_reservation(self, symbol: str) -> None:
        self.reserved_usdt.pop(symbol, None)
        self.reserved_short.discard(symbol)

    def apply_fill(self, fill: Fill, stop_price: float = float("nan"),
                   take_profit_price: float = float("nan"), leverage: int = 1) -> ClosedTrade | None:
        """Book a fill. Entries open a position (a sell entry a short; protective levels given by
        the broker); exits close the position, or part of it, and return that round trip."""
        if fill.purpose == "entry":
            self.release_reservation(fill.symbol)
            short = fill.side == "sell"
            self.cash_usdt += (fill.notional_usdt if short else -fill.notional_usdt) - fill.fee_usdt
            self.positions[fill.symbol] = Position(
                symbol=fill.symbol, qty=fill.qty, entry_price=fill.price, entry_ts=fill.timestamp,
                entry_notional_usdt=fill.notional_usdt, entry_fee_usdt=fill.fee_usdt,
                stop_price=stop_price, take_profit_price=take_profit_price,
                side="short" if short else "long", leverage=leverage)
            return None
        pos = self.positions[fill.symbol]
        # only a take-profit rung closes part of a position; any other exit closes it whole (live, a
        # spot exit sells what is held rounded down to the lot step: the dust is not a position)
        share = min(1.0, fill.qty / pos.qty) if pos.qty > 0 and is_rung(fill.reason) else 1.0
        whole = share >= 1.0 - 1e-9
        entry_notional = pos.entry_notional_usdt * share
        entry_fee = pos.entry_fee_usdt * share
        funding = pos.funding_usdt * share
        self.cash_usdt += (fill.notional_usdt if pos.side == "long" else -fill.notional_usdt) - fill.fee_usdt
        gross = (fill.notional_usdt - entry_notional) * pos.sign
        # ClosedTrade(symbol, entry_ts, exit_ts, qty, entry_price, exit_price, fees_usdt, pnl_usdt, exit_reason,
        # bars_held, funding_usdt, side)
        trade = _closed_trade(fill.symbol, pos.entry_ts, fill.timestamp, fill.qty if not whole else pos.qty,
                              pos.entry_price, fill.price, entry_fee + fill.fee_usdt,
                              gross - fill.fee_usdt - entry_fee - funding, fill.reason, pos.bars_held, funding, pos.side)
        if whole:
            del self.positions[fill.symbol]
            self.pending_exits.discard(fill.symbol)
            self.last_exit_ts[fill.symbol] = fill.timestamp
        else:
            pos.qty -= fill.qty
            pos.entry_notional_usdt -= entry_notional
            pos.entry_fee_usdt -= entry_fee
            pos.funding_usdt -= funding
        self.closed_trades.append(trade)
        return trade

    def apply_funding(self, symbol: str, amount_usdt: float) -> None:
        """Book a funding settlement of an open position: ``amount_usdt`` paid (+) leaves
        cash, received (-) adds to it; the position remembers it for its trade's PnL."""
        self.cash_usdt -= amount_usdt
        self.funding_paid_usdt += amount_usdt
        self.positions[symbol].funding_usdt += amount_usdt
