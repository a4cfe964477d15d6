"""Alternative data in the raw lake: ``<lake>/alt/<series>/YYYY.parquet``, one row per observation.

Why its own store beside the candles: the alt series are market-wide (not per symbol), carry
strings (a headline's title) and - the point of this module - a **publication time**. Every row
holds ``timestamp`` (what the value is about) and ``available_at`` (from when a decision may use
it), fixed here at ingestion by each series' documented publication rule (``PUBLICATION_LAG_MS``,
see ``../shared/data/README.md``):

* ``fear_greed``: the value stamped day D is published at about D 00:00 UTC -> ``available_at = D``;
* ``onchain_btc``: the row stamped D describes the whole day D (its closing price) and the ETF
  flow of D is known after the US close -> ``available_at = D + 1 day``;
* ``headlines``: usable from their own publication time -> ``available_at = timestamp``.

The join (``features.alt_join``) reads only ``available_at``; the point-in-time check re-derives
it from ``timestamp + PUBLICATION_LAG_MS`` independently, so a series stored with the wrong
availability fails that check.

Writes are deterministic (fixed schema and writer options, rows sorted by key) and incremental:
a yearly partition is rewritten only when its rows change, so a re-run with the same input adds
nothing and leaves every file's bytes and mtime alone (the candle lake's rules, ``data.partitions``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

from data.partitions import WriteResult, content_sha256, read_table, write_table_atomic
from qt.errors import DataError

DAY_MS = 86_400_000
_TS = pa.timestamp("ms", tz="UTC")


@dataclass(frozen=True)
class AltSeries:
    """One alt series' layout: key columns (unique per row), value columns and their Arrow types."""

    name: str
    keys: tuple[str, ...]
    values: tuple[tuple[str, pa.DataType], ...]
    lag_ms: int  # available_at = timestamp + lag_ms (the publication rule above)

    @property
    def columns(self) -> list[str]:
        return ["timestamp", "available_at", *(c for c, _ in self.values)]

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field("timestamp", _TS, nullable=False), pa.field("available_at", _TS, nullable=False)]
                         + [pa.field(c, t) for c, t in self.values])


VOTE_KINDS = ("positive", "negative", "important", "liked", "disliked", "lol", "toxic", "saved", "comments")

SERIES = {
    "fear_greed": AltSeries("fear_greed", ("timestamp",), (("value", pa.float64()), ("classification", pa.string())),
                            0),
    "onchain_btc": AltSeries("onchain_btc", ("timestamp",),
                             tuple((c, pa.float64()) for c in ("mvrv", "nupl", "realized_price", "etf_flow_usd")),
                             DAY_MS),
    "headlines": AltSeries("headlines", ("timestamp", "title"),
                           (("title", pa.string()), ("source", pa.string()),
                            *((f"votes_{k}", pa.float64()) for k in VOTE_KINDS)), 0),
}
PUBLICATION_LAG_MS = {name: s.lag_ms for name, s in SERIES.items()}


def series_spec(name: str) -> AltSeries:
    if name not in SERIES:
        raise DataError(f"unknown alt series {name!r}; known: {', '.join(SERIES)}")
    return SERIES[name]


def alt_dir(root: Path, name: str) -> Path:
    return Path(root) / "alt" / series_spec(name).name


def with_availability(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """``frame`` (timestamp + the series' value columns) with ``available_at`` from the series'
    publication rule, in the stored column order and types, sorted by key, one row per key."""
    spec = series_spec(name)
    missing = [c for c, _ in spec.values if c not in frame.columns] + \
        ([] if "timestamp" in frame.columns else ["timestamp"])
    if missing:
        raise DataError(f"alt series {name}: missing columns {missing}; expected {spec.columns}")
    out = pd.DataFrame({"timestamp": pd.to_datetime(frame["timestamp"], utc=True).astype("datetime64[ms, UTC]")})
    out["available_at"] = out["timestamp"] + pd.Timedelta(milliseconds=spec.lag_ms)
    for col, typ in spec.values:
        out[col] = frame[col].astype("str" if typ == pa.string() else "float64").to_numpy()
    return _tidy(out, spec)


def write_alt(root: Path, name: str, frame: pd.DataFrame) -> WriteResult:
    """Union ``frame`` (``with_availability`` rows) with the stored partitions; rewrite only the
    yearly partitions whose rows change. A key already stored keeps the newest row given."""
    spec = series_spec(name)
    directory = alt_dir(root, name)
    if frame.empty:
        return WriteResult(path=directory)
    directory.mkdir(parents=True, exist_ok=True)
    added, written = 0, []
    for year, part in frame.groupby(frame["timestamp"].dt.year, sort=True):
        path = directory / f"{int(year):04d}.parquet"
        old = read_alt_partition(path, spec) if path.is_file() else None
        merged = _tidy(part if old is None else pd.concat([old, part], ignore_index=True), spec)
        added += len(merged) - (0 if old is None else len(old))
        if old is not None and content_sha256(old) == content_sha256(merged):
            continue
        _write(merged, path, spec)
        written.append(path.stem)
    return WriteResult(path=directory, rows_added=added, partitions_written=written)


def read_alt(root: Path, name: str) -> pd.DataFrame:
    """Every stored row of the series, sorted by key (an empty frame of its columns when none);
    DataError naming the file when a partition is unreadable."""
    spec = series_spec(name)
    parts = [read_alt_partition(p, spec) for p in sorted(alt_dir(root, name).glob("*.parquet"))]
    if not parts:
        return spec.schema.empty_table().to_pandas()
    return _tidy(pd.concat(parts, ignore_index=True), spec)


def read_alt_partition(path: Path, spec: AltSeries) -> pd.DataFrame:
    try:
        table = read_table(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a data error for the user
        raise DataError(f"{path}: unreadable Parquet ({type(exc).__name__}); delete it and re-collect") from None
    missing = [c for c in spec.columns if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing columns {missing}; expected {spec.columns}")
    return table.select(spec.columns).to_pandas()


def _tidy(frame: pd.DataFrame, spec: AltSeries) -> pd.DataFrame:
    keys = list(spec.keys)
    frame = frame.assign(**{c: pd.to_datetime(frame[c], utc=True).astype("datetime64[ms, UTC]")
                            for c in ("timestamp", "available_at")})
    return (frame.drop_duplicates(keys, keep="last").sort_values(keys, kind="stable")
            .reset_index(drop=True)[spec.columns])


def _write(frame: pd.DataFrame, path: Path, spec: AltSeries) -> None:
    write_table_atomic(pa.Table.from_pandas(frame, schema=spec.schema, preserve_index=False)
                       .replace_schema_metadata(None), path)
