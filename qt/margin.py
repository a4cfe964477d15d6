"""USDT-M maintenance-margin brackets and the isolated liquidation price (pure arithmetic, floats).

One table and one formula shared by the local exchange (``exchange``: what it serves at
``leverageBracket``, the maintenance margin and liquidation price it reports, when it
liquidates) and the executor's risk checks, so both read the same numbers.

**Brackets** (``BINANCE_BTCUSDT_BRACKETS``): Binance's USDT-M BTCUSDT maintenance-margin tiers
(2024). A position whose notional lies in ``[floor, cap)`` may use at most ``max_leverage`` and
must keep ``notional x mmr - cum`` as maintenance margin. ``cum`` (the "maintenance amount")
makes that function continuous across the tiers; it is computed here with Binance's rule
``cum_n = cum_{n-1} + floor_n x (mmr_n - mmr_{n-1})`` (``cum_1 = 0``), not typed in.

**Liquidation price** (``liquidation_price``): Binance's isolated-margin formula, with no other
positions in the same isolated wallet (TMM1 = UPNL1 = 0)::

    LP = (WB + cumB - s x Q x EP) / (Q x mmrB - s x Q)        s = +1 long, -1 short

``WB`` the isolated margin (wallet) of the position, ``Q`` its size, ``EP`` its entry price,
the bracket chosen by the position's notional at entry ``Q x EP``. At ``LP`` the position's
margin plus its unrealised PnL equals its maintenance margin at ``LP``:
``WB + s x Q x (LP - EP) = Q x LP x mmrB - cumB``.

A long whose margin covers the whole notional (``LP <= 0``: no price can take it there) cannot
be liquidated; ``liquidation_price`` then answers ``0.0`` - the value Binance shows for "no
liquidation price" - and callers must read 0 as "never".
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bracket:
    floor: float  # notional floor (inclusive), USDT
    cap: float  # notional cap (exclusive), USDT
    max_leverage: int
    mmr: float  # maintenance margin ratio
    cum: float  # maintenance amount, USDT


def brackets_from(rows: tuple[tuple[float, float, int, float], ...]) -> tuple[Bracket, ...]:
    """(floor, cap, max leverage, mmr) rows -> Brackets with ``cum`` by Binance's rule."""
    out: list[Bracket] = []
    for floor, cap, lev, mmr in rows:
        cum = 0.0 if not out else out[-1].cum + floor * (mmr - out[-1].mmr)
        out.append(Bracket(float(floor), float(cap), int(lev), float(mmr), round(cum, 8)))
    return tuple(out)


BINANCE_BTCUSDT_BRACKETS: tuple[Bracket, ...] = brackets_from((
    (0, 50_000, 125, 0.004),
    (50_000, 600_000, 100, 0.005),
    (600_000, 3_000_000, 75, 0.0065),
    (3_000_000, 12_000_000, 50, 0.01),
    (12_000_000, 70_000_000, 25, 0.02),
    (70_000_000, 100_000_000, 20, 0.025),
    (100_000_000, 230_000_000, 10, 0.05),
    (230_000_000, 480_000_000, 5, 0.1),
    (480_000_000, 600_000_000, 4, 0.125),
    (600_000_000, 800_000_000, 3, 0.15),
    (800_000_000, 1_200_000_000, 2, 0.25),
    (1_200_000_000, 1_800_000_000, 1, 0.5),
))


def bracket_for(notional: float, brackets: tuple[Bracket, ...] = BINANCE_BTCUSDT_BRACKETS) -> Bracket:
    """The bracket whose [floor, cap) holds ``|notional|`` (the last one above the top cap)."""
    value = abs(notional)
    for b in brackets:
        if value < b.cap:
            return b
    return brackets[-1]


def maintenance_margin(notional: float, brackets: tuple[Bracket, ...] = BINANCE_BTCUSDT_BRACKETS) -> float:
    """``|notional| x mmr - cum`` of the notional's bracket."""
    b = bracket_for(notional, brackets)
    return abs(notional) * b.mmr - b.cum


def max_notional(leverage: int, brackets: tuple[Bracket, ...] = BINANCE_BTCUSDT_BRACKETS) -> float:
    """The largest position notional ``leverage`` is allowed for (the cap of the last bracket
    that still allows it); 0 when no bracket does."""
    allowed = [b.cap for b in brackets if b.max_leverage >= leverage]
    return max(allowed) if allowed else 0.0


def liquidation_price(side: str, entry_price: float, qty: float, margin: float,
                      brackets: tuple[Bracket, ...] = BINANCE_BTCUSDT_BRACKETS) -> float:
    """Binance's isolated liquidation price of a ``side`` ("long" | "short") position of
    ``qty`` (> 0) at ``entry_price`` holding ``margin`` USDT; 0.0 for a long that cannot be
    liquidated (its formula price is <= 0)."""
    if side not in ("long", "short"):
        raise ValueError(f"side must be 'long' or 'short', got {side!r}")
    if qty <= 0 or entry_price <= 0:
        raise ValueError("qty and entry_price must be > 0")
    s = 1.0 if side == "long" else -1.0
    b = bracket_for(qty * entry_price, brackets)
    lp = (margin + b.cum - s * qty * entry_price) / (qty * b.mmr - s * qty)
    return max(lp, 0.0) if side == "long" else lp


__all__ = ["BINANCE_BTCUSDT_BRACKETS", "Bracket", "bracket_for", "brackets_from", "liquidation_price",
           "maintenance_margin", "max_notional"]
