"""Collection: bring candles from a source into the raw lake.

Sources (``--source``):

* ``synthetic[:SEED]`` - the project's own market generator (offline default);
* ``parquet:DIR`` - a directory laid out like ``../shared/data``;
* ``ccxt`` - Binance through ccxt (needs a network).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from qt import lake
from qt.config import Params
from qt.errors import DataError, RetryableError, UserError
from qt.paths import StatePaths
from qt.synthetic import generate_market, timeframe_ms


@dataclass(frozen=True)
class Source:
    kind: str  # "synthetic" | "parquet" | "ccxt"
    seed: int | None = None
    directory: Path | None = None

    def describe(self) -> str:
        if self.kind == "synthetic":
            return f"synthetic:{self.seed}"
        if self.kind == "parquet":
            return f"parquet:{self.directory}"
        return "ccxt"


def parse_source(text: str) -> Source:
    """``synthetic[:SEED]`` | ``parquet:DIR`` | ``ccxt``; UserError naming the forms otherwise."""
    kind, _, arg = text.partition(":")
    if kind == "synthetic":
        try:
            return Source("synthetic", seed=int(arg) if arg else 7)
        except ValueError:
            raise UserError(f"--source {text!r}: the seed must be an integer, e.g. synthetic:7") from None
    if kind == "parquet":
        if not arg:
            raise UserError("--source parquet:DIR needs a directory, e.g. parquet:../shared/data")
        d = Path(arg).expanduser().resolve()
        if not d.is_dir():
            raise UserError(f"--source {text!r}: directory {d} does not exist")
        if not (d / "ohlcv").is_dir():
            raise UserError(f"--source {text!r}: {d} has no ohlcv/ folder; expected the ../shared/data layout")
        return Source("parquet", directory=d)
    if kind == "ccxt" and not arg:
        return Source("ccxt")
    raise UserError(f"--source {text!r} is not one of synthetic[:SEED], parquet:DIR, ccxt")


def load_from_source(source: Source, params: Params) -> pd.DataFrame:
    """Candles for ``params.data`` (symbols, timeframe, [start, end)) from ``source``."""
    d = params.data
    if source.kind == "synthetic":
        candles = generate_market(d.symbols, d.timeframe, params.synthetic, source.seed)
        candles = _restrict(candles, d.start, d.end)
        if candles.empty:
            raise DataError(f"no synthetic candles in [{d.start}, {d.end}); the synthetic market starts "
                            f"{params.synthetic.start} and has {params.synthetic.bars} bars")
        return candles
    if source.kind == "parquet":
        return lake.read_candles(source.directory, d.symbols, d.timeframe, d.start, d.end)
    return _fetch_ccxt(d.symbols, d.timeframe, d.start, d.end)


def collect_stage(params: Params, paths: StatePaths) -> dict:
    """Write the requested candles into ``paths.raw`` and describe what was collected."""
    source = parse_source(params.data.source)
    t0 = time.perf_counter()
    candles = load_from_source(source, params)
    paths.raw.mkdir(parents=True, exist_ok=True)
    for sym, frame in candles.groupby("symbol", sort=False):
        lake.write_candles(paths.raw, sym, params.data.timeframe, frame)
    stored = read_lake(params, paths)  # the hash is of what later stages read, not of what we meant to write
    return {"data": {
        "source": source.describe(),
        "symbols": list(params.data.symbols),
        "timeframe": params.data.timeframe,
        "rows": int(len(candles)),
        "start": candles["timestamp"].min().isoformat(),
        "end": candles["timestamp"].max().isoformat(),
        "sha256": lake.content_sha256(stored),
        "seconds": round(time.perf_counter() - t0, 3),
    }}


def read_lake(params: Params, paths: StatePaths) -> pd.DataFrame:
    """The collected candles for ``params.data`` from the raw lake (what every later stage reads)."""
    return lake.read_candles(paths.raw, params.data.symbols, params.data.timeframe,
                             params.data.start, params.data.end)


def _restrict(candles: pd.DataFrame, start, end) -> pd.DataFrame:
    if start is not None:
        candles = candles[candles["timestamp"] >= lake._ts(start)]
    if end is not None:
        candles = candles[candles["timestamp"] < lake._ts(end)]
    return candles.reset_index(drop=True)


def _fetch_ccxt(symbols, timeframe, start, end) -> pd.DataFrame:  # pragma: no cover - needs a network
    """Paginated OHLCV from Binance (spot or USDT-M by symbol form); only closed candles."""
    import ccxt

    step = timeframe_ms(timeframe)
    since0 = int(lake._ts(start or "2017-01-01").value // 10**6)
    until = int(lake._ts(end).value // 10**6) if end else None
    frames = []
    clients = {}
    for sym in symbols:
        kind = "binanceusdm" if ":" in sym else "binance"
        ex = clients.get(kind) or clients.setdefault(kind, getattr(ccxt, kind)({"enableRateLimit": True}))
        rows, since = [], since0
        while True:
            try:
                batch = ex.fetch_ohlcv(sym, timeframe, since=since, limit=1000)
            except ccxt.BadSymbol:
                raise DataError(f"{sym}: unknown on {kind}; check --symbols") from None
            except ccxt.NetworkError as exc:
                raise RetryableError(f"{sym}: cannot reach {kind} ({type(exc).__name__}); "
                                     f"check the network or use --source synthetic / parquet:DIR") from None
            if not batch:
                break
            rows.extend(batch)
            since = batch[-1][0] + step
            if until is not None and since >= until:
                break
            if len(batch) < 1000:
                break
        now_ms = int(time.time() * 1000)
        df = pd.DataFrame(rows, columns=lake.OHLCV_COLUMNS).drop_duplicates("timestamp")
        df = df[df["timestamp"] + step <= now_ms]  # never store the still-open candle
        if until is not None:
            df = df[df["timestamp"] < until]
        if df.empty:
            raise DataError(f"{sym}: no {timeframe} candles from {kind} in the requested range")
        df["timestamp"] = pd.to_datetime(df["timestamp"], unit="ms", utc=True).astype("datetime64[ms, UTC]")
        frames.append(df.assign(symbol=sym))
    return pd.concat(frames, ignore_index=True)[lake.CANDLE_COLUMNS]
