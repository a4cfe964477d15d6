"""The alt series through the pipeline's stages: collect stores them beside the candles, validate
runs their suites, features checks them point in time and materialises the alt columns; a corrupt
alt file is quarantined by validate and the features stage then refuses the family that reads it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data.alt_lake import alt_dir
from data.sources import lake_root, with_collected_universe
from flows import stages as pipeline
from qt.config import load_params
from qt.errors import DataError
from qt.paths import StatePaths


def _alt_source(root):
    (root / "alt").mkdir(parents=True)
    days = pd.date_range("2022-12-01", "2023-02-15", freq="D", tz="UTC")  # covers the synthetic market
    values = np.random.default_rng(1).integers(5, 95, len(days))
    pd.DataFrame({"timestamp": days, "value": values, "classification": "x"}).to_parquet(
        root / "alt" / "fear_greed.parquet")
    return root


def test_alt_series_go_through_collect_validate_and_features(tmp_path):
    paths = StatePaths(tmp_path / "home").ensure()
    params = load_params(None, {"data": {"source": "synthetic:3", "symbols": ["BTC/USDT", "ETH/USDT"]},
                                "synthetic": {"bars": 800},
                                "alt": {"series": ["fear_greed"], "source": f"parquet:{_alt_source(tmp_path / 'src')}",
                                        "max_staleness_days": 30.0},
                                "features": {"fng": True, "fng_z": [7], "alt_scope": "btc"}})
    pipeline.collect(params, paths)
    assert pipeline.validate(params, paths)["validation"]["quarantined_alt"] == []
    out = pipeline.features(params, paths)["features"]
    assert {"fng_value", "fng_z_7"} <= set(out["columns"])
    from features.store import read_features

    stored = read_features(paths.features)
    assert (stored.loc[stored["symbol"] == "ETH/USDT", "fng_value"] == 0.0).all()  # scope btc
    assert stored.loc[stored["symbol"] == "BTC/USDT", "fng_value"].between(5, 95).all()

    root = lake_root(with_collected_universe(params, paths), paths)
    (alt_dir(root, "fear_greed") / "2023.parquet").write_bytes(b"corrupt")
    assert pipeline.validate(params, paths)["validation"]["quarantined_alt"] == ["alt:fear_greed"]
    with pytest.raises(DataError, match="fear_greed series, which was quarantined"):
        pipeline.features(params, paths)
