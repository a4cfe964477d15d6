"""``qt record-book``: order-book recordings into the lake, checked by a replay.

Three ways in, one storage (``<lake>/orderbook/<market>/<STEM>/<day>/``, ``data.orderbook.store``):

* by default the websocket streams are recorded live for ``--seconds`` (``data.orderbook.live``):
  depth diffs, trades, bookTicker and the REST depth snapshots that sequence them (a fresh one
  after every gap), as a raw file in hftbacktest's collector format under ``<STEM>/raw/``, which is
  then imported exactly like ``--from-file`` (appended to a day already stored: two sessions of a
  day replay as one, the break between them a gap that the second session's snapshot resyncs).
  ``--ws-url``/``--rest-url`` name a Binance-compatible server (both or neither: a snapshot from one
  server cannot sequence another's stream). If the websocket cannot be opened at all, one
  ``warning:`` line on stderr says so and REST snapshots are polled instead - never silently;
* ``--from-file RAW.gz`` imports a raw websocket recording (``<receive ns> <JSON>`` lines of
  Binance depth diffs, trades, bookTicker and a REST snapshot), then replays the stored copy and
  prints the counts and the bookTicker check as JSON; the same pass writes ``levels.parquet`` per
  day (the top 50 levels per side each second of Binance's event clock, ``data.orderbook.levels``),
  which ``qt exchange serve --book`` walks for market fills;
* ``--rest-only`` polls REST depth snapshots through ccxt every ``--interval`` s for ``--seconds``
  (``data.orderbook.recorder``) from Binance, or from ``--rest-url`` (alias ``--exchange-url``; the
  local exchange answers with a book it invents from the current candle, ``exchange.depth``), and
  appends them to the ``snapshots`` table. Polled snapshots miss every change between two polls.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from qt.errors import UserError

VENUES = ("binance", "binanceusdm")


def market_symbol(symbol: str, venue: str) -> str:
    """The ccxt symbol on ``venue``: ``BTC/USDT`` on spot, ``BTC/USDT:USDT`` on USDT-M (added if left off)."""
    if "/" not in symbol:
        raise UserError(f"--symbols {symbol!r} is not a ccxt symbol; write it as BASE/QUOTE, e.g. BTC/USDT")
    if venue == "binance" and ":" in symbol:
        raise UserError(f"--symbols {symbol} is a perpetual; with --venue binance (spot) write {symbol.split(':')[0]}")
    if venue == "binanceusdm" and ":" not in symbol:
        return f"{symbol}:{symbol.split('/')[1]}"
    return symbol


def binance_id(symbol: str) -> str:
    return symbol.split(":")[0].replace("/", "")


def record_book(
    symbols: Annotated[str, typer.Option("--symbols", help="ccxt symbol(s), comma-separated, e.g. BTC/USDT")],
    venue: Annotated[str, typer.Option("--venue", help="binance (spot) | binanceusdm (USDT-M perpetuals)")],
    from_file: Annotated[Optional[Path], typer.Option(
        "--from-file", help="import a raw websocket recording (gzip '<receive ns> <JSON>' lines)")] = None,
    seconds: Annotated[Optional[float], typer.Option(
        "--seconds", min=0.0, help="recording length (default 10)")] = None,
    ws_url: Annotated[Optional[str], typer.Option(
        "--ws-url", help="a Binance-compatible websocket server (ws:// or wss://host:port)")] = None,
    rest_url: Annotated[Optional[str], typer.Option(
        "--rest-url", "--exchange-url", help="a Binance-compatible REST server (http:// or https://host:port)")] = None,
    rest_only: Annotated[bool, typer.Option(
        "--rest-only", help="poll REST depth snapshots instead of recording the websocket streams")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.05, help="seconds between REST polls")] = 1.0,
    limit: Annotated[Optional[int], typer.Option(
        "--limit", help="levels per side per REST snapshot (default 1000 with the websocket, 100 polling)")] = None,
    lake: Annotated[Optional[Path], typer.Option("--lake", help="where orderbook/ goes (default: <QT_HOME>, the state directory)")] = None,
    params: Annotated[Optional[Path], typer.Option("--params", help="params file (default: ./params.yaml)")] = None,
) -> None:
    """Order books into the lake: record Binance's depth, trade and bookTicker streams live (with
    the REST snapshots that sequence them), import a raw recording (--from-file), or poll REST
    depth snapshots (--rest-only); each is replayed and checked against bookTicker."""
    if venue not in VENUES:
        raise UserError(f"--venue {venue!r} is not one of {', '.join(VENUES)}")
    wanted = [market_symbol(s.strip(), venue) for s in symbols.split(",") if s.strip()]
    if not wanted:
        raise UserError("--symbols is empty; pass e.g. --symbols BTC/USDT")
    _check_urls(ws_url, rest_url, rest_only)
    if from_file is None:
        length = 10.0 if seconds is None else seconds
        if not rest_only and length <= 0:
            raise UserError("--seconds must be more than 0 to record the websocket streams")
        if rest_only:
            _poll(wanted, venue, length, interval, limit or 100, rest_url, lake, params)
        else:
            _live(wanted, venue, length, interval, limit, ws_url, rest_url, lake, params)
        return
    if seconds is not None or rest_url is not None or ws_url is not None or rest_only:
        raise UserError("--seconds, --ws-url, --rest-url and --rest-only are for recording; "
                        "--from-file imports the whole file")
    if len(wanted) != 1:
        raise UserError(f"--from-file holds one symbol's recording; pass one symbol, not {len(wanted)}")
    if not from_file.is_file():
        raise UserError(f"--from-file {from_file} does not exist")
    from cli.context import load_context

    _, paths = load_context(params, None, None, None, None, None)
    root = lake or paths.home  # <QT_HOME>/orderbook/: not under raw/, a DVC input of the features stage
    typer.echo(json.dumps({"symbol": wanted[0], "venue": venue,
                           **_import_raw(root, wanted[0], venue, from_file, append=False)}, indent=2))


def _check_urls(ws_url: str | None, rest_url: str | None, rest_only: bool) -> None:
    if ws_url is not None and not ws_url.startswith(("ws://", "wss://")):
        raise UserError(f"--ws-url {ws_url!r} must be a ws(s) URL, e.g. ws://127.0.0.1:9443")
    if rest_url is not None and not rest_url.startswith(("http://", "https://")):
        raise UserError(f"--rest-url/--exchange-url {rest_url!r} must be an http(s) URL, e.g. http://127.0.0.1:8900")
    if rest_only and ws_url is not None:
        raise UserError("--ws-url is for the websocket recorder; --rest-only polls REST snapshots only")
    if not rest_only and (ws_url is None) != (rest_url is None):
        raise UserError("pass --ws-url and --rest-url together (a snapshot from one server cannot sequence another's "
                        "stream), or --rest-only to poll REST snapshots from --rest-url")


def _import_raw(root: Path, symbol: str, venue: str, raw: Path, append: bool) -> dict:
    """A raw recording into the lake (``append``: added to the days already stored), then the stored
    days replayed from the lake: the replay counts, the bookTicker check and ``levels.parquet``."""
    from data.orderbook import store
    from data.orderbook.check import replay_and_check
    from data.orderbook.levels import LevelSampler
    from data.orderbook.messages import read_raw, require_market
    from data.orderbook.store import read_recording, recording_root

    messages = require_market(read_raw(raw, {binance_id(symbol)}), venue)
    source = str(raw.resolve())
    stored = store.append_recording(root, symbol, venue, messages, source) if append else \
        store.write_recording(root, symbol, venue, messages, source=source)
    if not stored:
        return {"stored": {}, "directory": str(recording_root(root, symbol, venue))}
    sampler = LevelSampler(venue, every_ms=1000, depth=LEVELS_DEPTH)
    check = replay_and_check(_teed(read_recording(root, symbol, venue, sorted(stored)), sampler.feed), venue)
    levels = _write_levels_by_day(sampler.table(), recording_root(root, symbol, venue), sorted(stored), symbol, venue)
    return {"stored": stored, "levels": levels, "directory": str(recording_root(root, symbol, venue)), **check}


def _live(symbols: list[str], venue: str, seconds: float, interval: float, limit: int | None, ws_url: str | None,
          rest_url: str | None, lake: Path | None, params: Path | None) -> None:
    """Record the websocket streams into raw files, then import each like ``--from-file``; if the
    stream cannot be opened, say so on stderr (one line) and poll REST snapshots instead."""
    import time

    from cli.context import load_context
    from data.orderbook.live import StreamUnavailable, record_raw
    from data.orderbook.store import recording_root

    p, paths = load_context(params, None, None, None, None, None)
    root = lake or paths.home
    now_ms = time.time_ns() // 1_000_000  # milliseconds in the name: two runs in one second keep both raw files
    start = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now_ms // 1000)) + f".{now_ms % 1000:03d}Z"
    files = {binance_id(s): recording_root(root, s, venue) / "raw" / f"{start}.gz" for s in symbols}
    try:
        report = record_raw(venue, files, seconds, ws_url=ws_url, rest_url=rest_url, limit=limit or 1000,
                            timeout_s=p.collect.timeout_ms / 1000)
    except StreamUnavailable as exc:
        typer.echo(f"warning: {exc}; falling back to REST depth snapshots every {interval:g} s from "
                   f"{rest_url or venue}: no diffs, trades or bookTicker are recorded", err=True)
        _poll(symbols, venue, seconds, interval, limit or 100, rest_url, lake, params)
        return
    out = {}
    for s in symbols:
        i = binance_id(s)
        out[s] = {"raw": str(files[i]), "recorded": report["symbols"][i],
                  **_import_raw(root, s, venue, files[i], append=True)}
    typer.echo(json.dumps({"venue": venue, "mode": "websocket", "seconds": seconds, "url": report["url"],
                           "connections": report["connections"], "symbols": out}, indent=2))


LEVELS_DEPTH = 50  # levels per side in levels.parquet: enough for market orders far beyond the top of book


def _teed(messages, feed):
    """The messages, each also handed to ``feed`` (one read of the lake for the check and the levels)."""
    for m in messages:
        feed(m)
        yield m


def _write_levels_by_day(table, base: Path, days: list[str], symbol: str, venue: str) -> dict:
    """``levels.parquet`` into each stored day's directory: the rows of that UTC day of *event* time
    (a row of a day without a directory goes to the latest stored day before it, else the first)."""
    import numpy as np
    import pandas as pd

    from data.orderbook.levels import LEVELS_FILE, write_levels

    row_days = pd.to_datetime(table.column("ts_ms").to_numpy(), unit="ms", utc=True).strftime("%Y-%m-%d").to_numpy()
    home = np.array([max([d for d in days if d <= r], default=days[0]) for r in row_days], dtype=object) \
        if len(row_days) else np.array([], dtype=object)
    out = {}
    for day in days:
        part = table.filter(_mask(home == day))
        out[day] = {"rows": part.num_rows, "path": str(write_levels(base / day / LEVELS_FILE, part, symbol, venue))}
    return out


def _mask(mask):
    import pyarrow as pa

    return pa.array(mask, type=pa.bool_())


def _poll(symbols: list[str], venue: str, seconds: float, interval: float, limit: int, exchange_url: str | None,
          lake: Path | None, params: Path | None) -> None:
    """Poll REST snapshots into the lake; print per symbol what was stored and how the replay took it."""
    import ccxt

    from cli.context import load_context
    from data.orderbook.check import replay_and_check
    from data.orderbook.recorder import poll_snapshots
    from data.orderbook.store import append_recording, read_recording
    from qt.binance import make_ccxt
    from qt.errors import QTError

    p, paths = load_context(params, None, None, None, None, None)
    client = make_ccxt("perp" if venue == "binanceusdm" else "spot", exchange_url.rstrip("/") if exchange_url else None,
                       timeout_ms=p.collect.timeout_ms)
    polled: dict[str, list] = {s: [] for s in symbols}
    try:
        for symbol, snap in poll_snapshots(client, symbols, seconds, interval, limit):
            polled[symbol].append(snap)
    except ccxt.BadSymbol as exc:
        raise UserError(f"{venue} does not list that symbol: {str(exc).splitlines()[0][:200]}") from None
    except ccxt.BadRequest as exc:
        raise UserError(f"the exchange refused the request ({str(exc).splitlines()[0][:200]})") from None
    except ccxt.NetworkError as exc:
        raise QTError(f"cannot reach {exchange_url or venue} ({type(exc).__name__}); nothing was stored") from None
    root = lake or paths.home  # <QT_HOME>/orderbook/: not under raw/, a DVC input of the features stage
    out = {}
    for symbol, snaps in polled.items():
        stored = append_recording(root, symbol, venue, snaps, source=f"rest:{exchange_url or venue}")
        check = replay_and_check(read_recording(root, symbol, venue, sorted(stored)), venue)
        out[symbol] = {"snapshots_polled": len(snaps), "stored": stored, "replay": check["replay"]}
    typer.echo(json.dumps({"venue": venue, "mode": "rest-snapshots", "symbols": out}, indent=2))
