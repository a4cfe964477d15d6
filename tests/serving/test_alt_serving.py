"""The service joins the alt series from the same lake as materialisation: a served row equals the
stored row of the same bar, a new day of alt data changes the next answer (the row cache keys on
the alt partitions), and a lake without the series is refused with 422 saying what to collect."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data.alt_lake import with_availability, write_alt
from data.lake import write_candles
from data.synthetic import generate_market
from features.materialise import materialise
from features.store import read_features
from qt.config import FeatureParams, Params, ServingParams, SignalParams, SyntheticParams
from serving.alt_inputs import AltCache
from serving.engine import SignalEngine
from serving.inference import RequestRejected
from tests.recording_model import recording_model

ALT = FeatureParams(fng=True, fng_z=[5], onchain=True)
CANDLES = generate_market(["BTC/USDT"], "1h", SyntheticParams(bars=1200, start="2023-12-20"), seed=5)
DAYS = pd.date_range("2023-12-01", "2024-02-05", freq="D", tz="UTC")
_RNG = np.random.default_rng(2)
FNG = with_availability(pd.DataFrame({"timestamp": DAYS, "value": _RNG.integers(5, 95, len(DAYS)).astype(float),
                                      "classification": "x"}), "fear_greed")
ONCHAIN = with_availability(pd.DataFrame({"timestamp": DAYS, "mvrv": 1.5 + _RNG.random(len(DAYS)), "nupl": 0.3,
                                          "realized_price": 30_000.0, "etf_flow_usd": np.nan}), "onchain_btc")
LAST = CANDLES["timestamp"].max()  # 2024-02-07 23:00


def _lake(root, fng=FNG):
    write_candles(root, "BTC/USDT", "1h", CANDLES.drop(columns="symbol"))
    write_alt(root, "fear_greed", fng)
    write_alt(root, "onchain_btc", ONCHAIN)
    return root


def test_the_served_row_equals_the_stored_row_and_new_alt_data_changes_it(tmp_path):
    lake = _lake(tmp_path, FNG.iloc[:-1])  # the last day (02-05, available 02-05 00:00) not collected yet
    materialise(lake, ["BTC/USDT"], "1h", Params(features=ALT.model_dump()), tmp_path / "store")
    stored = read_features(tmp_path / "store").set_index(["symbol", "timestamp"]).loc[("BTC/USDT", LAST)]
    engine = SignalEngine(lake, ServingParams(history_bars=350, max_staleness_bars=2), SignalParams())
    model = recording_model(ALT)
    when = LAST.strftime("%Y-%m-%dT%H:%M:%SZ")
    engine.signals(model, ["BTC/USDT"], when)
    served = model.pyfunc.inputs[-1].iloc[0]
    for col in ("fng_value", "fng_z_5", "onchain_mvrv", "onchain_realised_dist"):
        assert served[col] == stored[col], col
    assert served["fng_value"] == FNG["value"].iat[-2]
    write_alt(lake, "fear_greed", FNG)
    engine.signals(model, ["BTC/USDT"], when)
    assert model.pyfunc.inputs[-1]["fng_value"].iat[0] == FNG["value"].iat[-1]


def test_a_lake_without_the_series_is_refused_with_422(tmp_path):
    write_candles(tmp_path, "BTC/USDT", "1h", CANDLES.drop(columns="symbol"))
    with pytest.raises(RequestRejected) as err:
        AltCache(tmp_path).select(ALT)
    assert err.value.status == 422 and "alt.series" in err.value.message
    assert AltCache(tmp_path).select(FeatureParams()) is None
