"""An L2 book: price level -> quantity per side, with the best level at hand.

Levels live in a dict per side (a diff sets or removes a level in O(1)); the best price comes
from a heap with lazy deletion (a removed level is popped when it surfaces), so a top-of-book
query after every diff stays cheap on books of thousands of levels. Integer units throughout
(``data.orderbook.units``).
"""

from __future__ import annotations

import heapq
from typing import Iterable

from data.orderbook.messages import Level
from qt.book_walk import walk_book

BID, ASK = 1, -1


class BookSide:
    """One side. ``sign`` is +1 for bids (best = highest) and -1 for asks (best = lowest)."""

    def __init__(self, sign: int) -> None:
        self.sign = sign
        self.levels: dict[int, int] = {}
        self._heap: list[int] = []  # -sign*price, so the heap's smallest is the best price

    def set(self, price: int, qty: int) -> None:
        if qty == 0:
            self.levels.pop(price, None)
            return
        if price not in self.levels:
            heapq.heappush(self._heap, -self.sign * price)
        self.levels[price] = qty

    def apply(self, levels: Iterable[Level]) -> None:
        for price, qty in levels:
            self.set(price, qty)

    def best(self) -> Level | None:
        heap, levels = self._heap, self.levels
        while heap:
            price = -self.sign * heap[0]
            if price in levels:
                return price, levels[price]
            heapq.heappop(heap)
        return None

    def top(self, n: int) -> list[Level]:
        """The ``n`` best levels, best first (a pass over the side: for sampling, not for every diff)."""
        pick = heapq.nlargest if self.sign == BID else heapq.nsmallest
        return [(p, self.levels[p]) for p in pick(n, self.levels)]


class Book:
    def __init__(self, bids: Iterable[Level] = (), asks: Iterable[Level] = ()) -> None:
        self.bids, self.asks = BookSide(BID), BookSide(ASK)
        self.bids.apply(bids)
        self.asks.apply(asks)

    def apply(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        self.bids.apply(bids)
        self.asks.apply(asks)

    def top_of_book(self) -> tuple[int, int, int, int] | None:
        """(bid, bid_qty, ask, ask_qty), or None while a side is empty."""
        bid, ask = self.bids.best(), self.asks.best()
        if bid is None or ask is None:
            return None
        return bid[0], bid[1], ask[0], ask[1]

    def walk(self, buying: bool, qty: int) -> tuple[float, int, int]:
        """A market order of ``qty`` units against this book (``qt.book_walk.walk_book``): a buy takes
        the asks, a sell the bids, best first; (average price units, filled units, levels used)."""
        side = self.asks if buying else self.bids
        levels = sorted(side.levels.items(), reverse=not buying)
        return walk_book(levels, qty)
