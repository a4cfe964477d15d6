"""The local exchange's account: spot balances and the USDT-M futures wallet (pure, Decimal).

Money is ``Decimal`` end to end so a test can recompute a balance exactly from the fill price
and the fee rate (no float drift, no rounding the client cannot reproduce; Binance would round
commissions to 8 decimals, we do not).

Spot: each asset has ``free`` and ``locked`` (locked = held by open orders, as Binance shows
it). A limit buy locks ``qty x price`` of the quote asset, a limit or stop sell locks the base
quantity; a fill spends from the lock and refunds a better price.

Futures (one account, one-way mode): a USDT wallet, one signed position per symbol with its
average entry, a leverage per symbol (Binance's default is 20) and a margin type per symbol
(``CROSSED``, Binance's default, or ``ISOLATED``). ``wallet`` is Binance's *walletBalance*:
the cross wallet plus every isolated position's margin. Maintenance margin comes from the
brackets of ``qt.margin`` (Binance's BTCUSDT table, used for every symbol here)::

    position initial margin = |amount| x mark / leverage
    maintenance margin      = |amount| x mark x mmr - cum        (the notional's bracket)
    isolated margin         = the opening fills' notional / leverage, moved out of the cross
                              wallet into the position; a reduce fill releases it pro rata
    cross wallet            = wallet - the isolated margins
    margin balance          = wallet + unrealised PnL (at the marks, all positions)
    available               = cross wallet + cross unrealised PnL - cross position IM - open-order IM

Realised PnL and fees always go to the wallet. An isolated position is liquidated when the
price reaches its liquidation price (``qt.margin.liquidation_price`` with its margin; when and
at what price is the matching engine's business, ``exchange.matching``): it is closed and its
whole margin is lost (``liquidate``). Cross positions are NOT liquidated and show no
liquidation price: a cross account that loses more than the wallet simply shows a negative
margin balance. No funding is paid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from qt.margin import BINANCE_BTCUSDT_BRACKETS, Bracket, bracket_for, liquidation_price

ZERO = Decimal(0)
DEFAULT_LEVERAGE = 20
MAX_LEVERAGE = 125
CROSSED, ISOLATED = "CROSSED", "ISOLATED"
BRACKETS: tuple[Bracket, ...] = BINANCE_BTCUSDT_BRACKETS  # every symbol here


def dec(value: float) -> Decimal:
    """A float from ``qt.margin`` as the Decimal it prints as."""
    return Decimal(repr(float(value)))


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
    """A one-way position: ``amount`` > 0 long, < 0 short, 0 flat (``entry`` is then 0).
    ``isolated_wallet``: the margin an isolated position holds (0 for cross)."""

    amount: Decimal = ZERO
    entry: Decimal = ZERO
    updated_ms: int = 0
    isolated_wallet: Decimal = ZERO


@dataclass
class FuturesLedger:
    """The USDT-M account (cross and isolated margin)."""

    wallet: Decimal = ZERO
    asset: str = "USDT"
    positions: dict[str, Position] = field(default_factory=dict)
    leverage: dict[str, int] = field(default_factory=dict)
    margin_type: dict[str, str] = field(default_factory=dict)

    def leverage_of(self, symbol: str) -> int:
        return self.leverage.get(symbol, DEFAULT_LEVERAGE)

    def margin_type_of(self, symbol: str) -> str:
        return self.margin_type.get(symbol, CROSSED)

    def is_isolated(self, symbol: str) -> bool:
        return self.margin_type_of(symbol) == ISOLATED

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
        """Book a fill; returns the realised PnL (before the fee, as Binance reports it). An
        isolated position takes ``opened x price / leverage`` of margin and gives back its margin
        pro rata to what a reduce fill closes."""
        pos = self.positions.setdefault(symbol, Position())
        signed = qty if side == "BUY" else -qty
        realized, opened = ZERO, qty
        if pos.amount == 0 or (pos.amount > 0) == (signed > 0):
            total = abs(pos.amount) + qty
            pos.entry = (abs(pos.amount) * pos.entry + qty * price) / total
            pos.amount += signed
        else:
            closed = min(abs(pos.amount), qty)
            direction = 1 if pos.amount > 0 else -1
            realized = closed * (price - pos.entry) * direction
            pos.isolated_wallet -= pos.isolated_wallet * closed / abs(pos.amount)
            opened = qty - closed
            pos.amount += signed
            if pos.amount == 0:
                pos.entry, pos.isolated_wallet = ZERO, ZERO
            elif (pos.amount > 0) != (direction > 0):  # flipped: the rest opened at this price
                pos.entry = price
        if opened > 0 and self.is_isolated(symbol):
            pos.isolated_wallet += opened * price / self.leverage_of(symbol)
        pos.updated_ms = now_ms
        self.wallet += realized - fee
        return realized

    def liquidate(self, symbol: str, now_ms: int) -> Decimal:
        """Close an isolated position that was liquidated: the wallet loses its whole margin
        (whatever the closing price left of it is Binance's liquidation clearance fee, paid to
        the insurance fund; a loss beyond it is the insurance fund's). Returns the margin lost."""
        pos = self.positions[symbol]
        lost = pos.isolated_wallet
        self.wallet -= lost
        pos.amount, pos.entry, pos.isolated_wallet, pos.updated_ms = ZERO, ZERO, ZERO, now_ms
        return lost

    def unrealized(self, symbol: str, mark: Decimal) -> Decimal:
        pos = self.position(symbol)
        return pos.amount * (mark - pos.entry) if pos.amount else ZERO

    def position_margin(self, symbol: str, mark: Decimal) -> Decimal:
        pos = self.position(symbol)
        return abs(pos.amount) * mark / self.leverage_of(symbol) if pos.amount else ZERO

    def maint_margin(self, symbol: str, mark: Decimal) -> Decimal:
        """``|notional| x mmr - cum`` of the notional's bracket (``qt.margin``)."""
        notional = abs(self.position(symbol).amount * mark)
        if not notional:
            return ZERO
        b = bracket_for(float(notional), BRACKETS)
        return notional * dec(b.mmr) - dec(b.cum)

    def isolated_wallet(self, symbol: str) -> Decimal:
        return self.position(symbol).isolated_wallet

    def liquidation_price(self, symbol: str) -> Decimal:
        """An isolated position's liquidation price (``qt.margin.liquidation_price``); 0 for a
        cross position, a flat symbol, or a long that cannot be liquidated."""
        pos = self.position(symbol)
        if not pos.amount or not self.is_isolated(symbol):
            return ZERO
        side = "long" if pos.amount > 0 else "short"
        return dec(liquidation_price(side, float(pos.entry), float(abs(pos.amount)), float(pos.isolated_wallet),
                                     BRACKETS))

    def open_symbols(self) -> list[str]:
        return sorted(s for s, p in self.positions.items() if p.amount != 0)

    def cross_symbols(self) -> list[str]:
        return [s for s in self.open_symbols() if not self.is_isolated(s)]

    def cross_wallet(self) -> Decimal:
        return self.wallet - sum((p.isolated_wallet for p in self.positions.values()), ZERO)

    def margin_balance(self, marks: dict[str, Decimal]) -> Decimal:
        return self.wallet + sum((self.unrealized(s, marks[s]) for s in self.open_symbols()), ZERO)

    def cross_unrealized(self, marks: dict[str, Decimal]) -> Decimal:
        return sum((self.unrealized(s, marks[s]) for s in self.cross_symbols()), ZERO)

    def available(self, marks: dict[str, Decimal], open_order_margin: Decimal) -> Decimal:
        used = sum((self.position_margin(s, marks[s]) for s in self.cross_symbols()), ZERO)
        return self.cross_wallet() + self.cross_unrealized(marks) - used - open_order_margin
