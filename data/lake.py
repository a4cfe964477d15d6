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
target (readers see the old or the new file, never half of one). Writes are
idempotent: a partition whose merged content equals what is stored is not rewritten
at all, and Parquet is written with fixed options and no pandas metadata, so the same
content always gives the same bytes. Parquet files are the truth; manifests and
``state.json`` describe them (a kill between a partition and its manifest is repaired
by the next write of that partition, or by ``repair_series``).

``read_datadir_candles`` reads the flat layout of ``../shared/data``
(``ohlcv/<market>/<BASE>_<QUOTE>-<tf>.parquet``), which is a source, not this lake.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from qt.errors import DataError
from qt.timeframes import timeframe_ms

OHLCV_COLUMNS = ["timestamp", "open", "high", "low", "close", "volume"]
CANDLE_COLUMNS = ["symbol", *OHLCV_COLUMNS]
FUNDING_COLUMNS = ["timestamp", "funding_rate"]
OPEN_INTEREST_COLUMNS = ["timestamp", "open_interest", "open_interest_value"]

_HOUR_MS = 3_600_000
_MARKETS = ("binance", "binanceusdm")
# Fixed writer options: the same rows must always give the same bytes (idempotent collection,
# DVC sees no change when nothing changed).
_PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 3, "use_dictionary": False,
                    "write_statistics": True, "version": "2.6", "data_page_version": "1.0"}


# ----------------------------------------------------------------------------- names and paths

def market_dir(symbol: str) -> str:
    """``binanceusdm`` for perpetuals (``BASE/QUOTE:SETTLE``), else ``binance``."""
    return "binanceusdm" if ":" in symbol else "binance"


def symbol_stem(symbol: str) -> str:
    """``BTC/USDT`` and ``BTC/USDT:USDT`` -> ``BTC_USDT`` (the market dir tells them apart)."""
    if "/" not in symbol:
        raise DataError(f"symbol {symbol!r} is not a ccxt symbol; write it as BASE/QUOTE, e.g. BTC/USDT")
    return symbol.split(":")[0].replace("/", "_")


def _symbol_from(market: str, stem: str) -> str:
    base, quote = stem.split("_", 1)
    return f"{base}/{quote}" + (f":{quote}" if market == "binanceusdm" else "")


def _step_ms(timeframe: str) -> int:
    return timeframe_ms(timeframe)


def monthly_partitions(timeframe: str) -> bool:
    """True below 1h (``YYYY-MM`` files), False from 1h up (``YYYY`` files)."""
    return _step_ms(timeframe) < _HOUR_MS


def candle_path(root: Path, symbol: str, timeframe: str) -> Path:
    """The directory holding one symbol's ``timeframe`` candles (partitions, manifests, state).

    Every write enters it by rename, so its (inode, mtime) changes on each write: a
    valid cache key for readers such as ``serving.candles``.
    """
    return Path(root) / "ohlcv" / market_dir(symbol) / symbol_stem(symbol) / timeframe


def funding_dir(root: Path, symbol: str) -> Path:
    if market_dir(symbol) != "binanceusdm":
        raise DataError(f"{symbol} is a spot symbol; funding exists for perpetuals (BASE/USDT:USDT) only")
    return Path(root) / "funding" / "binanceusdm" / symbol_stem(symbol)


def open_interest_dir(root: Path, symbol: str, period: str) -> Path:
    if market_dir(symbol) != "binanceusdm":
        raise DataError(f"{symbol} is a spot symbol; open interest exists for perpetuals only")
    _step_ms(period)
    return Path(root) / "open_interest" / "binanceusdm" / symbol_stem(symbol) / period


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


def available_symbols(root: Path, timeframe: str) -> list[str]:
    """Symbols with stored candles of ``timeframe`` under ``root`` (ccxt notation), spot first."""
    out = []
    for market in _MARKETS:
        base = Path(root) / "ohlcv" / market
        if not base.is_dir():
            continue
        for stem_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            if "_" in stem_dir.name and any((stem_dir / timeframe).glob("*.parquet")):
                out.append(_symbol_from(market, stem_dir.name))
    return out


# ----------------------------------------------------------------------------- hashing

def content_sha256(df: pd.DataFrame) -> str:
    """Hash of the values (not the file bytes), stable across Parquet writer versions."""
    h = hashlib.sha256()
    h.update(pd.util.hash_pandas_object(df.reset_index(drop=True), index=False).values.tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- writing

@dataclass(frozen=True)
class WriteResult:
    """What one write changed: rows that were not stored before, partitions rewritten."""

    path: Path
    rows_added: int = 0
    partitions_written: list[str] = field(default_factory=list)


def write_candles(root: Path, symbol: str, timeframe: str, ohlcv: pd.DataFrame) -> WriteResult:
    """Merge one symbol's candles into the lake: union with what is stored, one row per
    timestamp (the incoming row wins), sorted. Calling it with the full history again
    rewrites nothing; only partitions that receive new or changed rows are rewritten.

    Raises DataError for timestamps off the ``timeframe`` grid (a wrong timeframe or unit).
    """
    step = _step_ms(timeframe)
    frame = _normalise(ohlcv, OHLCV_COLUMNS, what=f"{symbol} {timeframe} candles")
    ts_ms = _ms(frame["timestamp"])
    off = ts_ms % step != 0
    if off.any():
        bad = frame["timestamp"][off].iloc[0]
        raise DataError(f"{symbol}: candle open time {bad} is not on the {timeframe} grid; "
                        f"check the timeframe and that timestamps are candle open times")
    directory = candle_path(root, symbol, timeframe)
    result = _merge_series(directory, frame, OHLCV_COLUMNS, monthly_partitions(timeframe),
                           {"symbol": symbol, "timeframe": timeframe})
    if result.partitions_written:
        _refresh_state_summary(root, symbol, timeframe)
    return result


def write_funding(root: Path, symbol: str, funding: pd.DataFrame) -> WriteResult:
    """Merge a perpetual's funding history (``timestamp``, ``funding_rate`` per interval) into
    yearly partitions; same merge rules as ``write_candles``."""
    frame = _normalise(funding, FUNDING_COLUMNS, what=f"{symbol} funding")
    return _merge_series(funding_dir(root, symbol), frame, FUNDING_COLUMNS, False,
                         {"symbol": symbol, "kind": "funding"})


def write_open_interest(root: Path, symbol: str, period: str, oi: pd.DataFrame) -> WriteResult:
    """Merge open-interest history (base ``open_interest``, quote ``open_interest_value``)."""
    frame = _normalise(oi, OPEN_INTEREST_COLUMNS, what=f"{symbol} open interest")
    return _merge_series(open_interest_dir(root, symbol, period), frame, OPEN_INTEREST_COLUMNS,
                         monthly_partitions(period), {"symbol": symbol, "kind": "open_interest", "period": period})


def _normalise(df: pd.DataFrame, columns: list[str], what: str) -> pd.DataFrame:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{what}: missing columns {missing}; expected {columns}")
    out = df[columns].copy()
    out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True).astype("datetime64[ms, UTC]")
    for c in columns[1:]:
        out[c] = out[c].astype("float64")
    return out.drop_duplicates("timestamp", keep="last").sort_values("timestamp", kind="stable").reset_index(drop=True)


def _ms(ts: pd.Series):
    return ts.astype("datetime64[ms, UTC]").dt.tz_convert(None).astype("datetime64[ms]").astype("int64")


def _merge_series(directory: Path, frame: pd.DataFrame, columns: list[str], monthly: bool,
                  describe: dict) -> WriteResult:
    if frame.empty:
        return WriteResult(path=directory)
    directory.mkdir(parents=True, exist_ok=True)
    fmt = "%Y-%m" if monthly else "%Y"
    keys = frame["timestamp"].dt.strftime(fmt)
    added = 0
    written: list[str] = []
    for key, part in frame.groupby(keys, sort=True):
        path = directory / f"{key}.parquet"
        old = _read_partition(path, columns) if path.is_file() else None
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
            _ensure_manifest(directory, key, merged, sha, describe)
            continue
        file_sha = _atomic_parquet(merged, path, columns)
        _write_manifest(directory, key, merged, sha, file_sha, describe)
        written.append(key)
    return WriteResult(path=directory, rows_added=added, partitions_written=written)


def _manifest_for(key: str, frame: pd.DataFrame, sha: str, file_sha: str, describe: dict) -> dict:
    return {**describe, "period": key, "rows": int(len(frame)),
            "first": frame["timestamp"].iloc[0].isoformat(), "last": frame["timestamp"].iloc[-1].isoformat(),
            "sha256": sha, "file_sha256": file_sha}


def _write_manifest(directory: Path, key: str, frame: pd.DataFrame, sha: str, file_sha: str, describe: dict) -> None:
    _atomic_text(json.dumps(_manifest_for(key, frame, sha, file_sha, describe), indent=2, sort_keys=True) + "\n",
                 directory / f"{key}.manifest.json")


def _ensure_manifest(directory: Path, key: str, frame: pd.DataFrame, sha: str, describe: dict) -> None:
    """Rewrite a manifest that does not describe its partition (a kill between the two renames)."""
    mpath = directory / f"{key}.manifest.json"
    file_sha = _file_sha256(directory / f"{key}.parquet")
    want = json.dumps(_manifest_for(key, frame, sha, file_sha, describe), indent=2, sort_keys=True) + "\n"
    try:
        if mpath.read_text() == want:
            return
    except FileNotFoundError:
        pass
    _atomic_text(want, mpath)


def repair_series(root: Path, symbol: str, timeframe: str) -> list[str]:
    """Make every manifest of a candle series describe its partition and delete temp files
    left by killed writers; returns the partition keys whose manifest was rewritten.

    Run before collecting into a series: after a SIGKILL the last partition may be newer
    than its manifest, and a partition that is never written again would keep it stale.
    """
    directory = candle_path(root, symbol, timeframe)
    if not directory.is_dir():
        return []
    remove_orphan_temp_files(directory)
    fixed = []
    describe = {"symbol": symbol, "timeframe": timeframe}
    for path in sorted(directory.glob("*.parquet")):
        key = path.name[: -len(".parquet")]
        frame = _read_partition(path, OHLCV_COLUMNS)
        before = (directory / f"{key}.manifest.json").read_text() if (directory / f"{key}.manifest.json").is_file() else None
        _ensure_manifest(directory, key, frame, content_sha256(frame), describe)
        if (directory / f"{key}.manifest.json").read_text() != before:
            fixed.append(key)
    _refresh_state_summary(root, symbol, timeframe)
    return fixed


def remove_orphan_temp_files(directory: Path) -> None:
    """Temp files (``.<name>.<pid>.<thread>.tmp``) whose writer process no longer exists."""
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


# ----------------------------------------------------------------------------- state

def read_state(root: Path, symbol: str, timeframe: str) -> dict:
    """The series' ``state.json``: ``first``/``last`` stored candle (ISO), ``rows``, and
    ``unfillable_gaps`` (``[{start_ms, end_ms, start, end, missing_bars}]``, end exclusive)
    the exchange could not fill. An absent file is an empty state."""
    path = candle_path(root, symbol, timeframe) / "state.json"
    if not path.is_file():
        return {"symbol": symbol, "timeframe": timeframe, "first": None, "last": None, "rows": 0,
                "unfillable_gaps": []}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise DataError(f"{path}: not valid JSON; delete it and re-run the collector to rebuild it") from None


def write_state(root: Path, symbol: str, timeframe: str, state: dict) -> None:
    """Atomically write ``state.json`` (sorted keys; untouched when the text is the same)."""
    directory = candle_path(root, symbol, timeframe)
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(state, indent=2, sort_keys=True) + "\n"
    path = directory / "state.json"
    if path.is_file() and path.read_text() == text:
        return
    _atomic_text(text, path)


def _refresh_state_summary(root: Path, symbol: str, timeframe: str) -> None:
    """first/last/rows in ``state.json`` from the manifests (gaps kept as they are)."""
    directory = candle_path(root, symbol, timeframe)
    manifests = [json.loads(p.read_text()) for p in sorted(directory.glob("*.manifest.json"))]
    state = read_state(root, symbol, timeframe)
    state.update({"symbol": symbol, "timeframe": timeframe,
                  "first": manifests[0]["first"] if manifests else None,
                  "last": manifests[-1]["last"] if manifests else None,
                  "rows": sum(m["rows"] for m in manifests)})
    state.setdefault("unfillable_gaps", [])
    write_state(root, symbol, timeframe, state)


# ----------------------------------------------------------------------------- reading

def read_symbol(root: Path, symbol: str, timeframe: str) -> pd.DataFrame:
    """One symbol's OHLCV, timestamps as ``datetime64[ms, UTC]``; DataError if absent or malformed."""
    directory = candle_path(root, symbol, timeframe)
    if not any(directory.glob("*.parquet")):
        raise _no_candles(root, symbol, timeframe, available_symbols(root, timeframe))
    return _read_series(directory, OHLCV_COLUMNS, None, None)


def read_candles(root: Path, symbols: list[str], timeframe: str,
                 start: pd.Timestamp | str | None = None, end: pd.Timestamp | str | None = None) -> pd.DataFrame:
    """Tidy candles for ``symbols`` in ``[start, end)``: columns ``CANDLE_COLUMNS``,
    sorted by symbol then timestamp. Only partitions overlapping the range are opened.
    Raises DataError when a symbol is absent or the range holds none of its candles."""
    lo, hi = _ts(start), _ts(end)
    frames = []
    for sym in symbols:
        directory = candle_path(root, sym, timeframe)
        if not any(directory.glob("*.parquet")):
            raise _no_candles(root, sym, timeframe, available_symbols(root, timeframe))
        frames.append(_require_rows(_read_series(directory, OHLCV_COLUMNS, lo, hi), sym, timeframe, start, end))
    return _tidy(frames)


def read_funding(root: Path, symbol: str, start=None, end=None) -> pd.DataFrame:
    """Funding history of a perpetual in ``[start, end)`` (``FUNDING_COLUMNS``); empty when none stored."""
    return _read_series(funding_dir(root, symbol), FUNDING_COLUMNS, _ts(start), _ts(end))


def read_open_interest(root: Path, symbol: str, period: str, start=None, end=None) -> pd.DataFrame:
    """Open-interest history in ``[start, end)`` (``OPEN_INTEREST_COLUMNS``); empty when none stored."""
    return _read_series(open_interest_dir(root, symbol, period), OPEN_INTEREST_COLUMNS, _ts(start), _ts(end))


def last_timestamp(root: Path, symbol: str, timeframe: str) -> pd.Timestamp | None:
    """Open time of the newest stored candle (read from the newest partition, not from the
    state file, so it is right even after a kill between a partition and its state)."""
    return _series_edge(candle_path(root, symbol, timeframe), last=True)


def first_timestamp(root: Path, symbol: str, timeframe: str) -> pd.Timestamp | None:
    """Open time of the oldest stored candle, None when nothing is stored."""
    return _series_edge(candle_path(root, symbol, timeframe), last=False)


def stored_timestamps_ms(root: Path, symbol: str, timeframe: str, start_ms: int | None = None,
                         end_ms: int | None = None):
    """Stored candle open times (int64 ms, sorted) in ``[start_ms, end_ms)``; only the
    timestamp column of the overlapping partitions is read (gap scans over long histories)."""
    lo = None if start_ms is None else pd.Timestamp(start_ms, unit="ms", tz="UTC")
    hi = None if end_ms is None else pd.Timestamp(end_ms, unit="ms", tz="UTC")
    ts = _read_series(candle_path(root, symbol, timeframe), ["timestamp"], lo, hi)["timestamp"]
    return _ms(ts).to_numpy()


def last_funding_timestamp(root: Path, symbol: str) -> pd.Timestamp | None:
    return _series_edge(funding_dir(root, symbol), last=True)


def last_open_interest_timestamp(root: Path, symbol: str, period: str) -> pd.Timestamp | None:
    return _series_edge(open_interest_dir(root, symbol, period), last=True)


def _series_edge(directory: Path, last: bool) -> pd.Timestamp | None:
    files = sorted(directory.glob("*.parquet"))
    if not files:
        return None
    ts = _read_table(files[-1 if last else 0], columns=["timestamp"]).column("timestamp").to_pandas()
    if ts.empty:
        return None
    value = ts.max() if last else ts.min()
    return pd.Timestamp(value).tz_convert("UTC") if pd.Timestamp(value).tzinfo else pd.Timestamp(value, tz="UTC")


def _read_series(directory: Path, columns: list[str], lo: pd.Timestamp | None, hi: pd.Timestamp | None) -> pd.DataFrame:
    paths = []
    for path in sorted(directory.glob("*.parquet")):
        p_lo, p_hi = partition_bounds(path.name[: -len(".parquet")])
        if (hi is not None and p_lo >= hi) or (lo is not None and p_hi <= lo):
            continue  # partition pruning: nothing of [lo, hi) can be in it
        paths.append(path)
    if not paths:
        return _empty(columns)
    df = pd.concat([_read_partition(p, columns) for p in paths], ignore_index=True)
    if lo is not None:
        df = df[df["timestamp"] >= lo]
    if hi is not None:
        df = df[df["timestamp"] < hi]
    return df.reset_index(drop=True)


def _read_partition(path: Path, columns: list[str]) -> pd.DataFrame:
    try:
        table = _read_table(path)
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


def _no_candles(root: Path, symbol: str, timeframe: str, have: list[str]) -> DataError:
    return DataError(f"no {timeframe} candles for {symbol} under {root} (have: {', '.join(have) or 'none'}); "
                     f"check --symbols and --timeframe")


def _require_rows(df: pd.DataFrame, symbol: str, timeframe: str, start, end) -> pd.DataFrame:
    if df.empty:
        raise DataError(f"{symbol}: no {timeframe} candles in [{start or 'start'}, {end or 'end'}); "
                        f"widen --start/--end")
    return df.assign(symbol=symbol)


def _tidy(frames: list[pd.DataFrame]) -> pd.DataFrame:
    out = pd.concat(frames, ignore_index=True)[CANDLE_COLUMNS]
    return out.sort_values(["symbol", "timestamp"], kind="stable").reset_index(drop=True)


# ----------------------------------------------------------------------------- the flat source layout

def datadir_candle_path(directory: Path, symbol: str, timeframe: str) -> Path:
    """``<dir>/ohlcv/<market>/<BASE>_<QUOTE>-<tf>.parquet`` (the ``../shared/data`` layout)."""
    return Path(directory) / "ohlcv" / market_dir(symbol) / f"{symbol_stem(symbol)}-{timeframe}.parquet"


def datadir_symbols(directory: Path, timeframe: str) -> list[str]:
    """Symbols with a ``timeframe`` file in a flat data dir (ccxt notation), spot first."""
    out = []
    for market in _MARKETS:
        for f in sorted((Path(directory) / "ohlcv" / market).glob(f"*-{timeframe}.parquet")):
            out.append(_symbol_from(market, f.name[: -len(f"-{timeframe}.parquet")]))
    return out


def write_datadir_candles(directory: Path, symbol: str, timeframe: str, ohlcv: pd.DataFrame) -> Path:
    """Write one symbol's candles as ONE flat file of the ``../shared/data`` layout (what the
    local exchange serves from), atomically and deterministically; replaces the file."""
    frame = _normalise(ohlcv, OHLCV_COLUMNS, what=f"{symbol} {timeframe} candles")
    path = datadir_candle_path(directory, symbol, timeframe)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_parquet(frame, path, OHLCV_COLUMNS)
    return path


def read_datadir_candles(directory: Path, symbols: list[str], timeframe: str,
                         start: pd.Timestamp | str | None = None, end: pd.Timestamp | str | None = None) -> pd.DataFrame:
    """Like ``read_candles``, from a directory laid out like ``../shared/data`` (one file per
    symbol and timeframe). Same columns, order and DataErrors."""
    lo, hi = _ts(start), _ts(end)
    frames = []
    for sym in symbols:
        path = datadir_candle_path(directory, sym, timeframe)
        if not path.is_file():
            raise _no_candles(directory, sym, timeframe, datadir_symbols(directory, timeframe))
        df = _read_partition(path, OHLCV_COLUMNS)
        if lo is not None:
            df = df[df["timestamp"] >= lo]
        if hi is not None:
            df = df[df["timestamp"] < hi]
        frames.append(_require_rows(df.reset_index(drop=True), sym, timeframe, start, end))
    return _tidy(frames)


# ----------------------------------------------------------------------------- small helpers

def _ts(value) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise DataError(f"{value!r} is not a date; use YYYY-MM-DD") from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read through one open file handle: a writer may ``os.replace`` the path at any time, and
    reading by path lets pyarrow take the size of one inode and the bytes of another."""
    with open(path, "rb") as fh:
        return pq.read_table(fh, columns=columns)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def _atomic_parquet(df: pd.DataFrame, path: Path, columns: list[str]) -> str:
    """Write ``df`` deterministically (fixed schema and options, no pandas metadata) via a temp
    file and rename; returns the sha256 of the bytes written."""
    schema = pa.schema([pa.field("timestamp", pa.timestamp("ms", tz="UTC"), nullable=False)]
                       + [pa.field(c, pa.float64()) for c in columns[1:]])
    table = pa.Table.from_pandas(df[columns], schema=schema, preserve_index=False).replace_schema_metadata(None)
    tmp = _tmp_name(path)
    try:
        pq.write_table(table, tmp, **_PARQUET_OPTIONS)
        file_sha = _file_sha256(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return file_sha


def _atomic_text(text: str, path: Path) -> None:
    tmp = _tmp_name(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
