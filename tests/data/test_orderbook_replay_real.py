"""The replayed book on Binance's own recordings equals Binance's own bookTicker.

Expected message counts come from ``zcat FILE | grep -c '@depth'`` (and ``@trade``, ``@bookTicker``,
``lastUpdateId``); the expected top of book is the recorded bookTicker. The whole check of both
files takes about 2 s here (limit 60 s).
"""

from __future__ import annotations

import time

import pytest

from data.orderbook.check import replay_and_check
from data.orderbook.messages import read_raw
from tests.support import require_orderbook_recording

pytestmark = pytest.mark.shared_data

COUNTS = {"binanceusdm": {"bookTicker": 66089, "depth": 6551, "snapshot": 1, "trade": 21313},
          "binance": {"bookTicker": 28040, "depth": 3451, "snapshot": 1, "trade": 9757}}


@pytest.mark.parametrize("market", ["binanceusdm", "binance"])
def test_replayed_top_of_book_equals_the_recorded_book_ticker(market):
    path = require_orderbook_recording(market)
    started = time.monotonic()
    result = replay_and_check(read_raw(path, {"BTCUSDT"}), market)
    elapsed = time.monotonic() - started
    replay, check = result["replay"], result["book_ticker"]
    assert replay["messages"] == COUNTS[market]
    assert replay["snapshots_used"] == 1 and replay["gaps"] == 0 and replay["diffs_unsynced"] == 0
    depth = COUNTS[market]["depth"]
    assert replay["diffs_applied"] + replay["diffs_stale"] == depth
    assert 0 < replay["diffs_stale"] < 10  # only diffs buffered before the snapshot are stale
    # every bookTicker whose id ends an applied event: exactly equal
    assert check["unequal"] == 0 and check["compared"] > 500, check
    assert check["compared"] + check["not_comparable"] == COUNTS[market]["bookTicker"]
    # every book state (snapshot + each applied diff) equals the latest bookTicker at or before it
    states = check["book_states"]
    assert states["states"] == replay["diffs_applied"] + 1 and states["equal"] == states["states"], states
    assert elapsed < 60


@pytest.mark.parametrize("market", ["binanceusdm", "binance"])
def test_a_depth_message_lost_mid_recording_is_a_gap_and_nothing_after_it_is_compared(market):
    from data.orderbook.messages import DepthDiff

    messages = list(read_raw(require_orderbook_recording(market)))
    depth_at = [i for i, m in enumerate(messages) if isinstance(m, DepthDiff)]
    lost = messages[depth_at[len(depth_at) // 2]]
    result = replay_and_check((m for m in messages if m is not lost), market)
    replay, check = result["replay"], result["book_ticker"]
    assert replay["gaps"] == 1
    gap = replay["gap_details"][0]
    assert gap["book_id"] == lost.first_id - 1 if market == "binance" else gap["book_id"] == lost.prev_id
    assert gap["first_id"] == lost.last_id + 1 if market == "binance" else gap["prev_id"] == lost.last_id
    assert replay["diffs_applied"] + replay["diffs_stale"] + replay["diffs_unsynced"] == len(depth_at) - 1
    assert replay["diffs_unsynced"] == len(depth_at) - len(depth_at) // 2 - 1  # no later snapshot: never resynced
    assert check["unequal"] == 0 and check["book_states"]["unequal"] == 0
    assert check["not_comparable_by_reason"]["book_invalid"] > 0
