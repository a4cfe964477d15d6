"""The partitioned raw lake: appends touch one partition, rewrites are byte-identical,
ranged reads open only the partitions they need, manifests describe their files."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from data import lake
from qt.errors import DataError


def _candles(start, periods, freq="1h", seed=0):
    rng = np.random.default_rng(seed)
    ts = pd.date_range(start, periods=periods, freq=freq, tz="UTC").astype("datetime64[ms, UTC]")
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, periods)))
    return pd.DataFrame({"timestamp": ts, "open": close * 0.999, "high": close * 1.01, "low": close * 0.99,
                         "close": close, "volume": rng.uniform(1, 10, periods)})


def _snapshot(directory):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.iterdir())}


def test_appending_rewrites_only_the_partition_that_receives_rows(tmp_path):
    full = _candles("2022-06-01", 24 * 600)  # 2022-06 .. 2024-01: yearly partitions 2022, 2023, 2024
    old, new = full.iloc[:-100], full.iloc[-100:]
    lake.write_candles(tmp_path, "BTC/USDT", "1h", old)
    d = lake.candle_path(tmp_path, "BTC/USDT", "1h")
    assert sorted(p.name for p in d.glob("*.parquet")) == ["2022.parquet", "2023.parquet", "2024.parquet"]
    before = _snapshot(d)
    result = lake.write_candles(tmp_path, "BTC/USDT", "1h", new)
    after = _snapshot(d)
    assert result.rows_added == 100 and result.partitions_written == ["2024"]
    for name in ("2022.parquet", "2022.manifest.json", "2023.parquet", "2023.manifest.json"):
        assert after[name] == before[name], f"{name} was rewritten by an append to 2024"
    assert after["2024.parquet"] != before["2024.parquet"]
    pd.testing.assert_frame_equal(lake.read_symbol(tmp_path, "BTC/USDT", "1h"), full.reset_index(drop=True))


def test_writing_the_same_history_again_changes_no_byte_and_no_mtime(tmp_path):
    full = _candles("2023-11-20", 60 * 24 * 30, freq="1min")  # monthly partitions 2023-11 .. 2024-01
    lake.write_candles(tmp_path / "a", "ETH/USDT:USDT", "1m", full)
    d = lake.candle_path(tmp_path / "a", "ETH/USDT:USDT", "1m")
    before = _snapshot(d)
    result = lake.write_candles(tmp_path / "a", "ETH/USDT:USDT", "1m", full)
    assert result.rows_added == 0 and result.partitions_written == []
    assert _snapshot(d) == before
    # the same rows written elsewhere give the same bytes (deterministic Parquet)
    lake.write_candles(tmp_path / "b", "ETH/USDT:USDT", "1m", full.sample(frac=1.0, random_state=1))
    other = lake.candle_path(tmp_path / "b", "ETH/USDT:USDT", "1m")
    assert {n: b for n, (b, _) in _snapshot(other).items()} == {n: b for n, (b, _) in before.items()}


def test_ranged_read_opens_only_overlapping_partitions(tmp_path):
    full = _candles("2021-01-01", 24 * 365 * 3)
    lake.write_candles(tmp_path, "BTC/USDT", "1h", full)
    d = lake.candle_path(tmp_path, "BTC/USDT", "1h")
    (d / "2021.parquet").write_bytes(b"not parquet")  # any read of 2021 now fails loudly
    got = lake.read_candles(tmp_path, ["BTC/USDT"], "1h", "2022-03-01", "2023-02-01")
    want = full[(full.timestamp >= "2022-03-01") & (full.timestamp < "2023-02-01")].reset_index(drop=True)
    pd.testing.assert_frame_equal(got.drop(columns="symbol"), want)
    with pytest.raises(DataError, match="2021.parquet: unreadable Parquet"):
        lake.read_symbol(tmp_path, "BTC/USDT", "1h")


def test_read_across_a_month_boundary_joins_both_partitions(tmp_path):
    full = _candles("2024-01-31 12:00", 24 * 60, freq="1min")
    lake.write_candles(tmp_path, "SOL/USDT", "1m", full)
    got = lake.read_candles(tmp_path, ["SOL/USDT"], "1m", "2024-01-31 23:00", "2024-02-01 01:00")
    assert len(got) == 120 and got["symbol"].eq("SOL/USDT").all()
    assert got.timestamp.iloc[0] == pd.Timestamp("2024-01-31 23:00", tz="UTC")
    assert got.timestamp.iloc[-1] == pd.Timestamp("2024-02-01 00:59", tz="UTC")
    assert str(got.timestamp.dtype) == "datetime64[ms, UTC]"


def test_manifest_counts_rows_and_hashes_content_and_bytes(tmp_path):
    lake.write_candles(tmp_path, "BTC/USDT", "1h", _candles("2023-12-01", 24 * 60))
    d = lake.candle_path(tmp_path, "BTC/USDT", "1h")
    for part in sorted(d.glob("*.parquet")):
        manifest = json.loads(part.with_name(part.name.replace(".parquet", ".manifest.json")).read_text())
        independent = pd.read_parquet(part)
        assert manifest["rows"] == len(independent)
        assert manifest["first"] == independent.timestamp.min().isoformat()
        assert manifest["last"] == independent.timestamp.max().isoformat()
        assert manifest["file_sha256"] == hashlib.sha256(part.read_bytes()).hexdigest()
        assert manifest["sha256"] == lake.content_sha256(independent)
    state = lake.read_state(tmp_path, "BTC/USDT", "1h")
    assert state["rows"] == 24 * 60 and state["last"] == "2024-01-29T23:00:00+00:00"


def test_writes_leave_no_temporary_files(tmp_path):
    c = _candles("2023-12-25", 24 * 20)
    lake.write_candles(tmp_path, "BTC/USDT", "1h", c.iloc[:100])
    lake.write_candles(tmp_path, "BTC/USDT", "1h", c)
    lake.write_state(tmp_path, "BTC/USDT", "1h", {**lake.read_state(tmp_path, "BTC/USDT", "1h"), "x": 1})
    assert [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")] == []


def test_overlapping_writes_keep_one_sorted_row_per_timestamp_newest_wins(tmp_path):
    c = _candles("2024-01-01", 500)
    lake.write_candles(tmp_path, "BTC/USDT", "1h", c.iloc[200:])
    corrected = c.iloc[:300].copy()
    corrected.loc[250, "close"] = 123.0
    lake.write_candles(tmp_path, "BTC/USDT", "1h", corrected.iloc[::-1])
    got = lake.read_symbol(tmp_path, "BTC/USDT", "1h")
    want = c.copy()
    want.loc[250, "close"] = 123.0
    pd.testing.assert_frame_equal(got, want)


def test_timestamps_off_the_timeframe_grid_are_refused(tmp_path):
    c = _candles("2024-01-01 00:30", 10)
    with pytest.raises(DataError, match="not on the 1h grid"):
        lake.write_candles(tmp_path, "BTC/USDT", "1h", c)
    assert not list(tmp_path.rglob("*.parquet"))


def test_absent_symbol_names_what_the_lake_has(tmp_path):
    lake.write_candles(tmp_path, "BTC/USDT", "1h", _candles("2024-01-01", 10))
    lake.write_candles(tmp_path, "BTC/USDT:USDT", "1h", _candles("2024-01-01", 10))
    assert lake.available_symbols(tmp_path, "1h") == ["BTC/USDT", "BTC/USDT:USDT"]
    with pytest.raises(DataError, match=r"no 1h candles for ETH/USDT .*have: BTC/USDT, BTC/USDT:USDT"):
        lake.read_candles(tmp_path, ["ETH/USDT"], "1h")
    with pytest.raises(DataError, match="no 1h candles in"):
        lake.read_candles(tmp_path, ["BTC/USDT"], "1h", start="2030-01-01")


def test_stale_manifest_after_a_kill_is_repaired(tmp_path):
    c = _candles("2024-01-01", 100)
    lake.write_candles(tmp_path, "BTC/USDT", "1h", c.iloc[:50])
    d = lake.candle_path(tmp_path, "BTC/USDT", "1h")
    stale = (d / "2024.manifest.json").read_text()
    lake.write_candles(tmp_path, "BTC/USDT", "1h", c)
    (d / "2024.manifest.json").write_text(stale)  # as if killed between the two renames
    (d / ".2024.parquet.999999999.1.tmp").write_bytes(b"half")  # a dead writer's temp file
    assert lake.repair_series(tmp_path, "BTC/USDT", "1h") == ["2024"]
    assert json.loads((d / "2024.manifest.json").read_text())["rows"] == 100
    assert not list(d.glob("*.tmp"))


def test_funding_round_trips_and_merges(tmp_path):
    ts = pd.date_range("2023-12-01", periods=200, freq="8h", tz="UTC")
    f = pd.DataFrame({"timestamp": ts, "funding_rate": np.linspace(-1e-4, 3e-4, 200)})
    lake.write_funding(tmp_path, "BTC/USDT:USDT", f.iloc[:120])
    assert lake.write_funding(tmp_path, "BTC/USDT:USDT", f).rows_added == 80
    got = lake.read_funding(tmp_path, "BTC/USDT:USDT")
    pd.testing.assert_frame_equal(got, f.assign(timestamp=f.timestamp.astype("datetime64[ms, UTC]")))
    with pytest.raises(DataError, match="perpetuals"):
        lake.write_funding(tmp_path, "BTC/USDT", f)


def test_flat_datadir_reader_matches_the_shared_layout(tmp_path):
    c = _candles("2024-01-01", 300)
    path = tmp_path / "ohlcv" / "binance" / "BTC_USDT-1h.parquet"
    path.parent.mkdir(parents=True)
    c.to_parquet(path, index=False)
    got = lake.read_datadir_candles(tmp_path, ["BTC/USDT"], "1h", "2024-01-05", None)
    pd.testing.assert_frame_equal(got.drop(columns="symbol"), c[c.timestamp >= "2024-01-05"].reset_index(drop=True))
    with pytest.raises(DataError, match=r"no 1h candles for ETH/USDT .*have: BTC/USDT"):
        lake.read_datadir_candles(tmp_path, ["ETH/USDT"], "1h")
