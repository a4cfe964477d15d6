"""Point-in-time checks cover the cross-venue family: compute_features passes the lookahead and
recursive checks with Bybit's series as ``other_venue`` (the check cuts them too), and a variant
reading Bybit's next close or its next funding settlement is caught."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest

from data.lake import read_datadir_candles
from data.partitions import read_partition
from data.synthetic import generate_market
from features.compute import compute_features
from features.cross_venue import OtherVenue
from features.pit import check_lookahead, check_point_in_time, check_recursive
from qt.config import FeatureParams, Params, SyntheticParams
from tests.support import require_shared_data

PERPS = ["BTC/USDT:USDT", "ETH/USDT:USDT"]
XV = FeatureParams(xv=True, xv_z=[24, 72], funding_last=True)


def _funding(symbols, start, end, seed):
    events = pd.date_range(start.floor("8h"), end, freq="8h").astype("datetime64[ms, UTC]")
    rng = np.random.default_rng(seed)
    return pd.concat([pd.DataFrame({"symbol": s, "timestamp": events,
                                    "funding_rate": 1e-4 + 2e-4 * rng.standard_normal(len(events))})
                      for s in symbols], ignore_index=True)


@pytest.fixture(scope="module")
def synthetic_venues():
    binance = generate_market(PERPS, "1h", SyntheticParams(bars=1200), seed=31)
    rng = np.random.default_rng(32)
    bybit = binance.assign(close=binance["close"] * np.exp(3e-4 * rng.standard_normal(len(binance))))
    bybit = bybit.drop(index=rng.choice(len(bybit), 15, replace=False)).reset_index(drop=True)  # Bybit gaps
    start, end = binance["timestamp"].min(), binance["timestamp"].max()
    return binance, _funding(PERPS, start, end, 33), OtherVenue(bybit, _funding(PERPS, start, end, 34))


@pytest.fixture(scope="module")
def real_venues():
    root = require_shared_data()
    start, end = pd.Timestamp("2024-06-01", tz="UTC"), pd.Timestamp("2024-09-01", tz="UTC")
    binance = read_datadir_candles(root, PERPS, "1h", start=start, end=end)
    bybit, fundings = [], {"binanceusdm": [], "bybit": []}
    for sym in PERPS:
        stem = sym.split("/")[0] + "_USDT"
        one = read_partition(root / "ohlcv" / "bybit" / f"{stem}-1h.parquet", ["timestamp", "open", "high", "low",
                                                                                 "close", "volume"])
        bybit.append(one[(one["timestamp"] >= start) & (one["timestamp"] < end)].assign(symbol=sym))
        for venue in fundings:
            f = pd.read_parquet(root / "funding" / venue / f"{stem}-funding.parquet")
            fundings[venue].append(f[(f["timestamp"] >= start - pd.Timedelta(hours=8)) & (f["timestamp"] < end)]
                                   .assign(symbol=sym))
    other = OtherVenue(pd.concat(bybit, ignore_index=True), pd.concat(fundings["bybit"], ignore_index=True))
    return binance, pd.concat(fundings["binanceusdm"], ignore_index=True), other


@pytest.mark.parametrize("source", ["synthetic_venues", "real_venues"])
def test_xv_features_pass_lookahead_and_recursive_checks(source, request):
    binance, funding, other = request.getfixturevalue(source)
    compute = functools.partial(compute_features, params=XV)
    assert check_lookahead(binance, compute, cuts=6, seed=5, funding=funding, other_venue=other) == []
    assert check_recursive(binance, compute, XV, start_offsets_bars=(1, 29), funding=funding, other_venue=other) == []


def test_the_stage_check_covers_xv(synthetic_venues):
    binance, funding, other = synthetic_venues
    params = Params().model_copy(update={"features": XV})
    assert check_point_in_time(binance, params, cuts=4, funding=funding, other_venue=other)["lookahead_violations"] == 0


def test_lookahead_check_catches_reading_bybits_next_close(synthetic_venues):
    binance, funding, other = synthetic_venues

    def next_bybit_close(candles, funding, other_venue):
        early = other_venue.candles.assign(timestamp=other_venue.candles["timestamp"] - pd.Timedelta(hours=1))
        return compute_features(candles, XV, funding=funding, other_venue=OtherVenue(early, other_venue.funding))

    violations = check_lookahead(binance, next_bybit_close, cuts=6, seed=2, funding=funding, other_venue=other)
    named = {v.split(" of ")[0] for v in violations}
    assert {"xv_basis_log", "xv_basis_z_24"} <= named and "xv_funding_spread" not in named
    assert all("lookahead" in v for v in violations)


def test_lookahead_check_catches_bybit_funding_read_before_it_settles(synthetic_venues):
    binance, funding, other = synthetic_venues
    params = XV.model_copy(update={"funding_last": False})

    def early_settlement(candles, funding, other_venue):
        early = other_venue.funding.assign(timestamp=other_venue.funding["timestamp"] - pd.Timedelta(hours=8))
        return compute_features(candles, params, funding=funding, other_venue=OtherVenue(other_venue.candles, early))

    violations = check_lookahead(binance, early_settlement, cuts=6, seed=1, funding=funding, other_venue=other)
    assert violations and all(v.startswith("xv_funding_spread of ") for v in violations)
