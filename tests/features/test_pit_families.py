"""Point-in-time checks on the higher-timeframe and multi-input families: they pass on
compute_features, and they catch an HTF block that reads its still-forming bar and a funding
join that reads the next settlement."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest

from features.compute import compute_features, warmup_bars
from features.htf import htf_block_values, htf_columns
from features.pit import check_lookahead, check_recursive
from qt.config import FeatureParams, HtfFeatureParams, SyntheticParams
from data.lake import read_datadir_candles
from data.synthetic import generate_market
from qt.timeframes import timeframe_ms
from tests.support import require_shared_data

BLOCK = HtfFeatureParams(timeframe="4h", rsi=[14], atr=[14], log_return=[1, 6])
HTF = FeatureParams(htf=[BLOCK])
MULTI = FeatureParams(funding_last=True, funding_mean=[3, 21], basis=True, cross=[24, 72])


def _htf_reading_the_current_bucket(candles: pd.DataFrame) -> pd.DataFrame:
    """compute_features without HTF, plus the HTF block aligned as if every row saw its own,
    still-forming 4h bucket (the row's 'close' taken as the bucket's end): a lookahead."""
    feats = compute_features(candles, FeatureParams())
    parts = []
    for _, one in candles.groupby("symbol"):
        ms = one["timestamp"].to_numpy(dtype="datetime64[ms]").view("int64")
        values = htf_block_values(ms, one["high"].to_numpy(), one["low"].to_numpy(), one["close"].to_numpy(),
                                  BLOCK, bar_ms=timeframe_ms("4h"))
        parts.append(one[["symbol", "timestamp"]].assign(**dict(zip(htf_columns(BLOCK), values))))
    return feats.merge(pd.concat(parts), on=["symbol", "timestamp"], how="left")


def test_htf_lookahead_check_passes(synthetic):
    assert check_lookahead(synthetic, functools.partial(compute_features, params=HTF), cuts=8, seed=3) == []


def test_htf_lookahead_check_passes_on_real_candles(real_btc):
    assert check_lookahead(real_btc.iloc[-6000:], functools.partial(compute_features, params=HTF),
                           cuts=6, seed=4) == []


def test_lookahead_check_catches_an_htf_block_reading_its_forming_bar(synthetic):
    violations = check_lookahead(synthetic, _htf_reading_the_current_bucket, cuts=6, seed=3)
    assert violations, "an HTF value from the incomplete current 4h bar must be reported"
    named = {v.split(" of ")[0] for v in violations}
    assert named <= set(htf_columns(BLOCK)) and "htf4h_logret_1" in named
    assert all("lookahead" in v for v in violations)


def test_htf_declared_warmup_passes_recursive_check(synthetic, real_btc):
    compute = functools.partial(compute_features, params=HTF)
    # offsets inside and across 4h buckets: histories that start mid-bucket
    assert check_recursive(synthetic, compute, HTF, start_offsets_bars=(1, 2, 7, 101)) == []
    assert check_recursive(real_btc.iloc[-8000:], compute, HTF, start_offsets_bars=(1, 3, 150)) == []


def test_recursive_check_catches_a_too_short_htf_warmup(synthetic):
    short = FeatureParams(htf=[BLOCK], warmup_memories=3.0)
    assert warmup_bars(short) < 250
    violations = check_recursive(synthetic, functools.partial(compute_features, params=short), short)
    named = {v.split(" of ")[0] for v in violations}
    assert {"htf4h_rsi_14", "htf4h_atr_14"} <= named and "htf4h_logret_6" not in named


# --- multi-input ------------------------------------------------------------------------------

def _synthetic_funding(symbols: list[str], start: pd.Timestamp, end: pd.Timestamp, seed: int) -> pd.DataFrame:
    events = pd.date_range(start.floor("8h"), end, freq="8h").astype("datetime64[ms, UTC]")
    rng = np.random.default_rng(seed)
    return pd.concat([pd.DataFrame({"symbol": s, "timestamp": events,
                                    "funding_rate": 1e-4 + 2e-4 * rng.standard_normal(len(events))})
                      for s in symbols], ignore_index=True)


@pytest.fixture(scope="module")
def synthetic_perps() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    perps = generate_market(["BTC/USDT:USDT", "ETH/USDT:USDT"], "1h", SyntheticParams(bars=1500), seed=21)
    spot = generate_market(["BTC/USDT", "ETH/USDT"], "1h", SyntheticParams(bars=1500), seed=22)
    funding = _synthetic_funding(["BTC/USDT:USDT", "ETH/USDT:USDT"], perps["timestamp"].min(),
                                 perps["timestamp"].max(), seed=23)
    return perps, funding, spot


@pytest.fixture(scope="module")
def real_perps() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    root = require_shared_data()
    start = "2024-01-01"
    perps = read_datadir_candles(root, ["BTC/USDT:USDT", "ETH/USDT:USDT"], "1h", start=start)
    spot = read_datadir_candles(root, ["BTC/USDT", "ETH/USDT"], "1h", start=start)
    funding = pd.concat([pd.read_parquet(root / "funding" / "binanceusdm" / f"{base}_USDT-funding.parquet")
                         .assign(symbol=f"{base}/USDT:USDT") for base in ("BTC", "ETH")], ignore_index=True)
    return perps, funding[funding["timestamp"] >= pd.Timestamp(start, tz="UTC")], spot


def _funding_read_one_settlement_early(candles, funding, reference, params=MULTI):
    """A funding join that sees each rate one funding interval (8h) before it settles."""
    early = funding.assign(timestamp=funding["timestamp"] - pd.Timedelta(hours=8))
    return compute_features(candles, params, funding=early, reference=reference)


@pytest.mark.parametrize("source", ["synthetic_perps", "real_perps"])
def test_multi_input_features_pass_lookahead_and_recursive_checks(source, request):
    perps, funding, spot = request.getfixturevalue(source)
    compute = functools.partial(compute_features, params=MULTI)
    assert check_lookahead(perps, compute, cuts=6, seed=5, funding=funding, reference=spot) == []
    assert check_recursive(perps, compute, MULTI, start_offsets_bars=(1, 29), funding=funding, reference=spot) == []


def test_lookahead_check_cuts_funding_and_catches_an_early_settlement(synthetic_perps):
    perps, funding, spot = synthetic_perps
    leaky = functools.partial(_funding_read_one_settlement_early, params=MULTI.model_copy(update={"funding_mean": []}))
    violations = check_lookahead(perps, lambda c, funding, reference: leaky(c, funding, reference),
                                 cuts=6, seed=1, funding=funding, reference=spot)
    assert violations and all(v.startswith("funding_last of ") for v in violations)


def test_lookahead_check_cuts_the_reference_too(synthetic_perps):
    """A cross feature reading the reference's NEXT close is caught: the check cuts the reference."""
    perps, funding, spot = synthetic_perps

    def next_reference_close(candles, funding, reference):
        shifted = reference.assign(timestamp=reference["timestamp"] - pd.Timedelta(hours=1))
        return compute_features(candles, MULTI, funding=funding, reference=shifted)

    violations = check_lookahead(perps, next_reference_close, cuts=6, seed=2, funding=funding, reference=spot)
    named = {v.split(" of ")[0] for v in violations}
    assert {"basis_log", "btc_logret_24", "beta_btc_24"} <= named and "funding_last" not in named
