"""materialise: the lake -> features + labels in period partitions; incremental runs equal a
fresh run exactly and rewrite only what changed; parallel equals serial; read back joined."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.compute import compute_features, feature_set_hash
from features.labels import make_labels
from features.materialise import materialise, read_training_frame
from features.store import read_features, read_labels
from qt.config import FeatureParams, Params, SyntheticParams
from qt.errors import DataError
from data.lake import write_candles
from data.synthetic import generate_market

SYMBOLS = ["BTC/USDT", "ETH/USDT:USDT"]
PARAMS = Params()
# daily bars from 2021-01-01: periods 2021, 2022, 2023 and 2024 (to mid-April)
CANDLES = generate_market(SYMBOLS, "1d", SyntheticParams(bars=1200, start="2021-01-01"), seed=4)


def _lake(root: Path, candles: pd.DataFrame) -> Path:
    for sym, part in candles.groupby("symbol"):
        write_candles(root, str(sym), "1d", part)
    return root


def _files(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under root: (mtime_ns, bytes)."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(root.rglob("*"))
            if p.is_file()}


def _stored(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return read_features(root), read_labels(root)


def test_round_trip_equals_compute_features_and_make_labels(tmp_path):
    lake = _lake(tmp_path / "lake", CANDLES)
    info = materialise(lake, SYMBOLS, "1d", PARAMS, tmp_path / "store")
    feats, labels = _stored(tmp_path / "store")
    expected_labels = make_labels(CANDLES, PARAMS.labels, PARAMS.costs, PARAMS.risk)
    pd.testing.assert_frame_equal(labels, expected_labels, check_exact=True)  # labels look forward only: exact
    expected = compute_features(CANDLES, PARAMS.features)
    pd.testing.assert_frame_equal(feats[["symbol", "timestamp"]], expected[["symbol", "timestamp"]])
    assert info["rows"] == len(expected) and info["label_rows"] == len(expected_labels)
    assert info["feature_set_hash"] == feature_set_hash(PARAMS.features)
    # the first period starts with the history: exact; later ones are anchored on their own
    # warm-up prefix: equal within the warm-up's declared tolerance (features.pit.RECURSIVE_RTOL)
    first_period = feats["timestamp"] < pd.Timestamp("2022-01-01", tz="UTC")
    pd.testing.assert_frame_equal(feats[first_period], expected[first_period], check_exact=True)
    for col in expected.columns[2:]:
        a, b = feats[col].to_numpy(), expected[col].to_numpy()
        scale = np.abs(b) + np.nanmedian(np.abs(b))
        assert np.all(np.abs(a - b) <= 1e-6 * scale), col
    joined = read_training_frame(tmp_path / "store")
    assert list(joined.columns) == [*expected.columns, *expected_labels.columns[2:]]
    assert len(joined) == len(expected.merge(expected_labels, on=["symbol", "timestamp"]))
    assert sorted(info["files"]) == sorted(str(p.relative_to(tmp_path / "store"))
                                           for p in (tmp_path / "store").rglob("*.parquet"))


@pytest.mark.parametrize("case, withheld_bars, rewritten", [
    ("append inside the last period", 30, {"2024.features.parquet", "2024.labels.parquet"}),
    # the lake ends on 2023-12-16: 2023's raw partition grows and its last labels get their future
    ("append that opens a new period", 120, {"2023.features.parquet", "2023.labels.parquet",
                                             "2024.features.parquet", "2024.labels.parquet"}),
])
def test_incremental_run_equals_a_fresh_run_and_rewrites_only_the_changed_periods(tmp_path, case, withheld_bars,
                                                                                   rewritten):
    lake = tmp_path / "lake"
    older = CANDLES.groupby("symbol").head(len(CANDLES) // 2 - withheld_bars)
    _lake(lake, older)
    materialise(lake, SYMBOLS, "1d", PARAMS, tmp_path / "store")
    before = _files(tmp_path / "store")
    _lake(lake, CANDLES)
    info = materialise(lake, SYMBOLS, "1d", PARAMS, tmp_path / "store")
    after = _files(tmp_path / "store")

    changed = {name for name in after if before.get(name) != after[name]}
    per_symbol = {name.split("/")[-1] for name in changed if not name.endswith("manifest.json")}
    assert per_symbol == rewritten, case
    assert sorted(f for f in changed if f.endswith(".parquet")) == info["files"]
    feats = read_features(tmp_path / "store")
    years = {int(name[:4]) for name in rewritten if name.endswith("features.parquet")}
    assert info["rows_computed"] == int(feats["timestamp"].dt.year.isin(years).sum())  # only those periods

    materialise(lake, SYMBOLS, "1d", PARAMS, tmp_path / "fresh")
    for got, want in zip(_stored(tmp_path / "store"), _stored(tmp_path / "fresh")):
        pd.testing.assert_frame_equal(got, want, check_exact=True)
    fresh = _files(tmp_path / "fresh")
    assert {n: b for n, (_, b) in after.items()} == {n: b for n, (_, b) in fresh.items()}  # byte for byte


def test_a_run_with_nothing_new_rewrites_nothing(tmp_path):
    lake = _lake(tmp_path / "lake", CANDLES)
    materialise(lake, SYMBOLS, "1d", PARAMS, tmp_path / "store")
    before = _files(tmp_path / "store")
    info = materialise(lake, SYMBOLS, "1d", PARAMS, tmp_path / "store")
    assert info["files"] == [] and info["rows_computed"] == 0
    assert _files(tmp_path / "store") == before


def test_changed_feature_set_recomputes_everything(tmp_path):
    lake = _lake(tmp_path / "lake", CANDLES)
    first = materialise(lake, SYMBOLS, "1d", PARAMS, tmp_path / "store")
    other = PARAMS.model_copy(update={"features": FeatureParams(rsi=[10])})
    second = materialise(lake, SYMBOLS, "1d", other, tmp_path / "store")
    assert second["feature_set_hash"] != first["feature_set_hash"]
    assert second["rows_computed"] == second["rows"]
    assert {f for f in second["files"] if f.endswith("features.parquet")} == \
        {f for f in first["files"] if f.endswith("features.parquet")}
    feats = read_features(tmp_path / "store")
    assert "rsi_10" in feats.columns and "rsi_14" not in feats.columns
    materialise(lake, SYMBOLS, "1d", other, tmp_path / "fresh")
    pd.testing.assert_frame_equal(feats, read_features(tmp_path / "fresh"), check_exact=True)


def test_parallel_equals_serial_and_no_temp_file_is_left(tmp_path):
    symbols = ["AAA/USDT", "BBB/USDT", "CCC/USDT", "BTC/USDT:USDT"]
    lake = _lake(tmp_path / "lake", generate_market(symbols, "1d", SyntheticParams(bars=800, start="2022-01-01"),
                                                     seed=9))
    materialise(lake, symbols, "1d", PARAMS, tmp_path / "serial", workers=1)
    materialise(lake, symbols, "1d", PARAMS, tmp_path / "parallel", workers=2)
    serial, parallel = _files(tmp_path / "serial"), _files(tmp_path / "parallel")
    assert {n: b for n, (_, b) in serial.items()} == {n: b for n, (_, b) in parallel.items()}
    assert not [n for n in parallel if n.split("/")[-1].startswith(".")]


def test_sub_hour_bars_are_partitioned_by_month(tmp_path):
    candles = generate_market(["AAA/USDT"], "15m", SyntheticParams(bars=9000, start="2024-01-01"), seed=1)
    for sym, part in candles.groupby("symbol"):
        write_candles(tmp_path / "lake", str(sym), "15m", part)
    info = materialise(tmp_path / "lake", ["AAA/USDT"], "15m", PARAMS, tmp_path / "store")
    assert info["symbols"]["AAA/USDT"]["partitions"] == ["2024-01", "2024-02", "2024-03", "2024-04"]


def test_symbols_left_out_are_removed_and_an_absent_one_is_a_data_error(tmp_path):
    lake = _lake(tmp_path / "lake", CANDLES)
    materialise(lake, SYMBOLS, "1d", PARAMS, tmp_path / "store")
    materialise(lake, ["BTC/USDT"], "1d", PARAMS, tmp_path / "store")
    assert set(read_training_frame(tmp_path / "store")["symbol"]) == {"BTC/USDT"}
    assert not (tmp_path / "store" / "binanceusdm" / "ETH_USDT").exists()
    with pytest.raises(DataError, match="SOL/USDT"):
        materialise(lake, ["BTC/USDT", "SOL/USDT"], "1d", PARAMS, tmp_path / "store")


def test_windows_in_one_pass_equal_one_compute_features_call_per_window():
    from features.compute import compute_features_windows

    btc = CANDLES[CANDLES["symbol"] == "BTC/USDT"].reset_index(drop=True)
    windows = [(0, 400), (130, 800), (500, 1200), (900, 1000)]  # overlapping; the last one too short: no rows
    got = compute_features_windows(btc, PARAMS.features, windows)
    expected = pd.concat([compute_features(btc.iloc[a:b], PARAMS.features) for a, b in windows], ignore_index=True)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    with pytest.raises(DataError, match="one symbol"):
        compute_features_windows(CANDLES, PARAMS.features, windows)


@pytest.mark.parametrize("start", [None, "2022-03-05", "2024-04-01"])
def test_the_fast_candle_reader_gives_the_lakes_frame(tmp_path, start):
    from features.materialise import _read_symbol_candles
    from data.lake import read_candles

    lake = _lake(tmp_path / "lake", CANDLES)
    ts = None if start is None else pd.Timestamp(start, tz="UTC")
    for sym in SYMBOLS:
        pd.testing.assert_frame_equal(_read_symbol_candles(lake, sym, "1d", ts),
                                      read_candles(lake, [sym], "1d", start=ts), check_exact=True)
    with pytest.raises(DataError, match="no 1d candles for SOL/USDT"):
        _read_symbol_candles(lake, "SOL/USDT", "1d", ts)
