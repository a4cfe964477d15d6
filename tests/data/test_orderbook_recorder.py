"""The REST recorder's loop without a network: a fake ccxt client and a fake clock."""

from __future__ import annotations

import pytest

from data.orderbook.recorder import poll_snapshots, to_snapshot
from data.orderbook.replay import Replay
from data.orderbook.store import append_recording, read_recording


class FakeClock:
    def __init__(self):
        self.ns = 1_723_161_600_000_000_000  # 2024-08-09 00:00 UTC

    def now(self) -> int:
        return self.ns

    def sleep(self, seconds: float) -> None:
        self.ns += int(seconds * 1e9)


class FakeClient:
    """ccxt's unified order book: floats parsed from Binance's strings, ``nonce`` = lastUpdateId."""

    def __init__(self, clock):
        self.clock, self.calls = clock, []

    def fetch_order_book(self, symbol, limit=None):
        self.calls.append((symbol, limit))
        self.clock.ns += 5_000_000  # each answer takes 5 ms
        n = len(self.calls)
        return {"bids": [[61800.2, 0.014], [61800.1, 1e-05]], "asks": [[61800.3, 2.5]], "nonce": 100 + n,
                "timestamp": None}


def test_polls_every_symbol_each_interval_for_the_duration():
    clock = FakeClock()
    client = FakeClient(clock)
    got = list(poll_snapshots(client, ["BTC/USDT", "ETH/USDT"], seconds=3, interval_s=1, limit=5,
                              now_ns=clock.now, sleep=clock.sleep))
    assert [s for s, _ in got] == ["BTC/USDT", "ETH/USDT"] * 3  # rounds at 0, 1, 2 s
    assert client.calls[0] == ("BTC/USDT", 5)
    assert [snap.seq for _, snap in got] == list(range(6))
    first = got[0][1]
    assert first.receive_ns == 1_723_161_600_005_000_000 and first.last_update_id == 101
    assert first.bids == ((6_180_020_000_000, 1_400_000), (6_180_010_000_000, 1_000))  # 0.014, 0.00001 exactly
    assert got[2][1].receive_ns - first.receive_ns == 1_000_000_000  # the next round starts one interval later


def test_a_book_without_an_update_id_is_refused():
    with pytest.raises(ValueError, match="no update id"):
        to_snapshot({"bids": [], "asks": [], "nonce": None}, 0, 0)


def test_polled_snapshots_append_to_the_day_and_each_newer_one_becomes_the_book(tmp_path):
    clock = FakeClock()
    snaps = [s for _, s in poll_snapshots(FakeClient(clock), ["BTC/USDT"], 2, 1, 5, clock.now, clock.sleep)]
    append_recording(tmp_path, "BTC/USDT", "binance", snaps[:1])
    append_recording(tmp_path, "BTC/USDT", "binance", snaps)  # the first is already stored: not twice
    stored = list(read_recording(tmp_path, "BTC/USDT", "binance"))
    assert [s.last_update_id for s in stored] == [101, 102]
    replay = Replay("binance").run(stored)
    assert replay.counts.snapshots_used == 2 and replay.book_id == 102
