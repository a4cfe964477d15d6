"""The small synthetic source data set the collector tests run against, and its helpers.

The source files are written with plain pandas in the flat ``../shared/data`` layout, and
the tests compare what the collector stored against those files read back with pandas:
the expected values never come from the code under test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from qt.config import load_params
from data.synthetic import generate_market

HOURLY = ["BTC/USDT", "ETH/USDT", "SOL/USDT:USDT"]
MINUTE = "XRP/USDT:USDT"
HOURLY_START = "2024-01-01"
HOURLY_BARS = 3000
MINUTE_START = "2024-03-01"
MINUTE_BARS = 20_000
# After every source candle closed: the whole data set is history.
NOW_AFTER_ALL = "2024-06-01T00:00:00"


def source_file(src: Path, symbol: str, timeframe: str) -> Path:
    market = "binanceusdm" if ":" in symbol else "binance"
    return src / "ohlcv" / market / f"{symbol.split(':')[0].replace('/', '_')}-{timeframe}.parquet"


def funding_file(src: Path, symbol: str) -> Path:
    return src / "funding" / "binanceusdm" / f"{symbol.split(':')[0].replace('/', '_')}-funding.parquet"


def write_source(src: Path, candles: pd.DataFrame, timeframe: str) -> None:
    for symbol, g in candles.groupby("symbol"):
        path = source_file(src, symbol, timeframe)
        path.parent.mkdir(parents=True, exist_ok=True)
        g.drop(columns="symbol").reset_index(drop=True).to_parquet(path, index=False)


def read_source(src: Path, symbol: str, timeframe: str) -> pd.DataFrame:
    return pd.read_parquet(source_file(src, symbol, timeframe))


def build_source(src: Path) -> Path:
    """3 symbols x 1h x 3000 bars (one perpetual), one 1m perpetual x 20k bars, 8h funding."""
    p = load_params(None, {"synthetic": {"bars": HOURLY_BARS, "start": HOURLY_START}})
    write_source(src, generate_market(HOURLY, "1h", p.synthetic, 11), "1h")
    p = load_params(None, {"synthetic": {"bars": MINUTE_BARS, "start": MINUTE_START}})
    write_source(src, generate_market([MINUTE], "1m", p.synthetic, 12), "1m")
    rng = np.random.default_rng(5)
    for symbol in ("SOL/USDT:USDT", MINUTE):
        ts = pd.date_range(HOURLY_START, "2024-05-01", freq="8h", tz="UTC", inclusive="left")
        path = funding_file(src, symbol)
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"timestamp": ts.astype("datetime64[ms, UTC]"),
                      "funding_rate": rng.normal(1e-4, 2e-4, len(ts))}).to_parquet(path, index=False)
    return src


def collect_params(exchange_url: str, symbols: list[str], timeframe: str = "1h", **collect):
    fast = {"backoff_base_s": 0.01, "backoff_cap_s": 0.05, "timeout_ms": 2000, "exchange_url": exchange_url,
            "backfill_start": "2023-06-01"}
    return load_params(None, {"data": {"symbols": symbols, "timeframe": timeframe},
                              "collect": {**fast, **collect}})
