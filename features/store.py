"""The materialised feature and label store: one Parquet file per symbol and kind.

Layout under ``root`` (the caller picks it, e.g. ``StatePaths.features / <timeframe>``)::

    <root>/<market>/<BASE>_<QUOTE>.features.parquet
    <root>/<market>/<BASE>_<QUOTE>.labels.parquet

``market`` is ``binance`` (spot) or ``binanceusdm`` (perpetual), as in ``qt.lake``, so
``BTC/USDT`` and ``BTC/USDT:USDT`` never share a file. Features and labels are kept as
two frames (they have different row sets: labels lack each symbol's last h bars,
features lack its first warm-up bars); training joins them on (symbol, timestamp).

A write replaces the whole set of its kind: every file is written to a temporary name
and renamed over the old one (a reader sees the old or the new file, never half of one),
then files of that kind for symbols absent from the new frame are removed, so a store
never mixes a shrunk universe with stale symbols.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from qt.errors import DataError
from qt.lake import content_sha256, market_dir, symbol_stem

_KEYS = ["symbol", "timestamp"]
_MARKETS = ("binance", "binanceusdm")


def write_features(df: pd.DataFrame, root: Path) -> dict:
    """Write a Features frame; returns ``{rows, columns, files, sha256}`` (sha256 of the values)."""
    return _write_kind(df, Path(root), "features")


def read_features(root: Path, symbols: list[str] | None = None) -> pd.DataFrame:
    """Features of ``symbols`` (all stored symbols when None), sorted by symbol, timestamp."""
    return _read_kind(Path(root), "features", symbols)


def write_labels(df: pd.DataFrame, root: Path) -> dict:
    """Write a Labels frame (``features.labels.make_labels``); same return as ``write_features``."""
    return _write_kind(df, Path(root), "labels")


def read_labels(root: Path, symbols: list[str] | None = None) -> pd.DataFrame:
    """Labels of ``symbols`` (all stored symbols when None), sorted by symbol, timestamp."""
    return _read_kind(Path(root), "labels", symbols)


def stored_symbols(root: Path, kind: str = "features") -> list[str]:
    """Symbols (ccxt notation) with a ``kind`` file (``features`` or ``labels``) under ``root``."""
    return sorted(_stored_paths(Path(root), kind))


def _path(root: Path, symbol: str, kind: str) -> Path:
    return root / market_dir(symbol) / f"{symbol_stem(symbol)}.{kind}.parquet"


def _stored_paths(root: Path, kind: str) -> dict[str, Path]:
    suffix = f".{kind}.parquet"
    out = {}
    for market in _MARKETS:
        for f in sorted((root / market).glob(f"*{suffix}")):
            base, quote = f.name[: -len(suffix)].split("_", 1)
            out[f"{base}/{quote}" + (f":{quote}" if market == "binanceusdm" else "")] = f
    return out


def _write_kind(df: pd.DataFrame, root: Path, kind: str) -> dict:
    missing = [c for c in _KEYS if c not in df.columns]
    if missing:
        raise DataError(f"{kind} frame lacks {missing}; it must have symbol, timestamp and value columns")
    if df.empty:
        raise DataError(f"no {kind} rows to write (every symbol shorter than the warm-up/horizon?); "
                        f"collect more candles")
    frame = df.sort_values(_KEYS, kind="stable").reset_index(drop=True)
    if frame.duplicated(_KEYS).any():
        raise DataError(f"{kind} frame holds duplicate (symbol, timestamp) rows; compute it from de-duplicated candles")
    written = []
    for symbol, part in frame.groupby("symbol", sort=True):
        path = _path(root, str(symbol), kind)
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_parquet(part.reset_index(drop=True), path)
        written.append(path)
    for symbol, stale in _stored_paths(root, kind).items():
        if stale not in written:
            stale.unlink()
    return {"rows": len(frame), "columns": list(frame.columns), "files": [str(p) for p in written],
            "sha256": content_sha256(frame)}


def _read_kind(root: Path, kind: str, symbols: list[str] | None) -> pd.DataFrame:
    stored = _stored_paths(root, kind)
    if symbols is None:
        wanted = list(stored)
        if not wanted:
            raise DataError(f"no {kind} under {root}; materialise them first (the features stage)")
    else:
        wanted = list(symbols)
        absent = [s for s in wanted if s not in stored]
        if absent:
            raise DataError(f"no {kind} for {absent} under {root} (have: {', '.join(stored) or 'none'}); "
                            f"re-run the features stage for these symbols")
    frames = []
    for symbol in wanted:
        try:
            frames.append(pd.read_parquet(stored[symbol]))
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a data error for the user
            raise DataError(f"{stored[symbol]}: unreadable Parquet ({type(exc).__name__}); "
                            f"re-run the features stage") from None
    out = pd.concat(frames, ignore_index=True)
    out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True).astype("datetime64[ms, UTC]")
    return out.sort_values(_KEYS, kind="stable").reset_index(drop=True)


def _atomic_parquet(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
