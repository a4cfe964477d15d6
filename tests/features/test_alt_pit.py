"""Point-in-time checks cover the alt families: with the series stored by their publication rule
the lookahead and recursive checks pass; an on-chain series treated as available on the day it
describes (D instead of D+1), or a Fear & Greed value used a day early, fails the lookahead check."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest

from data.alt_lake import with_availability
from data.synthetic import generate_market
from features.alt_join import AltInputs
from features.compute import compute_features
from features.pit import check_lookahead, check_point_in_time, check_recursive
from qt.config import FeatureParams, Params, SyntheticParams

START = "2023-12-01"
ALL_ALT = FeatureParams(fng=True, fng_change=[3], fng_z=[7], onchain=True, etf_flow_z=[3], news_hours=[6])


def _alt() -> AltInputs:
    rng = np.random.default_rng(5)
    days = pd.date_range("2023-11-01", "2024-01-20", freq="D", tz="UTC")
    fng = pd.DataFrame({"timestamp": days, "value": rng.integers(5, 95, len(days)).astype(float),
                        "classification": "x"})
    mvrv = 1.5 + 0.3 * rng.random(len(days))
    flows = np.where(rng.random(len(days)) < 0.6, 1e8 * rng.standard_normal(len(days)), np.nan)
    onchain = pd.DataFrame({"timestamp": days, "mvrv": mvrv, "nupl": 1 - 1 / mvrv,
                            "realized_price": 100.0 / mvrv, "etf_flow_usd": flows})
    times = pd.Timestamp(START, tz="UTC") + pd.to_timedelta(np.sort(rng.integers(0, 40 * 86_400, 1000)), unit="s")
    heads = pd.DataFrame({"timestamp": times, "title": [f"headline {i} good" if i % 2 else f"headline {i} bad"
                                                         for i in range(len(times))], "source": "x.com"})
    for kind in ("positive", "negative", "important", "liked", "disliked", "lol", "toxic", "saved", "comments"):
        heads[f"votes_{kind}"] = rng.integers(0, 5, len(heads)).astype(float)
    return AltInputs(with_availability(fng, "fear_greed"), with_availability(onchain, "onchain_btc"),
                     with_availability(heads, "headlines"))


@pytest.fixture(scope="module")
def candles():
    return generate_market(["BTC/USDT", "ETH/USDT"], "1h", SyntheticParams(bars=960, start=START), seed=9)


def _compute(params):
    return functools.partial(compute_features, params=params)


def test_alt_families_pass_both_checks(candles):
    alt = _alt()
    assert check_lookahead(candles, _compute(ALL_ALT), cuts=8, alt=alt) == []
    assert check_recursive(candles, _compute(ALL_ALT), ALL_ALT, alt=alt) == []


def test_onchain_available_a_day_early_fails_the_lookahead_check(candles):
    alt = _alt()
    early = alt.onchain_btc.assign(available_at=alt.onchain_btc["timestamp"])  # D instead of D + 1
    params = FeatureParams(onchain=True)
    violations = check_lookahead(candles, _compute(params), cuts=4, alt=AltInputs(onchain_btc=early))
    assert any("onchain_mvrv" in v and "lookahead" in v for v in violations), violations


def test_fear_greed_used_a_day_early_fails_the_lookahead_check(candles):
    alt = _alt()
    early = alt.fear_greed.assign(available_at=alt.fear_greed["available_at"] - pd.Timedelta(days=1))
    violations = check_lookahead(candles, _compute(FeatureParams(fng=True)), cuts=4,
                                 alt=AltInputs(fear_greed=early))
    assert any("fng_value" in v for v in violations), violations


def test_headline_used_before_its_publication_fails(candles):
    alt = _alt()
    early = alt.headlines.assign(available_at=alt.headlines["available_at"] - pd.Timedelta(hours=2))
    violations = check_lookahead(candles, _compute(FeatureParams(news_hours=[6])), cuts=6,
                                 alt=AltInputs(headlines=early))
    assert any("news_count_6" in v for v in violations), violations


def test_the_stage_policy_runs_with_alt_inputs(candles):
    params = Params(features=ALL_ALT)
    record = check_point_in_time(candles, params, cuts=4, alt=_alt())
    assert record["lookahead_violations"] == 0


def test_real_btc_with_the_shared_alt_files_passes_and_the_shift_fails(tmp_path):
    """The shared Fear & Greed, on-chain and headline files on real BTC 1h bars of late 2024."""
    from data.alt_collect import collect_alt
    from data.lake import read_datadir_candles
    from features.materialise import read_alt_inputs
    from tests.support import require_shared_data

    shared = require_shared_data()
    if not (shared / "alt").is_dir():
        pytest.skip(f"{shared / 'alt'} absent: the shared alt files are needed")
    collect_alt(Params(alt={"series": ["fear_greed", "onchain_btc", "headlines"], "source": f"parquet:{shared}"}),
                tmp_path)
    alt = read_alt_inputs(tmp_path, ALL_ALT)
    btc = read_datadir_candles(shared, ["BTC/USDT"], "1h")
    btc = btc[btc["timestamp"] >= pd.Timestamp("2024-09-01", tz="UTC")].reset_index(drop=True)
    assert check_lookahead(btc, _compute(ALL_ALT), cuts=6, alt=alt) == []
    early = AltInputs(onchain_btc=alt.onchain_btc.assign(available_at=alt.onchain_btc["timestamp"]))
    assert check_lookahead(btc, _compute(FeatureParams(onchain=True)), cuts=3, alt=early)
