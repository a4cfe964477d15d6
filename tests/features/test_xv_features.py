"""The cross-venue family (features.cross_venue) by hand on a tiny two-venue frame: the basis at
bars both venues have, Bybit's last close carried over its missing bar, the rolling z-score, and a
funding rate settled exactly at a bar's close seen by that bar; spot symbols get 0 and a missing
Bybit series is one clear DataError."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from features.compute import compute_features, feature_columns, warmup_bars
from features.cross_venue import OtherVenue
from qt.config import FeatureParams
from qt.errors import ConfigError, DataError

PERP = "BTC/USDT:USDT"
# the smallest candle set (warm-up 4 bars) so the xv columns can be checked by hand
XV = FeatureParams(rsi=[], ema=[], sma=[], atr=[], log_return=[], realised_vol=[], volume_z=[], adx=[], obv_z=[],
                   vwap_dist=[], macd=(2, 3, 2), bbands=(2, 2.0), stoch=(1, 1, 1), warmup_memories=0.1,
                   xv=True, xv_z=[3])
T0 = pd.Timestamp("2024-01-01", tz="UTC")
BINANCE_CLOSE = np.array([100.0, 101, 102, 103, 104, 105, 106, 107, 108, 109])
BYBIT_CLOSE = BINANCE_CLOSE * np.array([1.001, 1.002, 0.999, 1.0, 1.003, 0.998, np.nan, 1.004, 1.001, 0.997])


def _candles(symbol: str, close: np.ndarray) -> pd.DataFrame:
    ts = pd.date_range(T0, periods=len(close), freq="1h").astype("datetime64[ms, UTC]")
    frame = pd.DataFrame({"symbol": symbol, "timestamp": ts, "open": close, "high": close * 1.01,
                          "low": close * 0.99, "close": close, "volume": 5.0 + np.arange(len(close)) % 3})
    return frame[np.isfinite(close)].reset_index(drop=True)


def _funding(symbol: str, hours: list[int], rates: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"symbol": symbol, "timestamp": [T0 + pd.Timedelta(hours=h) for h in hours],
                         "funding_rate": rates}).astype({"timestamp": "datetime64[ms, UTC]"})


BINANCE_FUNDING = _funding(PERP, [0, 8], [1e-4, 3e-4])
BYBIT = OtherVenue(_candles(PERP, BYBIT_CLOSE), _funding(PERP, [0, 8], [2e-4, 5e-4]))


def test_xv_columns_by_hand_with_a_missing_bybit_bar_and_a_settlement_at_the_close():
    assert warmup_bars(XV) == 4
    assert feature_columns(XV)[-3:] == ["xv_basis_log", "xv_basis_z_3", "xv_funding_spread"]
    feats = compute_features(_candles(PERP, BINANCE_CLOSE), XV, funding=BINANCE_FUNDING, other_venue=BYBIT)
    assert feats["timestamp"].dt.hour.tolist() == [4, 5, 6, 7, 8, 9]
    bybit_seen = BYBIT_CLOSE.copy()
    bybit_seen[6] = BYBIT_CLOSE[5]  # the missing 06:00 Bybit bar: its last close (05:00's) carried
    basis = np.log(bybit_seen / BINANCE_CLOSE)
    np.testing.assert_allclose(feats["xv_basis_log"], basis[4:], rtol=0, atol=1e-15)
    assert feats["xv_basis_log"].iat[2] == pytest.approx(math.log(BYBIT_CLOSE[5] / 106.0))
    window = basis[5:8]  # the z of the 07:00 row: the three basis values ending at it
    assert feats["xv_basis_z_3"].iat[3] == pytest.approx((basis[7] - window.mean()) / window.std(ddof=1))
    # the 07:00 bar closes at 08:00, exactly when both venues settle: it sees the new rates
    spread = feats.set_index(feats["timestamp"].dt.hour)["xv_funding_spread"]
    assert spread[6] == pytest.approx(2e-4 - 1e-4) and spread[7] == pytest.approx(5e-4 - 3e-4)
    assert spread[9] == pytest.approx(2e-4)


def test_rows_before_bybit_starts_are_dropped_and_a_constant_basis_has_z_zero():
    late = OtherVenue(BYBIT.candles[BYBIT.candles["timestamp"] >= T0 + pd.Timedelta(hours=3)], BYBIT.funding)
    feats = compute_features(_candles(PERP, BINANCE_CLOSE), XV, funding=BINANCE_FUNDING, other_venue=late)
    assert feats["timestamp"].dt.hour.tolist() == [5, 6, 7, 8, 9]  # 03:00-05:00 fill the first z window
    flat = OtherVenue(_candles(PERP, BINANCE_CLOSE * 1.002), BYBIT.funding)
    feats = compute_features(_candles(PERP, BINANCE_CLOSE), XV, funding=BINANCE_FUNDING, other_venue=flat)
    assert (feats["xv_basis_z_3"] == 0.0).all()


def test_spot_symbols_get_zero_columns_without_bybit_series():
    spot = _candles("BTC/USDT", BINANCE_CLOSE)
    empty = OtherVenue(BYBIT.candles.iloc[:0], BYBIT.funding.iloc[:0])
    feats = compute_features(spot, XV, funding=BINANCE_FUNDING.iloc[:0], other_venue=empty)
    assert len(feats) == 6 and (feats[["xv_basis_log", "xv_basis_z_3", "xv_funding_spread"]] == 0.0).all().all()


def test_a_missing_bybit_series_is_one_clear_error():
    candles = _candles(PERP, BINANCE_CLOSE)
    with pytest.raises(DataError, match="no Bybit series were passed"):
        compute_features(candles, XV, funding=BINANCE_FUNDING)
    no_candles = OtherVenue(BYBIT.candles.iloc[:0], BYBIT.funding)
    with pytest.raises(DataError, match=r"no Bybit candles for BTC/USDT:USDT; collect it with `qt collect "
                                        r"--exchange bybit`"):
        compute_features(candles, XV, funding=BINANCE_FUNDING, other_venue=no_candles)
    no_funding = OtherVenue(BYBIT.candles, BYBIT.funding.iloc[:0])
    with pytest.raises(DataError, match="no Bybit funding for BTC/USDT:USDT"):
        compute_features(candles, XV, funding=BINANCE_FUNDING, other_venue=no_funding)


def test_z_windows_without_the_family_are_refused():
    with pytest.raises(ConfigError, match="features.xv is false"):
        feature_columns(FeatureParams(xv_z=[24]))


def test_the_feature_set_hash_of_a_set_without_xv_is_the_one_logged_before_xv_existed():
    """Models and stores made before the family existed keep their hash (the service compares it);
    switching xv on, or listing z windows, changes it."""
    from features.compute import feature_set_hash

    assert feature_set_hash(FeatureParams()) == "953aabaaa07e14481f00210ba510a1275f0fc08552ba4c22dbd68f4066209a2f"
    hashes = {feature_set_hash(p) for p in (FeatureParams(), FeatureParams(xv=True),
                                            FeatureParams(xv=True, xv_z=[24]), FeatureParams(xv_z=[24]))}
    assert len(hashes) == 4
