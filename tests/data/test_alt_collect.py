"""qt collect's alt part: the file source stores each series with its publication time, a re-run adds
nothing (bytes and mtimes kept), a new day adds one row; the collect stage records it; the validate
stage quarantines a corrupt alt series on its own."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from data import lake
from data.alt_collect import alt_source_of, collect_alt
from data.alt_lake import alt_dir, read_alt
from data.quarantine import validate_stage
from data.sources import lake_root
from data.synthetic import generate_market
from qt.config import Params, SyntheticParams, load_params
from qt.errors import DataError
from qt.paths import StatePaths

DAYS = pd.date_range("2023-12-30", "2024-01-05", freq="D", tz="UTC")


def _source_dir(root, days=DAYS):
    (root / "alt").mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"timestamp": days, "value": range(40, 40 + len(days)), "classification": "Fear"}).to_parquet(
        root / "alt" / "fear_greed.parquet")
    pd.DataFrame({"timestamp": days, "mvrv": 2.0, "nupl": 0.5, "realized_price": 30_000.0,
                  "etf_flow_usd": float("nan")}).to_parquet(root / "alt" / "onchain_btc.parquet")
    pd.DataFrame({"timestamp": [pd.Timestamp("2024-01-02 10:15", tz="UTC")], "title": ["Bitcoin up"],
                  "source": ["x.com"], "votes": ["3 positive: votes, 1 negative: votes, 2 like: votes"]}).to_parquet(
        root / "alt" / "news_headlines.parquet")
    return root


def _params(src):
    return Params(alt={"series": ["fear_greed", "onchain_btc", "headlines"], "source": f"parquet:{src}"})


def test_rows_are_stored_with_their_publication_time(tmp_path):
    src = _source_dir(tmp_path / "src")
    collect_alt(_params(src), tmp_path / "lake")
    fng = read_alt(tmp_path / "lake", "fear_greed")
    onchain = read_alt(tmp_path / "lake", "onchain_btc")
    heads = read_alt(tmp_path / "lake", "headlines")
    assert (fng["available_at"] == fng["timestamp"]).all()  # published about 00:00 of its day
    assert (onchain["available_at"] == onchain["timestamp"] + pd.Timedelta(days=1)).all()  # after the day
    assert heads.loc[0, ["votes_positive", "votes_negative", "votes_liked"]].tolist() == [3.0, 1.0, 2.0]
    assert sorted(p.name for p in alt_dir(tmp_path / "lake", "fear_greed").glob("*.parquet")) == \
        ["2023.parquet", "2024.parquet"]


def test_a_rerun_adds_nothing_and_a_new_day_adds_one_row(tmp_path):
    src = _source_dir(tmp_path / "src")
    first = collect_alt(_params(src), tmp_path / "lake")["series"]
    assert first["fear_greed"]["rows_added"] == len(DAYS)
    files = sorted(alt_dir(tmp_path / "lake", "fear_greed").glob("*.parquet"))
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}
    again = collect_alt(_params(src), tmp_path / "lake")["series"]
    assert {k: (v["rows_added"], v["partitions_written"]) for k, v in again.items()} == \
        {k: (0, []) for k in ("fear_greed", "onchain_btc", "headlines")}
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files} == before
    _source_dir(src, pd.date_range("2023-12-30", "2024-01-06", freq="D", tz="UTC"))
    later = collect_alt(_params(src), tmp_path / "lake")["series"]["fear_greed"]
    assert (later["rows_added"], later["partitions_written"]) == (1, ["2024"])


def test_the_source_follows_data_source_and_refuses_the_synthetic_market():
    assert alt_source_of(Params(data={"source": "parquet:/d"}, alt={"series": ["fear_greed"]})) == "parquet:/d"
    assert alt_source_of(Params(data={"source": "ccxt"}, alt={"series": ["fear_greed"]})) == "api"
    with pytest.raises(DataError, match="synthetic market has no alternative data"):
        alt_source_of(Params(alt={"series": ["fear_greed"]}))


def test_collect_stage_records_the_alt_series(tmp_path):
    from flows import stages as pipeline

    src = _source_dir(tmp_path / "src")
    paths = StatePaths(tmp_path / "state").ensure()
    params = load_params(None, {"data": {"source": "synthetic:3", "symbols": ["BTC/USDT"]}, "synthetic": {"bars": 400},
                                "alt": {"series": ["fear_greed"], "source": f"parquet:{src}"}})
    pipeline.collect(params, paths)
    record = json.loads((paths.reports / "collect.json").read_text())["data"]["alt"]
    assert record["series"]["fear_greed"]["rows"] == len(DAYS)
    assert len(read_alt(lake_root(params, paths), "fear_greed")) == len(DAYS)


def test_validate_stage_quarantines_a_corrupt_alt_series_alone(tmp_path):
    paths = StatePaths(tmp_path).ensure()
    params = load_params(None, {"data": {"symbols": ["BTC/USDT"]}, "alt": {"series": ["fear_greed", "onchain_btc"],
                                                                         "max_staleness_days": 30.0}})
    candles = generate_market(["BTC/USDT"], "1h", SyntheticParams(bars=400, start="2023-12-25"), seed=1)
    root = lake_root(params, paths)
    lake.write_candles(root, "BTC/USDT", "1h", candles)
    collect_alt(params.model_copy(update={"alt": params.alt.model_copy(
        update={"source": f"parquet:{_source_dir(tmp_path / 'src')}"})}), root)
    (alt_dir(root, "fear_greed") / "2024.parquet").write_bytes(b"corrupt")
    out = validate_stage(params, paths)["validation"]
    assert out["passed_symbols"] == ["BTC/USDT"] and out["quarantined_alt"] == ["alt:fear_greed"]
    record = json.loads((paths.reports / "validation.json").read_text())
    assert record["alt"]["series"] == {"fear_greed": "quarantined", "onchain_btc": "passed"}
    assert "alt:fear_greed" in (paths.reports / "validation.md").read_text()
