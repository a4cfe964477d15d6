"""The collector against the real local exchange over HTTP, through the real ccxt client."""

from __future__ import annotations

import pytest
import json

import pandas as pd

from data import lake
from data.collector import collect_universe
from exchange import LocalExchange
from tests.data.support import (HOURLY, MINUTE, MINUTE_BARS, collect_params, funding_file, read_source,
                                write_source)
from tests.support import require_shared_data

pytestmark = pytest.mark.slow


def _stored(root, symbol, timeframe):
    return lake.read_symbol(root, symbol, timeframe)


def _files(root):
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_fresh_backfill_equals_the_source_exactly(clean_exchange, source_dir, tmp_path):
    report = collect_universe(collect_params(clean_exchange.url, HOURLY), tmp_path, progress=False)
    assert report.ok, report.to_dict()
    for symbol in HOURLY:
        pd.testing.assert_frame_equal(_stored(tmp_path, symbol, "1h"), read_source(source_dir, symbol, "1h"))
    by_symbol = {r.symbol: r for r in report.symbols}
    assert by_symbol["BTC/USDT"].rows_added == 3000 and by_symbol["BTC/USDT"].retries == 0
    funding = pd.read_parquet(funding_file(source_dir, "SOL/USDT:USDT"))
    pd.testing.assert_frame_equal(lake.read_funding(tmp_path, "SOL/USDT:USDT"), funding)
    assert by_symbol["SOL/USDT:USDT"].funding_rows_added == len(funding)
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_second_run_fetches_nothing_new_and_leaves_files_byte_identical(clean_exchange, tmp_path):
    params = collect_params(clean_exchange.url, HOURLY)
    assert collect_universe(params, tmp_path, progress=False).ok
    before = _files(tmp_path)
    again = collect_universe(params, tmp_path, progress=False)
    assert again.ok and sum(r.rows_added for r in again.symbols) == 0
    assert sum(r.funding_rows_added for r in again.symbols) == 0
    assert all(r.pages == 1 for r in again.symbols)  # one look past the newest candle, no re-download
    assert _files(tmp_path) == before


def test_the_open_candle_is_never_stored(source_dir, tmp_path):
    src = read_source(source_dir, "BTC/USDT", "1h")
    last_open = src.timestamp.iloc[-1]
    now = (last_open + pd.Timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S")  # inside the last bar
    with LocalExchange(source_dir, now=now, log_path=tmp_path / "ex.log") as ex:
        report = collect_universe(collect_params(ex.url, ["BTC/USDT"]), tmp_path / "raw", progress=False)
    assert report.ok
    stored = _stored(tmp_path / "raw", "BTC/USDT", "1h")
    assert stored.timestamp.iloc[-1] == last_open - pd.Timedelta(hours=1)
    pd.testing.assert_frame_equal(stored, src.iloc[:-1].reset_index(drop=True))


def test_one_minute_history_is_paginated_without_holes_and_reports_progress(clean_exchange, source_dir,
                                                                            tmp_path, capsys):
    report = collect_universe(collect_params(clean_exchange.url, [MINUTE], "1m"), tmp_path, progress=True)
    assert report.ok, report.to_dict()
    [r] = report.symbols
    assert r.rows_added == MINUTE_BARS and r.pages >= MINUTE_BARS // 1000
    pd.testing.assert_frame_equal(_stored(tmp_path, MINUTE, "1m"), read_source(source_dir, MINUTE, "1m"))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith(f"collect {MINUTE}")]
    assert any("10 pages" in line for line in lines) and any("20 pages" in line for line in lines)
    assert "done" in lines[-1]


def test_injected_429_5xx_timeouts_and_drops_are_retried_to_a_complete_copy(clean_exchange, source_dir, tmp_path):
    # spread over the requests (co-prime periods), so that every kind is injected at least once
    clean_exchange.set_faults({"rules": [
        {"kind": "429", "path_prefix": "/api/v3/klines", "every_nth": 5, "retry_after_s": 0},
        {"kind": "500", "path_prefix": "/api/v3/klines", "every_nth": 7},
        {"kind": "503", "path_prefix": "/fapi/v1/", "every_nth": 4},
        {"kind": "timeout", "path_prefix": "/api/v3/klines", "every_nth": 11, "timeout_s": 3.0},
        {"kind": "drop", "path_prefix": "/api/v3/klines", "every_nth": 13},
    ]})
    params = collect_params(clean_exchange.url, HOURLY, page_limit=300, timeout_ms=500, max_attempts=12)
    report = collect_universe(params, tmp_path, progress=False)
    injected = clean_exchange.fault_counts()
    assert report.ok, report.to_dict()
    for symbol in HOURLY:
        pd.testing.assert_frame_equal(_stored(tmp_path, symbol, "1h"), read_source(source_dir, symbol, "1h"))
    for kind in ("429", "500", "503", "timeout", "drop"):
        assert injected[kind] > 0, f"no {kind} was injected; the test would prove nothing about it"
    # every injected fault cost exactly one retry, and nothing else did
    assert sum(r.retries for r in report.symbols) == sum(injected.values())


def test_a_bad_symbol_is_reported_while_the_others_complete(clean_exchange, source_dir, tmp_path):
    clean_exchange.set_faults({"rules": [{"kind": "503", "symbol": "ETHUSDT"}]})
    params = collect_params(clean_exchange.url, ["NOPE/USDT", "ETH/USDT", "BTC/USDT"], max_attempts=3)
    report = collect_universe(params, tmp_path, progress=False)
    by_symbol = {r.symbol: r for r in report.symbols}
    assert not report.ok and [r.symbol for r in report.failed] == ["NOPE/USDT", "ETH/USDT"]
    assert "NOPE/USDT: unknown on binance" in by_symbol["NOPE/USDT"].error
    assert by_symbol["NOPE/USDT"].retries == 0
    assert by_symbol["ETH/USDT"].error.startswith("ETH/USDT: fetch_ohlcv on binance still failing after 3 attempts")
    assert by_symbol["ETH/USDT"].retries == 2
    assert by_symbol["BTC/USDT"].ok
    pd.testing.assert_frame_equal(_stored(tmp_path, "BTC/USDT", "1h"), read_source(source_dir, "BTC/USDT", "1h"))
    assert report.to_dict()["failed"] == ["NOPE/USDT", "ETH/USDT"]


def test_a_hole_in_the_lake_is_refetched_and_filled(clean_exchange, source_dir, tmp_path):
    src = read_source(source_dir, "ETH/USDT", "1h")
    lake.write_candles(tmp_path, "ETH/USDT", "1h", src.drop(index=range(1000, 1050)))  # stored from elsewhere
    report = collect_universe(collect_params(clean_exchange.url, ["ETH/USDT"]), tmp_path, progress=False)
    [r] = report.symbols
    assert r.ok and r.gap_requests == 1 and r.gaps_filled == 1 and r.gaps_unfillable == 0 and r.rows_added == 50
    pd.testing.assert_frame_equal(_stored(tmp_path, "ETH/USDT", "1h"), src)


def _serve_with_hole(directory, frame, tmp_path, now):
    write_source(directory, frame.assign(symbol="BTC/USDT"), "1h")
    return LocalExchange(directory, now=now, log_path=tmp_path / "ex.log")


def _check_unfillable(ex, root, expected_gap):
    params = collect_params(ex.url, ["BTC/USDT"], backfill_start="2018-01-20")
    first = collect_universe(params, root, progress=False).symbols[0]
    assert first.ok and first.gap_requests == 1 and first.gaps_filled == 0 and first.gaps_unfillable == 1
    state = json.loads((lake.candle_path(root, "BTC/USDT", "1h") / "state.json").read_text())
    assert [(g["start"], g["end"]) for g in state["unfillable_gaps"]] == [expected_gap]
    second = collect_universe(params, root, progress=False).symbols[0]
    assert second.ok and second.gap_requests == 0 and second.rows_added == 0 and second.gaps_unfillable == 1


def test_real_exchange_outage_is_recorded_unfillable_and_not_asked_again(tmp_path):
    shared = require_shared_data()
    real = pd.read_parquet(shared / "ohlcv/binance/BTC_USDT-1h.parquet")
    real = real[(real.timestamp >= "2018-02-01") & (real.timestamp < "2018-02-15")].reset_index(drop=True)
    missing = real.timestamp.diff() > pd.Timedelta(hours=1)
    assert missing.sum() >= 1, "the shared BTC 1h data no longer has the 2018-02-08 outage"
    i = int(missing.idxmax())
    gap = ((real.timestamp[i - 1] + pd.Timedelta(hours=1)).isoformat(), real.timestamp[i].isoformat())
    with _serve_with_hole(tmp_path / "src", real, tmp_path, "2018-02-15T00:00:00") as ex:
        _check_unfillable(ex, tmp_path / "raw", gap)
    pd.testing.assert_frame_equal(_stored(tmp_path / "raw", "BTC/USDT", "1h"), real)


def test_synthetic_exchange_gap_is_recorded_unfillable_and_not_asked_again(source_dir, tmp_path):
    src = read_source(source_dir, "BTC/USDT", "1h")
    holed = src.drop(index=range(500, 534)).reset_index(drop=True)
    gap = (src.timestamp[500].isoformat(), src.timestamp[534].isoformat())
    with _serve_with_hole(tmp_path / "src", holed, tmp_path, "2024-06-01T00:00:00") as ex:
        params = collect_params(ex.url, ["BTC/USDT"])
        first = collect_universe(params, tmp_path / "raw", progress=False).symbols[0]
        assert first.ok and first.gap_requests == 1 and first.gaps_unfillable == 1
        state = lake.read_state(tmp_path / "raw", "BTC/USDT", "1h")
        assert [(g["start"], g["end"], g["missing_bars"]) for g in state["unfillable_gaps"]] == [(*gap, 34)]
        second = collect_universe(params, tmp_path / "raw", progress=False).symbols[0]
        assert second.ok and second.gap_requests == 0 and second.pages == 1
    pd.testing.assert_frame_equal(_stored(tmp_path / "raw", "BTC/USDT", "1h"), holed)


def test_top_universe_ranks_by_quote_volume_from_the_exchange_tickers(clean_exchange, source_dir):
    from data.collector import select_universe
    from qt.binance import make_ccxt

    params = collect_params(clean_exchange.url, ["BTC/USDT"], universe="top", top_n=2)
    chosen = select_universe(make_ccxt("spot", clean_exchange.url), params)
    # the served 24h window ends at the exchange's now, after the last source candle: rank the
    # last 24 source candles' base volume x mean price, as the exchange documents its estimate
    volumes = {}
    for symbol in ("BTC/USDT", "ETH/USDT"):
        last = read_source(source_dir, symbol, "1h").tail(24)
        volumes[symbol] = float((last.volume * last[["open", "high", "low", "close"]].mean(axis=1)).sum())
    assert set(chosen) == {"BTC/USDT", "ETH/USDT"}
    assert chosen == sorted(volumes, key=volumes.get, reverse=True)
