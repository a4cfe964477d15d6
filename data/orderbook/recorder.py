"""REST order-book recorder: depth snapshots polled through ccxt at an interval.

Why this exists beside the websocket recorder (``data.orderbook.live``, the default of ``qt
record-book``): some servers speak only REST (the local exchange's invented book,
``exchange.depth``), and when Binance's stream cannot be opened ``qt record-book`` falls back to
this, saying so (``--rest-only`` asks for it directly). Each ``fetch_order_book`` answer becomes a
``Snapshot`` (receive time = the local clock when the answer arrived, ``lastUpdateId`` from ccxt's
``nonce``) and lands in the lake's ``snapshots`` table; the replay treats each newer snapshot as a
fresh book. What this cannot give: the changes between polls, trades, bookTicker ids to check
against - that is what the websocket recorder records.

The client and the clocks are passed in, so the loop is tested without a network."""

from __future__ import annotations

import time
from typing import Callable, Iterator, Protocol

from data.orderbook.messages import Snapshot
from data.orderbook.units import float_to_units


class BookClient(Protocol):
    def fetch_order_book(self, symbol: str, limit: int | None = None) -> dict: ...


def to_snapshot(book: dict, seq: int, receive_ns: int) -> Snapshot:
    """A ccxt unified order book (``bids``/``asks`` [price, amount] floats, ``nonce``) as a ``Snapshot``."""
    if book.get("nonce") is None:
        raise ValueError("the order book carries no update id (ccxt 'nonce'); its diffs could not be sequenced")
    levels = lambda rows: tuple((float_to_units(p), float_to_units(q)) for p, q, *_ in rows)  # noqa: E731
    return Snapshot(seq, receive_ns, book.get("timestamp"), int(book["nonce"]), levels(book["bids"]),
                    levels(book["asks"]))


def poll_snapshots(client: BookClient, symbols: list[str], seconds: float, interval_s: float, limit: int,
                   now_ns: Callable[[], int] = time.time_ns, sleep: Callable[[float], None] = time.sleep
                   ) -> Iterator[tuple[str, Snapshot]]:
    """``(symbol, snapshot)`` for each symbol every ``interval_s`` for ``seconds`` (at least one round)."""
    start = now_ns()
    seq = 0
    while True:
        tick = now_ns()
        for symbol in symbols:
            book = client.fetch_order_book(symbol, limit)
            yield symbol, to_snapshot(book, seq, now_ns())
            seq += 1
        next_tick = tick + int(interval_s * 1e9)
        if next_tick - start >= seconds * 1e9:
            return
        sleep(max(0.0, (next_tick - now_ns()) / 1e9))
