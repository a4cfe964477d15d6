"""Where the data dir keeps Bybit's USDT perpetuals (the layout of ``../shared/data``)::

    ohlcv/bybit/<BASE>_<QUOTE>-<tf>.parquet         last-trade candles, ccxt BASE/QUOTE:QUOTE
    ohlcv/bybit/<BASE>_<QUOTE>-<tf>-mark.parquet    mark-price candles (no volume column)
    funding/bybit/<BASE>_<QUOTE>-funding.parquet    timestamp, funding_rate

Read through the one ``DataDir`` cache (keyed by path and mtime), so a Bybit file rewritten
while the server runs is picked up like a Binance one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from exchange.datadir import SUPPORTED_TIMEFRAMES, Bars, DataDir, Funding, MarketFiles, read_bars, read_funding
from qt.errors import DataError
from qt.timeframes import timeframe_ms

_read_mark = partial(read_bars, with_volume=False)


@dataclass(frozen=True)
class BybitMarket:
    """One Bybit linear perpetual of the data dir."""

    base: str
    quote: str
    candle_files: dict[str, Path]  # timeframe -> last-trade candles
    mark_files: dict[str, Path]  # timeframe -> mark-price candles
    funding_file: Path | None

    @property
    def symbol(self) -> str:
        """Bybit's symbol, ``BTCUSDT``."""
        return f"{self.base}{self.quote}"

    @property
    def finest_timeframe(self) -> str:
        return min(self.candle_files, key=timeframe_ms)


class BybitFiles:
    """The Bybit markets and series of a data dir (rescanned per call: a few directory stats)."""

    def __init__(self, data: DataDir):
        self.data = data

    def markets(self) -> dict[str, BybitMarket]:
        folder = self.data.root / "ohlcv" / "bybit"
        candles: dict[tuple[str, str], dict[str, Path]] = {}
        marks: dict[tuple[str, str], dict[str, Path]] = {}
        for path in sorted(folder.glob("*-*.parquet")) if folder.is_dir() else []:
            name = path.name[: -len(".parquet")]
            target = candles
            if name.endswith("-mark"):
                name, target = name[: -len("-mark")], marks
            stem, _, timeframe = name.rpartition("-")
            if timeframe not in SUPPORTED_TIMEFRAMES or "_" not in stem:
                continue  # not a candle file of ours (a manifest, a temp file)
            base, quote = stem.split("_", 1)
            target.setdefault((base, quote), {})[timeframe] = path
        out = {}
        for (base, quote), by_tf in candles.items():
            funding = self.data.root / "funding" / "bybit" / f"{base}_{quote}-funding.parquet"
            market = BybitMarket(base, quote, by_tf, marks.get((base, quote), {}),
                                 funding if funding.is_file() else None)
            out[market.symbol] = market
        return out

    def tradable(self, kind: str) -> dict[str, MarketFiles]:
        """The perpetuals as the matching venue names markets (``exchange.trading.TradingVenue``'s
        ``markets``): Bybit has no spot here, so any other kind is empty."""
        if kind != "perp":
            return {}
        return {symbol: MarketFiles("perp", m.base, m.quote, m.candle_files, m.funding_file)
                for symbol, m in self.markets().items()}

    def bars(self, market: BybitMarket, timeframe: str) -> Bars:
        return self.data.cached(market.candle_files[timeframe], read_bars)

    def mark_bars(self, market: BybitMarket, timeframe: str) -> Bars:
        """Mark-price candles (volume zeros); DataError when the data dir has none for ``market``."""
        path = market.mark_files.get(timeframe)
        if path is None:
            raise DataError(f"{market.symbol}: no {timeframe} mark-price file in the data dir")
        return self.data.cached(path, _read_mark)

    def funding(self, market: BybitMarket) -> Funding:
        if market.funding_file is None:
            return Funding(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64))
        return self.data.cached(market.funding_file, read_funding)


__all__ = ["BybitFiles", "BybitMarket"]
