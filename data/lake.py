"""The raw lake: partitioned Parquet for candles, funding rates and open interest.

Layout under ``root`` (``<market>`` is ``binance`` for spot ``BTC/USDT`` and
``binanceusdm`` for USDT-M perpetuals ``BTC/USDT:USDT``; ``<STEM>`` is ``BTC_USDT``)::

    ohlcv/<market>/<STEM>/<tf>/<period>.parquet           one partition
    ohlcv/<market>/<STEM>/<tf>/<period>.manifest.json     rows, first/last, sha256 of it
    ohlcv/<market>/<STEM>/<tf>/state.json                 last stored candle, unfillable gaps
    funding/binanceusdm/<STEM>/<YYYY>.parquet             timestamp, funding_rate
    open_interest/binanceusdm/<STEM>/<period tf>/<period>.parquet

``<period>`` is ``YYYY-MM`` below 1h and ``YYYY`` from 1h up: a year of 1m candles is
12 files of ~44k rows, so appending rewrites one small file (only partitions that
receive rows are touched) and a ranged read opens only the partitions overlapping it.

Every file is written to a temporary name in its own directory and renamed over the
target (``qt.atomic``) (readers see the old or the new file, never half of one). Writes are
idempotent: a partition whose merged content equals what is stored is not rewritten
at all, and Parquet is written with fixed options and no pandas metadata, so the same
content always gives the same bytes. Parquet files are the truth; manifests and
``state.json`` describe them (a kill between a partition and its manifest is repaired
by the next write of that partition, or by ``repair_series``).

This module is the lake's public face: the candle series (paths, writes, ``state.json``,
reads) live here; the shared partition machinery is ``data.partitions``, funding and open
interest ``data.perp_series``, and ``read_datadir_candles`` (the flat layout of
``../shared/data``, ``ohlcv/<market>/<BASE>_<QUOTE>-<tf>.parquet``, which is a source, not this
lake) ``data.datadir``; their public names are importable from here as well.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from data.datadir import datadir_candle_path, datadir_symbols, read_datadir_candles, write_datadir_candles
from data.partitions import (CANDLE_COLUMNS, MARKETS, OHLCV_COLUMNS, WriteResult, content_sha256, ensure_manifest,
                             market_dir, merge_series, monthly_partitions, ms, no_candles, normalise, partition_bounds,
                             partition_key, read_partition, read_series, remove_orphan_temp_files, require_rows,
                             series_edge, symbol_from, symbol_stem, tidy)
from data.perp_series import (FUNDING_COLUMNS, OPEN_INTEREST_COLUMNS, funding_dir, last_funding_timestamp,
                              last_open_interest_timestamp, open_interest_dir, read_funding, read_lake_funding,
                              read_open_interest, write_funding, write_open_interest)
from qt.atomic import write_text_atomic
from qt.errors import DataError
from qt.timeframes import timeframe_ms, utc_timestamp

__all__ = [
    "CANDLE_COLUMNS", "FUNDING_COLUMNS", "OHLCV_COLUMNS", "OPEN_INTEREST_COLUMNS", "WriteResult",
    "available_symbols", "candle_path", "content_sha256", "datadir_candle_path", "datadir_symbols",
    "first_timestamp", "funding_dir", "last_funding_timestamp", "last_open_interest_timestamp", "last_timestamp",
    "market_dir", "monthly_partitions", "open_interest_dir", "partition_bounds", "partition_key",
    "read_candles", "read_datadir_candles", "read_funding", "read_lake_funding", "read_open_interest", "read_state",
    "read_symbol", "remove_orphan_temp_files", "repair_series", "stored_timestamps_ms", "symbol_stem",
    "write_candles", "write_datadir_candles", "write_funding", "write_open_interest", "write_state",
]


# ----------------------------------------------------------------------------- candle paths

def candle_path(root: Path, symbol: str, timeframe: str, venue: str = "binance") -> Path:
    """The directory holding one symbol's ``timeframe`` candles (partitions, manifests, state).

    Every write enters it by rename, so its (inode, mtime) changes on each write: a
    valid cache key for readers such as ``serving.candles``.
    """
    return Path(root) / "ohlcv" / market_dir(symbol, venue) / symbol_stem(symbol) / timeframe


def available_symbols(root: Path, timeframe: str, venue: str = "binance") -> list[str]:
    """Symbols with stored candles of ``timeframe`` on ``venue`` under ``root`` (ccxt notation), spot first."""
    out = []
    for market in (MARKETS if venue == "binance" else (market_dir("X/USDT:USDT", venue),)):
        base = Path(root) / "ohlcv" / market
        if not base.is_dir():
            continue
        for stem_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            if "_" in stem_dir.name and any((stem_dir / timeframe).glob("*.parquet")):
                out.append(symbol_from(market, stem_dir.name))
    return out


# ----------------------------------------------------------------------------- writing

def write_candles(root: Path, symbol: str, timeframe: str, ohlcv: pd.DataFrame, venue: str = "binance") -> WriteResult:
    """Merge one symbol's candles into the lake: union with what is stored, one row per
    timestamp (the incoming row wins), sorted. Calling it with the full history again
    rewrites nothing; only partitions that receive new or changed rows are rewritten.

    Raises DataError for timestamps off the ``timeframe`` grid (a wrong timeframe or unit).
    """
    step = timeframe_ms(timeframe)
    frame = normalise(ohlcv, OHLCV_COLUMNS, what=f"{symbol} {timeframe} candles")
    ts_ms = ms(frame["timestamp"])
    off = ts_ms % step != 0
    if off.any():
        bad = frame["timestamp"][off].iloc[0]
        raise DataError(f"{symbol}: candle open time {bad} is not on the {timeframe} grid; "
                        f"check the timeframe and that timestamps are candle open times")
    directory = candle_path(root, symbol, timeframe, venue)
    result = merge_series(directory, frame, OHLCV_COLUMNS, monthly_partitions(timeframe),
                          {"symbol": symbol, "timeframe": timeframe})
    if result.partitions_written:
        _refresh_state_summary(root, symbol, timeframe, venue)
    return result


def repair_series(root: Path, symbol: str, timeframe: str, venue: str = "binance") -> list[str]:
    """Make every manifest of a candle series describe its partition and delete temp files
    left by killed writers; returns the partition keys whose manifest was rewritten.

    Run before collecting into a series: after a SIGKILL the last partition may be newer
    than its manifest, and a partition that is never written again would keep it stale.
    """
    directory = candle_path(root, symbol, timeframe, venue)
    if not directory.is_dir():
        return []
    remove_orphan_temp_files(directory)
    fixed = []
    describe = {"symbol": symbol, "timeframe": timeframe}
    for path in sorted(directory.glob("*.parquet")):
        key = path.name[: -len(".parquet")]
        frame = read_partition(path, OHLCV_COLUMNS)
        before = (directory / f"{key}.manifest.json").read_text() if (directory / f"{key}.manifest.json").is_file() else None
        ensure_manifest(directory, key, frame, content_sha256(frame), describe)
        if (directory / f"{key}.manifest.json").read_text() != before:
            fixed.append(key)
    _refresh_state_summary(root, symbol, timeframe, venue)
    return fixed


# ----------------------------------------------------------------------------- state

def read_state(root: Path, symbol: str, timeframe: str, venue: str = "binance") -> dict:
    """The series' ``state.json``: ``first``/``last`` stored candle (ISO), ``rows``, and
    ``unfillable_gaps`` (``[{start_ms, end_ms, start, end, missing_bars}]``, end exclusive)
    the exchange could not fill. An absent file is an empty state."""
    path = candle_path(root, symbol, timeframe, venue) / "state.json"
    if not path.is_file():
        return {"symbol": symbol, "timeframe": timeframe, "first": None, "last": None, "rows": 0,
                "unfillable_gaps": []}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise DataError(f"{path}: not valid JSON; delete it and re-run the collector to rebuild it") from None


def write_state(root: Path, symbol: str, timeframe: str, state: dict, venue: str = "binance") -> None:
    """Atomically write ``state.json`` (sorted keys; untouched when the text is the same)."""
    directory = candle_path(root, symbol, timeframe, venue)
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(state, indent=2, sort_keys=True) + "\n"
    path = directory / "state.json"
    if path.is_file() and path.read_text() == text:
        return
    write_text_atomic(path, text)


def _refresh_state_summary(root: Path, symbol: str, timeframe: str, venue: str = "binance") -> None:
    """first/last/rows in ``state.json`` from the manifests (gaps kept as they are)."""
    directory = candle_path(root, symbol, timeframe, venue)
    manifests = [json.loads(p.read_text()) for p in sorted(directory.glob("*.manifest.json"))]
    state = read_state(root, symbol, timeframe, venue)
    state.update({"symbol": symbol, "timeframe": timeframe,
                  "first": manifests[0]["first"] if manifests else None,
                  "last": manifests[-1]["last"] if manifests else None,
                  "rows": sum(m["rows"] for m in manifests)})
    state.setdefault("unfillable_gaps", [])
    write_state(root, symbol, timeframe, state, venue)


# ----------------------------------------------------------------------------- reading

def read_symbol(root: Path, symbol: str, timeframe: str, venue: str = "binance") -> pd.DataFrame:
    """One symbol's OHLCV, timestamps as ``datetime64[ms, UTC]``; DataError if absent or malformed."""
    directory = candle_path(root, symbol, timeframe, venue)
    if not any(directory.glob("*.parquet")):
        raise no_candles(root, symbol, timeframe, available_symbols(root, timeframe, venue))
    return read_series(directory, OHLCV_COLUMNS, None, None)


def read_candles(root: Path, symbols: list[str], timeframe: str,
                 start: pd.Timestamp | str | None = None, end: pd.Timestamp | str | None = None,
                 venue: str = "binance") -> pd.DataFrame:
    """Tidy candles for ``symbols`` in ``[start, end)``: columns ``CANDLE_COLUMNS``,
    sorted by symbol then timestamp. Only partitions overlapping the range are opened.
    Raises DataError when a symbol is absent or the range holds none of its candles."""
    lo, hi = utc_timestamp(start), utc_timestamp(end)
    frames = []
    for sym in symbols:
        directory = candle_path(root, sym, timeframe, venue)
        if not any(directory.glob("*.parquet")):
            raise no_candles(root, sym, timeframe, available_symbols(root, timeframe, venue))
        frames.append(require_rows(read_series(directory, OHLCV_COLUMNS, lo, hi), sym, timeframe, start, end))
    return tidy(frames)


def last_timestamp(root: Path, symbol: str, timeframe: str, venue: str = "binance") -> pd.Timestamp | None:
    """Open time of the newest stored candle (read from the newest partition, not from the
    state file, so it is right even after a kill between a partition and its state)."""
    return series_edge(candle_path(root, symbol, timeframe, venue), last=True)


def first_timestamp(root: Path, symbol: str, timeframe: str, venue: str = "binance") -> pd.Timestamp | None:
    """Open time of the oldest stored candle, None when nothing is stored."""
    return series_edge(candle_path(root, symbol, timeframe, venue), last=False)


def stored_timestamps_ms(root: Path, symbol: str, timeframe: str, start_ms: int | None = None,
                         end_ms: int | None = None, venue: str = "binance"):
    """Stored candle open times (int64 ms, sorted) in ``[start_ms, end_ms)``; only the
    timestamp column of the overlapping partitions is read (gap scans over long histories)."""
    lo = None if start_ms is None else pd.Timestamp(start_ms, unit="ms", tz="UTC")
    hi = None if end_ms is None else pd.Timestamp(end_ms, unit="ms", tz="UTC")
    ts = read_series(candle_path(root, symbol, timeframe, venue), ["timestamp"], lo, hi)["timestamp"]
    return ms(ts).to_numpy()
