"""Collection into the lake: sources, idempotence, and clear errors for bad input."""

import json

import pandas as pd
import pytest

from qt import lake
from qt.collect import collect_stage, parse_source
from qt.config import load_params
from qt.errors import DataError, UserError
from qt.paths import StatePaths
from tests.conftest import require_shared_data


def _params(**data):
    return load_params(None, {"data": data, "synthetic": {"bars": 400}})


@pytest.mark.parametrize("text, fragment", [
    ("synthetic:abc", "seed must be an integer"),
    ("parquet:", "needs a directory"),
    ("parquet:/no/such/dir", "does not exist"),
    ("kaggle", "is not one of"),
])
def test_bad_source_is_a_one_line_user_error(text, fragment):
    with pytest.raises(UserError, match=fragment):
        parse_source(text)


def test_synthetic_collection_writes_lake_and_manifest(tmp_path):
    paths = StatePaths(tmp_path).ensure()
    out = collect_stage(_params(source="synthetic:3", symbols=["BTC/USDT", "ETH/USDT"]), paths)["data"]
    assert out["rows"] == 800 and out["symbols"] == ["BTC/USDT", "ETH/USDT"]
    manifest = json.loads(lake.candle_path(paths.raw, "BTC/USDT", "1h").with_suffix(".manifest.json").read_text())
    df = lake.read_symbol(paths.raw, "BTC/USDT", "1h")
    assert manifest["rows"] == len(df) == 400
    assert manifest["sha256"] == lake.content_sha256(df)
    assert not list(paths.raw.rglob("*.tmp"))


def test_collecting_twice_is_idempotent(tmp_path):
    paths = StatePaths(tmp_path).ensure()
    p = _params(source="synthetic:3", symbols=["BTC/USDT"])
    first = collect_stage(p, paths)["data"]
    f = lake.candle_path(paths.raw, "BTC/USDT", "1h")
    bytes1 = f.read_bytes()
    second = collect_stage(p, paths)["data"]
    assert first["sha256"] == second["sha256"] and f.read_bytes() == bytes1


def test_parquet_source_copies_real_candles_exactly(tmp_path):
    root = require_shared_data()
    paths = StatePaths(tmp_path).ensure()
    p = _params(source=f"parquet:{root}", symbols=["BTC/USDT", "ETH/USDT"], start="2024-01-01", end="2024-02-01")
    out = collect_stage(p, paths)["data"]
    assert out["rows"] == 2 * 31 * 24
    src = pd.read_parquet(root / "ohlcv/binance/ETH_USDT-1h.parquet")
    src = src[(src.timestamp >= "2024-01-01") & (src.timestamp < "2024-02-01")].reset_index(drop=True)
    pd.testing.assert_frame_equal(lake.read_symbol(paths.raw, "ETH/USDT", "1h"), src, check_dtype=False)


def test_unknown_symbol_names_what_is_available(tmp_path):
    root = require_shared_data()
    paths = StatePaths(tmp_path).ensure()
    with pytest.raises(DataError, match=r"no 1h candles for FOO/USDT .*have: .*BTC/USDT"):
        collect_stage(_params(source=f"parquet:{root}", symbols=["FOO/USDT"]), paths)


def test_date_range_without_data_is_a_clear_error(tmp_path):
    root = require_shared_data()
    paths = StatePaths(tmp_path).ensure()
    with pytest.raises(DataError, match="no 1h candles in"):
        collect_stage(_params(source=f"parquet:{root}", symbols=["BTC/USDT"], start="2030-01-01"), paths)
    with pytest.raises(DataError, match="no synthetic candles"):
        collect_stage(_params(source="synthetic:1", symbols=["BTC/USDT"], start="2030-01-01"), paths)
