"""One USDT perpetual's series on both venues (Binance USDT-M and Bybit), read for a comparison.

Why a module of its own: the cross-venue report (``features.xv_report``) reads the same four
series - candles and funding on each venue - either from the raw lake (``data.lake`` with its
``venue`` keyword; Bybit's may live under another root, ``data.sources.venue_lake_root``) or
straight from a directory laid out like ``../shared/data`` (``ohlcv/<market>/<STEM>-<tf>.parquet``,
``funding/<market>/<STEM>-funding.parquet``). Both give the same frames; a missing series is a
DataError naming the path and how to get it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from data import lake
from data.partitions import OHLCV_COLUMNS, market_dir, read_partition, symbol_stem
from data.perp_series import FUNDING_COLUMNS, read_funding
from qt.errors import DataError
from qt.timeframes import utc_timestamp

BYBIT_HINT = "collect it with `qt collect --exchange bybit`"


@dataclass(frozen=True)
class VenuePair:
    """``symbol``'s candles (timestamp, OHLCV) and funding (timestamp, funding_rate) on both venues."""

    symbol: str
    binance: pd.DataFrame
    bybit: pd.DataFrame
    binance_funding: pd.DataFrame
    bybit_funding: pd.DataFrame


def check_perpetual(symbol: str) -> None:
    """DataError unless ``symbol`` is a USDT perpetual (``BASE/USDT:USDT``): Bybit's series are
    perpetuals only, and a spot symbol has no funding to compare."""
    if ":" not in symbol or "/" not in symbol:
        base = symbol.split("/")[0] or symbol
        raise DataError(f"{symbol} is not a USDT perpetual; the cross-venue comparison needs one on both venues: "
                        f"write it as {base}/USDT:USDT")


def read_pair_from_lake(binance_root: Path, bybit_root: Path, symbol: str, timeframe: str, start=None, end=None,
                        funding_lead: pd.Timedelta = pd.Timedelta(days=1)) -> VenuePair:
    """The four series from the raw lake(s); funding from ``funding_lead`` before ``start`` on (the
    first settlements compare with Binance's rate before them)."""
    check_perpetual(symbol)
    f_start = None if start is None else utc_timestamp(start) - funding_lead
    binance = lake.read_candles(binance_root, [symbol], timeframe, start, end).drop(columns="symbol")
    try:
        bybit = lake.read_candles(bybit_root, [symbol], timeframe, start, end, venue="bybit").drop(columns="symbol")
    except DataError as exc:
        raise DataError(f"{symbol}: no Bybit {timeframe} candles under {bybit_root} ({str(exc)[:120]}); "
                        f"{BYBIT_HINT}") from None
    binance_funding = read_funding(binance_root, symbol, f_start, end)
    bybit_funding = read_funding(bybit_root, symbol, f_start, end, venue="bybit")
    return _checked(VenuePair(symbol, binance, bybit, binance_funding, bybit_funding),
                    {"Binance funding": binance_root, "Bybit funding": bybit_root})


def read_pair_from_datadir(directory: Path, symbol: str, timeframe: str, start=None, end=None,
                           funding_lead: pd.Timedelta = pd.Timedelta(days=1)) -> VenuePair:
    """The four series from a ``../shared/data``-like directory (one file per series)."""
    check_perpetual(symbol)
    directory = Path(directory)
    lo, hi = utc_timestamp(start), utc_timestamp(end)
    stem = symbol_stem(symbol)
    frames = {}
    for name, venue in (("binance", "binance"), ("bybit", "bybit")):
        path = directory / "ohlcv" / market_dir(symbol, venue) / f"{stem}-{timeframe}.parquet"
        if not path.is_file():
            hint = BYBIT_HINT if venue == "bybit" else "add it to the directory"
            raise DataError(f"{symbol}: no {venue} {timeframe} candles at {path}; {hint}")
        frames[name] = _between(read_partition(path, OHLCV_COLUMNS), lo, hi)
    for name, venue in (("binance_funding", "binance"), ("bybit_funding", "bybit")):
        path = directory / "funding" / market_dir(symbol, venue) / f"{stem}-funding.parquet"
        if not path.is_file():
            raise DataError(f"{symbol}: no {venue} funding at {path}; "
                            f"{BYBIT_HINT if venue == 'bybit' else 'add it to the directory'}")
        events = read_partition(path, FUNDING_COLUMNS)
        frames[name] = _between(events, None if lo is None else lo - funding_lead, hi)
    return _checked(VenuePair(symbol, **frames), {"Binance funding": directory, "Bybit funding": directory})


def _checked(pair: VenuePair, where: dict[str, Path]) -> VenuePair:
    for label, frame in (("Binance candles", pair.binance), ("Bybit candles", pair.bybit),
                         ("Binance funding", pair.binance_funding), ("Bybit funding", pair.bybit_funding)):
        if frame.empty:
            hint = BYBIT_HINT if "Bybit" in label else "collect it (collect.funding: true)"
            place = f" under {where[label]}" if label in where else ""
            raise DataError(f"{pair.symbol}: no {label} in the period{place}; {hint}")
    return pair


def _between(frame: pd.DataFrame, lo, hi) -> pd.DataFrame:
    if lo is not None:
        frame = frame[frame["timestamp"] >= lo]
    if hi is not None:
        frame = frame[frame["timestamp"] < hi]
    return frame.reset_index(drop=True)
