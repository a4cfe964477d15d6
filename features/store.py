"""The materialised feature and label store: Parquet partitions per symbol, period and kind.

Layout under ``root`` (the caller picks it, e.g. ``StatePaths.features``)::

    <root>/<market>/<BASE>_<QUOTE>/<period>.features.parquet
    <root>/<market>/<BASE>_<QUOTE>/<period>.labels.parquet
    <root>/<market>/<BASE>_<QUOTE>/manifest.json     (written by features.materialise only)

``market`` is ``binance`` (spot) or ``binanceusdm`` (perpetual), as in ``data.lake``, so
``BTC/USDT`` and ``BTC/USDT:USDT`` never share a file. ``period`` is the bar's UTC year
(``YYYY``) from 1h bars up and its month (``YYYY-MM``) below, like the raw lake, so an
append rewrites one small file. Features and labels are two kinds of file because their
row sets differ (labels lack each symbol's last bars, features its first warm-up bars);
``features.materialise.read_training_frame`` joins them on (symbol, timestamp).

Every file is written to a temporary name in its own directory and renamed over the
target: a reader sees the old or the new file, never half of one. ``write_features`` /
``write_labels`` replace the whole set of their kind (files of that kind for symbols or
periods absent from the new frame are removed, so a store never mixes a shrunk universe
with stale symbols) and drop the touched symbols' manifests, so the next ``materialise``
recomputes those symbols instead of trusting a manifest that no longer describes them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from data.lake import content_sha256, market_dir, symbol_stem
from qt.atomic import replace_atomic, tmp_path, write_text_atomic
from qt.errors import DataError

KEYS = ["symbol", "timestamp"]
KINDS = ("features", "labels")
MANIFEST = "manifest.json"
_MARKETS = ("binance", "binanceusdm")
_HOUR_MS = 3_600_000
# Float features barely compress and dictionary-encoding them is pure cost (it is tried,
# then abandoned, per column): plain-encoded, lz4 pages, dictionary for the symbol only.
_PARQUET_OPTIONS = {"compression": "lz4", "use_dictionary": ["symbol"], "write_statistics": True}


# ----------------------------------------------------------------------------- public API

def write_features(df: pd.DataFrame, root: Path) -> dict:
    """Write a Features frame; returns ``{rows, columns, files, sha256}`` (sha256 of the values)."""
    return _write_kind(df, Path(root), "features")


def read_features(root: Path, symbols: list[str] | None = None) -> pd.DataFrame:
    """Features of ``symbols`` (all stored symbols when None), sorted by symbol, timestamp."""
    return read_kind(Path(root), "features", symbols)


def write_labels(df: pd.DataFrame, root: Path) -> dict:
    """Write a Labels frame (``features.labels.make_labels``); same return as ``write_features``."""
    return _write_kind(df, Path(root), "labels")


def read_labels(root: Path, symbols: list[str] | None = None) -> pd.DataFrame:
    """Labels of ``symbols`` (all stored symbols when None), sorted by symbol, timestamp."""
    return read_kind(Path(root), "labels", symbols)


def stored_symbols(root: Path, kind: str = "features") -> list[str]:
    """Symbols (ccxt notation) with at least one ``kind`` file (``features`` or ``labels``) under ``root``."""
    return sorted(_stored_dirs(Path(root), kind))


# ----------------------------------------------------------------------------- layout helpers

def symbol_dir(root: Path, symbol: str) -> Path:
    return Path(root) / market_dir(symbol) / symbol_stem(symbol)


def partition_path(directory: Path, key: str, kind: str) -> Path:
    return directory / f"{key}.{kind}.parquet"


def stored_partitions(directory: Path, kind: str) -> dict[str, Path]:
    """``{period key: path}`` of one symbol's ``kind`` files."""
    suffix = f".{kind}.parquet"
    return {p.name[: -len(suffix)]: p for p in sorted(directory.glob(f"*{suffix}")) if not p.name.startswith(".")}


def partition_slices(timestamps: pd.Series, monthly: bool) -> list[tuple[str, int, int]]:
    """``(period key, start row, end row)`` of each period of sorted timestamps: ``YYYY`` or
    ``YYYY-MM`` (UTC), end exclusive. Integer arithmetic, keys formatted once per period."""
    if len(timestamps) == 0:
        return []
    unit = "M" if monthly else "Y"
    period = timestamps.to_numpy(dtype="datetime64[ms]").astype(f"datetime64[{unit}]").view("int64")
    change = (np.flatnonzero(period[1:] != period[:-1]) + 1).tolist()
    bounds = [0, *change, len(period)]
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        p = int(period[lo])
        key = f"{1970 + p // 12:04d}-{p % 12 + 1:02d}" if monthly else f"{1970 + p:04d}"
        out.append((key, lo, hi))
    return out


class FrameParts:
    """One symbol's frame (sorted by timestamp) cut into period partitions; converted to Arrow
    and to flat column arrays once, so each partition's digest and write is a cheap slice."""

    def __init__(self, df: pd.DataFrame, monthly: bool):
        self.slices = partition_slices(df["timestamp"], monthly)
        self.rows = len(df)
        self._table = _to_table(df)
        self._ts = df["timestamp"]
        self._header = ";".join(f"{name}:{dtype}" for name, dtype in df.dtypes.items()).encode()
        self._arrays: list[np.ndarray] = []
        for name in df.columns:
            col = df[name]
            if isinstance(col.dtype, pd.DatetimeTZDtype):
                self._arrays.append(col.dt.tz_convert(None).to_numpy().view("int64"))
            elif isinstance(col.dtype, np.dtype) and col.dtype.kind in "biufmM":
                self._arrays.append(col.to_numpy())
            else:  # strings (the symbol): the distinct values, then which row holds which
                codes, uniques = pd.factorize(col, use_na_sentinel=False)
                self._header += b"|" + "\x00".join(map(str, uniques)).encode()
                self._arrays.append(codes)

    def digest(self, lo: int, hi: int) -> str:
        """sha256 of rows [lo, hi): column names, dtypes and values. Equal digests mean an
        identical partition, so an unchanged partition is never rewritten (bytes, mtime stay)."""
        h = hashlib.sha256(self._header)
        for arr in self._arrays:
            h.update(np.ascontiguousarray(arr[lo:hi]).view(np.uint8))
        return h.hexdigest()

    def entry(self, lo: int, hi: int) -> dict:
        """The manifest entry of rows [lo, hi)."""
        return {"rows": hi - lo, "sha256": self.digest(lo, hi),
                "first": self._ts.iat[lo].isoformat(), "last": self._ts.iat[hi - 1].isoformat()}

    def write(self, lo: int, hi: int, path: Path) -> None:
        """Atomically write rows [lo, hi) to ``path``."""
        _write_table(self._table.slice(lo, hi - lo), path)


def _write_table(table: pa.Table, path: Path) -> None:
    """Atomically write one partition (temp file in the same directory, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        pq.write_table(table, tmp, **_PARQUET_OPTIONS)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    replace_atomic(tmp, path)


def read_manifest(directory: Path) -> dict | None:
    """A symbol's manifest, or None when absent or unreadable (then everything is recomputed)."""
    try:
        return json.loads((directory / MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_manifest(directory: Path, manifest: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    write_text_atomic(directory / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def read_kind(root: Path, kind: str, symbols: list[str] | None) -> pd.DataFrame:
    """Every stored ``kind`` row of ``symbols`` (all when None), sorted by symbol, timestamp;
    DataError naming what is missing."""
    stored = _stored_dirs(root, kind)
    if symbols is None:
        wanted = sorted(stored)
        if not wanted:
            raise DataError(f"no {kind} under {root}; materialise them first (the features stage)")
    else:
        absent = [s for s in symbols if s not in stored]
        if absent:
            raise DataError(f"no {kind} for {absent} under {root} (have: {', '.join(sorted(stored)) or 'none'}); "
                            f"re-run the features stage for these symbols")
        wanted = sorted(set(symbols))
    tables = []
    for symbol in wanted:
        for path in stored_partitions(stored[symbol], kind).values():
            try:
                tables.append(pq.read_table(path))
            except Exception as exc:  # noqa: BLE001 - any unreadable file is a data error for the user
                raise DataError(f"{path}: unreadable Parquet ({type(exc).__name__}); "
                                f"re-run the features stage") from None
    out = pa.concat_tables(tables).to_pandas()
    out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True).astype("datetime64[ms, UTC]")
    return out  # files are sorted by timestamp, periods and symbols are visited in order


# ----------------------------------------------------------------------------- internals

def _stored_dirs(root: Path, kind: str) -> dict[str, Path]:
    out = {}
    for market in _MARKETS:
        base = root / market
        if not base.is_dir():
            continue
        for d in sorted(p for p in base.iterdir() if p.is_dir() and "_" in p.name):
            if stored_partitions(d, kind):
                base_ccy, quote = d.name.split("_", 1)
                out[f"{base_ccy}/{quote}" + (f":{quote}" if market == "binanceusdm" else "")] = d
    return out


def _to_table(df: pd.DataFrame) -> pa.Table:
    # nthreads=1: pyarrow's per-column thread pool costs more than it saves on partition-sized
    # frames, and materialise already runs one symbol per worker
    return pa.Table.from_pandas(df, preserve_index=False, nthreads=1)


def _monthly(frame: pd.DataFrame) -> bool:
    """Monthly periods for bars shorter than 1h (inferred from the smallest step of a symbol)."""
    ts = frame["timestamp"].to_numpy(dtype="datetime64[ms]").view("int64")
    same = frame["symbol"].to_numpy()[1:] == frame["symbol"].to_numpy()[:-1]
    steps = np.diff(ts)[same]
    return bool(len(steps) and steps.min() < _HOUR_MS)


def _write_kind(df: pd.DataFrame, root: Path, kind: str) -> dict:
    missing = [c for c in KEYS if c not in df.columns]
    if missing:
        raise DataError(f"{kind} frame lacks {missing}; it must have symbol, timestamp and value columns")
    if df.empty:
        raise DataError(f"no {kind} rows to write (every symbol shorter than the warm-up/horizon?); "
                        f"collect more candles")
    frame = df.sort_values(KEYS, kind="stable").reset_index(drop=True)
    if frame.duplicated(KEYS).any():
        raise DataError(f"{kind} frame holds duplicate (symbol, timestamp) rows; compute it from de-duplicated candles")
    monthly = _monthly(frame)
    # convert everything first: a frame pyarrow cannot write fails before any file changes
    todo = []
    for symbol, part in frame.groupby("symbol", sort=True):
        directory = symbol_dir(root, str(symbol))
        parts = FrameParts(part.reset_index(drop=True), monthly)
        todo += [(parts, lo, hi, partition_path(directory, key, kind)) for key, lo, hi in parts.slices]
    tables = {path for *_, path in todo}
    for parts, lo, hi, path in todo:
        (path.parent / MANIFEST).unlink(missing_ok=True)  # this symbol's manifest no longer describes it
        parts.write(lo, hi, path)
    for directory in _stored_dirs(root, kind).values():
        for path in stored_partitions(directory, kind).values():
            if path not in tables:
                (directory / MANIFEST).unlink(missing_ok=True)
                path.unlink()
    return {"rows": len(frame), "columns": list(frame.columns), "files": [str(path) for *_, path in todo],
            "sha256": content_sha256(frame)}
