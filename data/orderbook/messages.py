"""The raw recording's messages as small typed records, read as a stream.

The recording (hftbacktest's collector format) is gzip text, one message per line:
``<local receive time, ns> <JSON>``. The JSON is a Binance websocket message
``{"stream": ..., "data": ...}`` (depth diffs, trades, bookTicker) or a REST depth snapshot
(``lastUpdateId``, ``bids``, ``asks``). Prices and sizes become exact int64 units
(``data.orderbook.units``). Spot and USDT-M differ only in fields: spot diffs have no ``pu``,
spot bookTicker and snapshots carry no event time (``None`` here).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Union

from data.orderbook.units import to_units
from qt.errors import DataError

Level = tuple[int, int]  # (price units, quantity units); quantity 0 removes the level


@dataclass(frozen=True)
class DepthDiff:
    seq: int  # position in the recording (ties in receive time keep the recorded order)
    receive_ns: int
    event_ms: int
    first_id: int  # U
    last_id: int  # u
    prev_id: int | None  # pu (USDT-M only): the previous event's u
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]


@dataclass(frozen=True)
class Snapshot:
    seq: int
    receive_ns: int
    event_ms: int | None
    last_update_id: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]


@dataclass(frozen=True)
class Trade:
    seq: int
    receive_ns: int
    event_ms: int
    trade_ms: int
    trade_id: int
    price: int
    qty: int
    is_buyer_maker: bool


@dataclass(frozen=True)
class BookTicker:
    seq: int
    receive_ns: int
    update_id: int  # u: the book update this best bid/ask reflects
    bid: int
    bid_qty: int
    ask: int
    ask_qty: int


Message = Union[DepthDiff, Snapshot, Trade, BookTicker]


def _levels(rows) -> tuple[Level, ...]:
    return tuple((to_units(p), to_units(q)) for p, q in rows)


def parse_message(seq: int, receive_ns: int, payload: dict) -> Message | None:
    """One decoded JSON payload as a record; None for a stream this module does not know."""
    if "lastUpdateId" in payload:
        return Snapshot(seq, receive_ns, payload.get("E"), payload["lastUpdateId"], _levels(payload["bids"]),
                        _levels(payload["asks"]))
    data = payload.get("data")
    stream = payload.get("stream", "")
    if data is None:
        return None
    if "@depth" in stream:
        return DepthDiff(seq, receive_ns, data["E"], data["U"], data["u"], data.get("pu"), _levels(data["b"]),
                         _levels(data["a"]))
    if stream.endswith("@trade"):
        return Trade(seq, receive_ns, data["E"], data["T"], data["t"], to_units(data["p"]), to_units(data["q"]),
                     bool(data["m"]))
    if stream.endswith("@bookTicker"):
        return BookTicker(seq, receive_ns, data["u"], to_units(data["b"]), to_units(data["B"]), to_units(data["a"]),
                          to_units(data["A"]))
    return None


def symbol_of(payload: dict) -> str | None:
    """The Binance symbol id a message is about (``BTCUSDT``); a snapshot does not say."""
    data = payload.get("data")
    return data.get("s") if isinstance(data, dict) else None


def parse_lines(lines: Iterable[str], symbols: set[str] | None = None) -> Iterator[Message]:
    """Records from raw lines in recorded order; a message about another symbol than ``symbols``
    is refused (one recording, one symbol), an unknown stream skipped.

    The lines must be in receive order (the collector writes them as they arrive): the replay
    follows that order and the lake keeps it by (receive time, position), so a recording whose
    receive time steps back is refused rather than replayed in two different orders."""
    last_ns = None
    for seq, line in enumerate(lines):
        stamp, _, body = line.partition(" ")
        try:
            payload = json.loads(body)
            receive_ns = int(stamp)
        except ValueError:
            raise DataError(f"line {seq + 1} is not '<receive ns> <JSON>': {line[:60]!r}") from None
        if last_ns is not None and receive_ns < last_ns:
            raise DataError(f"line {seq + 1}: the receive time goes back {(last_ns - receive_ns) / 1e6:.3f} ms; "
                            f"the recording is not in receive order (sort it by its first column)")
        last_ns = receive_ns
        if symbols is not None and (sym := symbol_of(payload)) is not None and sym not in symbols:
            raise DataError(f"line {seq + 1} is about {sym}, not {', '.join(sorted(symbols))}")
        msg = parse_message(seq, receive_ns, payload)
        if msg is not None:
            yield msg


def read_raw(path: Path, symbols: set[str] | None = None) -> Iterator[Message]:
    """Stream a gzip recording without loading it whole (``parse_lines``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"recording {path} does not exist")
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            yield from parse_lines(fh, symbols)
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"recording {path} is not readable gzip text ({type(exc).__name__}: {exc})") from None


def require_market(messages: Iterable[Message], market: str) -> Iterator[Message]:
    """Pass messages through, refusing a recording of the other market: USDT-M depth events carry
    ``pu``, spot ones do not (the sequencing rules differ, so a mix-up would report false gaps)."""
    futures = market == "binanceusdm"
    for m in messages:
        if isinstance(m, DepthDiff) and (m.prev_id is not None) != futures:
            other = "USDT-M (depth events carry pu)" if m.prev_id is not None else "spot (depth events have no pu)"
            raise DataError(f"the recording is {other}, not {market}; pass --venue "
                            f"{'binanceusdm' if m.prev_id is not None else 'binance'}")
        yield m
