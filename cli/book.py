"""``qt record-book``: order-book recordings into the lake, checked by a replay.

What it does today: ``--from-file RAW.gz`` imports a raw websocket recording (hftbacktest's
collector format: ``<receive ns> <JSON>`` lines of Binance depth diffs, trades, bookTicker and a
REST snapshot) into ``<lake>/orderbook/<market>/<STEM>/<day>/`` (``data.orderbook.store``), then
replays the stored copy and prints the counts and the bookTicker check as JSON.

Why not live: a faithful book needs the websocket depth stream (ccxt.pro or a raw websocket) and
the network; neither exists offline, and REST snapshots polled every few seconds cannot be checked
against bookTicker ids. Recording live is therefore refused in one line rather than faked.
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
        "--from-file", help="import a raw recording (gzip '<receive ns> <JSON>' lines) instead of recording live")] = None,
    seconds: Annotated[Optional[float], typer.Option("--seconds", min=1.0, help="live recording length")] = None,
    lake: Annotated[Optional[Path], typer.Option("--lake", help="lake root (default: <QT_HOME>/raw)")] = None,
    params: Annotated[Optional[Path], typer.Option("--params", help="params file (default: ./params.yaml)")] = None,
) -> None:
    """Record Binance order books (depth, trades, best bid/ask) into the lake and check the replay."""
    if venue not in VENUES:
        raise UserError(f"--venue {venue!r} is not one of {', '.join(VENUES)}")
    wanted = [market_symbol(s.strip(), venue) for s in symbols.split(",") if s.strip()]
    if not wanted:
        raise UserError("--symbols is empty; pass e.g. --symbols BTC/USDT")
    if from_file is None:
        raise UserError("live order-book recording needs Binance's websocket streams (ccxt.pro) and the network, "
                        "which this build does not have; import a recording with --from-file RAW.gz")
    if seconds is not None:
        raise UserError("--seconds is for live recording; --from-file imports the whole file")
    if len(wanted) != 1:
        raise UserError(f"--from-file holds one symbol's recording; pass one symbol, not {len(wanted)}")
    if not from_file.is_file():
        raise UserError(f"--from-file {from_file} does not exist")
    from cli.context import load_context
    from data.orderbook.check import replay_and_check
    from data.orderbook.messages import read_raw, require_market
    from data.orderbook.store import read_recording, recording_root, write_recording

    _, paths = load_context(params, None, None, None, None, None)
    root = lake or paths.raw
    symbol = wanted[0]
    messages = require_market(read_raw(from_file, {binance_id(symbol)}), venue)
    stored = write_recording(root, symbol, venue, messages, source=str(from_file.resolve()))
    check = replay_and_check(read_recording(root, symbol, venue, sorted(stored)), venue)
    typer.echo(json.dumps({"symbol": symbol, "venue": venue, "stored": stored,
                           "directory": str(recording_root(root, symbol, venue)), **check}, indent=2))
