"""The book-levels table (``data.orderbook.levels``): on a hand-made recording, each sampled grid time
holds the replayed book after every depth event with event time <= that time; on the shared
recording, the sampled best bid/ask equals an independent replay's best at those times."""

from __future__ import annotations

import bisect

import pyarrow.parquet as pq
import pytest

from data.orderbook.levels import SCHEMA, sample_levels, write_levels
from data.orderbook.messages import DepthDiff, Snapshot, read_raw
from data.orderbook.replay import Replay
from data.orderbook.units import SCALE
from tests.support import require_orderbook_recording

U = SCALE  # one whole unit


def _hand_made():
    snap = Snapshot(0, 5_000_000_000, 1_000, 10, ((100 * U, 2 * U), (99 * U, 1 * U)), ((101 * U, 1 * U), (102 * U, 3 * U)))
    d1 = DepthDiff(1, 5_100_000_000, 1_500, 9, 12, 8, ((100 * U, 0),), ((101 * U, 5 * U),))  # bid 100 gone
    d2 = DepthDiff(2, 5_200_000_000, 2_600, 13, 14, 12, ((100 * U, 4 * U),), ())
    return [snap, d1, d2]


def test_each_grid_time_holds_the_book_after_the_events_up_to_it(tmp_path):
    table = sample_levels(_hand_made(), "binanceusdm", every_ms=1000, depth=2)
    assert table.schema == SCHEMA
    rows = table.to_pylist()
    # t=1000: the snapshot; t=2000: after d1 (E=1500); nothing at 3000 (no event after it was seen)
    assert sorted({r["ts_ms"] for r in rows}) == [1000, 2000]
    at = {(r["ts_ms"], r["side"], r["rank"]): (r["price"], r["qty"], r["book_ms"]) for r in rows}
    assert at[(1000, 1, 0)] == (100.0, 2.0, 1000) and at[(1000, -1, 0)] == (101.0, 1.0, 1000)
    assert at[(1000, -1, 1)] == (102.0, 3.0, 1000)
    assert at[(2000, 1, 0)] == (99.0, 1.0, 1500) and at[(2000, -1, 0)] == (101.0, 5.0, 1500)
    assert (2000, 1, 1) not in at  # one bid level left
    path = write_levels(tmp_path / "levels.parquet", table, "BTC/USDT:USDT", "binanceusdm")
    meta = pq.read_schema(path).metadata
    assert meta[b"qt.symbol"] == b"BTC/USDT:USDT" and meta[b"qt.market"] == b"binanceusdm"


def test_nothing_is_sampled_before_the_book_is_valid():
    d0 = DepthDiff(0, 1, 500, 1, 5, None, ((100 * U, U),), ((101 * U, U),))  # before any snapshot
    assert sample_levels([d0], "binanceusdm").num_rows == 0


@pytest.mark.shared_data
def test_the_sampled_top_equals_the_replayed_best_on_the_shared_recording():
    path = require_orderbook_recording("binanceusdm")
    table = sample_levels(read_raw(path, {"BTCUSDT"}), "binanceusdm", every_ms=1000, depth=5).to_pandas()
    times, tops = [], []
    pending: dict[int, int] = {}

    def observe(first_id, last_id, is_snapshot, book):
        if not is_snapshot:
            times.append(pending[last_id])
            tops.append(book.top_of_book())

    replay = Replay("binanceusdm", on_update=observe)
    for m in read_raw(path, {"BTCUSDT"}):
        if isinstance(m, DepthDiff):
            pending[m.last_id] = m.event_ms
        replay.feed(m)
    best = table[table["rank"] == 0].pivot(index="ts_ms", columns="side", values="price")
    assert len(best) > 300  # ~6 minutes at 1 s
    for ts, row in best.iterrows():
        i = bisect.bisect_right(times, ts) - 1
        bid, _, ask, _ = tops[i]
        assert (row[1], row[-1]) == (bid / SCALE, ask / SCALE), ts
