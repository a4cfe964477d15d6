"""The wider feature library: ADX, stochastic, OBV, VWAP distance, candle shape, higher-timeframe
blocks, funding, basis and cross-asset features equal TA-Lib or their documented formula."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import talib

from features.compute import compute_features, feature_columns, warmup_bars
from qt.config import FeatureParams, HtfFeatureParams, SyntheticParams
from qt.errors import ConfigError, DataError
from data.synthetic import generate_market

DEFAULT = FeatureParams()
# every candle family at tiny periods: a warm-up of a few bars, so hand-made frames stay short
SMALL = FeatureParams(rsi=[2], ema=[2], sma=[2], macd=(2, 3, 2), bbands=(2, 1.5), atr=[2], log_return=[1],
                      realised_vol=[2], volume_z=[2], adx=[2], stoch=(2, 2, 2), obv_z=[2], vwap_dist=[2],
                      candle_shape=True, warmup_memories=1.0)


def _windows(x: np.ndarray, n: int) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(x, n)


def _two_pass_std(x: np.ndarray, n: int) -> np.ndarray:
    """Sample std of each trailing window, each window on its own (NaN before the first full one)."""
    out = np.full(len(x), np.nan)
    out[n - 1:] = _windows(x, n).std(axis=1, ddof=1)
    return out


def _expected_new_indicators(one: pd.DataFrame) -> dict[str, np.ndarray]:
    """The documented formulas, written out again from TA-Lib and numpy (no pandas rolling)."""
    o, h, lo, c, v = (one[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
    k, d = talib.STOCH(h, lo, c, fastk_period=14, slowk_period=3, slowk_matype=0, slowd_period=3, slowd_matype=0)
    obv = talib.OBV(c, v)
    step = np.concatenate([[np.nan], np.diff(obv)])
    change = np.concatenate([np.full(24, np.nan), obv[24:] - obv[:-24]])
    tp_v = np.concatenate([np.full(23, np.nan), _windows((h + lo + c) / 3 * v, 24).sum(axis=1)])
    vol = np.concatenate([np.full(23, np.nan), _windows(v, 24).sum(axis=1)])
    step_std = np.concatenate([[np.nan], _two_pass_std(step[1:], 24)])
    with np.errstate(invalid="ignore", divide="ignore"):  # flat bars (high == low): compared separately
        shape = {"body_frac": (c - o) / (h - lo), "upper_wick_frac": (h - np.maximum(o, c)) / (h - lo),
                 "lower_wick_frac": (np.minimum(o, c) - lo) / (h - lo)}
    return {
        "adx_14": talib.ADX(h, lo, c, timeperiod=14),
        "stoch_k_14_3_3": k,
        "stoch_d_14_3_3": d,
        "obv_z_24": change / (math.sqrt(24) * step_std),
        "vwap_dist_24": c / (tp_v / vol) - 1,
        **shape,
        "range_log": np.log(h / lo),
    }


WITH_SHAPE = DEFAULT.model_copy(update={"candle_shape": True})


def test_new_candle_indicators_equal_talib_and_their_formulas(candles):
    feats = compute_features(candles, WITH_SHAPE)
    warmup = warmup_bars(WITH_SHAPE)
    for symbol, one in candles.groupby("symbol"):
        one = one.reset_index(drop=True)
        got = feats[feats["symbol"] == symbol].reset_index(drop=True)
        assert len(got) == len(one) - warmup
        ranged = (one["high"] > one["low"]).to_numpy()[warmup:]  # real flat bars: shape is 0 there, tested below
        for name, expected in _expected_new_indicators(one).items():
            exp, act = expected[warmup:], got[name].to_numpy()
            if name.endswith("_frac"):
                exp, act = exp[ranged], act[ranged]
            np.testing.assert_allclose(act, exp, rtol=1e-9, atol=1e-12, err_msg=f"{symbol} {name}")


def test_default_set_declares_the_new_columns_and_fits_the_serving_window():
    cols = feature_columns(DEFAULT)
    assert {"adx_14", "stoch_k_14_3_3", "stoch_d_14_3_3", "obv_z_24", "vwap_dist_24"} <= set(cols)
    assert not any(c.startswith(("htf", "funding", "basis", "btc_", "beta_", "corr_")) for c in cols)
    assert "body_frac" not in cols and {"body_frac", "range_log"} <= set(feature_columns(WITH_SHAPE))
    # ADX(14): look-back 27 + 18 memories of 13.49 bars = 270 (measured need: 252)
    assert warmup_bars(DEFAULT) == 270 < 300


def _frame(rows: list[tuple[float, float, float, float, float]], symbol: str = "BTC/USDT",
           start: str = "2024-01-01") -> pd.DataFrame:
    o, h, lo, c, v = (np.array(col, dtype=float) for col in zip(*rows))
    ts = pd.date_range(start, periods=len(rows), freq="h", tz="UTC").astype("datetime64[ms, UTC]")
    return pd.DataFrame({"symbol": symbol, "timestamp": ts, "open": o, "high": h, "low": lo, "close": c, "volume": v})


def _calm(n: int, volume: float = 5.0) -> list[tuple[float, float, float, float, float]]:
    return [(100.0 + i % 3, 102.0 + i % 3, 99.0 + i % 3, 101.0 + i % 3, volume + i % 2) for i in range(n)]


def test_candle_shape_by_hand():
    rows = _calm(8) + [(100, 110, 95, 105, 1), (105, 106, 99, 100, 1), (100, 100, 100, 100, 1)]
    feats = compute_features(_frame(rows), SMALL).tail(3).reset_index(drop=True)
    np.testing.assert_allclose(feats[["body_frac", "upper_wick_frac", "lower_wick_frac"]].to_numpy(),
                               [[5 / 15, 5 / 15, 5 / 15], [-5 / 7, 1 / 7, 1 / 7], [0.0, 0.0, 0.0]], atol=1e-15)
    assert feats["range_log"].tolist() == pytest.approx([math.log(110 / 95), math.log(106 / 99), 0.0], abs=1e-15)


def test_vwap_distance_by_hand_and_zero_when_nothing_traded():
    rows = _calm(8) + [(99, 102, 98, 100, 1), (101, 106, 100, 103, 3), (103, 104, 102, 103, 0),
                       (103, 105, 101, 102, 0)]
    feats = compute_features(_frame(rows), SMALL).tail(3).reset_index(drop=True)
    vwap = (100 * 1 + 103 * 3) / 4  # typical prices (102+98+100)/3 = 100 and (106+100+103)/3 = 103
    assert feats["vwap_dist_2"].iloc[0] == pytest.approx(103 / vwap - 1, rel=1e-12)
    # window (103 x 3, 103 x 0): the volume-weighted typical price is the 103 bar's
    assert feats["vwap_dist_2"].iloc[1] == pytest.approx(103 / 103 - 1, abs=1e-15)
    assert feats["vwap_dist_2"].iloc[2] == 0.0  # two bars with no volume: no VWAP, 0 by definition


# --- higher timeframe -----------------------------------------------------------------------

HTF_SMALL = SMALL.model_copy(update={"htf": [HtfFeatureParams(timeframe="4h", log_return=[1])]})


def _hourly_closes(hours: list[int]) -> pd.DataFrame:
    """1h candles at the given hours of 2024-01-01.., close = 100 + hour (bucket [4k, 4k+4) closes at 103 + 4k)."""
    ts = (pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(hours, unit="h")).astype("datetime64[ms, UTC]")
    c = 100.0 + np.array(hours, dtype=float)
    return pd.DataFrame({"symbol": "BTC/USDT", "timestamp": ts, "open": c - 0.5, "high": c + 1, "low": c - 1,
                         "close": c, "volume": 1.0 + np.array(hours) % 5})


def test_htf_row_sees_only_completed_higher_timeframe_bars_by_hand():
    hours = [h for h in range(48) if not 24 <= h < 28]  # bucket [24:00, 04:00 next day) is missing
    feats = compute_features(_hourly_closes(hours), HTF_SMALL).set_index("timestamp")["htf4h_logret_1"]
    at = lambda h: feats.loc[pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(hours=h)]  # noqa: E731
    # bucket k closes at 103 + 4k; its 4h log return is ln((103 + 4k) / (99 + 4k))
    assert at(14) == pytest.approx(math.log(111 / 107))  # 14:00 closes 15:00: [08, 12) is the last complete
    assert at(15) == pytest.approx(math.log(115 / 111))  # 15:00 closes 16:00: [12, 16) has just completed
    assert at(18) == pytest.approx(math.log(115 / 111))  # 18:00 (closing 19:00) does not see [16, 20) yet
    assert at(19) == pytest.approx(math.log(119 / 115))
    assert at(23) == pytest.approx(math.log(123 / 119))
    # 28:00 closes 29:00: the last complete bucket [24, 28) is missing, so [20, 24) is still the latest
    assert at(28) == pytest.approx(math.log(123 / 119))
    # 31:00 closes 32:00: [28, 32) completes; its predecessor in the HTF series is [20, 24)
    assert at(31) == pytest.approx(math.log(131 / 123))


def test_htf_indicators_equal_talib_on_pandas_resampled_bars(candles):
    block = HtfFeatureParams(timeframe="4h", rsi=[14], atr=[14], log_return=[1, 6])
    params = DEFAULT.model_copy(update={"htf": [block]})
    feats = compute_features(candles, params)
    for symbol, one in candles.groupby("symbol"):
        bars = one.set_index("timestamp").resample("4h").agg({"high": "max", "low": "min", "close": "last"}).dropna()
        c, h, lo = (bars[k].to_numpy() for k in ("close", "high", "low"))
        per_bucket = pd.DataFrame({
            "complete_ts": bars.index + pd.Timedelta(hours=4),
            "htf4h_rsi_14": talib.RSI(c, timeperiod=14),
            "htf4h_atr_14": talib.ATR(h, lo, c, timeperiod=14) / c,
            "htf4h_logret_1": np.log(c / np.roll(c, 1)),
            "htf4h_logret_6": np.log(c / np.roll(c, 6)),
        })
        got = feats[feats["symbol"] == symbol].reset_index(drop=True)
        close_ts = (got["timestamp"] + pd.Timedelta(hours=1)).rename("complete_ts")
        expected = pd.merge_asof(close_ts.to_frame(), per_bucket, on="complete_ts")
        for name in ("htf4h_rsi_14", "htf4h_atr_14", "htf4h_logret_1", "htf4h_logret_6"):
            np.testing.assert_allclose(got[name].to_numpy(), expected[name].to_numpy(), rtol=1e-9, atol=1e-12,
                                       err_msg=f"{symbol} {name}")
    assert warmup_bars(params) == (14 + math.ceil(18 / math.log(14 / 13)) + 1) * 4


def test_htf_block_refuses_candles_of_another_bar_size():
    four_hourly = generate_market(["BTC/USDT"], "4h", SyntheticParams(bars=400), seed=2)
    with pytest.raises(DataError, match="base_timeframe 1h"):
        compute_features(four_hourly, HTF_SMALL)
    with pytest.raises(ConfigError, match="whole multiple"):
        feature_columns(SMALL.model_copy(update={"htf": [HtfFeatureParams(base_timeframe="4h", timeframe="1h",
                                                                          rsi=[14])]}))


# --- funding, basis, cross-asset -------------------------------------------------------------

def _ts(hour: float) -> pd.Timestamp:
    return pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(hours=hour)


def test_funding_seen_from_the_bar_that_closes_at_its_settlement():
    perp = _frame(_calm(30), symbol="BTC/USDT:USDT")
    spot = _frame(_calm(30), symbol="ETH/USDT")
    funding = pd.DataFrame({"symbol": "BTC/USDT:USDT", "timestamp": [_ts(0), _ts(8), _ts(16), _ts(24)],
                            "funding_rate": [1e-4, 3e-4, -2e-4, 5e-4]})
    funding["timestamp"] = funding["timestamp"].astype("datetime64[ms, UTC]")
    params = SMALL.model_copy(update={"funding_last": True, "funding_mean": [2]})
    feats = compute_features(pd.concat([perp, spot]), params, funding=funding)
    got = feats[feats["symbol"] == "BTC/USDT:USDT"].set_index("timestamp")
    # funding_mean_2 needs two settled events: the first row is the bar closing at 08:00 (opening 07:00)
    assert got.index[0] == _ts(7)
    assert got.loc[_ts(7), "funding_last"] == 3e-4
    assert got.loc[_ts(7), "funding_mean_2"] == pytest.approx(2e-4)
    assert got.loc[_ts(14), "funding_last"] == 3e-4  # 14:00 closes 15:00: the 16:00 event is not settled
    assert got.loc[_ts(15), "funding_last"] == -2e-4
    assert got.loc[_ts(15), "funding_mean_2"] == pytest.approx(0.5e-4)
    assert got.loc[_ts(29), "funding_last"] == 5e-4
    # a spot symbol pays no funding
    eth = feats[feats["symbol"] == "ETH/USDT"]
    assert len(eth) == 30 - warmup_bars(params) and (eth[["funding_last", "funding_mean_2"]] == 0.0).all().all()


def test_basis_is_log_perp_over_spot_with_the_spot_gap_carried():
    perp = _frame([(100, 101, 99, 100 + i, 1) for i in range(12)], symbol="BTC/USDT:USDT")
    spot = _frame([(100, 101, 99, 99 + i, 1) for i in range(12)], symbol="BTC/USDT").drop(index=9)
    feats = compute_features(perp, SMALL.model_copy(update={"basis": True}), reference=spot)
    got = feats.set_index("timestamp")["basis_log"]
    assert got.loc[_ts(8)] == pytest.approx(math.log(108 / 107))
    assert got.loc[_ts(9)] == pytest.approx(math.log(109 / 107))  # spot bar 09:00 missing: 08:00 close carried
    assert got.loc[_ts(10)] == pytest.approx(math.log(110 / 109))


def _cross_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(5)
    btc_close = 30_000 * np.exp(np.cumsum(rng.normal(0, 0.01, 40)))
    btc = _frame([(c, c * 1.01, c * 0.99, c, 1) for c in btc_close], symbol="BTC/USDT")
    squared = _frame([(c, c * 1.01, c * 0.99, c, 1) for c in btc_close ** 2 / 1e6], symbol="SQR/USDT")
    inverse = _frame([(c, c * 1.01, c * 0.99, c, 1) for c in 1e6 / btc_close], symbol="INV/USDT")
    noisy_close = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, 40)))
    noisy = _frame([(c, c * 1.01, c * 0.99, c, 1) for c in noisy_close], symbol="NOI/USDT")
    return pd.concat([squared, inverse, noisy]), btc


def test_beta_and_correlation_to_btc_by_hand():
    candles, btc = _cross_frames()
    feats = compute_features(candles, SMALL.model_copy(update={"cross": [5]}), reference=btc)
    sqr = feats[feats["symbol"] == "SQR/USDT"]
    inv = feats[feats["symbol"] == "INV/USDT"]
    # log returns of btc^2 are exactly twice btc's; of 1/btc exactly minus btc's
    np.testing.assert_allclose(sqr["beta_btc_5"], 2.0, rtol=1e-9)
    np.testing.assert_allclose(sqr["corr_btc_5"], 1.0, rtol=1e-9)
    np.testing.assert_allclose(inv["beta_btc_5"], -1.0, rtol=1e-9)
    np.testing.assert_allclose(inv["corr_btc_5"], -1.0, rtol=1e-9)
    # an unrelated series: numpy's covariance of the last 5 one-bar log returns
    noisy = feats[feats["symbol"] == "NOI/USDT"].iloc[-1]
    r = np.diff(np.log(candles.loc[candles["symbol"] == "NOI/USDT", "close"].to_numpy()))[-5:]
    b = np.diff(np.log(btc["close"].to_numpy()))[-5:]
    cov = np.cov(r, b, ddof=1)
    assert noisy["beta_btc_5"] == pytest.approx(cov[0, 1] / cov[1, 1], rel=1e-9)
    assert noisy["corr_btc_5"] == pytest.approx(np.corrcoef(r, b)[0, 1], rel=1e-9)
    assert noisy["btc_logret_5"] == pytest.approx(math.log(btc["close"].iloc[-1] / btc["close"].iloc[-6]), rel=1e-12)


def test_rows_before_the_reference_starts_are_dropped_and_a_flat_reference_gives_zero_beta():
    candles, btc = _cross_frames()
    late_btc = btc.iloc[10:].copy()
    late_btc.loc[late_btc.index[-8:], "close"] = late_btc["close"].iloc[-9]  # BTC flat for the last 8 bars
    feats = compute_features(candles, SMALL.model_copy(update={"cross": [5]}), reference=late_btc)
    sqr = feats[feats["symbol"] == "SQR/USDT"]
    # the first row needs 5 BTC returns: 6 aligned BTC closes from 10:00 on
    assert sqr["timestamp"].iloc[0] == _ts(15)
    assert (sqr[["beta_btc_5", "corr_btc_5", "btc_logret_5"]].iloc[-1] == 0.0).all()


@pytest.mark.parametrize(("update", "kwargs", "message"), [
    ({"funding_last": True}, {}, "no funding frame"),
    ({"funding_mean": [3]}, {"funding": pd.DataFrame({"symbol": ["ETH/USDT:USDT"], "funding_rate": [1e-4],
                                                     "timestamp": [pd.Timestamp("2024-01-01", tz="UTC")]})},
     "no funding events for BTC/USDT:USDT"),
    ({"basis": True}, {}, "no reference candles"),
    ({"basis": True}, {"reference": "ETH"}, "no spot candles for BTC/USDT"),
    ({"cross": [5]}, {"reference": "ETH"}, "no BTC/USDT candles in reference"),
])
def test_enabled_multi_input_family_without_its_input_is_a_data_error(update, kwargs, message):
    perp = _frame(_calm(30), symbol="BTC/USDT:USDT")
    if kwargs.get("reference") == "ETH":
        kwargs = {"reference": _frame(_calm(30), symbol="ETH/USDT")}
    with pytest.raises(DataError, match=message):
        compute_features(perp, SMALL.model_copy(update=update), **kwargs)


def test_multi_input_columns_follow_the_naming_convention():
    params = DEFAULT.model_copy(update={"funding_last": True, "funding_mean": [3, 21], "basis": True, "cross": [24]})
    assert feature_columns(params)[-7:] == ["funding_last", "funding_mean_3", "funding_mean_21", "basis_log",
                                            "btc_logret_24", "beta_btc_24", "corr_btc_24"]
    eth = params.model_copy(update={"cross_reference": "ETH/USDT"})
    assert feature_columns(eth)[-3:] == ["eth_logret_24", "beta_eth_24", "corr_eth_24"]
