"""Rebuild the L2 book from a snapshot and depth diffs, in receive order, with gap detection.

Why buffer: in a recording (as in Binance's own procedure) the REST snapshot arrives after the
first depth diffs, so diffs received while the book has no valid state are kept and run through
the sequencing rules (``data.orderbook.sequencing``) when a snapshot comes. A gap marks the book
invalid (``needs_resync``) from that event on; the events from it on are buffered again, and a
later snapshot resyncs the book. A snapshot older than a valid book is ignored; a newer one resets
it (later diffs must then bridge it, exactly as after the first snapshot).

``Replay`` is a small object without I/O: feed it messages, read its book and ``counts``. After
every applied event (and every snapshot taken) it calls ``on_update(first_id, last_id, is_snapshot, book)``, which is
how the bookTicker check and the feature sampler observe the book: ``first_id``/``last_id`` are the
event's ``U``/``u`` (both the snapshot's ``lastUpdateId`` for a snapshot).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

from data.orderbook.book import Book
from data.orderbook.messages import BookTicker, DepthDiff, Message, Snapshot, Trade
from data.orderbook.sequencing import Verdict, rules_for

MAX_BUFFERED_DIFFS = 100_000  # diffs kept while waiting for a snapshot (older ones could not be used)


@dataclass
class Gap:
    book_id: int  # the book's update id when the gap was found
    first_id: int  # U of the event that did not fit
    last_id: int
    prev_id: int | None
    receive_ns: int


@dataclass
class ReplayCounts:
    messages: Counter = field(default_factory=Counter)  # by stream: depth, trade, bookTicker, snapshot
    snapshots_used: int = 0
    snapshots_ignored: int = 0  # older than a valid book
    diffs_applied: int = 0
    diffs_stale: int = 0  # dropped: already in the book
    diffs_unsynced: int = 0  # never applied: the book had no valid state (before a snapshot, after a gap)
    gaps: list[Gap] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"messages": dict(sorted(self.messages.items())), "snapshots_used": self.snapshots_used,
                "snapshots_ignored": self.snapshots_ignored, "diffs_applied": self.diffs_applied,
                "diffs_stale": self.diffs_stale, "diffs_unsynced": self.diffs_unsynced, "gaps": len(self.gaps),
                "gap_details": [vars(g) for g in self.gaps]}


class Replay:
    def __init__(self, market: str, on_update: Callable[[int, int, bool, Book], None] | None = None,
                 max_buffered: int = MAX_BUFFERED_DIFFS) -> None:
        self.verdict = rules_for(market)
        self.on_update = on_update
        self.book: Book | None = None
        self.book_id: int | None = None  # None: no valid book (before a snapshot, or after a gap)
        self.first_after_snapshot = False
        self.buffer: deque[DepthDiff] = deque(maxlen=max_buffered)
        self.counts = ReplayCounts()

    @property
    def valid(self) -> bool:
        return self.book_id is not None

    def feed(self, message: Message) -> None:
        if isinstance(message, DepthDiff):
            self.counts.messages["depth"] += 1
            if self.valid:
                self._diff(message)
            else:
                self._buffer(message)
        elif isinstance(message, Snapshot):
            self.counts.messages["snapshot"] += 1
            self._snapshot(message)
        elif isinstance(message, Trade):
            self.counts.messages["trade"] += 1
        elif isinstance(message, BookTicker):
            self.counts.messages["bookTicker"] += 1

    def run(self, messages: Iterable[Message]) -> "Replay":
        for message in messages:
            self.feed(message)
        return self

    def finish(self) -> ReplayCounts:
        """Counts, with the diffs still waiting for a snapshot at the end counted as unsynced."""
        self.counts.diffs_unsynced += len(self.buffer)
        self.buffer.clear()
        return self.counts

    # ------------------------------------------------------------------ internals

    def _buffer(self, diff: DepthDiff) -> None:
        if len(self.buffer) == self.buffer.maxlen:
            self.counts.diffs_unsynced += 1  # the oldest falls out unused
        self.buffer.append(diff)

    def _snapshot(self, snap: Snapshot) -> None:
        if self.valid and snap.last_update_id <= self.book_id:
            self.counts.snapshots_ignored += 1
            return
        self.counts.snapshots_used += 1
        self.book = Book(snap.bids, snap.asks)
        self.book_id = snap.last_update_id
        self.first_after_snapshot = True
        if self.on_update is not None:
            self.on_update(self.book_id, self.book_id, True, self.book)
        pending, self.buffer = list(self.buffer), deque(maxlen=self.buffer.maxlen)
        for diff in pending:
            if self.valid:
                self._diff(diff)
            else:
                self._buffer(diff)

    def _diff(self, diff: DepthDiff) -> None:
        verdict = self.verdict(diff, self.book_id, self.first_after_snapshot)
        if verdict is Verdict.STALE:
            self.counts.diffs_stale += 1
            return
        if verdict is Verdict.GAP:
            self.counts.gaps.append(Gap(self.book_id, diff.first_id, diff.last_id, diff.prev_id, diff.receive_ns))
            self.book_id = None  # needs resync: the book is invalid until a snapshot bridges it
            self._buffer(diff)
            return
        self.book.apply(diff.bids, diff.asks)
        self.book_id = diff.last_id
        self.first_after_snapshot = False
        self.counts.diffs_applied += 1
        if self.on_update is not None:
            self.on_update(diff.first_id, diff.last_id, False, self.book)
