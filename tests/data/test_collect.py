"""The collect stage: every source goes through ccxt and the local exchange into the lake."""

import json

import pandas as pd
import pytest

from data import lake
from data.sources import collect_stage, lake_root, parse_source, read_lake
from qt.config import load_params
from qt.errors import DataError, QTError, UserError
from qt.paths import StatePaths
from tests.support import require_shared_data

pytestmark = pytest.mark.slow


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


def test_synthetic_market_is_collected_through_the_local_exchange(tmp_path):
    from qt.config import SyntheticParams
    from data.synthetic import generate_market

    paths = StatePaths(tmp_path).ensure()
    params = _params(source="synthetic:3", symbols=["BTC/USDT", "ETH/USDT"])
    out = collect_stage(params, paths)["data"]
    assert out["rows"] == 800 and out["symbols"] == ["BTC/USDT", "ETH/USDT"]
    assert all(s["pages"] >= 1 for s in out["collected"]["symbols"])  # it really went over HTTP
    expected = generate_market(["BTC/USDT", "ETH/USDT"], "1h", SyntheticParams(bars=400), 3)
    pd.testing.assert_frame_equal(read_lake(params, paths), expected, check_dtype=False)
    assert out["sha256"] == lake.content_sha256(read_lake(params, paths))


def test_collecting_twice_adds_nothing_and_rewrites_nothing(tmp_path):
    paths = StatePaths(tmp_path).ensure()
    params = _params(source="synthetic:3", symbols=["BTC/USDT"])
    first = collect_stage(params, paths)["data"]
    files = sorted(p for p in lake_root(params, paths).rglob("*") if p.is_file())
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files if p.suffix == ".parquet"}
    second = collect_stage(params, paths)["data"]
    assert second["collected"]["symbols"][0]["rows_added"] == 0
    assert first["sha256"] == second["sha256"]
    assert before == {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in before}


def test_another_synthetic_market_gets_its_own_lake(tmp_path):
    paths = StatePaths(tmp_path).ensure()
    a = _params(source="synthetic:3", symbols=["BTC/USDT"])
    b = _params(source="synthetic:4", symbols=["BTC/USDT"])
    collect_stage(a, paths)
    collect_stage(b, paths)
    assert lake_root(a, paths) != lake_root(b, paths)
    assert not read_lake(a, paths)["close"].equals(read_lake(b, paths)["close"])


def test_stages_after_a_quarantine_find_the_synthetic_lake_of_the_whole_universe(tmp_path):
    """A synthetic market is generated for its universe; the symbols that passed validation are a
    subset, and later stages asking for them must read the lake that was collected, not an empty one."""
    paths = StatePaths(tmp_path).ensure()
    whole = _params(source="synthetic:3", symbols=["BTC/USDT", "ETH/USDT", "SOL/USDT"])
    collect_stage(whole, paths)
    passed = _params(source="synthetic:3", symbols=["BTC/USDT", "SOL/USDT"])
    assert lake_root(passed, paths) == lake_root(whole, paths)
    got = read_lake(passed, paths)
    assert sorted(got["symbol"].unique()) == ["BTC/USDT", "SOL/USDT"]
    stored = read_lake(whole, paths)
    pd.testing.assert_frame_equal(got.reset_index(drop=True),
                                  stored[stored.symbol != "ETH/USDT"].reset_index(drop=True))
    other_seed = _params(source="synthetic:4", symbols=["BTC/USDT"])
    assert lake_root(other_seed, paths) != lake_root(whole, paths)


def test_parquet_source_copies_real_candles_exactly(tmp_path):
    root = require_shared_data()
    paths = StatePaths(tmp_path).ensure()
    p = _params(source=f"parquet:{root}", symbols=["BTC/USDT", "ETH/USDT"], start="2024-01-01", end="2024-02-01")
    out = collect_stage(p, paths)["data"]
    assert out["rows"] == 2 * 31 * 24
    src = pd.read_parquet(root / "ohlcv/binance/ETH_USDT-1h.parquet")
    src = src[(src.timestamp >= "2024-01-01") & (src.timestamp < "2024-02-01")].reset_index(drop=True)
    got = read_lake(p, paths)
    pd.testing.assert_frame_equal(got[got.symbol == "ETH/USDT"].drop(columns="symbol").reset_index(drop=True),
                                  src, check_dtype=False)


def test_unknown_symbol_is_refused_before_anything_is_downloaded(tmp_path):
    root = require_shared_data()
    paths = StatePaths(tmp_path).ensure()
    p = _params(source=f"parquet:{root}", symbols=["FOO/USDT", "BTC/USDT"], start="2024-01-01", end="2024-01-03")
    with pytest.raises(UserError, match=r"unknown symbol\(s\) FOO/USDT .*listed there: .*BTC/USDT"):
        collect_stage(p, paths)
    assert not list(lake_root(p, paths).rglob("*.parquet"))


def test_a_symbol_failing_at_the_exchange_is_reported_and_the_others_are_stored(tmp_path, monkeypatch):
    """Persistent 5xx for one symbol (faults injected in the local exchange it talks to)."""
    from data import sources as collect_module
    from exchange import LocalExchange

    paths = StatePaths(tmp_path).ensure()
    p = load_params(None, {"data": {"source": "synthetic:3", "symbols": ["BTC/USDT", "ETH/USDT"]},
                           "synthetic": {"bars": 400},
                           "collect": {"max_attempts": 2, "backoff_base_s": 0.01, "backoff_cap_s": 0.02}})
    faults = {"rules": [{"kind": "503", "symbol": "ETHUSDT", "path_prefix": "/api/v3/klines",
                         "probability": 1.0}]}
    real = LocalExchange
    monkeypatch.setattr("data.sources.LocalExchange", lambda d, **kw: real(d, faults=faults, **kw))
    with pytest.raises(QTError, match="collection failed for 1 of 2 symbol.*ETH/USDT"):
        collect_module.collect_stage(p, paths)
    assert len(lake.read_symbol(lake_root(p, paths), "BTC/USDT", "1h")) == 400
    failures = json.loads((paths.reports / "collect-failures.json").read_text())
    assert [s["symbol"] for s in failures["symbols"] if s["error"]] == ["ETH/USDT"]


def test_date_range_without_data_is_a_clear_error(tmp_path):
    paths = StatePaths(tmp_path).ensure()
    with pytest.raises(DataError, match="no 1h candles in"):
        collect_stage(_params(source="synthetic:1", symbols=["BTC/USDT"], start="2030-01-01"), paths)
