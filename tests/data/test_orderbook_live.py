"""The live recorder's decisions without a network: when a symbol needs a REST snapshot (the same
replay and rules as offline, ``data.orderbook.replay``) and which streams it subscribes to."""

from __future__ import annotations

from data.orderbook.live import SymbolSync, combined_stream_url
from data.orderbook.messages import DepthDiff, Snapshot


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def diff(first, last):
    return DepthDiff(0, 0, 0, first, last, None, ((10, 1),), ())


def snap(last_update_id):
    return Snapshot(0, 0, None, last_update_id, ((10, 2),), ((11, 1),))


def test_a_snapshot_is_asked_for_at_start_then_not_while_in_flight_nor_while_the_book_is_valid():
    sync = SymbolSync("binance", pause_s=1.0, now=Clock())
    assert sync.wants_snapshot()
    sync.asking()
    assert not sync.wants_snapshot()  # one in flight
    sync.feed(diff(11, 12))
    sync.in_flight = False
    sync.feed(snap(10))  # bridges: U=11 <= 10+1 <= u=12
    assert sync.replay.valid and not sync.wants_snapshot() and sync.asked == 1


def test_a_gap_asks_for_a_fresh_snapshot_but_not_sooner_than_the_pause():
    clock = Clock()
    sync = SymbolSync("binance", pause_s=1.0, now=clock)
    sync.asking()
    sync.in_flight = False
    sync.feed(snap(10))
    sync.feed(diff(11, 12))
    sync.feed(diff(14, 15))  # 13 missing: a gap
    assert sync.gaps == 1 and not sync.replay.valid
    assert not sync.wants_snapshot()  # the last ask was just now
    clock.t += 1.0
    assert sync.wants_snapshot()
    sync.asking()
    sync.in_flight = False
    sync.feed(snap(16))
    sync.feed(diff(17, 18))
    assert sync.replay.valid and sync.replay.book_id == 18 and sync.asked == 2


def test_a_snapshot_older_than_the_buffered_diffs_leaves_the_book_invalid_so_another_is_asked():
    clock = Clock()
    sync = SymbolSync("binance", pause_s=1.0, now=clock)
    sync.asking()
    sync.feed(diff(21, 25))  # the stream started after the snapshot's id
    sync.in_flight = False
    sync.feed(snap(10))
    assert not sync.replay.valid
    clock.t += 1.0
    assert sync.wants_snapshot()


def test_the_combined_stream_url_names_depth_trade_and_book_ticker_per_symbol():
    assert combined_stream_url("ws://127.0.0.1:9/", ["BTCUSDT", "ETHUSDT"]) == (
        "ws://127.0.0.1:9/stream?streams=btcusdt@depth@100ms/btcusdt@trade/btcusdt@bookTicker/"
        "ethusdt@depth@100ms/ethusdt@trade/ethusdt@bookTicker")
    assert combined_stream_url("wss://fstream.binance.com/stream", ["BTCUSDT"]).startswith(
        "wss://fstream.binance.com/stream?streams=btcusdt@")
