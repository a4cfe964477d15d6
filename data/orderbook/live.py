"""Live recorder of Binance's order-book websocket streams, written as raw lines.

What it records, and why in this shape: per symbol the depth diffs (``<sym>@depth@100ms``), trades
(``<sym>@trade``) and best bid/ask (``<sym>@bookTicker``) from Binance's combined stream
(``<ws>/stream?streams=a/b/c``, every message ``{"stream": .., "data": ..}``), plus the REST depth
snapshots (``/api/v3/depth`` spot, ``/fapi/v1/depth`` USDT-M) that sequence them, each as one
``<receive ns> <JSON>`` line holding the very text Binance sent: hftbacktest's collector format, the
format of the shipped recordings. A live recording is then a raw file like any other: it goes into
the lake through the same import, replay and bookTicker check as ``qt record-book --from-file``,
and the file stays as the record of what was received.

Why aiohttp and not ccxt.pro (installed): ``watch_order_book`` keeps its own book and hands back
the merged result; the diffs, their update ids and the snapshot are consumed inside it, so there
would be nothing to replay or check afterwards. A plain websocket client gives the raw messages.

Sequencing is not re-implemented here: each symbol's diffs and snapshots also go through a
``Replay`` (``data.orderbook.replay``, Binance's rules in ``data.orderbook.sequencing``) only to know
when the stream cannot be sequenced. The first snapshot is requested once the stream is open
(Binance's procedure: buffer the stream, then fetch the snapshot); whenever the replay holds no
valid book - a diff whose ids do not chain (a gap), or a snapshot older than the buffered diffs - a
fresh snapshot is fetched (one in flight per symbol, ``resync_pause_s`` apart). A dropped
connection is reopened until the end; the updates missed meanwhile show up as a gap and resync the
same way. If the stream cannot be opened at all, ``StreamUnavailable`` says so and the caller
decides (``qt record-book`` falls back to REST polling, loudly).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from data.orderbook.messages import DepthDiff, Snapshot, parse_message, symbol_of
from data.orderbook.replay import Replay
from qt.errors import QTError, UserError

STREAM_URLS = {"binance": "wss://stream.binance.com:9443", "binanceusdm": "wss://fstream.binance.com"}
REST_URLS = {"binance": "https://api.binance.com", "binanceusdm": "https://fapi.binance.com"}
DEPTH_PATHS = {"binance": "/api/v3/depth", "binanceusdm": "/fapi/v1/depth"}
DEPTH_STREAM = "depth@100ms"  # documented on spot and USDT-M alike (the shipped USDT-M file has @0ms)
KIND = {DepthDiff: "depth", Snapshot: "snapshot"}


class StreamUnavailable(QTError):
    """The websocket could not be opened at all: nothing was recorded."""


def stream_names(binance_id: str) -> list[str]:
    s = binance_id.lower()
    return [f"{s}@{DEPTH_STREAM}", f"{s}@trade", f"{s}@bookTicker"]


def combined_stream_url(ws_url: str, binance_ids: list[str]) -> str:
    """``<ws_url>/stream?streams=...`` (a URL already ending in ``/stream`` is kept as is)."""
    base = ws_url.rstrip("/")
    base = base if base.endswith("/stream") else base + "/stream"
    return f"{base}?streams=" + "/".join(n for i in binance_ids for n in stream_names(i))


class SymbolSync:
    """One symbol's sequencing state: a ``Replay`` of its diffs and snapshots, and when to ask for a
    snapshot (the replay holds no valid book, none is in flight, the last ask is ``pause_s`` old)."""

    def __init__(self, market: str, pause_s: float, now: Callable[[], float] = time.monotonic) -> None:
        self.replay = Replay(market)
        self.pause_s, self.now = pause_s, now
        self.in_flight = False
        self.last_ask: float | None = None
        self.asked = 0

    def feed(self, message) -> None:
        if isinstance(message, (DepthDiff, Snapshot)):
            self.replay.feed(message)

    def wants_snapshot(self) -> bool:
        if self.in_flight or self.replay.valid:
            return False
        return self.last_ask is None or self.now() - self.last_ask >= self.pause_s

    def asking(self) -> None:
        self.in_flight, self.last_ask, self.asked = True, self.now(), self.asked + 1

    @property
    def gaps(self) -> int:
        return len(self.replay.counts.gaps)


@dataclass
class SymbolStats:
    lines: Counter = field(default_factory=Counter)  # written, by kind: depth, trade, bookTicker, snapshot, other
    snapshot_failures: int = 0

    def to_dict(self, sync: SymbolSync) -> dict:
        return {"lines": dict(sorted(self.lines.items())), "snapshots_asked": sync.asked,
                "snapshot_failures": self.snapshot_failures, "gaps_seen_live": sync.gaps,
                "book_valid_at_end": sync.replay.valid}


class Recorder:
    """Records ``binance_ids`` of ``market`` into ``sinks[id]`` (a callable taking one raw line).

    The clock (``now_ns``) stamps each line on arrival; a stamp never goes back within a sink (a wall
    clock stepped back by NTP would make the file unreadable: the import refuses receive times out of
    order)."""

    def __init__(self, market: str, binance_ids: list[str], sinks: dict[str, Callable[[str], None]],
                 ws_url: str | None = None, rest_url: str | None = None, limit: int = 1000,
                 resync_pause_s: float = 1.0, timeout_s: float = 10.0,
                 now_ns: Callable[[], int] = time.time_ns) -> None:
        self.market, self.ids, self.sinks, self.limit = market, list(binance_ids), sinks, limit
        self.url = combined_stream_url(ws_url or STREAM_URLS[market], self.ids)
        self.depth_url = (rest_url or REST_URLS[market]).rstrip("/") + DEPTH_PATHS[market]
        self.timeout_s, self.now_ns = timeout_s, now_ns
        self.syncs = {i: SymbolSync(market, resync_pause_s) for i in self.ids}
        self.stats = {i: SymbolStats() for i in self.ids}
        self.last_ns = dict.fromkeys(self.ids, 0)
        self.connections, self.unreadable, self.foreign = 0, 0, 0
        self.fatal: BaseException | None = None
        self._stop = asyncio.Event()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task] = set()

    def stop(self) -> None:
        """End the recording now (a signal handler's call): what arrived so far is kept."""
        self._stop.set()
        if self._ws is not None and not self._ws.closed:
            self._spawn(self._ws.close())

    def report(self) -> dict:
        return {"url": self.url, "connections": self.connections, "unreadable": self.unreadable,
                "other_symbols": self.foreign,
                "symbols": {i: self.stats[i].to_dict(self.syncs[i]) for i in self.ids}}

    async def run(self, seconds: float) -> dict:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout_s, sock_connect=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as self._session:
            while not self._stop.is_set() and loop.time() < deadline:
                try:
                    self._ws = await self._session.ws_connect(self.url, autoping=True, heartbeat=None)
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    if self.connections == 0:
                        raise StreamUnavailable(f"cannot open the websocket {self.url} "
                                                f"({type(exc).__name__}: {str(exc)[:160]})") from None
                    await self._pause(min(1.0, deadline - loop.time()))  # reconnect until the end
                    continue
                self.connections += 1
                opened = loop.time()
                async with self._ws:
                    self._ask_snapshots()
                    await self._receive(deadline)
                if loop.time() - opened < 5.0:  # closed right after opening: do not hammer the server
                    await self._pause(min(1.0, deadline - loop.time()))
            self._stop.set()  # no snapshot is asked for from here on
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.fatal is not None:
            raise self.fatal
        return self.report()

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), max(0.0, seconds))
        except TimeoutError:
            pass

    async def _receive(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while (remaining := deadline - loop.time()) > 0 and not self._stop.is_set():
            try:
                msg = await self._ws.receive(timeout=remaining)
            except TimeoutError:
                return
            if msg.type == aiohttp.WSMsgType.TEXT:
                self._on_text(msg.data)
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                              aiohttp.WSMsgType.ERROR):
                return

    def _on_text(self, text: str) -> None:
        ns = self.now_ns()
        try:
            payload = json.loads(text)
            binance_id = symbol_of(payload)
            message = parse_message(0, ns, payload) if binance_id in self.sinks else None
        except (ValueError, KeyError, TypeError, AttributeError):  # not a stream message this format knows
            self.unreadable += 1
            return
        if binance_id not in self.sinks:
            self.foreign += 1  # e.g. a subscription answer: not about a recorded symbol
            return
        self._write(binance_id, ns, text, payload, message)
        self._ask_snapshots()

    def _write(self, binance_id: str, ns: int, text: str, payload: dict, message) -> None:
        ns = max(ns, self.last_ns[binance_id])
        self.last_ns[binance_id] = ns
        line = text.strip() if "\n" not in text.strip() else json.dumps(payload, separators=(",", ":"))
        self.sinks[binance_id](f"{ns} {line}")
        kind = "other" if message is None else KIND.get(type(message)) or payload.get("stream", "").split("@")[-1]
        self.stats[binance_id].lines[kind] += 1
        self.syncs[binance_id].feed(message)

    def _ask_snapshots(self) -> None:
        for binance_id, sync in self.syncs.items():
            if sync.wants_snapshot() and not self._stop.is_set():
                sync.asking()
                self._spawn(self._snapshot(binance_id))

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _snapshot(self, binance_id: str) -> None:
        sync = self.syncs[binance_id]
        try:
            async with self._session.get(self.depth_url, params={"symbol": binance_id, "limit": str(self.limit)},
                                         timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as resp:
                body = await resp.text()
                ns = self.now_ns()
            if 400 <= resp.status < 500 and resp.status not in (418, 429):
                self.fatal = UserError(f"{self.depth_url} refused the depth snapshot of {binance_id} "
                                       f"(HTTP {resp.status}: {body.strip()[:200]})")
                self.stop()
                return
            payload = json.loads(body) if resp.status == 200 else None
            message = parse_message(0, ns, payload) if isinstance(payload, dict) else None
            if not isinstance(message, Snapshot):
                raise ValueError(f"HTTP {resp.status}: not a depth snapshot")  # noqa: TRY004 - retried below
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError, KeyError, TypeError):
            self.stats[binance_id].snapshot_failures += 1  # asked again after the pause, while the book is invalid
            asyncio.get_running_loop().call_later(sync.pause_s, self._ask_snapshots)
            return
        finally:
            sync.in_flight = False
        self._write(binance_id, ns, body, payload, message)
        if not sync.replay.valid:  # older than the buffered diffs: Binance's procedure asks again
            asyncio.get_running_loop().call_later(sync.pause_s, self._ask_snapshots)


def record_raw(market: str, files: dict[str, Path], seconds: float, **options) -> dict:
    """Record ``seconds`` of the streams of ``files``' symbols (Binance ids), each into its gzip file.

    A file is written as ``<name>.part`` and renamed when the recording ends, so a file under its
    own name is always a whole recording; nothing is left behind when the stream cannot be opened or
    the recording fails. SIGINT / SIGTERM end the recording early and keep what arrived."""
    parts = {i: path.with_name(path.name + ".part") for i, path in files.items()}
    try:
        with contextlib.ExitStack() as stack:
            sinks = {}
            for i, part in parts.items():
                part.parent.mkdir(parents=True, exist_ok=True)
                sinks[i] = _line_writer(stack.enter_context(gzip.open(part, "wt", encoding="utf-8")))
            report = asyncio.run(_run_with_signals(Recorder(market, list(files), sinks, **options), seconds))
        for i, part in parts.items():
            part.replace(files[i])
        return report
    finally:
        for part in parts.values():
            part.unlink(missing_ok=True)


def _line_writer(fh) -> Callable[[str], None]:
    return lambda line: fh.write(line + "\n")


async def _run_with_signals(recorder: Recorder, seconds: float) -> dict:
    loop = asyncio.get_running_loop()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        loop.add_signal_handler(s, recorder.stop)
    try:
        return await recorder.run(seconds)
    finally:
        for s, handler in previous.items():
            loop.remove_signal_handler(s)
            signal.signal(s, handler)
