"""Each served signal carries ``atr``: the feature ``atr_{risk.atr_period}`` of its bar (issue 16),
which the executor's ATR-scaled stops and take-profits read - whether the model reads that column
or not. Checked against ``features.compute`` itself on the lake's candles. No server needed: the
engine is what the service calls per request (the HTTP answer is checked in test_serving_service)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.compute import compute_features, feature_columns, warmup_bars
from qt.config import FeatureParams, ServingParams, SignalParams, SyntheticParams
from data.lake import write_candles
from data.synthetic import generate_market
from serving.champion import LoadedModel
from serving.engine import SignalEngine

SYMBOLS = ["BTC/USDT", "ETH/USDT"]
CANDLES = generate_market(SYMBOLS, "1h", SyntheticParams(bars=1400), seed=4)
AS_OF = CANDLES["timestamp"].max()
SERVING = ServingParams(history_bars=300, max_staleness_bars=2)


class _Half:
    """pyfunc stand-in: prob_up 0.5 for every row."""

    def predict(self, frame):
        return pd.DataFrame({"prob_up": np.full(len(frame), 0.5), "expected_return": np.zeros(len(frame))})


def _model(fp: FeatureParams) -> LoadedModel:
    return LoadedModel(name="m", version="1", alias="champion", pyfunc=_Half(), metadata={}, feature_params=fp,
                       feature_columns=tuple(feature_columns(fp)), timeframe="1h", sequence_length=0)


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("lake")
    for sym, part in CANDLES.groupby("symbol"):
        write_candles(root, str(sym), "1h", part)
    return root


def _atr_of_bar(period: int, bars: int | None = None) -> dict[str, float]:
    """``atr_{period}`` of the bar AS_OF per symbol, from ``compute_features`` on the last ``bars``
    candles (all of them when None)."""
    out = {}
    for sym in SYMBOLS:
        c = CANDLES[CANDLES["symbol"] == sym]
        c = c if bars is None else c.tail(bars)
        feats = compute_features(c, FeatureParams(atr=[period]))
        out[sym] = float(feats.loc[feats["timestamp"] == AS_OF, f"atr_{period}"].iat[0])
    return out


@pytest.mark.parametrize("fp", [FeatureParams(), FeatureParams(atr=[]), FeatureParams(atr=[7])],
                         ids=["model_reads_atr_14", "model_reads_no_atr", "model_reads_atr_7"])
def test_signal_atr_is_the_atr_14_feature_of_its_bar(lake, fp):
    engine = SignalEngine(lake, SERVING, SignalParams(), atr_period=14)
    signals, _ = engine.signals(_model(fp), SYMBOLS, AS_OF.isoformat())
    window = max(SERVING.history_bars, warmup_bars(fp) + 1)
    exact = _atr_of_bar(14, window)  # the service's window of candles: the same numbers bit for bit
    everything = _atr_of_bar(14)  # the whole history: within the warm-up's tolerance
    for s in signals:
        assert s["feature_timestamp"] == AS_OF.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert s["atr"] == exact[s["symbol"]]
        assert s["atr"] == pytest.approx(everything[s["symbol"]], rel=1e-6)
    # a second request is answered from the row cache, ATR included
    again, _ = engine.signals(_model(fp), SYMBOLS, AS_OF.isoformat(), compute=False)
    assert [s["atr"] for s in again] == [s["atr"] for s in signals]


def test_an_atr_period_with_a_longer_warm_up_reads_more_candles_and_still_matches(lake):
    # ATR(50) needs ~940 bars of warm-up, more than the model's 270: computed on its own, on a longer window
    engine = SignalEngine(lake, SERVING, SignalParams(), atr_period=50)
    signals, _ = engine.signals(_model(FeatureParams()), SYMBOLS, AS_OF.isoformat())
    everything = _atr_of_bar(50)
    for s in signals:
        assert s["atr"] is not None and s["atr"] == pytest.approx(everything[s["symbol"]], rel=1e-6)


def test_without_an_atr_period_signals_have_no_atr_key(lake):
    signals, _ = SignalEngine(lake, SERVING, SignalParams(), atr_period=None).signals(
        _model(FeatureParams()), SYMBOLS, AS_OF.isoformat())
    assert all("atr" not in s for s in signals)
