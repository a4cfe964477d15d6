"""The order-book family on hand-made books: each sample's values worked out by hand, the join at
or before the bar close (never after) with NaN past the max age, and the point-in-time check that
passes the real join and catches book samples used one second early."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from data.synthetic import generate_market
from features.alt_join import AltInputs
from features.book_bars import SAMPLE_COLUMNS, book_samples, join_book
from features.compute import compute_features
from features.families import family_arms
from features.pit import check_lookahead
from qt.config import FeatureParams, SyntheticParams

BOOK = FeatureParams(book=True, book_levels=2, book_flow_seconds=2, book_max_age_seconds=5)


def _levels(rows):
    """(ts_ms, book_ms, side, [(price, qty), ...]) -> a levels table."""
    out = [(ts, book, side, rank, p, q) for ts, book, side, levels in rows for rank, (p, q) in enumerate(levels)]
    return pd.DataFrame(out, columns=["ts_ms", "book_ms", "side", "rank", "price", "qty"])


def test_each_sample_from_the_levels_and_the_trades_before_it():
    levels = _levels([(1000, 900, 1, [(100, 2), (99, 1)]), (1000, 900, -1, [(101, 1), (102, 4)]),
                      (2000, 1900, 1, [(100, 2)]),  # one-sided: no mid, no sample
                      (3000, 2500, 1, [(100, 2)]), (3000, 2500, -1, [(102, 4)])])
    trades = pd.DataFrame({"trade_ms": [500, 1000], "qty": [1.0, 3.0], "is_buyer_maker": [False, True]})
    got = book_samples("BTC/USDT", levels, trades, top_n=2, flow_ms=2000)
    assert list(got.columns) == SAMPLE_COLUMNS and got["book_ms"].tolist() == [900, 2500]
    assert [t.value // 1_000_000 for t in got["timestamp"]] == [1000, 3000]
    first, second = got.to_dict("records")
    # 1000: bid 100 x 2, ask 101 x 1, mid 100.5; top 2 = 3 bid vs 5 ask; trades in [-1000, 1000): the buy of 1
    assert first["spread_bps"] == pytest.approx(1 / 100.5 * 1e4)
    assert first["imbalance"] == pytest.approx((3 - 5) / 8)
    assert first["microprice_bps"] == pytest.approx((302 / 3 - 100.5) / 100.5 * 1e4)  # (100*1 + 101*2) / 3
    assert first["trade_flow"] == 1.0
    # 3000: bid 100 x 2, ask 102 x 4, mid 101; trades in [1000, 3000): the taker sell of 3 stamped 1000
    assert second["spread_bps"] == pytest.approx(2 / 101 * 1e4)
    assert second["imbalance"] == pytest.approx((2 - 4) / 6)
    assert second["microprice_bps"] == pytest.approx((604 / 6 - 101) / 101 * 1e4)  # (100*4 + 102*2) / 6
    assert second["trade_flow"] == -1.0


SAMPLE_MS = np.array([9_000, 10_000, 11_000, 25_000])
BOOK_MS = np.array([9_000, 10_000, 11_000, 19_000])
VALUES = np.array([1.0, 2.0, 3.0, 4.0])


def test_a_bar_takes_the_latest_sample_at_or_before_its_close_and_nan_when_the_book_is_too_old():
    closes = np.array([5_000, 10_000, 16_000, 17_000, 30_000])
    got = join_book(closes, SAMPLE_MS, BOOK_MS, VALUES, max_age_ms=5_000)
    # 5 s: nothing yet; 10 s: the sample at exactly the close; 16 s: the 11 s sample, 5 s old (the limit);
    # 17 s: that sample is 6 s old -> NaN, not carried; 30 s: the 25 s sample holds a book of 19 s -> 11 s old
    np.testing.assert_array_equal(got, [np.nan, 2.0, 3.0, np.nan, np.nan])


@pytest.mark.parametrize("shift_ms, value", [(0, 2.0), (1_000, 1.0), (-1_000, 3.0)])
def test_shifting_the_samples_one_second_across_the_close_changes_the_bar(shift_ms, value):
    """+1 s: the 10 s sample now lands after the close and the bar falls back to the one before
    (9 s -> 10 s); -1 s: the sample taken after the close (11 s) lands on it and is used."""
    got = join_book(np.array([10_000]), SAMPLE_MS + shift_ms, BOOK_MS + shift_ms, VALUES, max_age_ms=5_000)
    assert got[0] == value


START = pd.Timestamp("2024-03-01", tz="UTC")


@pytest.fixture(scope="module")
def candles():
    return generate_market(["BTC/USDT", "ETH/USDT"], "1m", SyntheticParams(bars=420, start=str(START.date())), seed=3)


def _samples(symbol: str, seed: int, gap: tuple[int, int] = (350, 365)) -> pd.DataFrame:
    """A sample each second over the candles' span, random values, no book in minutes ``gap``."""
    rng = np.random.default_rng(seed)
    ts = START.value // 1_000_000 + 1000 * np.arange(1, 421 * 60)
    ts = ts[(ts < START.value // 1_000_000 + gap[0] * 60_000) | (ts >= START.value // 1_000_000 + gap[1] * 60_000)]
    return pd.DataFrame({"symbol": symbol, "timestamp": pd.to_datetime(ts, unit="ms", utc=True),
                         "book_ms": ts - rng.integers(0, 3_000, len(ts)), "spread_bps": rng.random(len(ts)),
                         "imbalance": rng.uniform(-1, 1, len(ts)), "microprice_bps": rng.normal(size=len(ts)),
                         "trade_flow": rng.uniform(-1, 1, len(ts))})[SAMPLE_COLUMNS]


@pytest.fixture(scope="module")
def alt():
    return AltInputs(book=pd.concat([_samples("BTC/USDT", 1), _samples("ETH/USDT", 2)], ignore_index=True))


def test_each_row_is_the_sample_at_its_close_and_bars_without_a_fresh_book_are_dropped(candles, alt):
    feats = compute_features(candles, BOOK, alt=alt)
    btc = feats[feats["symbol"] == "BTC/USDT"]
    closes = btc["timestamp"] + pd.Timedelta("1min")
    # the closes 351..364 min see only the sample of 349:59 (older than 5 s): no row; 350 and 365 have one
    in_gap = (closes > START + pd.Timedelta(minutes=350)) & (closes < START + pd.Timedelta(minutes=365))
    assert not in_gap.any() and {START + pd.Timedelta(minutes=m) for m in (350, 365)} <= set(closes)
    own = alt.book[alt.book["symbol"] == "BTC/USDT"].set_index("timestamp")
    for _, row in btc.sample(5, random_state=0).iterrows():
        sample = own.loc[row["timestamp"] + pd.Timedelta("1min")]  # a sample every second: the one at the close
        assert row["book_spread_bps"] == sample["spread_bps"] and row["book_flow_2s"] == sample["trade_flow"]


NO_SHIFT = pd.Timedelta(0)


def _compute(params, shift=NO_SHIFT):
    def compute(candles, alt):
        moved = replace(alt, book=alt.book.assign(timestamp=alt.book["timestamp"] + shift))
        return compute_features(candles, params, alt=moved)
    return compute


def test_the_book_family_passes_the_lookahead_check(candles, alt):
    assert check_lookahead(candles, _compute(BOOK), cuts=6, alt=alt) == []
    assert check_lookahead(candles, _compute(BOOK, pd.Timedelta("1s")), cuts=6, alt=alt) == []  # late: stale, no leak


def test_book_samples_used_one_second_early_fail_the_lookahead_check(candles, alt):
    violations = check_lookahead(candles, _compute(BOOK, -pd.Timedelta("1s")), cuts=6, alt=alt)
    assert any("book_spread_bps" in v and "lookahead" in v for v in violations), violations


def test_book_is_a_family_off_by_default():
    without, with_ = family_arms(FeatureParams(), "book")
    assert FeatureParams().book is False and without.book is False and with_.book is True
    cols = compute_features(generate_market(["BTC/USDT"], "1m", SyntheticParams(bars=400, start="2024-03-01"), seed=1),
                            FeatureParams()).columns
    assert not any(c.startswith("book_") for c in cols)
    assert math.isnan(join_book(np.array([1]), np.array([], dtype=np.int64), np.array([]), np.array([]), 1.0)[0])


def test_book_on_without_samples_is_one_data_error(candles):
    from qt.errors import DataError

    with pytest.raises(DataError, match="book"):
        compute_features(candles, BOOK)
