"""Book features sampled at a regular interval while a recording replays.

Why sample on the local receive clock: that is the order the messages were seen in (the
recording machine's clock and Binance's event clock differ by about a second, so the two are
never mixed). At each sample time the features describe the book as replayed from every message
received before it, and the taker trades received in the ``flow_window`` before it; while the
book is invalid (before the snapshot, after a gap) the book features are NaN and
``book_valid`` is False. The bar-level family (``features.book_bars``) samples on Binance's event
clock instead (the candles' clock), from the recording's ``levels.parquet``.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Iterable

import pandas as pd

from data.orderbook.messages import Message, Trade
from data.orderbook.replay import Replay
from features.book import depth_imbalance, microprice_distance_bps, spread_bps, trade_flow_imbalance

COLUMNS = ["timestamp", "book_valid", "spread_bps", "imbalance", "microprice_bps", "trade_flow"]


class BookSampler:
    def __init__(self, market: str, interval_ns: int = 1_000_000_000, levels: int = 5,
                 flow_window_ns: int = 10_000_000_000) -> None:
        if interval_ns <= 0 or levels < 1 or flow_window_ns <= 0:
            raise ValueError("interval, levels and flow window must be positive")
        self.replay = Replay(market)
        self.interval_ns, self.levels, self.flow_window_ns = interval_ns, levels, flow_window_ns
        self.trades: deque[tuple[int, float, float]] = deque()  # (receive_ns, taker buy qty, taker sell qty)
        self.next_ns: int | None = None
        self.rows: list[tuple] = []

    def feed(self, message: Message) -> None:
        if self.next_ns is None:  # first sample: the first whole interval after the first message
            self.next_ns = (message.receive_ns // self.interval_ns + 1) * self.interval_ns
        while message.receive_ns >= self.next_ns:
            self.rows.append(self.sample(self.next_ns))
            self.next_ns += self.interval_ns
        self.replay.feed(message)
        if isinstance(message, Trade):
            buy = 0 if message.is_buyer_maker else message.qty
            self.trades.append((message.receive_ns, buy, message.qty - buy))

    def sample(self, at_ns: int) -> tuple:
        while self.trades and self.trades[0][0] < at_ns - self.flow_window_ns:
            self.trades.popleft()
        flow = trade_flow_imbalance(sum(t[1] for t in self.trades), sum(t[2] for t in self.trades))
        book = self.replay.book
        top = book.top_of_book() if self.replay.valid else None
        if top is None:
            return at_ns, False, math.nan, math.nan, math.nan, flow
        bid, bid_qty, ask, ask_qty = top
        return (at_ns, True, spread_bps(bid, ask),
                depth_imbalance(book.bids.top(self.levels), book.asks.top(self.levels), self.levels),
                microprice_distance_bps(bid, bid_qty, ask, ask_qty), flow)

    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.rows, columns=COLUMNS)
        df["timestamp"] = pd.to_datetime(df["timestamp"], unit="ns", utc=True)
        return df


def sample_book_features(messages: Iterable[Message], market: str, interval_ns: int = 1_000_000_000,
                         levels: int = 5, flow_window_ns: int = 10_000_000_000) -> pd.DataFrame:
    """One row per ``interval_ns`` of receive time: spread, top-``levels`` imbalance, microprice
    distance, trade-flow imbalance (columns ``COLUMNS``)."""
    sampler = BookSampler(market, interval_ns, levels, flow_window_ns)
    for message in messages:
        sampler.feed(message)
    return sampler.frame()
