"""Value types shared by the decision core, the risk engine and the brokers, plus the ledger.

Units: prices in USDT per base unit, ``qty`` in base units, ``*_usdt`` in USDT. Timestamps
are bar OPEN times (UTC); a fill's ``timestamp`` is the open time of the bar in which it
happened. Only long positions exist for now (spot, long-only; see ``executor.core``).

The ``Portfolio`` is the executor's own ledger, changed only by ``apply_fill``,
``apply_funding`` (perpetuals, see ``executor.funding``) and the reservation bookkeeping for
approved-but-unfilled entries, so that the backtest and the paper daemon account for money
in exactly one way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass(frozen=True, slots=True)
class Bar:
    symbol: str
    timestamp: pd.Timestamp  # open time
    open: float
    high: float
    low: float
    close: float


@dataclass(frozen=True, slots=True)
class Fill:
    order_id: int
    symbol: str
    timestamp: pd.Timestamp  # open time of the bar in which the fill happened
    side: str  # "buy" | "sell"
    purpose: str  # "entry" | "exit"
    reason: str  # entry: "signal_buy"; exit: "stop_loss", "take_profit", "signal_flip", "max_holding", "end_of_run"
    qty: float
    price: float  # after slippage
    notional_usdt: float  # qty * price
    fee_usdt: float


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


@dataclass(slots=True)
class Portfolio:
    cash_usdt: float
    positions: dict[str, Position] = field(default_factory=dict)
    marks: dict[str, float] = field(default_factory=dict)  # last close per symbol
    reserved_usdt: dict[str, float] = field(default_factory=dict)  # approved entries not yet filled (notional)
    pending_exits: set[str] = field(default_factory=set)
    last_exit_ts: dict[str, pd.Timestamp] = field(default_factory=dict)  # open time of the exit bar
    closed_trades: list[ClosedTrade] = field(default_factory=list)
    funding_paid_usdt: float = 0.0  # total funding paid (+) / received (-) so far

    def equity_usdt(self) -> float:
        """Cash plus open positions marked at the last close (no exit costs deducted)."""
        return self.cash_usdt + sum(p.qty * self.marks.get(s, p.entry_price) for s, p in self.positions.items())

    def gross_notional_usdt(self) -> float:
        return sum(p.qty * self.marks.get(s, p.entry_price) for s, p in self.positions.items())

    def reserved_total_usdt(self) -> float:
        return sum(self.reserved_usdt.values())

    def apply_fill(self, fill: Fill, stop_price: float = float("nan"),
                   take_profit_price: float = float("nan")) -> ClosedTrade | None:
        """Book a fill. Entries open a position (protective levels given by the broker);
        exits close the whole position and return the round trip."""
        if fill.purpose == "entry":
            self.reserved_usdt.pop(fill.symbol, None)
            self.cash_usdt -= fill.notional_usdt + fill.fee_usdt
            self.positions[fill.symbol] = Position(
                symbol=fill.symbol, qty=fill.qty, entry_price=fill.price, entry_ts=fill.timestamp,
                entry_notional_usdt=fill.notional_usdt, entry_fee_usdt=fill.fee_usdt,
                stop_price=stop_price, take_profit_price=take_profit_price)
            return None
        pos = self.positions.pop(fill.symbol)
        self.pending_exits.discard(fill.symbol)
        self.cash_usdt += fill.notional_usdt - fill.fee_usdt
        self.last_exit_ts[fill.symbol] = fill.timestamp
        trade = ClosedTrade(
            symbol=fill.symbol, entry_ts=pos.entry_ts, exit_ts=fill.timestamp, qty=pos.qty,
            entry_price=pos.entry_price, exit_price=fill.price,
            fees_usdt=pos.entry_fee_usdt + fill.fee_usdt,
            pnl_usdt=(fill.notional_usdt - fill.fee_usdt - pos.entry_notional_usdt - pos.entry_fee_usdt
                      - pos.funding_usdt),
            exit_reason=fill.reason, bars_held=pos.bars_held, funding_usdt=pos.funding_usdt)
        self.closed_trades.append(trade)
        return trade

    def apply_funding(self, symbol: str, amount_usdt: float) -> None:
        """Book a funding settlement of an open position: ``amount_usdt`` paid (+) leaves
        cash, received (-) adds to it; the position remembers it for its trade's PnL."""
        self.cash_usdt -= amount_usdt
        self.funding_paid_usdt += amount_usdt
        self.positions[symbol].funding_usdt += amount_usdt
