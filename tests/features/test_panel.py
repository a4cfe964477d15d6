"""``features.panel.last_rows`` - all symbols' windows in one panel - gives every symbol exactly
the rows ``compute_features`` gives that symbol's window alone (bit for bit), for random windows
cut out of random markets, and refuses (None) what it cannot answer so."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data.synthetic import generate_market
from features.compute import compute_features, feature_columns, warmup_bars
from features.panel import OHLCV, last_rows, supported
from qt.config import FeatureParams, HtfFeatureParams, SyntheticParams

PARAM_SETS = {
    "default": FeatureParams(),
    "shape_and_more_periods": FeatureParams(rsi=[7, 14], ema=[5, 50], sma=[10, 30], atr=[7, 14], log_return=[1, 2, 12],
                                            realised_vol=[6, 24], volume_z=[12], adx=[10], obv_z=[6, 24],
                                            vwap_dist=[1, 24], stoch=(9, 2, 4), macd=(5, 13, 4), bbands=(10, 1.5),
                                            candle_shape=True, warmup_memories=6.0),
}
MARKET_BARS = 900


@functools.lru_cache(maxsize=4)
def _market(seed: int) -> dict[str, pd.DataFrame]:
    candles = generate_market([f"P{i}/USDT" for i in range(4)], "1h", SyntheticParams(bars=MARKET_BARS), seed)
    return {str(sym): part.reset_index(drop=True) for sym, part in candles.groupby("symbol")}


def _panel(windows: list[pd.DataFrame]) -> np.ndarray:
    return np.stack([np.stack([w[c].to_numpy(dtype=np.float64) for w in windows]) for c in OHLCV])


def _alone(window: pd.DataFrame, params: FeatureParams, rows: int) -> np.ndarray:
    return compute_features(window, params)[feature_columns(params)].to_numpy()[-rows:]


windows_strategy = st.fixed_dictionaries({
    "seed": st.integers(0, 3),
    "params": st.sampled_from(sorted(PARAM_SETS)),
    "symbols": st.integers(1, 4),
    "extra_bars": st.integers(1, 160),  # bars past the warm-up
    "cuts": st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4),  # where each window ends
    "rows": st.floats(0.0, 1.0),
    "quiet": st.one_of(st.none(), st.tuples(st.integers(0, 3), st.floats(0.0, 1.0), st.sampled_from([0.0, 7.5]))),
})


def _check(case: dict) -> None:
    params = PARAM_SETS[case["params"]]
    bars = warmup_bars(params) + case["extra_bars"]
    market = _market(case["seed"])
    windows = []
    for cut, sym in zip(case["cuts"], list(market)[:case["symbols"]]):
        end = bars + int(cut * (MARKET_BARS - bars))  # a random cut point per symbol
        windows.append(market[sym].iloc[end - bars:end].reset_index(drop=True))
    if case["quiet"] is not None:  # a stretch of constant volume (0: nothing traded) in one window
        which, where, volume = case["quiet"]
        w = windows[which % len(windows)]
        at = int(where * (bars - 30))
        w.loc[at:at + 29, "volume"] = volume
    rows = 1 + int(case["rows"] * (case["extra_bars"] - 1))
    got = last_rows(_panel(windows), params, rows)
    assert got is not None and got.shape == (len(windows), rows, len(feature_columns(params)))
    for i, window in enumerate(windows):
        np.testing.assert_array_equal(got[i], _alone(window, params, rows))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=windows_strategy)
def test_a_panel_row_equals_compute_features_on_that_window_alone(case):
    _check(case)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=windows_strategy)
def test_a_panel_row_equals_compute_features_on_that_window_alone_many_cuts(case):
    _check(case)


def test_what_the_panel_cannot_answer_exactly_is_refused():
    params = FeatureParams()
    window = _market(0)["P0/USDT"].iloc[:warmup_bars(params) + 10]
    good = _panel([window])
    assert last_rows(good, params, 10) is not None
    assert last_rows(good, params, 11) is None  # the first feature row is bar warmup_bars
    for column, value in (("close", np.nan), ("low", 0.0), ("volume", -1.0), ("high", np.inf)):
        bad = good.copy()
        bad[OHLCV.index(column), 0, 5] = value
        assert last_rows(bad, params, 1) is None, column  # compute_features refuses such candles
    htf = FeatureParams(htf=[HtfFeatureParams(timeframe="4h", rsi=[14], atr=[14], log_return=[1])])
    multi = FeatureParams(funding_last=True)
    assert not supported(htf) and not supported(multi) and supported(params)
    assert last_rows(good, htf, 1) is None and last_rows(good, multi, 1) is None
