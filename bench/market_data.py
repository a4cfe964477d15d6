"""Collection and validation throughput (issue #3).

* collection: a fresh backfill through ccxt from the local exchange into the lake, in
  candles/s; reference = the same klines pages fetched with plain httpx (no ccxt, no lake),
  so the ratio is what ccxt's parsing + rate limiter + lake writes cost;
* validation: the Great Expectations candle suite on the real 1h set, in rows/s; reference =
  the same critical checks written as plain vectorised pandas in this run.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import httpx
import pandas as pd

from qt.config import SyntheticParams, ValidationParams, load_params
from data.synthetic import generate_market
from qt.timeframes import timeframe_ms

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _raw_http_fetch(url: str, symbols: list[str], timeframe: str, start_ms: int, end_ms: int) -> int:
    """Every klines page, fetched and JSON-decoded with httpx: the floor for any collector."""
    step = timeframe_ms(timeframe)
    rows = 0
    with httpx.Client(timeout=30) as client:
        for sym in symbols:
            since = start_ms
            while since < end_ms:
                page = client.get(f"{url}/api/v3/klines", params={
                    "symbol": sym.replace("/", ""), "interval": timeframe, "startTime": since, "limit": 1000}).json()
                if not page:
                    break
                rows += len(page)
                since = int(page[-1][0]) + step
    return rows


def bench_collection(symbols: list[str], bars: int, timeframe: str = "1h") -> dict:
    from data.collector import collect_universe
    from exchange import LocalExchange
    from exchange.datadir import write_datadir

    candles = generate_market(symbols, timeframe, SyntheticParams(bars=bars, start="2022-01-01"), seed=3)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        write_datadir(candles, src, timeframe)
        params = load_params(None, {"data": {"symbols": symbols, "timeframe": timeframe},
                                    "collect": {"backfill_start": "2022-01-01", "funding": False,
                                                "open_interest": False, "concurrency": 1}})
        with LocalExchange(src) as ex:
            start_ms = int(candles["timestamp"].min().value // 10**6)
            end_ms = int(candles["timestamp"].max().value // 10**6) + timeframe_ms(timeframe)
            t0 = time.perf_counter()
            ref_rows = _raw_http_fetch(ex.url, symbols, timeframe, start_ms, end_ms)
            ref_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            report = collect_universe(params, Path(tmp) / "lake", exchange_url=ex.url, progress=False)
            col_s = time.perf_counter() - t0
    rows = sum(s.rows_added for s in report.symbols)
    assert report.ok and rows == len(candles), report.to_dict()
    return {"symbols": len(symbols), "timeframe": timeframe, "candles": rows,
            "collector_seconds": round(col_s, 3), "collector_candles_per_s": round(rows / col_s),
            "raw_http_seconds": round(ref_s, 3), "raw_http_candles_per_s": round(ref_rows / ref_s),
            "collector_vs_raw_http_time_ratio": round(col_s / ref_s, 2)}


def _pandas_checks(df: pd.DataFrame, timeframe: str) -> int:
    """The suite's critical checks as plain pandas; returns the number of failing rows."""
    step = timeframe_ms(timeframe)
    ts = df["timestamp"].astype("int64")
    bad = df[["open", "high", "low", "close", "volume"]].isna().any(axis=1)
    bad |= (df[["open", "high", "low", "close"]] <= 0).any(axis=1) | (df["volume"] < 0)
    bad |= (df["high"] < df["low"]) | (df["high"] < df[["open", "close"]].max(axis=1))
    bad |= df["low"] > df[["open", "close"]].min(axis=1)
    bad |= df.duplicated(["symbol", "timestamp"])
    bad |= (ts.groupby(df["symbol"]).diff() <= 0) | (ts % step != 0)
    return int(bad.sum())


def bench_validation() -> dict | None:
    from data.lake import read_datadir_candles
    from data.validate import validate_candles

    if not (SHARED / "ohlcv").is_dir():
        return None
    symbols = [f"{b}/USDT" for b in ("BTC", "ETH", "BNB", "SOL", "XRP", "ADA", "DOGE", "LTC")]
    candles = read_datadir_candles(SHARED, symbols, "1h")
    validate_candles(candles.head(1000), "1h", ValidationParams())  # warm: GX import and first context
    t0 = time.perf_counter()
    report = validate_candles(candles, "1h", ValidationParams())
    gx_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    failing = _pandas_checks(candles, "1h")
    pd_s = time.perf_counter() - t0
    return {"rows": len(candles), "symbols": len(symbols), "gx_seconds": round(gx_s, 3),
            "gx_rows_per_s": round(len(candles) / gx_s), "gx_success": report.success,
            "pandas_reference_seconds": round(pd_s, 3), "pandas_reference_rows_per_s": round(len(candles) / pd_s),
            "pandas_reference_failing_rows": failing, "gx_vs_pandas_time_ratio": round(gx_s / pd_s, 1)}


def run() -> dict:
    out = {"collection_1h": bench_collection(["BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT"], 8760, "1h"),
           "collection_1m": bench_collection(["XRP/USDT"], 50_000, "1m"),
           "validation": bench_validation() or "skipped: ../shared/data absent"}
    return out
