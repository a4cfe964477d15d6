"""The raw candle lake: Parquet files laid out exactly like ``../shared/data``.

``<root>/ohlcv/<exchange>/<BASE>_<QUOTE>-<timeframe>.parquet`` where exchange is
``binance`` for spot symbols (``BTC/USDT``) and ``binanceusdm`` for USDT-M
perpetuals (``BTC/USDT:USDT``). Because the layout is the same, the lake itself
is a valid ``parquet:DIR`` source. Writes are atomic (write, then rename) and a
manifest per file records rows, first/last timestamp and a content hash.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd

from qt.errors import DataError

OHLCV_COLUMNS = ["timestamp", "open", "high", "low", "close", "volume"]
CANDLE_COLUMNS = ["symbol", *OHLCV_COLUMNS]


def market_dir(symbol: str) -> str:
    """``binanceusdm`` for perpetuals (``BASE/QUOTE:SETTLE``), else ``binance``."""
    return "binanceusdm" if ":" in symbol else "binance"


def symbol_stem(symbol: str) -> str:
    """``BTC/USDT`` and ``BTC/USDT:USDT`` -> ``BTC_USDT`` (the market dir tells them apart)."""
    if "/" not in symbol:
        raise DataError(f"symbol {symbol!r} is not a ccxt symbol; write it as BASE/QUOTE, e.g. BTC/USDT")
    return symbol.split(":")[0].replace("/", "_")


def candle_path(root: Path, symbol: str, timeframe: str) -> Path:
    return Path(root) / "ohlcv" / market_dir(symbol) / f"{symbol_stem(symbol)}-{timeframe}.parquet"


def available_symbols(root: Path, timeframe: str) -> list[str]:
    """Symbols with candles of ``timeframe`` under ``root`` (ccxt notation)."""
    out = []
    for market in ("binance", "binanceusdm"):
        for f in sorted((Path(root) / "ohlcv" / market).glob(f"*-{timeframe}.parquet")):
            base, quote = f.name[: -len(f"-{timeframe}.parquet")].split("_", 1)
            out.append(f"{base}/{quote}" + (f":{quote}" if market == "binanceusdm" else ""))
    return out


def content_sha256(df: pd.DataFrame) -> str:
    """Hash of the values (not the file bytes), stable across Parquet writer versions."""
    h = hashlib.sha256()
    h.update(pd.util.hash_pandas_object(df.reset_index(drop=True), index=False).values.tobytes())
    return h.hexdigest()


def write_candles(root: Path, symbol: str, timeframe: str, ohlcv: pd.DataFrame) -> Path:
    """Atomically write one symbol's candles (OHLCV columns, sorted, unique) and its manifest."""
    path = candle_path(root, symbol, timeframe)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = ohlcv[OHLCV_COLUMNS].sort_values("timestamp").reset_index(drop=True)
    _atomic_parquet(frame, path)
    manifest = {
        "symbol": symbol,
        "timeframe": timeframe,
        "rows": len(frame),
        "first": frame["timestamp"].iloc[0].isoformat() if len(frame) else None,
        "last": frame["timestamp"].iloc[-1].isoformat() if len(frame) else None,
        "sha256": content_sha256(frame),
    }
    _atomic_text(json.dumps(manifest, indent=2), path.with_suffix(".manifest.json"))
    return path


def read_symbol(root: Path, symbol: str, timeframe: str) -> pd.DataFrame:
    """One symbol's OHLCV, timestamps as ``datetime64[ms, UTC]``; DataError if absent or malformed."""
    path = candle_path(root, symbol, timeframe)
    if not path.is_file():
        have = ", ".join(available_symbols(root, timeframe)) or "none"
        raise DataError(f"no {timeframe} candles for {symbol} under {root} (have: {have}); "
                        f"check --symbols and --timeframe")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a data error for the user
        raise DataError(f"{path}: unreadable Parquet ({type(exc).__name__}); re-collect it") from None
    missing = [c for c in OHLCV_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing}; expected {OHLCV_COLUMNS}")
    df = df[OHLCV_COLUMNS].copy()
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True).astype("datetime64[ms, UTC]")
    for c in OHLCV_COLUMNS[1:]:
        df[c] = df[c].astype("float64")
    return df


def read_candles(root: Path, symbols: list[str], timeframe: str,
                 start: pd.Timestamp | str | None = None, end: pd.Timestamp | str | None = None) -> pd.DataFrame:
    """Tidy candles for ``symbols`` in ``[start, end)``: columns ``CANDLE_COLUMNS``,
    sorted by symbol then timestamp. Raises DataError when the range holds no data."""
    frames = []
    lo = _ts(start)
    hi = _ts(end)
    for sym in symbols:
        df = read_symbol(root, sym, timeframe)
        if lo is not None:
            df = df[df["timestamp"] >= lo]
        if hi is not None:
            df = df[df["timestamp"] < hi]
        if df.empty:
            raise DataError(f"{sym}: no {timeframe} candles in [{start or 'start'}, {end or 'end'}); "
                            f"widen --start/--end")
        frames.append(df.assign(symbol=sym))
    out = pd.concat(frames, ignore_index=True)[CANDLE_COLUMNS]
    return out.sort_values(["symbol", "timestamp"], kind="stable").reset_index(drop=True)


def _ts(value) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise DataError(f"{value!r} is not a date; use YYYY-MM-DD") from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _atomic_parquet(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _atomic_text(text: str, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
