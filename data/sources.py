"""The collect stage: every source goes through ccxt into the raw lake.

Sources (``--source``):

* ``ccxt`` - Binance itself, or any Binance-compatible server at ``collect.exchange_url``
  (``--exchange-url``);
* ``synthetic[:SEED]`` - the project's market generator, written to a Parquet directory and
  served by the local exchange (``exchange``);
* ``parquet:DIR`` - a directory laid out like ``../shared/data``, served the same way.

So the offline path and the online path are the same code: the real ccxt client talking
HTTP to an exchange. Each source has its own lake under ``raw/`` (a synthetic market with
other parameters is another market), so incremental collection never mixes markets.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import ccxt
import pandas as pd

from data import lake
from data.collector import CollectReport, collect_universe, select_universe
from data.synthetic import generate_market
from exchange import LocalExchange
from exchange.datadir import write_datadir
from qt.venues import make_client, market_of, venue_for
from qt.config import Params
from qt.errors import DataError, QTError, UserError
from qt.paths import StatePaths


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


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def source_key(source: Source, params: Params) -> str:
    """Folder name of this source's lake under ``raw/`` (stable for the same market)."""
    if source.kind == "synthetic":
        market = {"seed": source.seed, "symbols": sorted(params.data.symbols), "tf": params.data.timeframe,
                  "synthetic": params.synthetic.model_dump(mode="json")}
        return f"synthetic-{source.seed}-{_digest(market)}"
    if source.kind == "parquet":
        return f"parquet-{source.directory.name}-{_digest(str(source.directory))}"
    url = params.collect.exchange_url
    return params.collect.venue if url is None else f"exchange-{_digest(url)}"


_UNIVERSE_FILE = "universe.json"  # in a synthetic lake: the symbols its market was generated for


def lake_root(params: Params, paths: StatePaths) -> Path:
    """Where this run's candles live (every stage and the service read from here).

    A synthetic market is generated for a whole universe (its common factor couples the symbols),
    so its lake is keyed by that universe. Stages after validation ask for a subset (the symbols
    that passed): they get the lake of the collected universe that contains them.
    """
    source = parse_source(params.data.source)
    root = paths.raw / source_key(source, params)
    if source.kind != "synthetic" or root.is_dir():
        return root
    wanted = set(params.data.symbols)
    for lake_dir in sorted(paths.raw.glob(f"synthetic-{source.seed}-*")):
        universe_file = lake_dir / _UNIVERSE_FILE
        if not universe_file.is_file():
            continue
        universe = json.loads(universe_file.read_text())["symbols"]
        as_collected = params.model_copy(update={"data": params.data.model_copy(update={"symbols": universe})})
        if wanted <= set(universe) and source_key(source, as_collected) == lake_dir.name:
            return lake_dir
    return root


def venue_lake_root(params: Params, paths: StatePaths, venue: str) -> Path:
    """The lake holding ``venue``'s series for this source (``data.partitions.VENUES``).

    A file, synthetic or local-exchange source keeps every venue under one root (``ohlcv/bybit/``
    beside ``ohlcv/binanceusdm/``); the real venues (no ``collect.exchange_url``) each have their own."""
    exchange = "bybit" if venue == "bybit" else "binance"
    as_venue = params.model_copy(update={"collect": params.collect.model_copy(update={"exchange": exchange})})
    return lake_root(as_venue, paths)


def with_collected_universe(params: Params, paths: StatePaths) -> Params:
    """``params`` whose ``data.symbols`` is the universe the last collection chose.

    With ``collect.universe: top`` the symbols are picked at collection time (top-N by volume);
    every later stage must use that list, not the one in ``params.yaml``.
    """
    if params.collect.universe != "top":
        return params
    record = paths.reports / "collect.json"
    if not record.is_file():
        raise DataError("collect.universe is 'top' but nothing was collected yet; run `qt collect` first")
    symbols = json.loads(record.read_text())["data"]["symbols"]
    return params.model_copy(update={"data": params.data.model_copy(update={"symbols": symbols})})


def read_lake(params: Params, paths: StatePaths, venue: str = "binance") -> pd.DataFrame:
    """The collected candles for ``params.data`` from the lake (what every later stage reads: the
    pipeline decides on Binance's candles; Bybit's are an input of the cross-venue features)."""
    return lake.read_candles(venue_lake_root(params, paths, venue), params.data.symbols, params.data.timeframe,
                             params.data.start, params.data.end, venue)


def synthetic_datadir(seed: int, params: Params, paths: StatePaths) -> Path:
    """The synthetic market as a Parquet directory the local exchange serves (written once)."""
    directory = paths.home / "exchange" / source_key(Source("synthetic", seed=seed), params)
    if not (directory / "ohlcv").is_dir():
        candles = generate_market(list(params.data.symbols), params.data.timeframe, params.synthetic, seed)
        write_datadir(candles, directory, params.data.timeframe)
    return directory


@contextmanager
def exchange_url_for(params: Params, paths: StatePaths) -> Iterator[str | None]:
    """The URL ccxt should talk to; starts (and stops, by PID) the local exchange when needed."""
    source = parse_source(params.data.source)
    if source.kind == "ccxt":
        yield params.collect.exchange_url
        return
    directory = source.directory if source.kind == "parquet" else synthetic_datadir(source.seed, params, paths)
    with LocalExchange(directory, log_path=paths.logs / "local-exchange.log") as exchange:
        yield exchange.url


def _refusal_reason(exchange, symbol: str) -> str | None:
    """The exchange's own one-line reason for not listing ``symbol``, when it gives more than Binance's
    bare "Invalid symbol." (the local exchange names a bad data file there); None if simply unknown."""
    if exchange.id not in ("binance", "binanceusdm"):
        return None
    ask = exchange.fapiPublicGetExchangeInfo if ":" in symbol else exchange.publicGetExchangeInfo
    try:
        ask({"symbol": symbol.split(":")[0].replace("/", "")})
    except ccxt.BaseError as exc:
        text = str(exc)
        try:
            msg = str(json.loads(text[text.index("{"):]).get("msg", ""))
        except ValueError:
            return None
        return msg if msg.strip() not in ("", "Invalid symbol.") else None
    return None


def _check_listed(symbols: list[str], url: str | None, params: Params) -> dict[str, str]:
    """UserError naming every requested symbol the exchange does not list (before any download).

    Returns the symbols the exchange refused with a reason of its own (e.g. a corrupt source file):
    those are not a typo, so the others are still collected and the stage fails afterwards."""
    unknown, listed, refused = [], [], {}
    venue, where = venue_for(params.collect.exchange), url or params.collect.exchange
    off_venue = [s for s in symbols if market_of(s) not in venue.markets]
    if off_venue:
        raise UserError(f"{', '.join(off_venue)}: not a market collected on {params.collect.exchange} "
                        f"(there: {' and '.join(venue.markets)}); write perpetuals as BASE/USDT:USDT")
    for market in sorted({market_of(s) for s in symbols}):
        exchange = make_client(params.collect.exchange, market, url, params.collect.timeout_ms)
        try:
            markets = exchange.load_markets()
        except ccxt.NetworkError as exc:
            raise QTError(f"cannot reach the {market} exchange at {where} "
                          f"({type(exc).__name__}); check --exchange-url or the network") from None
        listed += sorted(markets)
        for s in symbols:
            if market_of(s) == market and s not in markets:
                reason = _refusal_reason(exchange, s)
                if reason is None:
                    unknown.append(s)
                else:
                    refused[s] = reason
    if unknown:
        raise UserError(f"unknown symbol(s) {', '.join(unknown)} on {where}; "
                        f"listed there: {', '.join(listed[:12])}{' ...' if len(listed) > 12 else ''}")
    return refused


def collect_stage(params: Params, paths: StatePaths,
                  collect_symbols: Callable[[Params, Path, str | None, list[str]], list] | None = None) -> dict:
    """Collect the universe into the lake and describe what is stored.

    ``collect_symbols(params, root, url, symbols) -> [SymbolReport]`` fans out over symbols
    (threads by default; the Prefect flow passes its mapped tasks). One failing symbol does not
    stop the others; when any failed, the stage raises after all finished, naming them.
    """
    t0 = time.perf_counter()
    source = parse_source(params.data.source)
    root = lake_root(params, paths)
    root.mkdir(parents=True, exist_ok=True)
    with exchange_url_for(params, paths) as url:
        symbols = list(params.data.symbols) if params.collect.universe == "list" else select_universe(
            make_client(params.collect.exchange, params.collect.market, url, params.collect.timeout_ms), params)
        refused = _check_listed(symbols, url, params)
        servable = [s for s in symbols if s not in refused]
        if collect_symbols is None:
            report = collect_universe(params, root, exchange_url=url, symbols=servable)
        else:
            report = CollectReport(timeframe=params.data.timeframe,
                                   symbols=collect_symbols(params, root, url, servable) if servable else [],
                                   seconds=time.perf_counter() - t0)
    collected = report.to_dict()
    if report.failed or refused:
        paths.reports.mkdir(parents=True, exist_ok=True)
        (paths.reports / "collect-failures.json").write_text(
            json.dumps(collected | {"refused": refused}, indent=2, default=str))
        names = "; ".join([f"{s}: refused by the exchange: {why}" for s, why in refused.items()]
                          + [f"{r.symbol}: {r.error}" for r in report.failed])
        error = QTError if report.failed else DataError  # a bad source file is the user's to fix (exit 2)
        raise error(f"collection failed for {len(report.failed) + len(refused)} of {len(symbols)} symbol(s) "
                    f"(the others were stored): {names}")
    params = params.model_copy(update={"data": params.data.model_copy(update={"symbols": symbols})})
    if source.kind == "synthetic":
        (root / _UNIVERSE_FILE).write_text(json.dumps({"symbols": sorted(symbols)}))
    empty = [r.symbol for r in report.symbols if r.first_stored is None]
    if empty:
        d = params.data
        raise DataError(f"no {d.timeframe} candles in [{d.start or 'start'}, {d.end or 'end'}) from "
                        f"{source.describe()} for {', '.join(empty)}; widen --start/--end")
    stored = read_lake(params, paths, params.collect.venue)
    return {"data": {
        "source": source.describe(),
        "exchange": params.collect.exchange,
        "symbols": symbols,
        "timeframe": params.data.timeframe,
        "rows": int(len(stored)),
        "start": stored["timestamp"].min().isoformat(),
        "end": stored["timestamp"].max().isoformat(),
        "sha256": lake.content_sha256(stored),
        "lake": str(root),
        # validation's freshness check measures staleness against this moment
        "collected_at": pd.Timestamp.now(tz="UTC").isoformat(),
        "seconds": round(time.perf_counter() - t0, 3),
        "collected": collected,
    }}
