"""compute_features: every column is the documented formula, per symbol, after warm-up."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
import talib

from features.compute import compute_features, feature_columns, feature_set_hash, warmup_bars
from qt.config import FeatureParams, SyntheticParams
from qt.errors import ConfigError, DataError
from data.synthetic import generate_market

DEFAULT = FeatureParams()


def _expected_from_talib(one_symbol: pd.DataFrame) -> dict[str, np.ndarray]:
    """The documented transforms, written out again from TA-Lib called directly."""
    c = one_symbol["close"].to_numpy()
    h = one_symbol["high"].to_numpy()
    lo = one_symbol["low"].to_numpy()
    macd, sig, hist = talib.MACD(c, fastperiod=12, slowperiod=26, signalperiod=9)
    up, mid, dn = talib.BBANDS(c, timeperiod=20, nbdevup=2.0, nbdevdn=2.0, matype=0)
    return {
        "rsi_14": talib.RSI(c, timeperiod=14),
        "ema_12": talib.EMA(c, timeperiod=12) / c - 1,
        "ema_26": talib.EMA(c, timeperiod=26) / c - 1,
        "sma_20": talib.SMA(c, timeperiod=20) / c - 1,
        "macd_12_26_9": macd / c,
        "macd_signal_12_26_9": sig / c,
        "macd_hist_12_26_9": hist / c,
        "bb_upper_20_2": up / c - 1,
        "bb_lower_20_2": dn / c - 1,
        "bb_width_20_2": (up - dn) / mid,
        "atr_14": talib.ATR(h, lo, c, timeperiod=14) / c,
    }


def test_talib_indicators_equal_talib_called_directly(candles):
    feats = compute_features(candles, DEFAULT)
    warmup = warmup_bars(DEFAULT)
    for symbol, one in candles.groupby("symbol"):
        got = feats[feats["symbol"] == symbol].reset_index(drop=True)
        assert len(got) == len(one) - warmup
        for name, expected in _expected_from_talib(one.reset_index(drop=True)).items():
            np.testing.assert_allclose(got[name].to_numpy(), expected[warmup:], rtol=1e-12, atol=1e-15,
                                       err_msg=f"{symbol} {name}")


def _tiny_candles() -> pd.DataFrame:
    close = np.array([100, 101, 99, 102, 104, 103, 103, 107, 106, 108, 105, 104, 106, 109, 110,
                      108, 107, 111, 112, 110, 109, 113, 115, 114, 116, 118, 117, 119, 121, 120,
                      118, 122, 124, 123, 125, 127, 126, 128, 130, 129], dtype=float)
    # volumes 10..16 then a constant run (std 0 windows) then varied again
    volume = np.array([10, 12, 11, 15, 13, 14, 16, 9, 9, 9, 9, 9, 20, 5, 7, 8, 30, 12, 11, 10,
                       14, 13, 12, 18, 17, 16, 15, 19, 21, 11, 10, 12, 14, 13, 15, 17, 16, 18, 20, 19],
                      dtype=float)
    ts = pd.date_range("2024-01-01", periods=len(close), freq="h", tz="UTC").astype("datetime64[ms, UTC]")
    return pd.DataFrame({"symbol": "BTC/USDT", "timestamp": ts, "open": close, "high": close + 1,
                         "low": close - 1, "close": close, "volume": volume})


TINY = FeatureParams(rsi=[2], ema=[2], sma=[2], macd=(2, 3, 2), bbands=(2, 1.5), atr=[2],
                     log_return=[1, 3], realised_vol=[3], volume_z=[3], adx=[2], stoch=(2, 2, 2), obv_z=[3],
                     vwap_dist=[3], warmup_memories=2.0)


def test_returns_rvol_and_volz_match_pandas_formulas_on_a_tiny_frame():
    candles = _tiny_candles()
    feats = compute_features(candles, TINY)
    warmup = warmup_bars(TINY)
    assert 0 < warmup < 20
    close, volume = candles["close"], candles["volume"]
    one_bar = np.log(close / close.shift(1))
    vol_mean = volume.rolling(3).mean()
    vol_std = volume.rolling(3).std(ddof=1)
    expected = pd.DataFrame({
        "logret_1": one_bar,
        "logret_3": np.log(close / close.shift(3)),
        "rvol_3": one_bar.rolling(3).std(ddof=1),
        "volz_3": ((volume - vol_mean) / vol_std).where(vol_std > 0, 0.0),
    }).iloc[warmup:].reset_index(drop=True)
    pd.testing.assert_frame_equal(feats[expected.columns], expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("constant_volume", [9.0, 0.1, 1e-7])
def test_volz_is_zero_not_nan_when_the_volume_window_is_constant(constant_volume):
    candles = _tiny_candles()
    candles.loc[7:11, "volume"] = constant_volume  # 0.1 is not exact in binary: rounding noise
    feats = compute_features(candles, TINY.model_copy(update={"warmup_memories": 1.0}))
    # volumes at bars 7..11 are equal: windows ending at bars 9, 10 and 11 are constant
    constant_ends = candles["timestamp"].iloc[[9, 10, 11]]
    rows = feats[feats["timestamp"].isin(constant_ends)]
    assert len(rows) == 3
    assert (rows["volz_3"] == 0.0).all()
    # and the first window leaving the run is a real z-score again
    assert feats.loc[feats["timestamp"] == candles["timestamp"].iloc[12], "volz_3"].abs().iloc[0] > 0.5


def test_output_has_contract_columns_and_no_nan_after_warmup(synthetic):
    feats = compute_features(synthetic, DEFAULT)
    assert list(feats.columns) == ["symbol", "timestamp", *feature_columns(DEFAULT)]
    assert str(feats["timestamp"].dtype) == "datetime64[ms, UTC]"
    assert all(feats[c].dtype == np.float64 for c in feature_columns(DEFAULT))
    assert not feats[feature_columns(DEFAULT)].isna().any().any()
    warmup = warmup_bars(DEFAULT)
    for symbol, one in synthetic.groupby("symbol"):
        got = feats[feats["symbol"] == symbol]
        # the first row is bar `warmup` of that symbol: the warm-up rows are dropped, nothing else
        assert got["timestamp"].iloc[0] == one["timestamp"].iloc[warmup]
        assert got["timestamp"].is_monotonic_increasing and len(got) == len(one) - warmup


def test_symbol_features_unchanged_when_another_symbol_is_added_in_any_row_order(synthetic):
    alone = synthetic[synthetic["symbol"] == "BTC/USDT"]
    other = generate_market(["SOL/USDT"], "1h", SyntheticParams(bars=1000), seed=3)
    mixed = pd.concat([other, alone]).sample(frac=1.0, random_state=0)  # shuffled, interleaved
    with_other = compute_features(mixed, DEFAULT)
    expected = compute_features(alone, DEFAULT)
    got = with_other[with_other["symbol"] == "BTC/USDT"].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    # output is in (symbol, timestamp) order whatever the input order
    assert list(with_other["symbol"].unique()) == ["BTC/USDT", "SOL/USDT"]
    assert with_other.groupby("symbol")["timestamp"].apply(lambda t: t.is_monotonic_increasing).all()


def test_symbol_with_no_more_candles_than_warmup_yields_no_rows(synthetic):
    warmup = warmup_bars(DEFAULT)
    short = synthetic[synthetic["symbol"] == "ETH/USDT"].iloc[:warmup]
    longer = synthetic[synthetic["symbol"] == "ETH/USDT"].iloc[: warmup + 1]
    assert compute_features(short, DEFAULT).empty
    assert len(compute_features(longer, DEFAULT)) == 1


def test_latest_row_from_the_last_300_bars_matches_full_history(real_btc):
    """What the serving service computes (last ~300 candles) is what training saw."""
    assert warmup_bars(DEFAULT) < 300
    full = compute_features(real_btc, DEFAULT)
    for end in (5_000, 30_000, len(real_btc)):
        recent = compute_features(real_btc.iloc[end - 300:end], DEFAULT).iloc[-1]
        same_bar = full[full["timestamp"] == recent["timestamp"]].iloc[0]
        cols = feature_columns(DEFAULT)
        scale = full[cols].abs().median()
        diff = (recent[cols].astype(float) - same_bar[cols].astype(float)).abs()
        assert (diff <= 1e-6 * (same_bar[cols].astype(float).abs() + scale)).all(), diff.sort_values().tail(3)


def test_duplicate_candles_are_refused(synthetic):
    doubled = pd.concat([synthetic, synthetic.iloc[[5]]])
    with pytest.raises(DataError, match="duplicate"):
        compute_features(doubled, DEFAULT)


def test_non_finite_price_is_refused(synthetic):
    broken = synthetic.copy()
    broken.loc[400, "close"] = np.nan
    with pytest.raises(DataError, match="close"):
        compute_features(broken, DEFAULT)


def test_malformed_feature_params_are_config_errors():
    with pytest.raises(ConfigError, match="features.ema"):
        feature_columns(FeatureParams(ema=[12, 12]))
    with pytest.raises(ConfigError, match="features.macd"):
        warmup_bars(FeatureParams(macd=(26, 12, 9)))


def test_feature_set_hash_is_stable_and_tracks_every_param():
    assert feature_set_hash(FeatureParams()) == feature_set_hash(FeatureParams())
    variants = [FeatureParams(rsi=[7]), FeatureParams(bbands=(20, 2.5)), FeatureParams(warmup_memories=20.0)]
    hashes = {feature_set_hash(p) for p in [DEFAULT, *variants]}
    assert len(hashes) == 1 + len(variants)
    assert len(feature_set_hash(DEFAULT)) == 64


def test_column_names_follow_indicator_params_convention():
    cols = feature_columns(FeatureParams(bbands=(20, 2.5), ema=[5, 50]))
    assert {"ema_5", "ema_50", "bb_upper_20_2.5", "bb_width_20_2.5"} <= set(cols)
