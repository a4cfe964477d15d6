"""An ablation of an alt family computes its "with" arm from the lake's alt series, exactly as the
features stage would (the first real-data ``qt ablate --family fng`` stopped on a missing input)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from data.alt_lake import with_availability, write_alt
from data.lake import write_candles
from data.synthetic import generate_market
from features.alt_join import AltInputs
from features.compute import compute_features
from features.families import family_arms
from flows.ablate import with_family_series
from qt.config import Params, SyntheticParams
from qt.paths import StatePaths
from training.ablate import load_ablation_data

CANDLES = generate_market(["BTC/USDT"], "1h", SyntheticParams(bars=1500, start="2023-12-01"), seed=4)
DAYS = pd.date_range("2023-11-01", "2024-02-05", freq="D", tz="UTC")
FNG = with_availability(pd.DataFrame({"timestamp": DAYS, "value": np.arange(len(DAYS), dtype=float) % 90 + 5,
                                      "classification": "x"}), "fear_greed")


def test_the_with_arm_of_fng_reads_the_lakes_fear_and_greed_and_the_ablation_collects_it(tmp_path):
    lake = tmp_path / "lake"
    for sym, part in CANDLES.groupby("symbol"):
        write_candles(lake, str(sym), "1h", part.drop(columns="symbol"))
    write_alt(lake, "fear_greed", FNG)
    base = Params(data={"symbols": ["BTC/USDT"]})
    _, with_fng = family_arms(base.features, "fng")
    arm = base.model_copy(update={"features": with_fng})
    data = load_ablation_data(arm, StatePaths(tmp_path), lake)
    expected = compute_features(CANDLES, with_fng, alt=AltInputs(fear_greed=FNG))
    got = data.features.set_index("timestamp")["fng_value"]
    want = expected.set_index("timestamp")["fng_value"].reindex(got.index)
    np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())
    assert with_family_series(base, "fng").alt.series == ["fear_greed"]
    assert with_family_series(base, "candle_shape").alt.series == []
