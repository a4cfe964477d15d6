"""The local exchange's account: spot balances and the USDT-M futures wallet (pure, Decimal).

Money is ``Decimal`` end to end so a test can recompute a balance exactly from the fill price
and the fee rate (no float drift, no rounding the client cannot reproduce; Binance would round
commissions to 8 decimals, we do not).

Spot: each asset has ``free`` and ``locked`` (locked = held by open orders, as Binance shows
it). A limit buy locks ``qty x price`` of the quote asset, a limit or stop sell locks the base
quantity; a fill spends from the lock and refunds a better price.

Futures (one account, one-way mode, cross margin): a USDT wallet, one signed position per
symbol with its average entry, a leverage per symbol (Binance's default is 20). Margin is
Binance's cross arithmetic without maintenance-margin liquidation::

    position initial margin = |amount| x mark / leverage
    margin balance          = wallet + unrealised PnL (at the marks)
    available               = margin balance - position IM - open-order IM

There is no liquidation, no funding payment and no maintenance check: a position that loses
more than the wallet simply shows a negative margin balance. The executor's tests need
orders, fills, margin refusals and PnL; a liquidation engine is out of scope.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

ZERO = Decimal(0)
DEFAULT_LEVERAGE = 20
MAX_LEVERAGE = 125


class Rejected(Exception):
    """A request refused the way Binance refuses it: HTTP status, error code and message."""

    def __init__(self, code: int, msg: str, status: int = 400):
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


def insufficient_spot_balance() -> Rejected:
    return Rejected(-2010, "Account has insufficient balance for requested action.")


def insufficient_margin() -> Rejected:
    return Rejected(-2019, "Margin is insufficient.")


@dataclass
class SpotWallet:
    """Free and locked amount per asset; every change keeps both non-negative."""

    free: dict[str, Decimal] = field(default_factory=dict)
    locked: dict[str, Decimal] = field(default_factory=dict)

    def assets(self) -> list[str]:
        return sorted(set(self.free) | set(self.locked))

    def free_of(self, asset: str) -> Decimal:
        return self.free.get(asset, ZERO)

    def locked_of(self, asset: str) -> Decimal:
        return self.locked.get(asset, ZERO)

    def lock(self, asset: str, amount: Decimal) -> None:
        if amount > self.free_of(asset):
            raise insufficient_spot_balance()
        self.free[asset] = self.free_of(asset) - amount
        self.locked[asset] = self.locked_of(asset) + amount

    def unlock(self, asset: str, amount: Decimal) -> None:
        amount = min(amount, self.locked_of(asset))
        self.locked[asset] = self.locked_of(asset) - amount
        self.free[asset] = self.free_of(asset) + amount

    def spend_locked(self, asset: str, amount: Decimal) -> None:
        self.locked[asset] = self.locked_of(asset) - min(amount, self.locked_of(asset))

    def debit(self, asset: str, amount: Decimal) -> None:
        if amount > self.free_of(asset):
            raise insufficient_spot_balance()
        self.free[asset] = self.free_of(asset) - amount

    def credit(self, asset: str, amount: Decimal) -> None:
        self.free[asset] = self.free_of(asset) + amount


@dataclass
class Position:
    """A one-way position: ``amount`` > 0 long, < 0 short, 0 flat (``entry`` is then 0)."""

    amount: Decimal = ZERO
    entry: Decimal = ZERO
    updated_ms: int = 0


@dataclass
class FuturesLedger:
    """The USDT-M cross-margin account."""

    wallet: Decimal = ZERO
    asset: str = "USDT"
    positions: dict[str, Position] = field(default_factory=dict)
    leverage: dict[str, int] = field(default_factory=dict)

    def leverage_of(self, symbol: str) -> int:
        return self.leverage.get(symbol, DEFAULT_LEVERAGE)

    def position(self, symbol: str) -> Position:
        return self.positions.get(symbol, Position())

    def reducible(self, symbol: str, side: str) -> Decimal:
        """How much an order on ``side`` can close of the current position (0 if it would open)."""
        amount = self.position(symbol).amount
        if (side == "SELL" and amount > 0) or (side == "BUY" and amount < 0):
            return abs(amount)
        return ZERO

    def apply_fill(self, symbol: str, side: str, qty: Decimal, price: Decimal, fee: Decimal,
                   now_ms: int) -> Decimal:
        """Book a fill; returns the realised PnL (before the fee, as Binance reports it)."""
        pos = self.positions.setdefault(symbol, Position())
        signed = qty if side == "BUY" else -qty
        realized = ZERO
        if pos.amount == 0 or (pos.amount > 0) == (signed > 0):
            total = abs(pos.amount) + qty
            pos.entry = (abs(pos.amount) * pos.entry + qty * price) / total
            pos.amount += signed
        else:
            closed = min(abs(pos.amount), qty)
            direction = 1 if pos.amount > 0 else -1
            realized = closed * (price - pos.entry) * direction
            pos.amount += signed
            if pos.amount == 0:
                pos.entry = ZERO
            elif (pos.amount > 0) != (direction > 0):  # flipped: the rest opened at this price
                pos.entry = price
        pos.updated_ms = now_ms
        self.wallet += realized - fee
        return realized

    def unrealized(self, symbol: str, mark: Decimal) -> Decimal:
        pos = self.position(symbol)
        return pos.amount * (mark - pos.entry) if pos.amount else ZERO

    def position_margin(self, symbol: str, mark: Decimal) -> Decimal:
        pos = self.position(symbol)
        return abs(pos.amount) * mark / self.leverage_of(symbol) if pos.amount else ZERO

    def open_symbols(self) -> list[str]:
        return sorted(s for s, p in self.positions.items() if p.amount != 0)

    def margin_balance(self, marks: dict[str, Decimal]) -> Decimal:
        return self.wallet + sum((self.unrealized(s, marks[s]) for s in self.open_symbols()), ZERO)

    def available(self, marks: dict[str, Decimal], open_order_margin: Decimal) -> Decimal:
        used = sum((self.position_margin(s, marks[s]) for s in self.open_symbols()), ZERO)
        return self.margin_balance(marks) - used - open_order_margin
