"""Book features on tiny books worked out by hand (the arithmetic is in each comment)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from data.orderbook.messages import parse_lines
from features.book import depth_imbalance, microprice, microprice_distance_bps, spread_bps, trade_flow_imbalance
from features.book_sampling import sample_book_features
from tests.data.orderbook_support import depth, snapshot, ticker, trade


def test_spread_in_bps_of_the_mid():
    assert spread_bps(99.0, 101.0) == pytest.approx(200.0)  # 2 / 100 * 1e4


def test_imbalance_counts_only_the_n_best_levels():
    bids, asks = [(100, 3), (99, 1), (98, 100)], [(101, 1), (102, 1)]
    assert depth_imbalance(bids, asks, 2) == pytest.approx(1 / 3)  # (4 - 2) / 6; the 100 at 98 is level 3
    assert depth_imbalance(bids, asks, 3) == pytest.approx((104 - 2) / 106)
    assert math.isnan(depth_imbalance([], [], 5))


def test_microprice_leans_toward_the_thin_side():
    assert microprice(100, 3, 102, 1) == pytest.approx(101.5)  # (100*1 + 102*3) / 4
    assert microprice_distance_bps(100, 3, 102, 1) == pytest.approx(0.5 / 101 * 1e4)  # mid 101
    assert microprice_distance_bps(100, 1, 102, 1) == 0.0


def test_trade_flow_imbalance():
    assert trade_flow_imbalance(3, 1) == pytest.approx(0.5)
    assert math.isnan(trade_flow_imbalance(0, 0))


S = 1_000_000_000
T0 = 1_723_161_255 * S  # a whole second


def test_sampled_each_second_from_the_replayed_book_and_the_trade_window():
    lines = [trade(T0 + S // 5, 1, "100.0", "1", False),  # 0.2 s: taker buy 1
             snapshot(T0 + S + S // 10, 100, bids=[("100", "2"), ("99", "1")], asks=[("101", "1"), ("102", "4")]),
             trade(T0 + S + S // 5, 2, "100.0", "3", True),  # 1.2 s: taker sell 3
             depth(T0 + 2 * S + S // 2, 99, 101, asks=[("101", "0")], prev=98),  # 2.5 s: best ask 101 gone
             ticker(T0 + 3 * S + S // 2, 101, "100", "2", "102", "4")]
    df = sample_book_features(parse_lines(lines), "binanceusdm", interval_ns=S, levels=1, flow_window_ns=5 * S // 2)
    assert [t.value - T0 for t in df["timestamp"]] == [S, 2 * S, 3 * S]
    first, second, third = df.to_dict("records")
    # 1 s: no snapshot yet -> no book; trades in (-1.5 s, 1 s]: buy 1
    assert first["book_valid"] is False and math.isnan(first["spread_bps"]) and first["trade_flow"] == 1.0
    # 2 s: the snapshot; bid 100 x 2, ask 101 x 1, mid 100.5
    assert second["book_valid"] is True
    assert second["spread_bps"] == pytest.approx(1 / 100.5 * 1e4)
    assert second["imbalance"] == pytest.approx((2 - 1) / 3)
    assert second["microprice_bps"] == pytest.approx((302 / 3 - 100.5) / 100.5 * 1e4)  # (100*1 + 101*2) / 3
    assert second["trade_flow"] == pytest.approx((1 - 3) / 4)
    # 3 s: ask 101 removed -> ask 102 x 4, mid 101; the 0.2 s buy has left the 2.5 s window
    assert third["spread_bps"] == pytest.approx(2 / 101 * 1e4)
    assert third["imbalance"] == pytest.approx((2 - 4) / 6)
    assert third["microprice_bps"] == pytest.approx((604 / 6 - 101) / 101 * 1e4)  # (100*4 + 102*2) / 6
    assert third["trade_flow"] == -1.0


@pytest.mark.shared_data
def test_on_the_perpetual_recording_every_second_has_a_book_at_least_one_tick_wide():
    from data.orderbook.messages import read_raw
    from tests.support import require_orderbook_recording

    df = sample_book_features(read_raw(require_orderbook_recording("binanceusdm")), "binanceusdm")
    assert 340 <= len(df) <= 347  # 23:54:13 -> 23:59:59 on the receive clock, one row a second
    assert df["book_valid"].all() and df["timestamp"].diff().dropna().eq(pd.Timedelta("1s")).all()
    tick_bps = 0.10 / 62_000 * 1e4  # BTCUSDT perpetual tick 0.10 USDT, price below 62,000 all along
    assert (df["spread_bps"] >= tick_bps * 0.99).all()
    assert df["imbalance"].between(-1, 1).all() and df["trade_flow"].between(-1, 1).all()
