"""Binance's local-book rules on tiny hand-made recordings: what a user of the replayed book relies on
(a stale diff never moves the book, the first diff must bridge the snapshot, a gap is never papered
over, a zero quantity removes the level, a later snapshot resyncs). Expected books written by hand."""

from __future__ import annotations

import pytest

from data.orderbook.messages import parse_lines
from data.orderbook.replay import Replay
from data.orderbook.units import to_units
from qt.errors import DataError
from tests.data.orderbook_support import depth, snapshot

SNAP = snapshot(5, 100, bids=[("10.0", "1"), ("9.5", "2")], asks=[("10.5", "3"), ("11.0", "4")])


def replay(lines, market="binanceusdm"):
    return Replay(market).run(parse_lines(lines))


def levels(side):
    return {p / 1e8: q / 1e8 for p, q in sorted(side.levels.items())}


def test_diffs_received_before_the_snapshot_wait_for_it_and_stale_ones_are_dropped_futures():
    r = replay([depth(1, 90, 95, bids=[("10.0", "7")], prev=80),  # u < 100: already in the snapshot
                depth(2, 96, 104, bids=[("10.0", "5")], prev=95),  # U <= 100 <= u: the first applied
                SNAP,
                depth(6, 105, 110, asks=[("10.5", "0")], prev=104)])  # pu == previous u
    assert levels(r.book.bids) == {9.5: 2.0, 10.0: 5.0}
    assert levels(r.book.asks) == {11.0: 4.0}  # quantity 0 removed 10.5
    assert (r.counts.diffs_stale, r.counts.diffs_applied, r.counts.gaps) == (1, 2, [])
    assert r.book_id == 110 and r.valid


def test_futures_first_event_must_contain_the_snapshot_id_else_gap():
    r = replay([SNAP, depth(6, 102, 108, bids=[("10.0", "5")], prev=101)])  # U > 100: updates 101 missing
    assert not r.valid and len(r.counts.gaps) == 1
    assert levels(r.book.bids) == {9.5: 2.0, 10.0: 1.0}  # the diff was not applied


def test_futures_chain_broken_by_pu_is_a_gap_and_the_book_stays_invalid_until_a_snapshot_bridges_it():
    lines = [SNAP, depth(6, 98, 103, prev=97),
             depth(7, 106, 109, bids=[("9.0", "1")], prev=104),  # pu 104 != 103: event 104 lost
             depth(8, 110, 112, bids=[("8.0", "1")], prev=109),
             snapshot(9, 110, bids=[("10.0", "1")], asks=[("10.5", "1")]),  # resync: 110..112 bridges 110
             depth(10, 113, 115, asks=[("12.0", "2")], prev=112)]
    r = replay(lines)
    assert len(r.counts.gaps) == 1 and r.counts.gaps[0].prev_id == 104
    assert r.valid and r.book_id == 115
    assert levels(r.book.bids) == {8.0: 1.0, 10.0: 1.0}  # 9.0 was only in the diff lost to the gap (stale now)
    assert levels(r.book.asks) == {10.5: 1.0, 12.0: 2.0}
    assert r.counts.snapshots_used == 2 and r.counts.diffs_stale == 1  # the 106..109 diff, inside the new snapshot


def test_spot_rules_stale_first_event_and_contiguous_ids():
    spot = "binance"
    ok = replay([depth(1, 95, 100, bids=[("10.0", "9")], market=spot),  # u <= 100: stale on spot
                 SNAP,
                 depth(6, 101, 103, bids=[("10.0", "4")], market=spot),  # U <= 101 <= u
                 depth(7, 104, 104, asks=[("11.0", "0")], market=spot)], spot)  # U == previous u + 1
    assert ok.valid and ok.counts.diffs_stale == 1 and ok.counts.diffs_applied == 2
    assert levels(ok.book.bids) == {9.5: 2.0, 10.0: 4.0} and levels(ok.book.asks) == {10.5: 3.0}
    gap = replay([SNAP, depth(6, 101, 103, market=spot), depth(7, 105, 106, market=spot)], spot)
    assert not gap.valid and len(gap.counts.gaps) == 1
    first = replay([SNAP, depth(6, 102, 103, market=spot)], spot)  # 101 never seen
    assert not first.valid and len(first.counts.gaps) == 1


def test_spot_and_futures_differ_on_an_event_ending_at_the_snapshot_id():
    """Spot drops u <= lastUpdateId; futures drops only u < lastUpdateId and may start with u == it."""
    assert replay([SNAP, depth(6, 99, 100, prev=98)]).counts.diffs_applied == 1
    assert replay([SNAP, depth(6, 99, 100, market="binance")], "binance").counts.diffs_stale == 1


def test_an_older_snapshot_does_not_move_a_valid_book_and_unused_diffs_are_counted():
    r = replay([SNAP, depth(6, 99, 103, bids=[("10.0", "5")], prev=98),
                snapshot(7, 90, bids=[("1.0", "1")], asks=[("2.0", "1")])])
    assert r.counts.snapshots_ignored == 1 and levels(r.book.bids)[10.0] == 5.0
    never = Replay("binanceusdm").run(parse_lines([depth(1, 1, 2, prev=0), depth(2, 3, 4, prev=2)]))
    assert never.finish().diffs_unsynced == 2 and never.book is None


def test_prices_are_exact_units_not_floats():
    assert to_units("61837.63000000") == 6_183_763_000_000 and to_units("0.014") == 1_400_000
    assert to_units("0.1") + to_units("0.2") == to_units("0.3")  # a float sum would not be


def test_a_recording_out_of_receive_order_is_refused():
    with pytest.raises(DataError, match="line 2: the receive time goes back 2.500 ms"):
        list(parse_lines([depth(10_000_000, 1, 2, prev=0), depth(7_500_000, 3, 4, prev=2)]))
