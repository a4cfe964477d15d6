"""Order-book features: pure arithmetic on a book's best levels and on trade volumes.

Inputs are plain numbers (any consistent unit: the replay's int64 1e-8 units or floats), levels
are ``(price, qty)`` best first. Each feature is scale-free (bps or a ratio in [-1, 1]), so the
unit does not matter and the same value comes out of a live book or a replayed one.
"""

from __future__ import annotations

import math
from typing import Sequence

Level = tuple[float, float]


def mid_price(bid: float, ask: float) -> float:
    return (bid + ask) / 2


def spread_bps(bid: float, ask: float) -> float:
    """Quoted spread over the mid, in basis points: what crossing the book costs, round trip."""
    return (ask - bid) / mid_price(bid, ask) * 1e4


def depth_imbalance(bids: Sequence[Level], asks: Sequence[Level], levels: int) -> float:
    """(bid qty - ask qty) / (bid qty + ask qty) over the ``levels`` best levels of each side:
    +1 = only buyers resting near the top, -1 = only sellers; NaN for an empty book."""
    bid_qty = sum(q for _, q in bids[:levels])
    ask_qty = sum(q for _, q in asks[:levels])
    total = bid_qty + ask_qty
    return (bid_qty - ask_qty) / total if total else math.nan


def microprice(bid: float, bid_qty: float, ask: float, ask_qty: float) -> float:
    """The mid weighted by the opposite side's size: a thin ask pulls the fair price up toward it."""
    return (bid * ask_qty + ask * bid_qty) / (bid_qty + ask_qty)


def microprice_distance_bps(bid: float, bid_qty: float, ask: float, ask_qty: float) -> float:
    """Microprice minus mid, in bps of the mid: positive when the next move is more likely up."""
    mid = mid_price(bid, ask)
    return (microprice(bid, bid_qty, ask, ask_qty) - mid) / mid * 1e4


def trade_flow_imbalance(taker_buy_qty: float, taker_sell_qty: float) -> float:
    """(taker buys - taker sells) / both over a window; NaN without trades. A Binance trade with
    ``is_buyer_maker`` true was a taker sell."""
    total = taker_buy_qty + taker_sell_qty
    return (taker_buy_qty - taker_sell_qty) / total if total else math.nan
