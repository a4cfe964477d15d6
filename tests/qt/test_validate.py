"""Validation: real exchange gaps are warnings; corrupted candles are errors naming the row."""

import numpy as np
import pandas as pd
import pytest

from qt.config import Params, SyntheticParams, ValidationParams
from qt.errors import DataError
from qt.paths import StatePaths
from qt.synthetic import generate_market
from qt.validate import require_validated, validate_candles, validate_stage
from tests.conftest import require_shared_data


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    return generate_market(["BTC/USDT", "ETH/USDT"], "1h", SyntheticParams(bars=400), seed=1)


def _errors(report):
    return {(f.expectation, f.column): f for f in report.errors}


def test_clean_synthetic_candles_pass(clean):
    report = validate_candles(clean, "1h", ValidationParams())
    assert report.success and not report.failed_expectations


def test_real_candles_pass_with_their_gaps_reported_as_warnings():
    root = require_shared_data()
    df = pd.read_parquet(root / "ohlcv/binance/BTC_USDT-1h.parquet").assign(symbol="BTC/USDT")
    report = validate_candles(df, "1h", ValidationParams())
    assert report.success, report.describe()
    gaps = [f for f in report.warnings if f.column == "step_ms"]
    real_gaps = int((df["timestamp"].diff() > pd.Timedelta("1h")).sum())
    assert real_gaps > 0 and gaps and gaps[0].count == real_gaps


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
    return df, clean.loc[150, "timestamp"]


@pytest.mark.parametrize("how, expectation, column", [
    ("nan", "expect_column_values_to_not_be_null", "close"),
    ("negative", "expect_column_values_to_be_between", "low"),
    ("high_below_low", "expect_column_pair_values_a_to_be_greater_than_b", "high,low"),
    ("duplicate", "expect_compound_columns_to_be_unique", "symbol,timestamp"),
    ("out_of_order", "expect_column_values_to_be_between", "step_ms"),
    ("spike", "expect_column_values_to_be_between", "spike_log"),
])
def test_corruption_is_an_error_that_names_the_row(clean, how, expectation, column):
    df, ts = _corrupt(clean, how)
    report = validate_candles(df, "1h", ValidationParams())
    assert not report.success
    found = _errors(report).get((expectation, column))
    assert found is not None, report.describe()
    assert any("BTC/USDT" in e for e in found.examples)
    if how not in ("out_of_order", "duplicate"):
        assert any(ts.isoformat() in e for e in found.examples), found.examples


def test_failed_validation_stops_the_stage_and_blocks_features(tmp_path, clean):
    from qt import lake

    paths = StatePaths(tmp_path).ensure()
    params = Params().model_copy(update={"data": Params().data.model_copy(
        update={"symbols": ["BTC/USDT", "ETH/USDT"]})})
    bad, _ = _corrupt(clean, "high_below_low")
    for sym, g in bad.groupby("symbol"):
        lake.write_candles(paths.raw, sym, "1h", g)
    with pytest.raises(DataError, match="validation FAILED"):
        validate_stage(params, paths)
    assert (paths.reports / "validation.json").is_file()
    with pytest.raises(DataError, match="last validation failed"):
        require_validated(lake.read_candles(paths.raw, params.data.symbols, "1h"), paths)


def test_data_changed_after_validation_is_refused(tmp_path, clean):
    from qt import lake

    paths = StatePaths(tmp_path).ensure()
    params = Params().model_copy(update={"data": Params().data.model_copy(
        update={"symbols": ["BTC/USDT", "ETH/USDT"]})})
    for sym, g in clean.groupby("symbol"):
        lake.write_candles(paths.raw, sym, "1h", g)
    assert validate_stage(params, paths)["validation"]["success"]
    changed = clean[clean["symbol"] == "BTC/USDT"].iloc[:-1]
    lake.write_candles(paths.raw, "BTC/USDT", "1h", changed)
    with pytest.raises(DataError, match="changed since"):
        require_validated(lake.read_candles(paths.raw, params.data.symbols, "1h"), paths)
