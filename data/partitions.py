"""The partitioned Parquet store under the raw lake: names, partitions, deterministic writes, reads.

Why a module of its own: candles (``data.lake``), funding and open interest
(``data.perp_series``) and the flat source layout (``data.datadir``) are all time series of
Parquet partitions with the same rules - one row per timestamp, ``YYYY`` or ``YYYY-MM``
files, a manifest per partition, atomic writes (``qt.atomic``), fixed writer options so the
same rows always give the same bytes. This is that shared machinery; the modules above say
which series lives where.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from qt.atomic import replace_atomic, tmp_path, write_text_atomic
from qt.errors import DataError
from qt.timeframes import timeframe_ms

OHLCV_COLUMNS = ["timestamp", "open", "high", "low", "close", "volume"]
CANDLE_COLUMNS = ["symbol", *OHLCV_COLUMNS]

_HOUR_MS = 3_600_000
MARKETS = ("binance", "binanceusdm")
# The venues whose series the lake keeps side by side under one root (``ohlcv/<market>/``): Binance
# (spot ``binance`` and USDT-M ``binanceusdm``, told apart by the symbol) and Bybit's USDT perpetuals
# (``bybit``), the layout of ``../shared/data``. One root per source, so the same perpetual on two
# venues can be joined bar for bar (the cross-venue features) without a second lake.
VENUES = ("binance", "bybit")
# Fixed writer options: the same rows must always give the same bytes (idempotent collection,
# DVC sees no change when nothing changed).
_PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 3, "use_dictionary": False,
                    "write_statistics": True, "version": "2.6", "data_page_version": "1.0"}


# ----------------------------------------------------------------------------- names

def market_dir(symbol: str, venue: str = "binance") -> str:
    """The folder of ``symbol``'s market on ``venue``: on Binance ``binanceusdm`` for perpetuals
    (``BASE/QUOTE:SETTLE``), else ``binance``; on Bybit ``bybit`` (USDT perpetuals only)."""
    if venue == "binance":
        return "binanceusdm" if ":" in symbol else "binance"
    if venue == "bybit":
        if ":" not in symbol:
            raise DataError(f"{symbol} is a spot symbol; on Bybit only USDT perpetuals are collected "
                            f"(write it as BASE/USDT:USDT)")
        return "bybit"
    raise DataError(f"venue {venue!r} is not one of {', '.join(VENUES)}")


def symbol_stem(symbol: str) -> str:
    """``BTC/USDT`` and ``BTC/USDT:USDT`` -> ``BTC_USDT`` (the market dir tells them apart)."""
    if "/" not in symbol:
        raise DataError(f"symbol {symbol!r} is not a ccxt symbol; write it as BASE/QUOTE, e.g. BTC/USDT")
    return symbol.split(":")[0].replace("/", "_")


def symbol_from(market: str, stem: str) -> str:
    """The ccxt symbol of a ``<market>/<STEM>`` directory (inverse of ``market_dir``/``symbol_stem``)."""
    base, quote = stem.split("_", 1)
    return f"{base}/{quote}" + (f":{quote}" if market in ("binanceusdm", "bybit") else "")


def monthly_partitions(timeframe: str) -> bool:
    """True below 1h (``YYYY-MM`` files), False from 1h up (``YYYY`` files)."""
    return timeframe_ms(timeframe) < _HOUR_MS


def partition_key(ts_ms: int, monthly: bool) -> str:
    """``YYYY-MM`` (monthly) or ``YYYY`` of a UTC millisecond timestamp."""
    ts = pd.Timestamp(ts_ms, unit="ms", tz="UTC")
    return f"{ts.year:04d}-{ts.month:02d}" if monthly else f"{ts.year:04d}"


def partition_bounds(key: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``[start, end)`` of a partition key (``YYYY`` or ``YYYY-MM``), UTC."""
    if len(key) == 4:
        start = pd.Timestamp(f"{key}-01-01", tz="UTC")
        return start, start + pd.DateOffset(years=1)
    start = pd.Timestamp(f"{key}-01", tz="UTC")
    return start, start + pd.DateOffset(months=1)


# ----------------------------------------------------------------------------- hashing

def content_sha256(df: pd.DataFrame) -> str:
    """Hash of the values (not the file bytes), stable across Parquet writer versions."""
    h = hashlib.sha256()
    h.update(pd.util.hash_pandas_object(df.reset_index(drop=True), index=False).values.tobytes())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- writing

@dataclass(frozen=True)
class WriteResult:
    """What one write changed: rows that were not stored before, partitions rewritten."""

    path: Path
    rows_added: int = 0
    partitions_written: list[str] = field(default_factory=list)


def normalise(df: pd.DataFrame, columns: list[str], what: str) -> pd.DataFrame:
    """``columns`` of ``df`` with ms UTC timestamps and float values, one row per timestamp, sorted."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{what}: missing columns {missing}; expected {columns}")
    out = df[columns].copy()
    out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True).astype("datetime64[ms, UTC]")
    for c in columns[1:]:
        out[c] = out[c].astype("float64")
    return out.drop_duplicates("timestamp", keep="last").sort_values("timestamp", kind="stable").reset_index(drop=True)


def ms(ts: pd.Series):
    """A ``datetime64[ms, UTC]`` series as int64 epoch milliseconds."""
    return ts.astype("datetime64[ms, UTC]").dt.tz_convert(None).astype("datetime64[ms]").astype("int64")


def merge_series(directory: Path, frame: pd.DataFrame, columns: list[str], monthly: bool,
                 describe: dict) -> WriteResult:
    """Union ``frame`` (normalised) with the partitions under ``directory``; rewrite only the
    partitions whose content changes, each with its manifest (``describe`` goes into it)."""
    if frame.empty:
        return WriteResult(path=directory)
    directory.mkdir(parents=True, exist_ok=True)
    fmt = "%Y-%m" if monthly else "%Y"
    keys = frame["timestamp"].dt.strftime(fmt)
    added = 0
    written: list[str] = []
    for key, part in frame.groupby(keys, sort=True):
        path = directory / f"{key}.parquet"
        old = read_partition(path, columns) if path.is_file() else None
        if old is None:
            merged = part.reset_index(drop=True)
            added += len(merged)
        else:
            merged = (pd.concat([old, part], ignore_index=True)
                      .drop_duplicates("timestamp", keep="last")
                      .sort_values("timestamp", kind="stable").reset_index(drop=True))
            added += len(merged) - len(old)
        sha = content_sha256(merged)
        if old is not None and len(old) == len(merged) and content_sha256(old) == sha:  # nothing new
            ensure_manifest(directory, key, merged, sha, describe)
            continue
        fsha = write_parquet_atomic(merged, path, columns)
        _write_manifest(directory, key, merged, sha, fsha, describe)
        written.append(key)
    return WriteResult(path=directory, rows_added=added, partitions_written=written)


def _manifest_for(key: str, frame: pd.DataFrame, sha: str, fsha: str, describe: dict) -> dict:
    return {**describe, "period": key, "rows": int(len(frame)),
            "first": frame["timestamp"].iloc[0].isoformat(), "last": frame["timestamp"].iloc[-1].isoformat(),
            "sha256": sha, "file_sha256": fsha}


def _write_manifest(directory: Path, key: str, frame: pd.DataFrame, sha: str, fsha: str, describe: dict) -> None:
    write_text_atomic(directory / f"{key}.manifest.json",
                      json.dumps(_manifest_for(key, frame, sha, fsha, describe), indent=2, sort_keys=True) + "\n")


def ensure_manifest(directory: Path, key: str, frame: pd.DataFrame, sha: str, describe: dict) -> None:
    """Rewrite a manifest that does not describe its partition (a kill between the two renames)."""
    mpath = directory / f"{key}.manifest.json"
    fsha = file_sha256(directory / f"{key}.parquet")
    want = json.dumps(_manifest_for(key, frame, sha, fsha, describe), indent=2, sort_keys=True) + "\n"
    try:
        if mpath.read_text() == want:
            return
    except FileNotFoundError:
        pass
    write_text_atomic(mpath, want)


def remove_orphan_temp_files(directory: Path) -> None:
    """Temp files (``.<name>.<pid>.<thread>.tmp``, ``qt.atomic``) whose writer process no longer exists."""
    for tmp in directory.glob(".*.tmp"):
        parts = tmp.name.split(".")
        try:
            pid = int(parts[-3])
        except (ValueError, IndexError):
            continue
        if pid == os.getpid() or _pid_alive(pid):
            continue
        tmp.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_parquet_atomic(df: pd.DataFrame, path: Path, columns: list[str]) -> str:
    """Write ``df`` deterministically (fixed schema and options, no pandas metadata) via a temp
    file and rename (``qt.atomic``); returns the sha256 of the bytes written."""
    schema = pa.schema([pa.field("timestamp", pa.timestamp("ms", tz="UTC"), nullable=False)]
                       + [pa.field(c, pa.float64()) for c in columns[1:]])
    table = pa.Table.from_pandas(df[columns], schema=schema, preserve_index=False).replace_schema_metadata(None)
    return write_table_atomic(table, path)


def write_table_atomic(table: pa.Table, path: Path) -> str:
    """Write ``table`` with the fixed writer options (the same rows, the same bytes) via a temp file
    and rename (``qt.atomic``); returns the sha256 of the bytes written."""
    tmp = tmp_path(path)
    try:
        pq.write_table(table, tmp, **_PARQUET_OPTIONS)
        fsha = file_sha256(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    replace_atomic(tmp, path)
    return fsha


# ----------------------------------------------------------------------------- reading

def series_edge(directory: Path, last: bool) -> pd.Timestamp | None:
    """Newest (``last``) or oldest timestamp stored under ``directory``, None when nothing is."""
    files = sorted(directory.glob("*.parquet"))
    if not files:
        return None
    ts = read_table(files[-1 if last else 0], columns=["timestamp"]).column("timestamp").to_pandas()
    if ts.empty:
        return None
    value = ts.max() if last else ts.min()
    return pd.Timestamp(value).tz_convert("UTC") if pd.Timestamp(value).tzinfo else pd.Timestamp(value, tz="UTC")


def read_series(directory: Path, columns: list[str], lo: pd.Timestamp | None, hi: pd.Timestamp | None) -> pd.DataFrame:
    """``columns`` of the rows in ``[lo, hi)``; only partitions overlapping the range are opened."""
    paths = []
    for path in sorted(directory.glob("*.parquet")):
        p_lo, p_hi = partition_bounds(path.name[: -len(".parquet")])
        if (hi is not None and p_lo >= hi) or (lo is not None and p_hi <= lo):
            continue  # partition pruning: nothing of [lo, hi) can be in it
        paths.append(path)
    if not paths:
        return _empty(columns)
    df = pd.concat([read_partition(p, columns) for p in paths], ignore_index=True)
    if lo is not None:
        df = df[df["timestamp"] >= lo]
    if hi is not None:
        df = df[df["timestamp"] < hi]
    return df.reset_index(drop=True)


def read_partition(path: Path, columns: list[str]) -> pd.DataFrame:
    """One Parquet file's ``columns``; DataError when it is unreadable or lacks one."""
    try:
        table = read_table(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a data error for the user
        raise DataError(f"{path}: unreadable Parquet ({type(exc).__name__}); delete it and re-collect") from None
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing columns {missing}; expected {columns}")
    df = table.select(columns).to_pandas()
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True).astype("datetime64[ms, UTC]")
    for c in columns[1:]:
        df[c] = df[c].astype("float64")
    return df


def _empty(columns: list[str]) -> pd.DataFrame:
    df = pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})
    df["timestamp"] = pd.Series(dtype="datetime64[ms, UTC]")
    return df[columns]


def no_candles(root: Path, symbol: str, timeframe: str, have: list[str]) -> DataError:
    return DataError(f"no {timeframe} candles for {symbol} under {root} (have: {', '.join(have) or 'none'}); "
                     f"check --symbols and --timeframe")


def require_rows(df: pd.DataFrame, symbol: str, timeframe: str, start, end) -> pd.DataFrame:
    """``df`` with its ``symbol`` column; DataError when the range held none of its candles."""
    if df.empty:
        raise DataError(f"{symbol}: no {timeframe} candles in [{start or 'start'}, {end or 'end'}); "
                        f"widen --start/--end")
    return df.assign(symbol=symbol)


def tidy(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Per-symbol candle frames as one ``CANDLE_COLUMNS`` frame sorted by symbol, then time."""
    out = pd.concat(frames, ignore_index=True)[CANDLE_COLUMNS]
    return out.sort_values(["symbol", "timestamp"], kind="stable").reset_index(drop=True)


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read through one open file: a writer may ``os.replace`` the path at any time, and reading
    by path lets pyarrow take the size of one inode and the bytes of another.

    The file is Arrow's own (``pa.OSFile``), never a Python file object: pyarrow wraps those in a
    reader whose destructor takes the GIL, and when a scan thread drops it while the interpreter
    exits, the process aborts ("terminate called without an active exception", exit 134; seen
    in CI after ``qt xv report`` printed its error; apache/arrow#34314)."""
    with pa.OSFile(str(path), "rb") as fh:
        return pq.ParquetFile(fh).read(columns=columns)
