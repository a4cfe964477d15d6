"""The backtest path rebuilds an alt model's input from the alt series the service reads:
``model_feature_inputs`` (champion re-evaluation, drift, parity) reads them from the run's lake and
``model_predictions`` feeds the model exactly ``compute_features(..., alt=)``; without them it refuses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data.alt_lake import with_availability, write_alt
from data.sources import lake_root
from data.synthetic import generate_market
from features.alt_join import AltInputs
from features.compute import compute_features
from qt.config import FeatureParams, Params, SyntheticParams
from qt.errors import DataError
from qt.paths import StatePaths
from training.backtest_model import model_predictions
from training.stages import model_feature_inputs
from tests.recording_model import InputRecorder

ALT = FeatureParams(fng=True, fng_change=[3])
CANDLES = generate_market(["BTC/USDT"], "1h", SyntheticParams(bars=700), 3)
DAYS = pd.date_range("2022-12-20", "2023-02-10", freq="D", tz="UTC")
FNG = with_availability(pd.DataFrame({"timestamp": DAYS, "value": np.arange(len(DAYS), dtype=float) % 90,
                                      "classification": "x"}), "fear_greed")


def test_model_predictions_feed_the_alt_columns_read_from_the_run_lake(tmp_path):
    (tmp_path / "src" / "ohlcv").mkdir(parents=True)
    params = Params(data={"source": f"parquet:{tmp_path / 'src'}", "symbols": ["BTC/USDT"]})
    paths = StatePaths(tmp_path / "home").ensure()
    write_alt(lake_root(params, paths), "fear_greed", FNG)
    inputs = model_feature_inputs(params, paths, ALT)
    assert model_feature_inputs(params, paths, FeatureParams()) == {}
    model = InputRecorder(0.6, ALT)
    preds = model_predictions(model, CANDLES, **inputs)
    want = compute_features(CANDLES, ALT, alt=AltInputs(fear_greed=FNG))
    assert len(preds) == len(want)
    fed = pd.concat(model.inputs, ignore_index=True)
    for col in ("fng_value", "fng_change_3"):
        np.testing.assert_array_equal(fed[col].to_numpy(), want[col].to_numpy())


def test_model_predictions_without_the_alt_series_is_refused():
    with pytest.raises(DataError, match="fear_greed"):
        model_predictions(InputRecorder(0.6, ALT), CANDLES)
