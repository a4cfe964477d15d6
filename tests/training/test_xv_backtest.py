"""The backtest path rebuilds a cross-venue model's input from the same Bybit series the service
reads: ``model_predictions`` (``qt backtest``, the champion re-evaluation, the parity check) feeds
the model exactly ``compute_features(..., other_venue=)``, and refuses without Bybit's series."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data.lake import write_candles, write_funding
from data.synthetic import generate_market
from features.compute import compute_features
from features.cross_venue import OtherVenue
from features.materialise import read_other_venue
from qt.config import FeatureParams, Params, SyntheticParams
from qt.errors import DataError
from training.backtest_model import model_predictions
from tests.recording_model import InputRecorder

PERP = "BTC/USDT:USDT"
XV = FeatureParams(xv=True, xv_z=[24])
CANDLES = generate_market([PERP], "1h", SyntheticParams(bars=700), 3)
BYBIT = CANDLES.assign(close=CANDLES["close"] * np.exp(np.random.default_rng(1).normal(0, 3e-4, len(CANDLES))))
_EVENTS = pd.date_range(CANDLES["timestamp"].min(), periods=700 // 8, freq="8h").astype("datetime64[ms, UTC]")
FUNDING = pd.DataFrame({"symbol": PERP, "timestamp": _EVENTS, "funding_rate": np.linspace(-1e-4, 3e-4, len(_EVENTS))})


def test_model_predictions_feed_the_xv_columns_of_the_bybit_series_read_from_the_lake(tmp_path):
    write_candles(tmp_path, PERP, "1h", BYBIT.drop(columns="symbol"), venue="bybit")
    write_funding(tmp_path, PERP, FUNDING.drop(columns="symbol").assign(funding_rate=2e-4), venue="bybit")
    other = read_other_venue(tmp_path, [PERP], "1h", Params(features=XV.model_dump()))
    model = InputRecorder(0.6, XV)
    preds = model_predictions(model, CANDLES, funding=FUNDING, other_venue=other)
    want = compute_features(CANDLES, XV, funding=FUNDING, other_venue=OtherVenue(BYBIT, other.funding))
    assert len(preds) == len(want)
    fed = pd.concat(model.inputs, ignore_index=True)
    for col in ("xv_basis_log", "xv_basis_z_24", "xv_funding_spread"):
        np.testing.assert_array_equal(fed[col].to_numpy(), want[col].to_numpy())


def test_model_predictions_without_bybit_series_is_refused():
    with pytest.raises(DataError, match="no Bybit series"):
        model_predictions(InputRecorder(0.6, XV), CANDLES, funding=FUNDING)
