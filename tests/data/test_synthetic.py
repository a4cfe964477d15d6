"""The synthetic market: deterministic, realistic stylised facts, a planted signal with a knob."""

import numpy as np
import pandas as pd
import pytest

from qt.config import SyntheticParams
from data.synthetic import generate_market

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]


def _returns(df: pd.DataFrame) -> pd.DataFrame:
    wide = df.pivot(index="timestamp", columns="symbol", values="close")
    return np.log(wide).diff().dropna()


def test_same_seed_same_market_other_seed_other_market():
    p = SyntheticParams(bars=500)
    a = generate_market(SYMBOLS, "1h", p, seed=1)
    b = generate_market(SYMBOLS, "1h", p, seed=1)
    c = generate_market(SYMBOLS, "1h", p, seed=2)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["close"].values, c["close"].values)


def test_candles_are_well_formed():
    df = generate_market(SYMBOLS, "1h", SyntheticParams(bars=800), seed=3)
    assert list(df.columns) == ["symbol", "timestamp", "open", "high", "low", "close", "volume"]
    assert str(df["timestamp"].dtype) == "datetime64[ms, UTC]"
    assert (df["high"] >= df[["open", "close"]].max(axis=1)).all()
    assert (df["low"] <= df[["open", "close"]].min(axis=1)).all()
    assert (df[["open", "high", "low", "close", "volume"]] > 0).all().all()
    for _, g in df.groupby("symbol"):
        assert (g["timestamp"].diff().dropna() == pd.Timedelta("1h")).all()


def test_stylised_facts_fat_tails_clustering_correlation():
    r = _returns(generate_market(SYMBOLS, "1h", SyntheticParams(bars=6000, signal_strength=0.0), seed=5))
    x = r["BTC/USDT"].values
    assert pd.Series(x).kurt() > 1.0  # fat tails (normal: 0)
    acf_abs = np.corrcoef(np.abs(x[1:]), np.abs(x[:-1]))[0, 1]
    assert acf_abs > 0.1  # volatility clustering
    assert r.corr().loc["BTC/USDT", "ETH/USDT"] > 0.2  # cross-symbol correlation


def _momentum_edge(df: pd.DataFrame, lookback: int = 24) -> float:
    """Correlation between the past-lookback return and the next bar's return."""
    r = _returns(df)
    past = r.rolling(lookback).sum().shift(1)
    return float(np.corrcoef(past.stack().dropna().values,
                             r.where(past.notna()).stack().dropna().values)[0, 1])


@pytest.mark.parametrize("seed", [11, 12])
def test_planted_signal_is_learnable_and_absent_at_zero_strength(seed):
    strong = generate_market(SYMBOLS, "1h", SyntheticParams(bars=6000, signal_strength=0.3), seed)
    noise = generate_market(SYMBOLS, "1h", SyntheticParams(bars=6000, signal_strength=0.0), seed)
    assert _momentum_edge(strong) > 0.05
    assert abs(_momentum_edge(noise)) < 0.03
