"""Validation: real exchange gaps are warnings; corrupted candles are errors naming the
symbol and row, and the symbol is quarantined so its candles never reach features."""

import numpy as np
import pandas as pd
import pytest

from data import lake
from data.sources import lake_root
from qt.config import SyntheticParams, ValidationParams, load_params
from qt.errors import DataError
from qt.paths import StatePaths
from data.quarantine import require_validated, validate_stage, validated_symbols
from data.synthetic import generate_market
from data.validate import validate_candles, validate_funding
from tests.support import require_shared_data

SYMBOLS = ["BTC/USDT", "ETH/USDT"]


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    return generate_market(SYMBOLS, "1h", SyntheticParams(bars=400), seed=1)


def _errors(report):
    return {(f.symbol, f.expectation, f.column): f for f in report.errors}


def test_clean_synthetic_candles_pass(clean):
    report = validate_candles(clean, "1h", ValidationParams())
    assert report.success and report.passed == SYMBOLS and not report.errors


def test_real_candles_pass_with_their_gaps_reported_as_warnings():
    root = require_shared_data()
    df = pd.read_parquet(root / "ohlcv/binance/BTC_USDT-1h.parquet").assign(symbol="BTC/USDT")
    report = validate_candles(df, "1h", ValidationParams())
    assert report.success, report.describe()
    gaps = [f for f in report.warnings if f.column == "step_ms"]
    real_gaps = int((df["timestamp"].diff() > pd.Timedelta("1h")).sum())
    assert real_gaps > 0 and gaps and gaps[0].count == real_gaps


def test_real_funding_passes():
    root = require_shared_data()
    f = pd.read_parquet(root / "funding/binanceusdm/BTC_USDT-funding.parquet").assign(symbol="BTC/USDT:USDT")
    assert validate_funding(f, ValidationParams()).success


def _corrupt(clean, how):
    df = clean.copy()
    i = 150  # a BTC/USDT row (the first symbol's block)
    if how == "nan":
        df.loc[i, "close"] = np.nan
    elif how == "negative":
        df.loc[i, "low"] = -1.0
    elif how == "high_below_low":
        df.loc[i, "high"] = df.loc[i, "low"] * 0.9
    elif how == "duplicate":
        df = pd.concat([df.iloc[: i + 1], df.iloc[[i]], df.iloc[i + 1:]], ignore_index=True)
    elif how == "out_of_order":
        df.iloc[[i, i + 1]] = df.iloc[[i + 1, i]].values
    elif how == "spike":
        df.loc[i, ["open", "high", "low", "close"]] *= 1.5
    elif how == "off_grid":
        df.loc[i, "timestamp"] = df.loc[i, "timestamp"] + pd.Timedelta("7min")
    return df, clean.loc[150, "timestamp"]


@pytest.mark.parametrize("how, expectation, column", [
    ("nan", "expect_column_values_to_not_be_null", "close"),
    ("negative", "expect_column_values_to_be_between", "low"),
    ("high_below_low", "expect_column_pair_values_a_to_be_greater_than_b", "high,low"),
    ("duplicate", "expect_compound_columns_to_be_unique", "symbol,timestamp"),
    ("out_of_order", "expect_column_values_to_be_between", "step_ms"),
    ("spike", "expect_column_values_to_be_between", "spike_log"),
    ("off_grid", "expect_column_values_to_be_between", "off_grid_ms"),
])
def test_corruption_is_an_error_that_names_symbol_and_row(clean, how, expectation, column):
    df, ts = _corrupt(clean, how)
    report = validate_candles(df, "1h", ValidationParams())
    assert report.quarantined == ["BTC/USDT"] and report.passed == ["ETH/USDT"], report.describe()
    found = _errors(report).get(("BTC/USDT", expectation, column))
    assert found is not None, report.describe()
    if how not in ("out_of_order", "duplicate", "off_grid"):
        assert any(ts.isoformat() in e for e in found.examples), found.examples


def test_return_outlier_is_a_warning_not_an_error(clean):
    df = clean.copy()
    rows = df.index[df["symbol"] == "ETH/USDT"][300:]
    df.loc[rows, ["open", "high", "low", "close"]] *= 1.25  # a real, persistent jump
    df.loc[rows[0], "open"] = df.loc[rows[0] - 1, "close"]  # trades through it: open at prev close
    df.loc[rows[0], "low"] = df.loc[rows[0], ["open", "close"]].min()
    report = validate_candles(df, "1h", ValidationParams())
    assert report.success, report.describe()
    assert any(f.symbol == "ETH/USDT" and f.column == "sigma_move" for f in report.warnings)


def test_freshness_errors_on_a_symbol_whose_last_candle_is_too_old(clean):
    df = clean[~((clean["symbol"] == "ETH/USDT") & (clean.index % 400 >= 390))]  # ETH stopped 10 bars early
    now = clean["timestamp"].max() + pd.Timedelta("1h")  # the close of the last full bar
    report = validate_candles(df, "1h", ValidationParams(max_staleness_bars=3), now=now)
    assert report.quarantined == ["ETH/USDT"], report.describe()
    assert validate_candles(df, "1h", ValidationParams(), now=now).success  # off unless configured


def test_funding_beyond_the_cap_or_duplicated_is_an_error():
    ts = pd.date_range("2024-01-01", periods=6, freq="8h", tz="UTC")
    f = pd.DataFrame({"symbol": "BTC/USDT:USDT", "timestamp": ts, "funding_rate": [1e-4, 0, 0, 2e-4, 0.3, 1e-4]})
    report = validate_funding(pd.concat([f, f.iloc[[1]]], ignore_index=True), ValidationParams())
    columns = {f.column for f in report.errors}
    assert {"funding_rate", "symbol,timestamp"} <= columns


def _state(tmp_path, frame):
    paths = StatePaths(tmp_path).ensure()
    params = load_params(None, {"data": {"symbols": SYMBOLS}})
    for sym, g in frame.groupby("symbol"):
        lake.write_candles(lake_root(params, paths), sym, "1h", g)
    return params, paths


def test_stage_quarantines_the_bad_symbol_and_features_only_see_the_good_one(tmp_path, clean):
    bad, _ = _corrupt(clean, "high_below_low")
    params, paths = _state(tmp_path, bad)
    out = validate_stage(params, paths)["validation"]
    assert out["quarantined_symbols"] == ["BTC/USDT"] and out["passed_symbols"] == ["ETH/USDT"]
    assert "BTC/USDT" in (paths.reports / "validation.md").read_text()
    assert validated_symbols(params, paths) == ["ETH/USDT"]
    with pytest.raises(DataError, match="BTC/USDT: quarantined"):
        require_validated(lake.read_candles(lake_root(params, paths), SYMBOLS, "1h"), paths)
    require_validated(lake.read_candles(lake_root(params, paths), ["ETH/USDT"], "1h"), paths)


def test_stage_stops_when_every_symbol_is_quarantined(tmp_path, clean):
    bad = clean.copy()
    bad["high"] = bad["low"] * 0.5
    params, paths = _state(tmp_path, bad)
    with pytest.raises(DataError, match="every symbol is quarantined"):
        validate_stage(params, paths)


def test_data_changed_after_validation_is_refused(tmp_path, clean):
    params, paths = _state(tmp_path, clean)
    assert validate_stage(params, paths)["validation"]["success"]
    changed = clean[clean["symbol"] == "BTC/USDT"].iloc[:-1].copy()
    changed.loc[changed.index[-1], "close"] *= 1.01
    lake.write_candles(lake_root(params, paths), "BTC/USDT", "1h", changed)
    with pytest.raises(DataError, match="changed since"):
        require_validated(lake.read_candles(lake_root(params, paths), SYMBOLS, "1h"), paths)


def test_stage_judges_freshness_against_the_collection_time(tmp_path):
    """A market whose candles end long before the collection ran is quarantined when a limit is set."""
    import json as _json

    from flows import stages as pipeline

    paths = StatePaths(tmp_path).ensure()
    params = load_params(None, {"data": {"source": "synthetic:3", "symbols": ["BTC/USDT"]},
                                "synthetic": {"bars": 400}, "validation": {"max_staleness_bars": 2}})
    pipeline.collect(params, paths)  # the synthetic market ends in 2023; it is collected now
    with pytest.raises(DataError, match="every symbol is quarantined"):
        validate_stage(params, paths)
    record = _json.loads((paths.reports / "validation.json").read_text())
    assert record["symbols"]["BTC/USDT"]["status"] == "quarantined"
    assert any(f["column"] == "stale_bars" for f in record["candles"]["failed_expectations"])
