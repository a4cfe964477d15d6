"""Point-in-time checks: they pass on compute_features and catch what they exist to catch."""

from __future__ import annotations

import functools
import re

import pandas as pd

from features.compute import compute_features, warmup_bars
from features.pit import check_lookahead, check_recursive
from qt.config import FeatureParams

DEFAULT = FeatureParams()
COMPUTE = functools.partial(compute_features, params=DEFAULT)


def _peeking_features(candles: pd.DataFrame) -> pd.DataFrame:
    """compute_features plus one leaking column: next bar's close over this bar's close."""
    feats = compute_features(candles, DEFAULT)
    peek = candles.groupby("symbol")["close"].shift(-1) / candles["close"]
    keyed = candles[["symbol", "timestamp"]].assign(next_close_ratio=peek.to_numpy())
    return feats.merge(keyed, on=["symbol", "timestamp"], how="left")


def _centred_sma(candles: pd.DataFrame) -> pd.DataFrame:
    """A subtler leak: a 5-bar moving average centred on t (uses t+1 and t+2)."""
    feats = compute_features(candles, DEFAULT)
    centred = candles.groupby("symbol")["close"].transform(lambda s: s.rolling(5, center=True).mean())
    keyed = candles[["symbol", "timestamp"]].assign(sma_centred_5=(centred / candles["close"]).to_numpy())
    return feats.merge(keyed, on=["symbol", "timestamp"], how="left")


def test_lookahead_check_passes_on_compute_features(synthetic):
    assert check_lookahead(synthetic, COMPUTE, cuts=10, seed=0) == []


def test_lookahead_check_passes_on_real_candles(real_btc):
    assert check_lookahead(real_btc.iloc[-8000:], COMPUTE, cuts=8, seed=1) == []


def test_lookahead_check_catches_a_feature_reading_the_next_close(synthetic):
    violations = check_lookahead(synthetic, _peeking_features, cuts=5, seed=0)
    assert violations, "a feature using close[t+1] must be reported"
    assert all(v.startswith("next_close_ratio of ") for v in violations)
    assert "lookahead" in violations[0] and "when candles end at" in violations[0]
    # the row it names is exactly the cut bar: the only row whose next close was removed
    for v in violations:
        named = re.search(r" at (\S+ \S+): ", v).group(1)
        cut = re.search(r"when candles end at (\S+ \S+) ", v).group(1)
        assert named == cut, v


def test_lookahead_check_catches_a_centred_window(synthetic):
    violations = check_lookahead(synthetic, _centred_sma, cuts=5, seed=2)
    assert violations and all(v.startswith("sma_centred_5 of ") for v in violations)


def test_recursive_check_passes_with_the_declared_warmup(synthetic):
    assert check_recursive(synthetic, COMPUTE, DEFAULT) == []


def test_declared_warmup_passes_recursive_check_on_every_real_series(real_all):
    """The measurement behind the default warm-up: all 8 real 1h spot series (~470k bars),
    four start offsets (the full sweep of ~5000 offsets is recorded in warmup_bars' docstring)."""
    offsets = (1, 37, 151, 307)
    assert check_recursive(real_all, COMPUTE, DEFAULT, start_offsets_bars=offsets) == []


def test_recursive_check_catches_a_too_short_warmup(synthetic):
    short = FeatureParams(warmup_memories=3.0)
    assert warmup_bars(short) < 100 < warmup_bars(DEFAULT)
    violations = check_recursive(synthetic, functools.partial(compute_features, params=short), short)
    named = {v.split(" of ")[0] for v in violations}
    # the recursive indicators are caught; the pure windows are not blamed
    assert {"rsi_14", "ema_26", "atr_14", "macd_hist_12_26_9"} <= named
    assert not named & {"sma_20", "logret_24", "rvol_24", "volz_24", "bb_width_20_2"}
    assert "warm-up of" in violations[0] and "too short" in violations[0]
