"""The proof that a replayed book is right: its top of book against Binance's own bookTicker.

Which book state a bookTicker describes: its ``u`` is an id in the depth stream's update-id space
(on spot and on USDT-M alike) - the best bid/ask right after update ``u``. A depth event covers
updates ``U..u`` and the book is only observable after the whole event, so a bookTicker is
compared exactly when some applied event (or the snapshot) ends at its ``u``; then the rebuilt
best bid price/qty and best ask price/qty must equal the ticker's, exactly (integer units).

Every other bookTicker is counted as not comparable, with the reason:

* ``inside_diff``: ``u`` falls strictly inside an applied event's ``U..u`` - Binance aggregated
  that intermediate state away (the depth stream never shows it);
* ``before_sync``: older than the first snapshot the book was built from;
* ``after_last_diff``: newer than the last applied event (the recording stopped first);
* ``book_invalid``: after a gap, before a snapshot resynced the book;
* ``between_diffs``: inside a valid stretch but in no event's range (an id the depth stream skipped).

A second, wider check covers every book state, not only those a ticker happens to end on: the
bookTicker stream pushes every change of the best bid or ask (price or quantity), so after each
applied event ending at ``u`` the top of book must equal the latest bookTicker with an id ``<= u``
(``book_states``). States older than every ticker are counted apart (``no_earlier_ticker``).

Pure: it observes a ``Replay`` through ``on_update`` and is fed the tickers; no I/O.
"""

from __future__ import annotations

import bisect
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from data.orderbook.book import Book
from data.orderbook.messages import BookTicker, Message
from data.orderbook.replay import Replay, ReplayCounts


@dataclass
class TickerCheck:
    """Top of book after every observable update id, and the verdict per bookTicker."""

    tops: dict[int, tuple[int, int, int, int] | None] = field(default_factory=dict)
    first_ids: list[int] = field(default_factory=list)  # U of each observation, in order
    last_ids: list[int] = field(default_factory=list)  # u of each observation, increasing within a stretch
    stretches: list[list[int]] = field(default_factory=list)  # [first valid id, last applied id]
    # the tickers as (u, bid, bid_qty, ask, ask_qty) int64 columns: compact for a day of them
    tickers: tuple[array, ...] = field(default_factory=lambda: tuple(array("q") for _ in range(5)))

    def add_ticker(self, t: BookTicker) -> None:
        for column, value in zip(self.tickers, (t.update_id, t.bid, t.bid_qty, t.ask, t.ask_qty)):
            column.append(value)

    def observe(self, first_id: int, last_id: int, is_snapshot: bool, book: Book) -> None:
        self.tops[last_id] = book.top_of_book()
        if is_snapshot:
            self.stretches.append([last_id, last_id])
        self.stretches[-1][1] = last_id
        self.first_ids.append(first_id)
        self.last_ids.append(last_id)

    def reason(self, update_id: int, book_valid_at_end: bool) -> str:
        """Why a ticker without an exactly matching book state is not comparable."""
        for lo, hi in self.stretches:
            if lo <= update_id <= hi:
                i = bisect.bisect_left(self.last_ids, update_id)
                inside = i < len(self.last_ids) and self.first_ids[i] <= update_id < self.last_ids[i]
                return "inside_diff" if inside else "between_diffs"
        if not self.stretches or update_id < self.stretches[0][0]:
            return "before_sync"
        if update_id > self.stretches[-1][1]:
            return "after_last_diff" if book_valid_at_end else "book_invalid"
        return "book_invalid"

    def report(self, book_valid_at_end: bool, examples: int = 5) -> dict:
        equal, mismatches, reasons = 0, [], Counter()
        for update_id, *quote in zip(*self.tickers):
            top = self.tops.get(update_id)
            if top is None:
                reasons[self.reason(update_id, book_valid_at_end)] += 1
            elif top == tuple(quote):
                equal += 1
            else:
                mismatches.append({"u": update_id, "ticker": quote, "book": list(top) if top else None})
        compared = equal + len(mismatches)
        return {"book_tickers": len(self.tickers[0]), "compared": compared, "equal": equal,
                "unequal": len(mismatches), "not_comparable": sum(reasons.values()),
                "not_comparable_by_reason": dict(sorted(reasons.items())), "first_mismatches": mismatches[:examples],
                "book_states": self.states_report(examples)}

    def states_report(self, examples: int = 5) -> dict:
        """Every observed book state against the latest bookTicker at or before its update id."""
        ids_all = self.tickers[0]
        order = sorted(range(len(ids_all)), key=ids_all.__getitem__)
        ids = [ids_all[i] for i in order]
        equal, no_ticker, mismatches = 0, 0, []
        for update_id, top in self.tops.items():
            i = bisect.bisect_right(ids, update_id) - 1
            if i < 0:
                no_ticker += 1
                continue
            quote = tuple(column[order[i]] for column in self.tickers[1:])
            if top == quote:
                equal += 1
            else:
                mismatches.append({"u": update_id, "ticker_u": ids[i], "ticker": list(quote),
                                   "book": list(top) if top else None})
        return {"states": len(self.tops), "equal": equal, "unequal": len(mismatches), "no_earlier_ticker": no_ticker,
                "first_mismatches": mismatches[:examples]}


def replay_and_check(messages: Iterable[Message], market: str) -> dict:
    """Replay a recording and check it against its bookTickers: ``{"replay": counts, "book_ticker": check}``."""
    check = TickerCheck()
    replay = Replay(market, on_update=check.observe)
    for message in messages:
        replay.feed(message)
        if isinstance(message, BookTicker):
            check.add_ticker(message)
    counts: ReplayCounts = replay.finish()
    return {"market": market, "replay": counts.to_dict(), "book_ticker": check.report(replay.valid)}
