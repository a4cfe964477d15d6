"""Read-only access to a Parquet directory in the shared-data layout, for the local exchange.

Layout (the same as ``../shared/data`` and the raw lake, see ``data.lake``)::

    ohlcv/binance/<BASE>_<QUOTE>-<tf>.parquet         spot,  ccxt BASE/QUOTE
    ohlcv/binanceusdm/<BASE>_<QUOTE>-<tf>.parquet     perps, ccxt BASE/QUOTE:QUOTE
    funding/binanceusdm/<BASE>_<QUOTE>-funding.parquet

(Bybit's ``ohlcv/bybit`` / ``funding/bybit`` files are found by ``exchange.bybit.files``,
read with ``read_bars`` / ``read_funding`` through the same ``DataDir.cached``.)

Series are held as numpy arrays (``Bars``, ``Funding``) because the exchange slices them
on every request; they are cached in memory keyed by (path, mtime), so a file rewritten
while the server runs is picked up on the next request, never served stale.

``write_datadir`` writes such a directory from a candles frame (the synthetic market), one
atomic file per symbol. This is the flat layout of ``../shared/data``, not the raw lake's
partitioned one (``data.lake``): the exchange serves a *source*, the lake stores what was
collected from it.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from qt.atomic import replace_atomic, tmp_path
from qt.errors import DataError
from qt.timeframes import timeframe_ms

Kind = Literal["spot", "perp"]
_MARKET_DIR: dict[str, Kind] = {"binance": "spot", "binanceusdm": "perp"}
_KIND_DIR = {kind: name for name, kind in _MARKET_DIR.items()}
SUPPORTED_TIMEFRAMES = ("1m", "5m", "15m", "1h", "4h", "1d")
OHLCV_COLUMNS = ["timestamp", "open", "high", "low", "close", "volume"]


@dataclass(frozen=True)
class MarketFiles:
    """One market of the data dir: how ccxt and Binance name it and where its data lives."""

    kind: Kind
    base: str
    quote: str
    candle_files: dict[str, Path]  # timeframe -> Parquet path
    funding_file: Path | None

    @property
    def exchange_id(self) -> str:
        """Binance's market id, ``BTCUSDT`` (the same for spot and the USDT-M perpetual)."""
        return f"{self.base}{self.quote}"

    @property
    def ccxt_symbol(self) -> str:
        return f"{self.base}/{self.quote}" + (f":{self.quote}" if self.kind == "perp" else "")

    @property
    def finest_timeframe(self) -> str:
        return min(self.candle_files, key=timeframe_ms)


@dataclass(frozen=True)
class Bars:
    """A candle series as arrays; ``ts_ms`` are open times in ms, strictly increasing."""

    ts_ms: np.ndarray  # int64
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray  # base asset

    def __len__(self) -> int:
        return len(self.ts_ms)

    def slice(self, lo: int, hi: int) -> "Bars":
        return Bars(self.ts_ms[lo:hi], self.open[lo:hi], self.high[lo:hi], self.low[lo:hi],
                    self.close[lo:hi], self.volume[lo:hi])


@dataclass(frozen=True)
class Funding:
    """Funding settlements: ``ts_ms`` (settlement time, ms) and ``rate`` (fraction per interval)."""

    ts_ms: np.ndarray
    rate: np.ndarray


class DataDir:
    """The markets and series of one data directory; thread-safe, caches by (path, mtime)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        if not (self.root / "ohlcv").is_dir():
            raise DataError(f"{self.root}: no ohlcv/ folder; point --data at a directory laid out like "
                            f"../shared/data (ohlcv/binance, ohlcv/binanceusdm)")
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, int], Bars | Funding | DataError] = {}

    def markets(self, kind: Kind) -> dict[str, MarketFiles]:
        """Markets of ``kind`` by Binance id (``BTCUSDT``); rescanned on each call (a few stats)."""
        folder = self.root / "ohlcv" / _KIND_DIR[kind]
        files: dict[tuple[str, str], dict[str, Path]] = {}
        for path in sorted(folder.glob("*-*.parquet")) if folder.is_dir() else []:
            stem, _, timeframe = path.name[: -len(".parquet")].rpartition("-")
            if timeframe not in SUPPORTED_TIMEFRAMES or "_" not in stem:
                continue  # not a candle file of ours (e.g. a manifest or a temp file)
            base, quote = stem.split("_", 1)
            files.setdefault((base, quote), {})[timeframe] = path
        out = {}
        for (base, quote), by_tf in files.items():
            funding = self.root / "funding" / "binanceusdm" / f"{base}_{quote}-funding.parquet"
            market = MarketFiles(kind, base, quote, by_tf,
                                 funding if kind == "perp" and funding.is_file() else None)
            out[market.exchange_id] = market
        return out

    def bars(self, market: MarketFiles, timeframe: str) -> Bars:
        """The stored candles of ``market`` at ``timeframe`` (which must be one of its files)."""
        path = market.candle_files[timeframe]
        return self.cached(path, _read_bars)

    def funding(self, market: MarketFiles) -> Funding:
        """Funding settlements of a perpetual; empty when the data dir has none for it."""
        if market.funding_file is None:
            return Funding(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64))
        return self.cached(market.funding_file, read_funding)

    def cached(self, path: Path, reader):
        """``reader(path)``, memoised per (path, mtime); a DataError is memoised too. Public so
        the other protocols' file layouts (``exchange.bybit.files``) share the one cache."""
        try:
            mtime_ns = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            raise DataError(f"{path}: vanished from the data dir while serving") from None
        key = (str(path), mtime_ns)
        with self._lock:
            hit = self._cache.get(key)
        if isinstance(hit, DataError):
            raise hit  # a bad file is judged once per version, not re-read on every request
        if hit is not None:
            return hit
        try:
            value = reader(path)
        except DataError as exc:
            value = exc
        with self._lock:
            for old in [k for k in self._cache if k[0] == key[0]]:
                del self._cache[old]
            self._cache[key] = value
        if isinstance(value, DataError):
            raise value
        return value


def _ts_ms(series: pd.Series) -> np.ndarray:
    return pd.to_datetime(series, utc=True).astype("datetime64[ms, UTC]").astype("int64").to_numpy()


def _read_bars(path: Path) -> Bars:
    return read_bars(path)


def read_bars(path: Path, with_volume: bool = True) -> Bars:
    """A checked candle file; ``with_volume=False`` for price series that have none (mark-price
    candles), whose ``volume`` is then zeros rather than a made-up number."""
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a data error
        raise DataError(f"{path}: unreadable Parquet ({type(exc).__name__}: {exc})") from None
    expected = OHLCV_COLUMNS if with_volume else OHLCV_COLUMNS[:-1]
    missing = [c for c in expected if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing}; expected {expected}")
    if not with_volume:
        df = df.assign(volume=0.0)
    ts = _ts_ms(df["timestamp"])
    if len(ts) > 1 and not (np.diff(ts) > 0).all():
        raise DataError(f"{path}: {_order_problem(ts)}; the exchange cannot serve it - rewrite the file "
                        f"sorted and de-duplicated")
    cols = {c: df[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close", "volume")}
    return Bars(ts, **cols)


def _order_problem(ts_ms: np.ndarray) -> str:
    """What is wrong with timestamps that are not strictly increasing: duplicates (the first one named)
    or, if none, the first step backwards."""
    dup = pd.Series(ts_ms).duplicated()
    if dup.any():
        first = pd.Timestamp(int(ts_ms[int(np.argmax(dup.to_numpy()))]), unit="ms", tz="UTC")
        return f"{int(dup.sum())} duplicated timestamp(s), the first {first.isoformat()}"
    back = int(np.argmax(np.diff(ts_ms) <= 0)) + 1
    return f"timestamps unsorted (row {back} is earlier than row {back - 1})"


def read_funding(path: Path) -> Funding:
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: unreadable Parquet ({type(exc).__name__}: {exc})") from None
    if "timestamp" not in df.columns or "funding_rate" not in df.columns:
        raise DataError(f"{path}: expected columns timestamp, funding_rate; got {list(df.columns)}")
    df = df.sort_values("timestamp", kind="stable")
    return Funding(_ts_ms(df["timestamp"]), df["funding_rate"].to_numpy(dtype=np.float64))


def write_datadir(candles: pd.DataFrame, root: Path, timeframe: str,
                  funding: pd.DataFrame | None = None) -> list[Path]:
    """Write ``candles`` (the candles-frame contract, several symbols) under ``root`` in the
    shared-data layout; ``funding`` (columns symbol, timestamp, funding_rate) for perpetuals.

    Every file is written atomically (temp file + rename), so a server reading the
    directory never sees half a file. Returns the paths written.
    """
    if timeframe not in SUPPORTED_TIMEFRAMES:
        raise DataError(f"timeframe {timeframe!r} not one of {SUPPORTED_TIMEFRAMES}")
    missing = [c for c in ("symbol", *OHLCV_COLUMNS) if c not in candles.columns]
    if missing:
        raise DataError(f"candles frame lacks columns {missing}")
    if candles.empty:
        raise DataError("candles frame is empty; nothing to serve")
    if funding is not None:  # checked before anything is written: all or nothing of the input
        spot_funding = sorted({str(s) for s in funding["symbol"] if ":" not in str(s)})
        if spot_funding:
            raise DataError(f"funding for {spot_funding}: only perpetuals (BASE/QUOTE:SETTLE) have funding")
    written = []
    for symbol, group in candles.groupby("symbol", sort=True):
        ohlcv = group[OHLCV_COLUMNS].sort_values("timestamp", kind="stable").reset_index(drop=True)
        if ohlcv["timestamp"].duplicated().any():
            raise DataError(f"{symbol}: duplicated timestamps in the candles frame")
        ohlcv["timestamp"] = pd.to_datetime(ohlcv["timestamp"], utc=True).astype("datetime64[ms, UTC]")
        for column in OHLCV_COLUMNS[1:]:
            ohlcv[column] = ohlcv[column].astype("float64")
        written.append(_atomic_parquet(ohlcv, datadir_candle_path(Path(root), str(symbol), timeframe)))
    if funding is not None:
        for symbol, group in funding.groupby("symbol", sort=True):
            frame = pd.DataFrame({
                "timestamp": pd.to_datetime(group["timestamp"], utc=True).astype("datetime64[ms, UTC]"),
                "funding_rate": group["funding_rate"].astype("float64"),
            }).sort_values("timestamp").reset_index(drop=True)
            path = Path(root) / "funding" / "binanceusdm" / f"{_stem(str(symbol))}-funding.parquet"
            written.append(_atomic_parquet(frame, path))
    return written


def datadir_candle_path(root: Path, symbol: str, timeframe: str) -> Path:
    """``ohlcv/binance/BTC_USDT-1h.parquet`` for ``BTC/USDT``, ``ohlcv/binanceusdm/...`` for ``BTC/USDT:USDT``."""
    market = "binanceusdm" if ":" in symbol else "binance"
    return Path(root) / "ohlcv" / market / f"{_stem(symbol)}-{timeframe}.parquet"


def _stem(symbol: str) -> str:
    if "/" not in symbol:
        raise DataError(f"symbol {symbol!r} is not a ccxt symbol; write it as BASE/QUOTE, e.g. BTC/USDT")
    return symbol.split(":")[0].replace("/", "_")


def _atomic_parquet(frame: pd.DataFrame, path: Path) -> Path:
    """Write then rename in the same directory: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        frame.to_parquet(tmp, index=False)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    replace_atomic(tmp, path)
    return path


__all__ = ["Bars", "DataDir", "Funding", "Kind", "MarketFiles", "OHLCV_COLUMNS", "SUPPORTED_TIMEFRAMES",
           "datadir_candle_path", "read_bars", "read_funding", "write_datadir"]
