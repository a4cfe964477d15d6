"""materialise with the alt families: the series come from the lake's alt/, the stored columns equal
``compute_features`` with them, a new day of alt data alone recomputes the features, and a lake
without the series is one DataError saying to collect it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data.alt_lake import with_availability, write_alt
from data.lake import write_candles
from data.synthetic import generate_market
from features.alt_join import AltInputs
from features.compute import compute_features
from features.materialise import materialise, read_alt_inputs
from features.store import read_features
from qt.config import Params, SyntheticParams
from qt.errors import DataError

PARAMS = Params(features={"fng": True, "fng_z": [5], "onchain": True})
CANDLES = generate_market(["BTC/USDT", "ETH/USDT"], "1h", SyntheticParams(bars=1500, start="2023-12-01"), seed=4)
DAYS = pd.date_range("2023-11-20", "2024-02-05", freq="D", tz="UTC")
_RNG = np.random.default_rng(8)
FNG = with_availability(pd.DataFrame({"timestamp": DAYS, "value": _RNG.integers(5, 95, len(DAYS)).astype(float),
                                      "classification": "x"}), "fear_greed")
ONCHAIN = with_availability(pd.DataFrame({"timestamp": DAYS, "mvrv": 1.5 + _RNG.random(len(DAYS)), "nupl": 0.3,
                                          "realized_price": 30_000.0, "etf_flow_usd": np.nan}), "onchain_btc")


def _lake(root, fng=FNG):
    for sym, part in CANDLES.groupby("symbol"):
        write_candles(root, str(sym), "1h", part.drop(columns="symbol"))
    write_alt(root, "fear_greed", fng)
    write_alt(root, "onchain_btc", ONCHAIN)
    return root


def test_stored_alt_columns_equal_compute_features_with_the_lake_series(tmp_path):
    lake = _lake(tmp_path / "lake")
    materialise(lake, ["BTC/USDT", "ETH/USDT"], "1h", PARAMS, tmp_path / "store")
    stored = read_features(tmp_path / "store")
    expected = compute_features(CANDLES, PARAMS.features, alt=AltInputs(fear_greed=FNG, onchain_btc=ONCHAIN))
    pd.testing.assert_frame_equal(stored[["symbol", "timestamp"]], expected[["symbol", "timestamp"]])
    for col in ("fng_value", "fng_z_5", "onchain_mvrv", "onchain_realised_dist"):
        np.testing.assert_array_equal(stored[col].to_numpy(), expected[col].to_numpy())


def test_a_new_day_of_alt_data_alone_recomputes_the_features(tmp_path):
    lake = _lake(tmp_path / "lake", FNG.iloc[:-3])
    first = materialise(lake, ["BTC/USDT"], "1h", PARAMS, tmp_path / "store")
    again = materialise(lake, ["BTC/USDT"], "1h", PARAMS, tmp_path / "store")
    assert first["rows_computed"] > 0 and again["rows_computed"] == 0
    write_alt(lake, "fear_greed", FNG)
    after = materialise(lake, ["BTC/USDT"], "1h", PARAMS, tmp_path / "store")
    assert after["rows_computed"] > 0
    stored = read_features(tmp_path / "store")
    expected = compute_features(CANDLES[CANDLES["symbol"] == "BTC/USDT"], PARAMS.features,
                                alt=AltInputs(fear_greed=FNG, onchain_btc=ONCHAIN))
    np.testing.assert_array_equal(stored["fng_value"].to_numpy(), expected["fng_value"].to_numpy())


def test_a_lake_without_the_series_says_what_to_collect(tmp_path):
    for sym, part in CANDLES.groupby("symbol"):
        write_candles(tmp_path, str(sym), "1h", part.drop(columns="symbol"))
    with pytest.raises(DataError, match="fear_greed.*alt.series"):
        materialise(tmp_path, ["BTC/USDT"], "1h", PARAMS, tmp_path / "store")
    assert read_alt_inputs(tmp_path, Params().features) is None
