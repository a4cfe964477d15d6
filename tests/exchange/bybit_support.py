"""A small Bybit data dir (``ohlcv/bybit``, ``funding/bybit``, laid out like ../shared/data) and
the real ccxt ``bybit`` client pointed at a local exchange, for the ``test_bybit_*`` modules."""

from __future__ import annotations

from pathlib import Path

import ccxt
import numpy as np
import pandas as pd

from data.synthetic import generate_market
from qt.binance import rewrite_api_urls
from qt.config import SyntheticParams

BYBIT_SYMBOLS = ("BTC/USDT:USDT", "ETH/USDT:USDT")  # half history, half future at NOW
LATE_SYMBOL = "SOL/USDT:USDT"  # first candle after NOW: not listed yet


def _stem(symbol: str) -> str:
    return symbol.split(":")[0].replace("/", "_")


def write_bybit_datadir(root: Path) -> Path:
    """Last-trade and mark-price 1h candles and 8-hourly funding of two perps from 2023-01-01
    (3000 hours) and one from 2023-04-01; returns ``root``."""
    folder, funding_folder = root / "ohlcv" / "bybit", root / "funding" / "bybit"
    folder.mkdir(parents=True), funding_folder.mkdir(parents=True)
    rng = np.random.default_rng(11)
    markets = [(list(BYBIT_SYMBOLS), SyntheticParams(bars=3000, start="2023-01-01"), 8),
               ([LATE_SYMBOL], SyntheticParams(bars=300, start="2023-04-01"), 9)]
    for symbols, params, seed in markets:
        candles = generate_market(symbols, "1h", params, seed=seed)
        for symbol, group in candles.groupby("symbol"):
            frame = group[["timestamp", "open", "high", "low", "close", "volume"]].reset_index(drop=True)
            frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True).astype("datetime64[ms, UTC]")
            frame.to_parquet(folder / f"{_stem(symbol)}-1h.parquet", index=False)
            mark = frame.drop(columns="volume")
            for column in ("open", "high", "low", "close"):
                mark[column] = np.round(mark[column] * (1 + rng.normal(0, 2e-5, len(mark))), 2)
            mark.to_parquet(folder / f"{_stem(symbol)}-1h-mark.parquet", index=False)
            first = frame["timestamp"].iloc[0]
            times = pd.date_range(first, frame["timestamp"].iloc[-1], freq="8h", tz="UTC")
            pd.DataFrame({"timestamp": times.astype("datetime64[ms, UTC]"),
                          "funding_rate": np.round(rng.normal(1e-4, 2e-4, len(times)), 8)}) \
                .to_parquet(funding_folder / f"{_stem(symbol)}-funding.parquet", index=False)
    return root


def bybit_client(url: str, api_key: str | None = None, secret: str | None = None,
                 timeout_ms: int = 10_000) -> ccxt.bybit:
    """The real ccxt ``bybit`` for linear perps only, every ``urls['api']`` entry moved to ``url``."""
    credentials = {"apiKey": api_key, "secret": secret} if api_key else {}
    client = ccxt.bybit({**credentials, "enableRateLimit": False, "timeout": timeout_ms,
                         "options": {"fetchMarkets": {"types": ["linear"]}, "fetchCurrencies": False}})
    client.urls["api"] = rewrite_api_urls(client.urls["api"], url)
    return client


def recorded_paths(client: ccxt.bybit) -> list[str]:
    """Start recording the ``METHOD path?query`` of every request ``client`` sends."""
    seen: list[str] = []
    fetch = client.fetch

    def recording(url, method="GET", headers=None, body=None):
        seen.append(f"{method} {url.split('://', 1)[1].split('/', 1)[1]}")
        return fetch(url, method, headers, body)

    client.fetch = recording
    return seen


def pybit_session(url: str, api_key: str | None = None, secret: str | None = None):
    """pybit's ``unified_trading.HTTP`` pointed at ``url``.

    pybit builds its base URL as ``https://api.{domain}.{tld}`` in ``__post_init__`` and sends
    every request to ``self.endpoint + path``; it has no argument for a whole URL, so the
    attribute is replaced after construction (pybit's own code is untouched)."""
    from pybit.unified_trading import HTTP

    session = HTTP(api_key=api_key, api_secret=secret, max_retries=1, timeout=10)
    session.endpoint = url.rstrip("/")
    return session
