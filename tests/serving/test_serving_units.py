"""Fast checks of the serving pieces that need no server: lake cache, settings, model contract."""

from __future__ import annotations

import pandas as pd
import pytest

from features.compute import feature_columns, feature_set_hash
from qt.config import FeatureParams, SyntheticParams
from qt.errors import ConfigError
from data.lake import write_candles
from data.synthetic import generate_market
from serving.candles import CandleCache, UnknownSymbol
from serving.champion import ModelContractError, check_model_metadata
from serving.inference import RequestRejected, parse_as_of
from serving.settings import ServingSettings


def _write(root, bars: int):
    candles = generate_market(["BTC/USDT"], "1h", SyntheticParams(bars=bars), seed=3)
    write_candles(root, "BTC/USDT", "1h", candles[["timestamp", "open", "high", "low", "close", "volume"]])
    return candles


def test_candle_cache_sees_candles_written_after_the_first_read(tmp_path):
    _write(tmp_path, 400)
    cache = CandleCache(tmp_path, "1h")
    first = cache.get("BTC/USDT")
    assert len(first.frame) == 400
    _write(tmp_path, 410)  # the collector appends 10 bars (atomic replace)
    again = cache.get("BTC/USDT")
    assert len(again.frame) == 410
    assert again.frame["timestamp"].iloc[-1] == pd.Timestamp("2023-01-01", tz="UTC") + pd.Timedelta(hours=409)


def test_window_holds_the_last_bars_at_or_before_as_of(tmp_path):
    _write(tmp_path, 400)
    sc = CandleCache(tmp_path, "1h").get("BTC/USDT")
    as_of = pd.Timestamp("2023-01-05T07:30:00Z")
    window = sc.window_before(int(as_of.value // 1_000_000), 50)
    assert len(window) == 50
    assert window["timestamp"].iloc[-1] == pd.Timestamp("2023-01-05T07:00:00Z")
    assert window["timestamp"].iloc[0] == pd.Timestamp("2023-01-03T06:00:00Z")


def test_unknown_symbol_names_what_the_lake_has(tmp_path):
    _write(tmp_path, 400)
    with pytest.raises(UnknownSymbol, match="have: BTC/USDT"):
        CandleCache(tmp_path, "1h").get("ETH/USDT")


def test_naive_as_of_is_utc_and_garbage_is_refused():
    assert parse_as_of("2023-05-01 10:00") == pd.Timestamp("2023-05-01T10:00:00Z")
    for bad in ("", "yesterday", "nan", "NaT"):
        with pytest.raises(RequestRejected) as err:
            parse_as_of(bad)
        assert err.value.status == 400


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan"])
def test_reload_interval_override_must_be_positive_seconds(tmp_path, value):
    with pytest.raises(ConfigError, match="QT_SERVING_RELOAD_SECONDS"):
        ServingSettings.from_environ({"QT_HOME": str(tmp_path), "QT_SERVING_RELOAD_SECONDS": value})


def test_settings_default_to_the_state_directory_registry(tmp_path):
    s = ServingSettings.from_environ({"QT_HOME": str(tmp_path), "QT_SERVING_RELOAD_SECONDS": "0.5"})
    assert s.tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlflow/mlflow.db"
    assert s.reload_interval_s == 0.5
    assert s.paths.raw == tmp_path.resolve() / "raw"


def _metadata(fp: FeatureParams, **changes) -> dict:
    md = {"feature_params": fp.model_dump(mode="json"), "feature_columns": feature_columns(fp),
          "feature_set_hash": feature_set_hash(fp), "timeframe": "1h"}
    md.update(changes)
    return md


def test_model_metadata_that_matches_the_features_code_is_accepted():
    fp = FeatureParams()
    got_fp, cols, tf = check_model_metadata("m", "1", _metadata(fp))
    assert got_fp == fp and list(cols) == feature_columns(fp) and tf == "1h"


@pytest.mark.parametrize("changes, reason", [
    ({"feature_set_hash": "0" * 64}, "retrain"),
    ({"feature_columns": ["rsi_14", "not_a_feature"]}, "not_a_feature"),
    ({"feature_columns": []}, "feature_columns"),
])
def test_model_whose_features_the_service_cannot_reproduce_is_refused(changes, reason):
    with pytest.raises(ModelContractError, match=reason):
        check_model_metadata("m", "1", _metadata(FeatureParams(), **changes))


def test_model_without_contract_metadata_is_refused():
    with pytest.raises(ModelContractError, match="metadata lacks"):
        check_model_metadata("m", "1", {"timeframe": "1h"})
