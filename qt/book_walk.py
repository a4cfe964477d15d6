"""A market order's fill against the resting levels of a book: the book-walk fill model.

Why: a fixed ``costs.slippage_bps`` charges a 1 BTC order and a 100 BTC order the same; walking
the book charges what the resting liquidity actually asks - each level in turn, best first, until
the quantity is filled. ``costs.fill_model: book`` selects this instead of the fixed slippage
wherever a replayed book is at hand (``data.orderbook``).

Pure arithmetic on ``(price, qty)`` pairs, best first, on the side the order takes from (asks for
a buy, bids for a sell); any consistent unit (floats, or the replay's exact int units, where the
notional stays an exact integer until the final division).
"""

from __future__ import annotations

import math
from typing import Sequence


def walk_book(levels: Sequence[tuple[float, float]], qty: float) -> tuple[float, float, int]:
    """``(average price, filled qty, levels used)`` of taking ``qty`` from ``levels``.

    A book thinner than ``qty`` fills partly (``filled < qty``: the caller decides whether a partial
    fill is acceptable); an empty book fills nothing at a NaN price.
    """
    if qty <= 0:
        raise ValueError(f"quantity must be positive, not {qty}")
    remaining, notional, used = qty, 0, 0
    for price, size in levels:
        if remaining <= 0:
            break
        take = min(size, remaining)
        if take <= 0:
            continue
        notional += take * price
        remaining -= take
        used += 1
    filled = qty - remaining
    return (notional / filled if filled else math.nan), filled, used


def slippage_bps_of(avg_price: float, reference: float, buying: bool) -> float:
    """How far the walked average lies against the order from ``reference`` (e.g. the mid), in bps."""
    move = (avg_price - reference) if buying else (reference - avg_price)
    return move / reference * 1e4
