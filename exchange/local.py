"""The local exchange: Binance's (and Bybit v5's) public REST protocol served from a Parquet data dir.

Our machines have no network, so the pipeline's collector talks to this server with the
real, unmodified ccxt ``binance``/``binanceusdm`` clients (``qt.binance``): the code
that reads candles offline is the code that would read them from Binance. The answers
follow Binance's JSON shapes, error codes and HTTP statuses, so ccxt raises the same
exception classes it would raise against binance.com.

Served (public market data, answered by ``exchange.market_data``)
    spot   ``/api/v3``: ping, time, exchangeInfo, klines, ticker/24hr
    USDT-M ``/fapi/v1``: ping, time, exchangeInfo, klines, fundingRate, premiumIndex,
           ticker/24hr; ``/futures/data/openInterestHist`` (always ``[]``: the data dir
           holds no open interest)
    Bybit  ``/v5/market``: time, instruments-info, kline, mark-price-kline, funding/history,
           tickers, open-interest (always an empty list) - USDT perpetuals (category linear)
           from ``ohlcv/bybit`` and ``funding/bybit``, in Bybit's envelope and retCodes
           (``exchange.bybit``); signed ``/v5/account``, ``/v5/position``, ``/v5/order``,
           ``/v5/execution`` over the matching engine in a Bybit account of its own
           (``exchange.bybit.trading``); any other ``/v5/`` path answers 404 / retCode 10017
    admin  ``GET/POST /_qt/faults`` (fault config and counters, see ``exchange.faults``)

What the data dir cannot say is not invented: klines carry trade count 0 and taker-buy
volumes "0"; quote volume is base volume x mean(OHLC) (an estimate); tickers carry no
bid/ask; filters (tick/step size) are derived from the price level; premiumIndex's mark and
index price are the last close, its ``lastFundingRate`` the last settled rate; fundingRate
rows carry no ``markPrice``.

Time: ``Clock`` - the wall clock, or a fixed ``now_ms`` that replays history (nothing after
now is visible, a symbol is listed once its first candle opened; see ``exchange.views``).
The clock and the fault injector are the same for both protocols; a fault on a ``/v5/`` path is
answered in Bybit's dialect (``exchange.bybit.envelope.fault_answer``: rate limit = retCode
10006, IP ban = HTTP 403). Every Binance answer carries ``X-MBX-USED-WEIGHT-1M`` (request weights summed per wall-clock minute,
Binance's table, approximate); the limit is not enforced - use a 429 fault to test that.

Orders and accounts (issue #7): ``exchange.trading`` serves Binance's signed order,
account, position and leverage endpoints over the matching engine (``exchange.matching``);
``exchange.control`` adds the test-control surface (``/_qt/clock``, ``/_qt/reset``,
``/_qt/account``); ``exchange.oco`` the spot OCO order lists. Routes still not simulated
(``NOT_SIMULATED``: OTO lists, batch orders) answer an
explicit HTTP 501, so a client that calls one fails loudly instead of receiving a 404 it might
treat as transient.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs

import pandas as pd
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from exchange.bybit import V5_PREFIX, bybit_routes, bybit_venue, fault_answer as bybit_fault_answer
from exchange.control import control_routes
from exchange.datadir import DataDir
from exchange.faults import FaultInjector, parse_fault_config
from exchange.market_data import KLINES_DEFAULT_LIMIT, BinanceError, MarketData
from exchange.trading import TradingVenue, starlette_routes
from qt.errors import ConfigError, DataError

# Binance routes the local exchange does not simulate: answered with HTTP 501.
NOT_SIMULATED: list[tuple[str, str]] = [("POST", "/api/v3/orderList/oto"),
                                        ("POST", "/fapi/v1/batchOrders")]


class Clock:
    """The exchange's notion of now: wall clock (``now_ms=None``) or a fixed replay instant."""

    def __init__(self, now_ms: int | None = None):
        self.fixed_ms = now_ms

    def now_ms(self) -> int:
        return self.fixed_ms if self.fixed_ms is not None else int(time.time() * 1000)

    def move_to(self, now_ms: int) -> None:
        """Set the replay instant (``POST /_qt/clock``); a wall clock cannot be moved."""
        if self.fixed_ms is None:
            raise ConfigError("the exchange follows the wall clock; start it with --now ISO to control its time")
        self.fixed_ms = int(now_ms)

    @classmethod
    def from_iso(cls, iso: str | None) -> "Clock":
        """``None`` -> wall clock; ``2024-06-01T12:30`` (UTC unless it says otherwise) -> fixed."""
        if iso is None:
            return cls(None)
        try:
            ts = pd.Timestamp(iso)
        except (ValueError, TypeError):
            raise ConfigError(f"--now {iso!r} is not an ISO date/time; use e.g. 2024-06-01T12:00") from None
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        return cls(int(ts.value // 1_000_000))



def request_weight(path: str, params) -> int:
    """Binance's request weight of a call (approximate table; drives X-MBX-USED-WEIGHT-1M)."""
    if path.endswith("/klines"):
        raw = str(params.get("limit", ""))
        limit = int(raw) if raw.isdigit() else KLINES_DEFAULT_LIMIT
        return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10
    if path == "/api/v3/exchangeInfo":
        return 20
    if path.endswith("/ticker/24hr"):
        return 2 if params.get("symbol") else 80 if path.startswith("/api") else 40
    if path.endswith("/depth"):  # spot and USDT-M weigh a depth request by its limit
        raw = str(params.get("limit", ""))
        limit = int(raw) if raw.isdigit() else 100
        return 1 if limit <= 100 else 5 if limit <= 500 else 10 if limit <= 1000 else 50
    if path == "/fapi/v1/premiumIndex":
        return 1 if params.get("symbol") else 10
    return 1


@dataclass
class _UsedWeight:
    """Weight used in the current wall-clock minute (Binance resets it per minute)."""

    minute: int = -1
    used: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, weight: int) -> int:
        minute = int(time.time() // 60)
        with self.lock:
            if minute != self.minute:
                self.minute, self.used = minute, 0
            self.used += weight
            return self.used



def _json(payload, status: int = 200) -> Response:
    return Response(json.dumps(payload, separators=(",", ":")), status_code=status, media_type="application/json")


def create_app(datadir: Path, clock: Clock, faults: FaultInjector,
               api_keys: dict[str, str] | None = None, book=None) -> "_FaultsAndWeight":
    """The ASGI app of the local exchange over ``datadir`` (checked now: DataError if unusable).

    ``api_keys`` ({api key: secret}) are the only credentials the signed endpoints accept;
    without any, every signed request is refused with Binance's -2015.

    The fault middleware is the outermost layer on purpose: a dropped connection needs the
    ``send`` uvicorn hands to the app, which Starlette's own middleware would wrap."""
    data = DataDir(datadir)
    spot, perp = MarketData(data, "spot", clock), MarketData(data, "perp", clock)
    venue = TradingVenue(data, clock, api_keys or {}, book=book)  # book: exchange.book_fills.BookLevels
    bybit_account = bybit_venue(data, clock, api_keys)  # Bybit v5's account: same engine, own wallet

    def endpoint(fn):
        def handler(request: Request) -> Response:
            return _json(fn(request.query_params))
        return handler

    def constant(value_fn):
        return endpoint(lambda _params: value_fn())

    def time_payload() -> dict:
        return {"serverTime": clock.now_ms()}

    async def get_faults(_request: Request) -> Response:
        return _json(faults.report())

    async def post_faults(request: Request) -> Response:
        body = await request.body()
        try:
            config = parse_fault_config(body.decode() or "{}")
        except ConfigError as err:
            return _json({"code": -1130, "msg": str(err)}, status=400)
        faults.replace(config)
        return _json(faults.report())

    def not_implemented(method: str, path: str):
        async def handler(_request: Request) -> Response:
            return _json({"code": -1000, "msg": f"local exchange: {method} {path} is not simulated"}, status=501)
        return handler

    routes = [
        Route("/api/v3/ping", constant(dict)),
        Route("/api/v3/time", constant(time_payload)),
        Route("/api/v3/exchangeInfo", endpoint(spot.exchange_info)),
        Route("/api/v3/klines", endpoint(spot.klines)),
        Route("/api/v3/ticker/24hr", endpoint(spot.ticker_24hr)),
        Route("/api/v3/depth", endpoint(spot.depth)),
        Route("/fapi/v1/ping", constant(dict)),
        Route("/fapi/v1/time", constant(time_payload)),
        Route("/fapi/v1/exchangeInfo", endpoint(perp.exchange_info)),
        Route("/fapi/v1/klines", endpoint(perp.klines)),
        Route("/fapi/v1/fundingRate", endpoint(perp.funding_rate)),
        Route("/fapi/v1/premiumIndex", endpoint(perp.premium_index)),
        Route("/fapi/v1/ticker/24hr", endpoint(perp.ticker_24hr)),
        Route("/fapi/v1/depth", endpoint(perp.depth)),
        Route("/futures/data/openInterestHist", endpoint(perp.open_interest_hist)),
        Route("/_qt/faults", get_faults, methods=["GET"]),
        Route("/_qt/faults", post_faults, methods=["POST"]),
        *starlette_routes(venue),
        *control_routes(venue, clock, others=(bybit_account,)),
        *[Route(path, not_implemented(method, path), methods=[method]) for method, path in NOT_SIMULATED],
        *bybit_routes(data, clock, bybit_account, api_keys),  # Bybit v5 (/v5/...): same data dir, clock, faults
    ]

    async def binance_error(_request: Request, exc: BinanceError) -> Response:
        return _json({"code": exc.code, "msg": exc.msg}, status=exc.status)

    async def data_error(_request: Request, exc: DataError) -> Response:
        # Not a Binance answer: the data dir itself is broken. Said loudly, in the log and in
        # the body ccxt puts into its exception message; the status (500) is what it is.
        print(f"local exchange: data error: {exc}", file=sys.stderr, flush=True)
        return Response(f"local exchange data error: {exc}", status_code=500, media_type="text/plain")

    app = Starlette(routes=routes, exception_handlers={BinanceError: binance_error, DataError: data_error})
    return _FaultsAndWeight(app, faults, clock)  # type: ignore[return-value]


_FAULT_BODIES = {
    "429": (429, b'{"code":-1003,"msg":"Too many requests; current limit of IP is 6000 requests per minute. '
                 b'Please use WebSocket Streams for live updates to avoid polling the API."}', "application/json"),
    "418": (418, b'{"code":-1003,"msg":"Way too many requests; IP banned. Please use WebSocket Streams '
                 b'for live updates to avoid bans."}', "application/json"),
    # 5xx from Binance's gateways are not JSON; ccxt maps them by status to ExchangeNotAvailable.
    "500": (500, b"Internal Server Error", "text/plain"),
    "502": (502, b"<html><head><title>502 Bad Gateway</title></head></html>", "text/html"),
    "503": (503, b"Service Unavailable.", "text/plain"),
    "refuse": (400, b'{"code":-4028,"msg":"Request refused (local exchange fault rule)."}', "application/json"),
}


class _FaultsAndWeight:
    """ASGI middleware: applies the fault decision to every request outside ``/_qt/`` and
    adds ``X-MBX-USED-WEIGHT-1M`` to real answers."""

    def __init__(self, app, faults: FaultInjector, clock: Clock):
        self.app, self.faults, self.weight, self.clock = app, faults, _UsedWeight(), clock

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].startswith("/_qt/"):
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        params = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        bybit = path.startswith(V5_PREFIX)
        if method in ("POST", "PUT", "DELETE") and "symbol" not in params:
            receive, body = await _buffered(receive)  # signed POSTs carry their parameters in the body
            params.update(_body_params(body))
        decision = self.faults.decide(path, params.get("symbol"), method)
        if decision.latency_ms:
            await asyncio.sleep(decision.latency_ms / 1000)
        used = str(self.weight.add(request_weight(path, params))).encode()
        if decision.kind == "drop":
            return await _drop_connection(scope, receive, send)
        if decision.kind == "drop_after":
            return await _answer_then_drop(self.app, scope, receive, send)
        if decision.kind == "timeout":
            await asyncio.sleep(decision.timeout_s)
        elif decision.kind is not None:
            status, body, media = (bybit_fault_answer(decision.kind, self.clock.now_ms()) if bybit
                                   else _FAULT_BODIES[decision.kind])
            headers = [(b"content-type", media.encode()), (b"content-length", str(len(body)).encode())]
            if not bybit:
                headers.append((b"x-mbx-used-weight-1m", used))
            if decision.kind in ("429", "418"):
                headers.append((b"retry-after", str(decision.retry_after_s).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return

        async def send_with_weight(message):
            if message["type"] == "http.response.start" and not bybit:  # a Binance header only
                message = {**message, "headers": [*message.get("headers", []), (b"x-mbx-used-weight-1m", used)]}
            await send(message)

        await self.app(scope, receive, send_with_weight)


def _body_params(body: bytes) -> dict[str, str]:
    """Parameters of a request body: Binance's form encoding or Bybit's JSON object."""
    text = body.decode("latin-1")
    if text.lstrip().startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            return {}
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}
    return {k: v[-1] for k, v in parse_qs(text).items()}


async def _buffered(receive):
    """Read the whole request body; returns a ``receive`` that replays it, and the body."""
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body, replayed = b"".join(chunks), False

    async def replay():
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay, body


async def _answer_then_drop(app, scope, receive, send) -> None:
    """Let the app process the request completely (an order is accepted), then close the
    connection instead of sending its answer: the client cannot know what happened."""

    async def swallow(_message):
        return None

    await app(scope, receive, swallow)
    await _drop_connection(scope, receive, send)


async def _drop_connection(scope, receive, send) -> None:
    """Close the TCP connection without any response (what a dying load balancer does).

    uvicorn keeps the connection's transport on the object whose bound method is ``send``;
    aborting it resets the socket. Without it this cannot be done: fail loudly (uvicorn
    answers 500 and logs this), never degrade to some other fault silently."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise RuntimeError("drop fault needs uvicorn's connection transport (run the app under uvicorn)")
    transport.abort()
    while (await receive())["type"] != "http.disconnect":
        pass
