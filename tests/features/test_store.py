"""Feature/label store: exact round trip, one directory per symbol with one file per period
and kind, atomic replace, no stale symbols."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.compute import compute_features
from features.labels import make_labels
from features.store import read_features, read_labels, stored_symbols, write_features, write_labels
from qt.config import CostParams, FeatureParams, LabelParams, SyntheticParams
from qt.errors import DataError
from data.lake import content_sha256
from data.synthetic import generate_market

SYMBOLS = ["BTC/USDT", "ETH/USDT", "BTC/USDT:USDT"]


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return generate_market(SYMBOLS, "1h", SyntheticParams(bars=600), seed=5)


@pytest.fixture(scope="module")
def features(candles) -> pd.DataFrame:
    return compute_features(candles, FeatureParams())


def _all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_features_round_trip_exactly_with_one_file_per_symbol_and_year(tmp_path, features):
    info = write_features(features, tmp_path)
    assert info["rows"] == len(features)
    assert info["columns"] == list(features.columns)
    assert info["sha256"] == content_sha256(features.sort_values(["symbol", "timestamp"]).reset_index(drop=True))
    # spot and perpetual BTC never share a file; nothing else (no temp files) is left behind
    assert _all_files(tmp_path) == ["binance/BTC_USDT/2023.features.parquet", "binance/ETH_USDT/2023.features.parquet",
                                    "binanceusdm/BTC_USDT/2023.features.parquet"]
    assert sorted(info["files"]) == sorted(str(tmp_path / f) for f in _all_files(tmp_path))
    back = read_features(tmp_path)
    expected = features.sort_values(["symbol", "timestamp"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(back, expected, check_exact=True)
    assert stored_symbols(tmp_path) == sorted(SYMBOLS)


def test_reading_a_subset_returns_only_those_symbols(tmp_path, features):
    write_features(features, tmp_path)
    back = read_features(tmp_path, ["BTC/USDT:USDT"])
    expected = features[features["symbol"] == "BTC/USDT:USDT"].reset_index(drop=True)
    pd.testing.assert_frame_equal(back, expected, check_exact=True)


def test_labels_round_trip_beside_features_without_touching_them(tmp_path, candles, features):
    labels = make_labels(candles, LabelParams(), CostParams())
    write_features(features, tmp_path)
    write_labels(labels, tmp_path)
    pd.testing.assert_frame_equal(read_labels(tmp_path), labels, check_exact=True)
    pd.testing.assert_frame_equal(read_features(tmp_path),
                                  features.sort_values(["symbol", "timestamp"]).reset_index(drop=True))


def test_rewrite_with_fewer_symbols_removes_the_stale_ones(tmp_path, features):
    write_features(features, tmp_path)
    write_features(features[features["symbol"] == "ETH/USDT"], tmp_path)
    assert stored_symbols(tmp_path) == ["ETH/USDT"]
    assert set(read_features(tmp_path)["symbol"]) == {"ETH/USDT"}


def test_failed_write_keeps_the_previous_file_and_leaves_no_temp_file(tmp_path, features):
    write_features(features, tmp_path)
    before = read_features(tmp_path)
    broken = features.assign(rsi_14=[object()] * len(features))  # pyarrow cannot serialise these
    with pytest.raises(Exception):
        write_features(broken, tmp_path)
    pd.testing.assert_frame_equal(read_features(tmp_path), before, check_exact=True)
    assert all(not name.split("/")[-1].startswith(".") for name in _all_files(tmp_path))


def test_missing_symbol_or_empty_store_is_a_data_error_naming_it(tmp_path, features):
    with pytest.raises(DataError, match="no features under"):
        read_features(tmp_path)
    write_features(features, tmp_path)
    with pytest.raises(DataError, match="SOL/USDT"):
        read_features(tmp_path, ["SOL/USDT"])
    with pytest.raises(DataError, match="no labels"):
        read_labels(tmp_path)


def test_empty_or_duplicated_frames_are_refused(tmp_path, features):
    with pytest.raises(DataError, match="no features rows"):
        write_features(features.iloc[:0], tmp_path)
    with pytest.raises(DataError, match="duplicate"):
        write_features(pd.concat([features, features.iloc[:1]]), tmp_path)
    assert _all_files(tmp_path) == []
