"""The flat source layout of ``../shared/data``: one Parquet file per symbol and timeframe.

Why a module of its own: ``<dir>/ohlcv/<market>/<BASE>_<QUOTE>-<tf>.parquet`` is a *source*
(what the shared data set ships and what the local exchange serves from), not the partitioned
raw lake of ``data.lake``; it is read and written with the same columns, dtypes and errors, so
both give the same candles frame.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from data.partitions import (MARKETS, OHLCV_COLUMNS, market_dir, no_candles, normalise, read_partition,
                             require_rows, symbol_from, symbol_stem, tidy, write_parquet_atomic)
from qt.timeframes import utc_timestamp


def datadir_candle_path(directory: Path, symbol: str, timeframe: str) -> Path:
    """``<dir>/ohlcv/<market>/<BASE>_<QUOTE>-<tf>.parquet`` (the ``../shared/data`` layout)."""
    return Path(directory) / "ohlcv" / market_dir(symbol) / f"{symbol_stem(symbol)}-{timeframe}.parquet"


def datadir_symbols(directory: Path, timeframe: str) -> list[str]:
    """Symbols with a ``timeframe`` file in a flat data dir (ccxt notation), spot first."""
    out = []
    for market in MARKETS:
        for f in sorted((Path(directory) / "ohlcv" / market).glob(f"*-{timeframe}.parquet")):
            out.append(symbol_from(market, f.name[: -len(f"-{timeframe}.parquet")]))
    return out


def write_datadir_candles(directory: Path, symbol: str, timeframe: str, ohlcv: pd.DataFrame) -> Path:
    """Write one symbol's candles as ONE flat file of the ``../shared/data`` layout (what the
    local exchange serves from), atomically and deterministically; replaces the file."""
    frame = normalise(ohlcv, OHLCV_COLUMNS, what=f"{symbol} {timeframe} candles")
    path = datadir_candle_path(directory, symbol, timeframe)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(frame, path, OHLCV_COLUMNS)
    return path


def read_datadir_candles(directory: Path, symbols: list[str], timeframe: str,
                         start: pd.Timestamp | str | None = None, end: pd.Timestamp | str | None = None) -> pd.DataFrame:
    """Like ``read_candles``, from a directory laid out like ``../shared/data`` (one file per
    symbol and timeframe). Same columns, order and DataErrors."""
    lo, hi = utc_timestamp(start), utc_timestamp(end)
    frames = []
    for sym in symbols:
        path = datadir_candle_path(directory, sym, timeframe)
        if not path.is_file():
            raise no_candles(directory, sym, timeframe, datadir_symbols(directory, timeframe))
        df = read_partition(path, OHLCV_COLUMNS)
        if lo is not None:
            df = df[df["timestamp"] >= lo]
        if hi is not None:
            df = df[df["timestamp"] < hi]
        frames.append(require_rows(df.reset_index(drop=True), sym, timeframe, start, end))
    return tidy(frames)
