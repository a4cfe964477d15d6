"""A loopback server that speaks Binance's market-data protocols, replaying a raw recording.

* websocket ``/stream?streams=<sym>@depth@100ms/<sym>@trade/<sym>@bookTicker`` (the combined
  stream): the recording's depth, trade and bookTicker messages as ``{"stream": .., "data": ..}``,
  paced by their recorded receive times (``speed`` times faster), each labelled with the stream
  name the client subscribed to; any other stream name is refused (HTTP 400), as Binance does;
* REST ``/api/v3/depth`` (spot) and ``/fapi/v1/depth`` (USDT-M): the book *as sent so far* - the
  server replays what it sends through ``data.orderbook.replay`` and answers with that book and its
  update id, so a snapshot asked for after a gap bridges the stream like Binance's would; before
  the recording's own snapshot line is reached, that snapshot line is the answer.

The recording plays on its own clock from the first connection on. ``drop_depth`` (positions among
the depth messages) are skipped on the wire but still applied to the server's book: the client
misses updates, exactly a gap. ``disconnect_after_depth`` closes the connection after that depth
message and refuses new ones (HTTP 503) for ``refuse_s``; what plays meanwhile is lost, as on
Binance. ``also_as`` serves the same recording under more symbol ids too (a multi-symbol stream).
``sent`` keeps what went out.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter

from aiohttp import web

from data.orderbook.messages import parse_message
from data.orderbook.replay import Replay
from data.orderbook.units import DECIMALS


def _text(units: int) -> str:
    sign, units = ("-", -units) if units < 0 else ("", units)
    whole, frac = divmod(units, 10 ** DECIMALS)
    return f"{sign}{whole}.{frac:0{DECIMALS}d}"


class BinanceStreamServer:
    def __init__(self, lines: list[str], market: str, speed: float = 10.0, drop_depth: set[int] = frozenset(),
                 disconnect_after_depth: int | None = None, refuse_s: float = 0.3, also_as: tuple[str, ...] = ()):
        self.market, self.speed, self.drop_depth = market, speed, set(drop_depth)
        self.disconnect_after_depth, self.refuse_s, self.refuse_until = disconnect_after_depth, refuse_s, 0.0
        self.client: tuple[web.WebSocketResponse, dict] | None = None  # the connected client, its stream names
        self._feed_task: asyncio.Task | None = None
        self.items = [(int(ns), json.loads(body)) for ns, _, body in (ln.partition(" ") for ln in lines)]
        self.symbols = [next(p["data"]["s"] for _, p in self.items if "data" in p), *also_as]
        self.file_snapshot = next(p for _, p in self.items if "lastUpdateId" in p)
        self.replays = {s: Replay(market) for s in self.symbols}
        self.sent: list[dict] = []  # the data of each stream message sent, with its kind
        self.depth_requests: list[dict] = []
        self.connections = 0
        self.finished = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # ------------------------------------------------------------------ handlers

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        names = request.query.get("streams", "").split("/")
        kinds = {"depth@100ms": "depth", "trade": "trade", "bookTicker": "bookTicker"}
        if any(n.partition("@")[2] not in kinds for n in names):
            return web.json_response({"code": -1121, "msg": f"Invalid streams {names}"}, status=400)
        # {(symbol, kind): stream name}; Binance opens a stream of an unlisted symbol and sends nothing on it
        by_kind = {(sym, kinds[n.partition("@")[2]]): n for sym in self.symbols for n in names
                   if n.startswith(sym.lower() + "@")}
        loop = asyncio.get_running_loop()
        if loop.time() < self.refuse_until:
            return web.Response(status=503, text="try again later")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        self.client = (ws, by_kind)
        if self._feed_task is None:
            self._feed_task = loop.create_task(self._feed())
        async for _ in ws:  # until either side closes
            pass
        return ws

    async def _feed(self) -> None:
        """The recording on its own clock from the first connection on: what comes while no client
        is connected is lost, as on Binance."""
        loop = asyncio.get_running_loop()
        t0_rec, t0 = self.items[0][0], loop.time()
        depth_seen = 0
        for ns, payload in self.items:
            wait = t0 + (ns - t0_rec) / 1e9 / self.speed - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            message = parse_message(0, ns, payload)
            for replay in self.replays.values():
                replay.feed(message)
            if "lastUpdateId" in payload:
                continue
            kind = payload["stream"].split("@")[1]
            index = depth_seen if kind == "depth" else None
            depth_seen += kind == "depth"
            ws, by_kind = self.client or (None, {})
            if ws is None or ws.closed or index in self.drop_depth:
                continue
            for sym in self.symbols:
                if (sym, kind) not in by_kind:
                    continue
                data = {**payload["data"], "s": sym}
                try:
                    await ws.send_str(json.dumps({"stream": by_kind[sym, kind], "data": data}))
                except ConnectionError:
                    continue
                self.sent.append({"kind": kind, **data})
            if index is not None and index == self.disconnect_after_depth:
                self.client, self.refuse_until = None, loop.time() + self.refuse_s
                await ws.close()
        self.finished.set()

    async def _depth(self, request: web.Request) -> web.Response:
        self.depth_requests.append(dict(request.query))
        limit = int(request.query.get("limit", 100))
        replay = self.replays.get(request.query.get("symbol"))
        if replay is None:
            return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)
        if not replay.valid:
            return web.json_response(self.file_snapshot)
        book = replay.book
        body = {"lastUpdateId": replay.book_id,
                "bids": [[_text(p), _text(q)] for p, q in book.bids.top(limit)],
                "asks": [[_text(p), _text(q)] for p, q in book.asks.top(limit)]}
        return web.json_response(body)

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self):
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the stream server did not start")
        return self

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_get("/stream", self._stream)
        app.router.add_get("/api/v3/depth" if self.market == "binance" else "/fapi/v1/depth", self._depth)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = self._runner.addresses[0][1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def sent_counts(self) -> Counter:
        return Counter(m["kind"] for m in self.sent)
