"""A recording stored in the lake replays exactly like the raw file it came from."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from data.orderbook.check import replay_and_check
from data.orderbook.messages import parse_lines, read_raw
from data.orderbook.store import read_recording, write_recording
from qt.errors import DataError
from tests.data.orderbook_support import depth, snapshot, ticker, trade
from tests.support import require_orderbook_recording

DAY = 1_723_161_255_000_000_000  # 2024-08-08 23:54:15 UTC
NEXT_DAY = DAY + 600 * 1_000_000_000  # 2024-08-09 00:04:15 UTC

LINES = [depth(DAY, 96, 104, bids=[("61800.20", "0.014")], prev=95),
         snapshot(DAY + 1, 100, bids=[("61800.20", "2.909"), ("61800.10", "0.696")], asks=[("61800.30", "1.5")]),
         depth(DAY + 2, 105, 105, prev=104),  # an event without levels: the id chain must survive storage
         trade(DAY + 3, 7, "61800.30", "0.006", False),
         ticker(DAY + 4, 105, "61800.20", "0.014", "61800.30", "1.5"),
         depth(NEXT_DAY, 106, 107, asks=[("61800.30", "0"), ("61800.40", "0.5")], prev=105)]


def test_round_trip_gives_back_the_very_messages_split_by_utc_day(tmp_path):
    written = write_recording(tmp_path, "BTC/USDT:USDT", "binanceusdm", parse_lines(LINES))
    assert sorted(written) == ["2024-08-08", "2024-08-09"]
    assert written["2024-08-08"]["tables"] == {"depth": 2, "trades": 1, "book_ticker": 1, "snapshots": 3}
    back = list(read_recording(tmp_path, "BTC/USDT:USDT", "binanceusdm"))
    assert back == list(parse_lines(LINES))
    day = tmp_path / "orderbook" / "binanceusdm" / "BTC_USDT" / "2024-08-08"
    depth_table = pq.read_table(day / "depth.parquet").to_pydict()
    assert depth_table["price"][0] == 6_180_020_000_000 and depth_table["qty"][0] == 1_400_000  # 1e-8 units
    assert depth_table["side"] == [1, 0]


def test_spot_has_no_pu_and_its_snapshot_no_event_time(tmp_path):
    lines = [snapshot(DAY, 100, bids=[("1.00000001", "2")], asks=[("1.1", "3")]),
             depth(DAY + 1, 101, 102, bids=[("1.00000001", "0")], market="binance")]
    write_recording(tmp_path, "BTC/USDT", "binance", parse_lines(lines))
    day = tmp_path / "orderbook" / "binance" / "BTC_USDT" / "2024-08-08"
    assert pq.read_table(day / "depth.parquet").column("pu").to_pylist() == [None]
    assert list(read_recording(tmp_path, "BTC/USDT", "binance")) == list(parse_lines(lines))


def test_importing_again_changes_nothing_and_another_recording_for_the_day_is_refused(tmp_path):
    write_recording(tmp_path, "BTC/USDT:USDT", "binanceusdm", parse_lines(LINES))
    files = sorted((tmp_path / "orderbook").rglob("*.parquet"))
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    again = write_recording(tmp_path, "BTC/USDT:USDT", "binanceusdm", parse_lines(LINES))
    assert not any(d["written"] for d in again.values())
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files} == before
    with pytest.raises(DataError, match="different recording"):
        write_recording(tmp_path, "BTC/USDT:USDT", "binanceusdm", parse_lines(LINES[:-2]))


def test_reading_what_is_not_stored_says_so(tmp_path):
    with pytest.raises(DataError, match="no order-book recording"):
        list(read_recording(tmp_path, "ETH/USDT", "binance"))


@pytest.mark.shared_data
@pytest.mark.parametrize("market,symbol", [("binanceusdm", "BTC/USDT:USDT"), ("binance", "BTC/USDT")])
def test_replay_from_the_lake_equals_replay_from_the_raw_file(tmp_path, market, symbol):
    path = require_orderbook_recording(market)
    write_recording(tmp_path, symbol, market, read_raw(path))
    assert list(read_recording(tmp_path, symbol, market)) == list(read_raw(path))
    from_lake = replay_and_check(read_recording(tmp_path, symbol, market), market)
    assert from_lake == replay_and_check(read_raw(path), market)
    assert from_lake["book_ticker"]["unequal"] == 0
