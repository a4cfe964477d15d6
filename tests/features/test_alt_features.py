"""The alt families' values, worked out by hand on small daily series, and the one as-of join's
strict rule (published strictly before the bar's close)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from data.alt_lake import with_availability
from data.synthetic import generate_market
from features.alt_join import AltInputs, asof_join
from features.compute import compute_features, feature_columns, feature_set_hash
from qt.config import FeatureParams, SyntheticParams
from qt.errors import DataError

START = "2023-12-01"  # 960 1h bars to 2024-01-10: enough for the default 270-bar warm-up


def _candles(symbols=("BTC/USDT",)):
    return generate_market(list(symbols), "1h", SyntheticParams(bars=960, start=START), seed=3)


def _fng():
    days = pd.date_range(START, "2024-01-10", freq="D", tz="UTC")
    days = days[days != pd.Timestamp("2024-01-04", tz="UTC")]  # a day absent in the source
    frame = pd.DataFrame({"timestamp": days, "value": [float(d.day) for d in days], "classification": "x"})
    return with_availability(frame, "fear_greed")


def _onchain():
    days = pd.date_range(START, "2024-01-10", freq="D", tz="UTC")
    nupl = [0.5 if d != pd.Timestamp("2024-01-04", tz="UTC") else np.nan for d in days]
    flows = {"2024-01-02": 100.0, "2024-01-03": 300.0, "2024-01-05": 200.0}
    frame = pd.DataFrame({"timestamp": days, "mvrv": [1.0 + d.day / 100 for d in days], "nupl": nupl,
                          "realized_price": [10.0 * d.day for d in days],
                          "etf_flow_usd": [flows.get(d.strftime("%Y-%m-%d"), np.nan) for d in days]})
    return with_availability(frame, "onchain_btc")


def _headlines():
    votes = {f"votes_{k}": 0.0 for k in ("positive", "negative", "important", "liked", "disliked", "lol", "toxic",
                                          "saved", "comments")}
    rows = [("2024-01-05 10:15:00", "Bitcoin rallies, traders cheer great gains", 3.0, 1.0),
            ("2024-01-05 10:59:59", "Exchange hacked, funds stolen in terrible attack", 0.0, 5.0),
            ("2024-01-05 11:00:00", "Bitcoin price update", 2.0, 0.0)]
    frame = pd.DataFrame([{**votes, "timestamp": pd.Timestamp(t, tz="UTC"), "title": title, "source": "x.com",
                           "votes_positive": pos, "votes_negative": neg} for t, title, pos, neg in rows])
    return with_availability(frame, "headlines")


def _at(features, symbol, when):
    row = features[(features["symbol"] == symbol) & (features["timestamp"] == pd.Timestamp(when, tz="UTC"))]
    assert len(row) == 1, f"no row {symbol} {when}"
    return row.iloc[0]


def test_asof_join_uses_only_observations_published_strictly_before_the_close():
    got = asof_join(np.array([0, 1, 100, 101, 250]), np.array([0, 100, 200]), np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(got, [np.nan, 1.0, 1.0, 2.0, 3.0])


def test_fear_greed_values_change_and_z_by_hand():
    params = FeatureParams(fng=True, fng_change=[2], fng_z=[3])
    feats = compute_features(_candles(), params, alt=AltInputs(fear_greed=_fng()))
    # the bar opening at 23:00 closes at exactly 00:00: it still sees the previous day's value
    assert _at(feats, "BTC/USDT", "2024-01-02 23:00")["fng_value"] == 2.0
    assert _at(feats, "BTC/USDT", "2024-01-03 00:00")["fng_value"] == 3.0
    # 2024-01-04 is absent: the day carries 01-03's value
    assert _at(feats, "BTC/USDT", "2024-01-04 12:00")["fng_value"] == 3.0
    assert _at(feats, "BTC/USDT", "2024-01-05 00:00")["fng_change_2"] == 5.0 - 3.0
    assert _at(feats, "BTC/USDT", "2024-01-06 00:00")["fng_change_2"] == 6.0 - 3.0  # 01-04 as of: 01-03's 3
    # last three published values at 01-07: 5, 6, 7 -> mean 6, std 1
    assert _at(feats, "BTC/USDT", "2024-01-07 05:00")["fng_z_3"] == pytest.approx(1.0)


def test_onchain_values_are_used_from_the_next_day_by_hand():
    params = FeatureParams(onchain=True, etf_flow_z=[2])
    candles = _candles(("BTC/USDT", "ETH/USDT"))
    feats = compute_features(candles, params, alt=AltInputs(onchain_btc=_onchain()))
    btc = candles[candles["symbol"] == "BTC/USDT"].set_index("timestamp")["close"]
    row = _at(feats, "BTC/USDT", "2024-01-05 00:00")  # sees day 01-04 (published 01-05 00:00)
    assert row["onchain_mvrv"] == pytest.approx(1.04)
    assert row["onchain_nupl"] == 0.5  # 01-04's NUPL is NaN: 01-03's is carried
    close = btc[pd.Timestamp("2024-01-05 00:00", tz="UTC")]
    assert row["onchain_realised_dist"] == pytest.approx(close / 40.0 - 1.0)
    before = _at(feats, "BTC/USDT", "2024-01-04 23:00")  # closes at 01-05 00:00: still day 01-03
    assert before["onchain_mvrv"] == pytest.approx(1.03)
    # ETH carries no BTC price: the last known day's mvrv - 1
    assert _at(feats, "ETH/USDT", "2024-01-05 00:00")["onchain_realised_dist"] == pytest.approx(0.04)
    # ETF flows 100 (01-02), 300 (01-03), 200 (01-05); z over the last two flows
    assert _at(feats, "BTC/USDT", "2024-01-03 12:00")["etf_flow_z_2"] == 0.0  # one flow known: 0
    assert _at(feats, "BTC/USDT", "2024-01-04 00:00")["etf_flow_z_2"] == pytest.approx(100 / math.sqrt(2 * 100 ** 2))
    assert _at(feats, "BTC/USDT", "2024-01-06 00:00")["etf_flow_z_2"] == pytest.approx(-50 / math.sqrt(2 * 50 ** 2))


def test_news_counts_votes_and_sentiment_over_the_last_hours():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    vader = SentimentIntensityAnalyzer()
    titles = _headlines()["title"].tolist()
    feats = compute_features(_candles(), FeatureParams(news_hours=[1]), alt=AltInputs(headlines=_headlines()))
    row = _at(feats, "BTC/USDT", "2024-01-05 10:00")  # closes 11:00: 10:15 and 10:59:59, not 11:00:00
    assert (row["news_count_1"], row["news_votes_1"]) == (2.0, (3 - 1) + (0 - 5))
    expected = (vader.polarity_scores(titles[0])["compound"] + vader.polarity_scores(titles[1])["compound"]) / 2
    assert row["news_sent_1"] == pytest.approx(expected)
    nxt = _at(feats, "BTC/USDT", "2024-01-05 11:00")
    assert (nxt["news_count_1"], nxt["news_votes_1"]) == (1.0, 2.0)
    empty = _at(feats, "BTC/USDT", "2024-01-05 13:00")
    assert (empty["news_count_1"], empty["news_votes_1"], empty["news_sent_1"]) == (0.0, 0.0, 0.0)


def test_btc_scope_gives_other_symbols_zeros():
    params = FeatureParams(fng=True, alt_scope="btc")
    feats = compute_features(_candles(("BTC/USDT", "ETH/USDT")), params, alt=AltInputs(fear_greed=_fng()))
    assert _at(feats, "ETH/USDT", "2024-01-05 00:00")["fng_value"] == 0.0
    assert _at(feats, "BTC/USDT", "2024-01-05 00:00")["fng_value"] == 5.0


def test_rows_before_the_series_starts_are_dropped_and_missing_input_refused():
    fng = _fng()
    late = fng[fng["timestamp"] >= pd.Timestamp("2024-01-03", tz="UTC")]
    feats = compute_features(_candles(), FeatureParams(fng=True), alt=AltInputs(fear_greed=late))
    assert feats["timestamp"].min() == pd.Timestamp("2024-01-03 00:00", tz="UTC")
    with pytest.raises(DataError, match="fear_greed"):
        compute_features(_candles(), FeatureParams(fng=True))


def test_families_off_by_default_keep_the_feature_set_hash():
    assert not any(c.startswith(("fng", "onchain", "etf", "news")) for c in feature_columns(FeatureParams()))
    on = FeatureParams(fng=True)
    assert feature_set_hash(on) != feature_set_hash(FeatureParams())
    assert "fng_value" in feature_columns(on)


def test_each_alt_family_is_switched_off_and_on_by_the_ablation_registry():
    from features.families import family_arms

    on = FeatureParams(fng=True, fng_change=[2], fng_z=[3], onchain=True, etf_flow_z=[2], news_hours=[1])
    prefixes = {"fng": "fng_", "onchain": "onchain_", "etf_flow": "etf_flow_", "news": "news_"}
    for family, prefix in prefixes.items():
        without, with_ = family_arms(on, family)
        assert not any(c.startswith(prefix) for c in feature_columns(without)), family
        assert len(feature_columns(without)) < len(feature_columns(on))
        without_all, with_only = family_arms(FeatureParams(), family)
        assert any(c.startswith(prefix) for c in feature_columns(with_only)), family
