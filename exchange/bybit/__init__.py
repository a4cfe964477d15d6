"""Bybit's v5 REST API (USDT perpetuals, category ``linear``), served by the local exchange's
one server process beside the Binance routes (``exchange.local``), over the same data dir,
clock and fault injector, so the real ccxt ``bybit`` client and pybit run offline.

Served (public, ``exchange.bybit.market``)
    ``GET /v5/market/time``, ``instruments-info`` (cursor pagination), ``kline``,
    ``mark-price-kline``, ``funding/history``, ``tickers``, ``open-interest`` (always an
    empty list: the data dir holds no open interest).
Served (signed: ``X-BAPI-*`` headers, HMAC-SHA256, the server's ``QT_EXCHANGE_API_KEYS``;
``exchange.bybit.trading``) over the one matching engine, in an account of its own
    ``GET /v5/user/query-api``, ``/v5/account/info``, ``/v5/asset/coin/query-info``,
    ``/v5/account/wallet-balance``, ``/v5/position/list``, ``POST /v5/position/set-leverage``,
    ``POST /v5/order/create|amend|cancel``, ``GET /v5/order/realtime|history``,
    ``GET /v5/execution/list``; test controls ``/_qt/bybit/reset|account|liquidity``.
Any other ``/v5/...`` path answers HTTP 404 with retCode 10017 (route not found), loudly.

Modules: ``envelope`` (the answer envelope, Bybit's retCodes, parameter checks, fault bodies),
``files`` (the ``ohlcv/bybit`` and ``funding/bybit`` layout), ``market`` (the public answers),
``auth`` (the v5 signature), ``shapes`` (Bybit's order vocabulary <-> the engine's),
``trading`` (the signed handlers).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from exchange.bybit.envelope import (ROUTE_NOT_FOUND, BybitError, envelope, error_response, fault_answer,
                                     json_response)
from exchange.bybit.files import BybitFiles
from exchange.bybit.market import BybitMarketData
from exchange.bybit.trading import private_routes
from exchange.control import account_control_routes
from exchange.datadir import DataDir
from exchange.trading import TradingVenue

V5_PREFIX = "/v5/"


def bybit_venue(data: DataDir, clock, api_keys: dict[str, str] | None = None) -> TradingVenue:
    """The Bybit account: a ``TradingVenue`` of its own over the Bybit candles - the one matching
    engine, Bybit's prices, a wallet apart from Binance's."""
    return TradingVenue(data, clock, api_keys or {}, markets=BybitFiles(data).tradable)


def bybit_routes(data: DataDir, clock, venue: TradingVenue, api_keys: dict[str, str] | None = None) -> list[Route]:
    """The v5 routes over ``venue`` (``bybit_venue``) and its ``/_qt/bybit/...`` controls; the
    last route catches every other ``/v5/`` path (must stay last)."""
    market = BybitMarketData(data, clock)

    def endpoint(fn):
        def handler(request: Request) -> Response:
            try:
                result = fn(request.query_params)
            except BybitError as exc:
                return error_response(exc, clock.now_ms())
            return json_response(envelope(result, clock.now_ms()))
        return handler

    async def unknown_route(request: Request) -> Response:
        return error_response(BybitError(ROUTE_NOT_FOUND, f"Route not found (local exchange: {request.method} "
                                                          f"{request.url.path} is not simulated)", status=404),
                              clock.now_ms())

    return [
        Route("/v5/market/time", endpoint(market.time)),
        Route("/v5/market/instruments-info", endpoint(market.instruments_info)),
        Route("/v5/market/kline", endpoint(market.kline)),
        Route("/v5/market/mark-price-kline", endpoint(market.mark_price_kline)),
        Route("/v5/market/funding/history", endpoint(market.funding_history)),
        Route("/v5/market/tickers", endpoint(market.tickers)),
        Route("/v5/market/open-interest", endpoint(market.open_interest)),
        *private_routes(venue, api_keys or {}, clock),
        *account_control_routes(venue, clock, "/_qt/bybit"),
        Route("/v5/{rest:path}", unknown_route, methods=["GET", "POST"]),
    ]


__all__ = ["V5_PREFIX", "BybitError", "bybit_routes", "bybit_venue", "fault_answer"]
