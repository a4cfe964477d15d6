"""The local exchange: Binance's public REST protocol served from a Parquet data dir.

Our machines have no network, so the pipeline's collector talks to this server with the
real, unmodified ccxt ``binance``/``binanceusdm`` clients (``qt.binance``): the code
that reads candles offline is the code that would read them from Binance. The answers
follow Binance's JSON shapes, error codes and HTTP statuses, so ccxt raises the same
exception classes it would raise against binance.com.

Served (public market data)
    spot   ``/api/v3``: ping, time, exchangeInfo, klines, ticker/24hr
    USDT-M ``/fapi/v1``: ping, time, exchangeInfo, klines, fundingRate, premiumIndex,
           ticker/24hr; ``/futures/data/openInterestHist`` (always ``[]``: the data dir
           holds no open interest)
    admin  ``GET/POST /_qt/faults`` (fault config and counters, see ``exchange.faults``)

What the data dir cannot say is not invented: klines carry trade count 0 and taker-buy
volumes "0"; quote volume is base volume x mean(OHLC) (an estimate); tickers carry no
bid/ask; filters (tick/step size) are derived from the price level; premiumIndex's mark and
index price are the last close, its ``lastFundingRate`` the last settled rate; fundingRate
rows carry no ``markPrice``.

Time: ``Clock`` - the wall clock, or a fixed ``now_ms`` that replays history (nothing after
now is visible, a symbol is listed once its first candle opened; see ``exchange.views``).
Every answer carries ``X-MBX-USED-WEIGHT-1M`` (request weights summed per wall-clock minute,
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

from exchange.control import control_routes
from exchange.datadir import Bars, DataDir, Kind, MarketFiles
from exchange.faults import FaultInjector, parse_fault_config
from exchange.trading import TradingVenue, starlette_routes
from exchange.views import (PERP_MARKET_MAX_QTY, PERP_MAX_QTY, SPOT_MAX_QTY, KlineSource, aggregate_bars,
                               derive_filters, format_number, kline_rows, next_funding_ms, ticker_24h,
                               visible_funding, visible_window)
from qt.errors import ConfigError, DataError
from qt.timeframes import TIMEFRAME_MS

# Binance intervals we can build from stored candles (epoch-aligned buckets). 3d/1w/1M are
# aligned differently on Binance and are refused rather than served misaligned.
INTERVAL_MS = TIMEFRAME_MS
BINANCE_INTERVALS = (*INTERVAL_MS, "1s", "3d", "1w", "1M")
KLINES_MAX_LIMIT = {"spot": 1000, "perp": 1500}
KLINES_DEFAULT_LIMIT = 500
FUNDING_DEFAULT_LIMIT, FUNDING_MAX_LIMIT = 100, 1000
OI_PERIODS = ("5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d")

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


class BinanceError(Exception):
    """An error answered the way Binance answers it: HTTP status + {"code", "msg"}."""

    def __init__(self, status: int, code: int, msg: str):
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def _invalid_symbol(reason: str | None = None) -> BinanceError:
    """Binance's -1121; ``reason`` (a bad data file) is appended so a client sees why in one line."""
    return BinanceError(400, -1121, "Invalid symbol." + (f" (local exchange: {reason})" if reason else ""))


def _mandatory(name: str) -> BinanceError:
    return BinanceError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def _int_param(params, name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 20:
        raise BinanceError(400, -1100, f"Illegal characters found in parameter '{name}'; "
                                       f"legal range is '^[0-9]{{1,20}}$'.")
    return int(raw)


def _limit_param(params, default: int, maximum: int) -> int:
    limit = _int_param(params, "limit")
    if limit is None:
        return default
    if limit < 1:
        raise BinanceError(400, -1130, "Data sent for parameter 'limit' is not valid.")
    return min(limit, maximum)  # Binance caps an oversized limit at the maximum


def _time_range(params) -> tuple[int | None, int | None]:
    start, end = _int_param(params, "startTime"), _int_param(params, "endTime")
    if start is not None and end is not None and start > end:
        raise BinanceError(400, -1023, "Start time is greater than end time.")
    return start, end


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


class _Market:
    """Builds the answers for one market type (spot or perp) from the data dir at the clock."""

    def __init__(self, data: DataDir, kind: Kind, clock: Clock):
        self.data, self.kind, self.clock = data, kind, clock
        self._agg_lock = threading.Lock()
        self._agg_cache: dict[tuple[str, int, int], Bars] = {}
        self.refused: dict[str, str] = {}  # exchange id -> why its data file cannot be served

    # -- what is listed -------------------------------------------------------------------
    def listed(self, now_ms: int) -> dict[str, tuple[MarketFiles, Bars]]:
        """Markets whose first candle opened by ``now``, with their finest stored candles."""
        out = {}
        for exchange_id, market in self.data.markets(self.kind).items():
            try:
                bars = self.data.bars(market, market.finest_timeframe)
            except DataError as exc:  # one bad file refuses its own symbol, never the others
                self.refused[exchange_id] = str(exc)
                continue
            self.refused.pop(exchange_id, None)
            if len(bars) and bars.ts_ms[0] <= now_ms:
                out[exchange_id] = (market, bars)
        return out

    def market(self, params, now_ms: int, required: bool = True) -> tuple[MarketFiles, Bars] | None:
        symbol = params.get("symbol")
        if not symbol:
            if required:
                raise _mandatory("symbol")
            return None
        hit = self.listed(now_ms).get(symbol)
        if hit is None:
            raise _invalid_symbol(self.refused.get(symbol))
        return hit

    # -- klines ---------------------------------------------------------------------------
    def kline_source(self, market: MarketFiles, interval: str) -> KlineSource:
        if interval not in BINANCE_INTERVALS:
            raise BinanceError(400, -1120, "Invalid interval.")
        step = INTERVAL_MS.get(interval)
        if interval in market.candle_files:
            return KlineSource(self.data.bars(market, interval), None, step)
        divisors = [tf for tf in market.candle_files if step is not None and step % INTERVAL_MS[tf] == 0]
        if not divisors:
            have = ", ".join(sorted(market.candle_files, key=lambda t: INTERVAL_MS[t]))
            raise BinanceError(400, -1120, f"Invalid interval. (local exchange: {market.exchange_id} has only "
                                           f"{have} candles; {interval} cannot be built from them)")
        finest = min(divisors, key=lambda t: INTERVAL_MS[t])
        fine = self.data.bars(market, finest)
        key = (str(market.candle_files[finest]), id(fine), step)
        with self._agg_lock:
            full = self._agg_cache.get(key)
        if full is None:
            full = aggregate_bars(fine, step)
            with self._agg_lock:
                self._agg_cache = {k: v for k, v in self._agg_cache.items() if k[0] != key[0] or k[2] != step}
                self._agg_cache[key] = full
        return KlineSource(full, fine, step)

    def klines(self, params) -> list[list]:
        now_ms = self.clock.now_ms()
        market, _ = self.market(params, now_ms)
        interval = params.get("interval")
        if not interval:
            raise _mandatory("interval")
        try:
            source = self.kline_source(market, interval)
        except DataError as exc:  # another timeframe's file of this symbol is bad
            raise _invalid_symbol(str(exc)) from None
        limit = _limit_param(params, KLINES_DEFAULT_LIMIT, KLINES_MAX_LIMIT[self.kind])
        start, end = _time_range(params)
        return kline_rows(visible_window(source, now_ms, start, end, limit), source.interval_ms)

    # -- exchangeInfo ---------------------------------------------------------------------
    def exchange_info(self, params) -> dict:
        now_ms = self.clock.now_ms()
        listed = self.listed(now_ms)
        wanted = _wanted_symbols(params)
        if wanted is not None:
            unknown = [s for s in wanted if s not in listed]
            if unknown:
                raise _invalid_symbol(next((self.refused[s] for s in unknown if s in self.refused), None))
            listed = {s: listed[s] for s in wanted}
        symbols = [self._symbol_info(market, bars, now_ms) for market, bars in listed.values()]
        info = {"timezone": "UTC", "serverTime": now_ms, "rateLimits": _RATE_LIMITS, "exchangeFilters": [],
                "symbols": symbols}
        if self.kind == "perp":
            info["futuresType"] = "U_MARGINED"
            info["assets"] = [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}]
        return info

    def _symbol_info(self, market: MarketFiles, bars: Bars, now_ms: int) -> dict:
        last = int(bars.ts_ms.searchsorted(now_ms, side="right")) - 1
        f = derive_filters(float(bars.close[last]))
        if self.kind == "spot":
            return {
                "symbol": market.exchange_id, "status": "TRADING",
                "baseAsset": market.base, "baseAssetPrecision": 8,
                "quoteAsset": market.quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
                "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
                "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
                "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True,
                "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": True, "cancelReplaceAllowed": True,
                "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": f.tick_size, "maxPrice": "1000000.00000000",
                     "tickSize": f.tick_size},
                    {"filterType": "LOT_SIZE", "minQty": f.step_size, "maxQty": SPOT_MAX_QTY,
                     "stepSize": f.step_size},
                    {"filterType": "NOTIONAL", "minNotional": f.min_notional, "applyMinToMarket": True,
                     "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
                ],
                "permissions": [], "permissionSets": [["SPOT"]],
                "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
            }
        return {
            "symbol": market.exchange_id, "pair": market.exchange_id, "contractType": "PERPETUAL",
            "deliveryDate": 4133404800000, "onboardDate": int(bars.ts_ms[0]), "status": "TRADING",
            "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000",
            "baseAsset": market.base, "quoteAsset": market.quote, "marginAsset": "USDT",
            "pricePrecision": f.price_decimals, "quantityPrecision": f.qty_decimals,
            "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN", "underlyingSubType": [],
            "settlePlan": 0, "triggerProtect": "0.0500", "liquidationFee": "0.012500",
            "marketTakeBound": "0.05", "maxMoveOrderLimit": 10000,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": f.tick_size, "maxPrice": "4529764",
                 "tickSize": f.tick_size},
                {"filterType": "LOT_SIZE", "minQty": f.step_size, "maxQty": PERP_MAX_QTY, "stepSize": f.step_size},
                {"filterType": "MARKET_LOT_SIZE", "minQty": f.step_size, "maxQty": PERP_MARKET_MAX_QTY,
                 "stepSize": f.step_size},
                {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                {"filterType": "MIN_NOTIONAL", "notional": f.min_notional},
                {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
                 "multiplierDecimal": "4"},
            ],
            "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                           "TRAILING_STOP_MARKET"],
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
        }

    # -- tickers --------------------------------------------------------------------------
    def ticker_24hr(self, params) -> dict | list[dict]:
        now_ms = self.clock.now_ms()
        listed = self.listed(now_ms)
        single = params.get("symbol")
        wanted = [single] if single else _wanted_symbols(params)
        if wanted is not None and any(s not in listed for s in wanted):
            raise _invalid_symbol()
        ids = wanted if wanted is not None else list(listed)
        out = [self._ticker(exchange_id, listed[exchange_id][1], now_ms) for exchange_id in ids]
        return out[0] if single else out

    def _ticker(self, exchange_id: str, bars: Bars, now_ms: int) -> dict:
        stats = ticker_24h(bars, now_ms)
        if stats is None:  # listed, but nothing traded in the last 24h (the data stops before now)
            last = format_number(float(bars.close[int(bars.ts_ms.searchsorted(now_ms, side="right")) - 1]))
            stats = {"priceChange": "0", "priceChangePercent": "0.000", "weightedAvgPrice": last,
                     "prevClosePrice": last, "lastPrice": last, "openPrice": last, "highPrice": last,
                     "lowPrice": last, "volume": "0", "quoteVolume": "0",
                     "openTime": now_ms - 86_400_000, "closeTime": now_ms}
        if self.kind == "perp":
            stats.pop("prevClosePrice")
        return {"symbol": exchange_id, **stats}

    # -- funding (perps) ------------------------------------------------------------------
    def funding_rate(self, params) -> list[dict]:
        now_ms = self.clock.now_ms()
        limit = _limit_param(params, FUNDING_DEFAULT_LIMIT, FUNDING_MAX_LIMIT)
        start, end = _time_range(params)
        hit = self.market(params, now_ms, required=False)
        markets = [hit[0]] if hit else [m for m, _ in self.listed(now_ms).values()]
        rows = []
        for market in markets:
            settled = visible_funding(self.data.funding(market), now_ms, start, end, limit)
            rows += [{"symbol": market.exchange_id, "fundingTime": t, "fundingRate": format_number(r)}
                     for t, r in zip(settled.ts_ms.tolist(), settled.rate.tolist())]
        if len(markets) > 1:
            rows.sort(key=lambda r: (r["fundingTime"], r["symbol"]))
            rows = rows[:limit] if start is not None else rows[-limit:]
        return rows

    def premium_index(self, params) -> dict | list[dict]:
        now_ms = self.clock.now_ms()
        hit = self.market(params, now_ms, required=False)
        pairs = [hit] if hit else list(self.listed(now_ms).values())
        out = []
        for market, bars in pairs:
            last = format_number(float(bars.close[int(bars.ts_ms.searchsorted(now_ms, side="right")) - 1]))
            settled = visible_funding(self.data.funding(market), now_ms, None, None, 1)
            rate = format_number(float(settled.rate[-1])) if len(settled.rate) else "0"
            out.append({"symbol": market.exchange_id, "markPrice": last, "indexPrice": last,
                        "estimatedSettlePrice": last, "lastFundingRate": rate, "interestRate": "0.00010000",
                        "nextFundingTime": next_funding_ms(now_ms), "time": now_ms})
        return out[0] if hit else out

    def open_interest_hist(self, params) -> list:
        now_ms = self.clock.now_ms()
        self.market(params, now_ms)
        period = params.get("period")
        if not period:
            raise _mandatory("period")
        if period not in OI_PERIODS:
            raise BinanceError(400, -1130, "Data sent for parameter 'period' is not valid.")
        _limit_param(params, 30, 500)
        _time_range(params)
        return []  # the data dir holds no open interest: the exchange offers none here


_RATE_LIMITS = [
    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
    {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
]


def _wanted_symbols(params) -> list[str] | None:
    """``symbols=["BTCUSDT","ETHUSDT"]`` (Binance's JSON-array parameter), or None when absent."""
    raw = params.get("symbols")
    if raw is None:
        symbol = params.get("symbol")
        return [symbol] if symbol else None
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise BinanceError(400, -1100, "Illegal characters found in parameter 'symbols'; legal range is "
                                       "'^\\[(\"[A-Z0-9-_.]{1,20}\"(,\"[A-Z0-9-_.]{1,20}\"){0,}){0,1}\\]$'.")
    return value


def _json(payload, status: int = 200) -> Response:
    return Response(json.dumps(payload, separators=(",", ":")), status_code=status, media_type="application/json")


def create_app(datadir: Path, clock: Clock, faults: FaultInjector,
               api_keys: dict[str, str] | None = None) -> "_FaultsAndWeight":
    """The ASGI app of the local exchange over ``datadir`` (checked now: DataError if unusable).

    ``api_keys`` ({api key: secret}) are the only credentials the signed endpoints accept;
    without any, every signed request is refused with Binance's -2015.

    The fault middleware is the outermost layer on purpose: a dropped connection needs the
    ``send`` uvicorn hands to the app, which Starlette's own middleware would wrap."""
    data = DataDir(datadir)
    spot, perp = _Market(data, "spot", clock), _Market(data, "perp", clock)
    venue = TradingVenue(data, clock, api_keys or {})

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
        Route("/fapi/v1/ping", constant(dict)),
        Route("/fapi/v1/time", constant(time_payload)),
        Route("/fapi/v1/exchangeInfo", endpoint(perp.exchange_info)),
        Route("/fapi/v1/klines", endpoint(perp.klines)),
        Route("/fapi/v1/fundingRate", endpoint(perp.funding_rate)),
        Route("/fapi/v1/premiumIndex", endpoint(perp.premium_index)),
        Route("/fapi/v1/ticker/24hr", endpoint(perp.ticker_24hr)),
        Route("/futures/data/openInterestHist", endpoint(perp.open_interest_hist)),
        Route("/_qt/faults", get_faults, methods=["GET"]),
        Route("/_qt/faults", post_faults, methods=["POST"]),
        *starlette_routes(venue),
        *control_routes(venue, clock),
        *[Route(path, not_implemented(method, path), methods=[method]) for method, path in NOT_SIMULATED],
    ]

    async def binance_error(_request: Request, exc: BinanceError) -> Response:
        return _json({"code": exc.code, "msg": exc.msg}, status=exc.status)

    async def data_error(_request: Request, exc: DataError) -> Response:
        # Not a Binance answer: the data dir itself is broken. Said loudly, in the log and in
        # the body ccxt puts into its exception message; the status (500) is what it is.
        print(f"local exchange: data error: {exc}", file=sys.stderr, flush=True)
        return Response(f"local exchange data error: {exc}", status_code=500, media_type="text/plain")

    app = Starlette(routes=routes, exception_handlers={BinanceError: binance_error, DataError: data_error})
    return _FaultsAndWeight(app, faults)  # type: ignore[return-value]


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

    def __init__(self, app, faults: FaultInjector):
        self.app, self.faults, self.weight = app, faults, _UsedWeight()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].startswith("/_qt/"):
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        params = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        if method in ("POST", "PUT", "DELETE") and "symbol" not in params:
            receive, body = await _buffered(receive)  # signed POSTs carry their parameters in the body
            params.update({k: v[-1] for k, v in parse_qs(body.decode("latin-1")).items()})
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
            status, body, media = _FAULT_BODIES[decision.kind]
            headers = [(b"content-type", media.encode()), (b"content-length", str(len(body)).encode()),
                       (b"x-mbx-used-weight-1m", used)]
            if decision.kind in ("429", "418"):
                headers.append((b"retry-after", str(decision.retry_after_s).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return

        async def send_with_weight(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-mbx-used-weight-1m", used)]}
            await send(message)

        await self.app(scope, receive, send_with_weight)


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
