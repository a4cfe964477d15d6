"""Venues as configuration: what differs between Binance and Bybit, in one small table per venue.

Why a module of its own: the collector (and, later, the broker) is one piece of code for every
venue. What differs - which ccxt class serves which market, how a page of funding history is
asked for, whether open-interest history is served - is data here, chosen by the ccxt id in
``collect.exchange``, instead of ``if exchange == ...`` scattered through the callers.

``make_client(exchange, market, url)`` builds the real ccxt client, redirected to ``url`` (the
local exchange, which speaks both Binance's REST API and Bybit's v5) exactly like
``qt.binance.make_ccxt`` does for Binance: every ``urls['api']`` entry moved to the local host.

Paging, venue by venue (ccxt passes our ``since``/``limit`` through):

* Binance answers klines and fundingRate from ``startTime`` onwards, ``limit`` rows.
* Bybit's v5 kline and funding history answer a *window*: given only a start, ccxt's funding
  call sets ``endTime = start + limit x 8 h``, and a kline page is the newest ``limit`` rows up
  to ``end``. So for Bybit the collector asks each kline page with an explicit ``until`` (the
  page's last open time: the same rows under either reading of a start-only request), and a
  funding window that holds no settlement is skipped, not taken for the end of history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import ccxt

from qt.binance import make_ccxt, rewrite_api_urls
from qt.errors import ConfigError

Market = Literal["spot", "perp"]
_FUNDING_INTERVAL_MS = 8 * 3_600_000


@dataclass(frozen=True)
class Venue:
    """One venue's differences, by ccxt id."""

    name: str  # the lake's venue (``data.partitions.VENUES``)
    markets: tuple[str, ...]  # the markets collected there
    funding_page_limit: int  # rows per funding-history request (Binance 1000, Bybit 200)
    windowed_paging: bool  # pages are [since, since + limit x interval] windows (Bybit)
    open_interest: bool  # open-interest history served and collected

    def ohlcv_params(self, since_ms: int, limit: int, step_ms: int) -> dict:
        """Extra ccxt params of one kline page starting at ``since_ms``: an explicit ``until`` where
        pages are windows, so the page holds exactly the ``limit`` candles after ``since``."""
        return {"until": since_ms + limit * step_ms - 1} if self.windowed_paging else {}

    def funding_window_ms(self) -> int | None:
        """The span one funding request covers where pages are windows, else None (start onwards)."""
        return self.funding_page_limit * _FUNDING_INTERVAL_MS if self.windowed_paging else None


BINANCE = Venue("binance", ("spot", "perp"), funding_page_limit=1000, windowed_paging=False, open_interest=True)
BYBIT = Venue("bybit", ("perp",), funding_page_limit=200, windowed_paging=True, open_interest=False)
VENUES = {"binance": BINANCE, "binanceusdm": BINANCE, "bybit": BYBIT}


def venue_for(exchange: str) -> Venue:
    """The venue of a ccxt id (``binance``, ``binanceusdm``, ``bybit``); ConfigError naming them otherwise."""
    try:
        return VENUES[exchange]
    except KeyError:
        raise ConfigError(f"exchange {exchange!r} is not one of {', '.join(VENUES)}") from None


def market_of(symbol: str) -> Market:
    return "perp" if ":" in symbol else "spot"


def make_client(exchange: str, market: Market, exchange_url: str | None, timeout_ms: int = 10_000,
                api_key: str | None = None, secret: str | None = None) -> ccxt.Exchange:
    """The real ccxt client for ``market`` on ``exchange``; ``exchange_url`` redirects it to that host
    (None = the venue itself, which needs a network). ConfigError for a market the venue lacks."""
    venue = venue_for(exchange)
    if market not in venue.markets:
        raise ConfigError(f"{exchange} has no {market} market here (only {', '.join(venue.markets)}); "
                          f"on Bybit use USDT perpetuals, BASE/USDT:USDT, and collect.market: perp")
    if venue is BINANCE:
        return make_ccxt(market, exchange_url, timeout_ms, api_key, secret)
    if timeout_ms <= 0:
        raise ConfigError(f"timeout_ms must be positive, got {timeout_ms}")
    credentials = {"apiKey": api_key, "secret": secret} if api_key is not None else {}
    client = ccxt.bybit({**credentials, "enableRateLimit": True, "timeout": int(timeout_ms),
                         "options": {"fetchMarkets": {"types": ["linear"]}, "defaultType": "swap",
                                     "defaultSubType": "linear"}})
    # Currencies need a signed /v5/asset call the pipeline does not use (deposit/withdraw networks).
    client.has["fetchCurrencies"] = False
    if exchange_url is not None:
        client.urls["api"] = rewrite_api_urls(client.urls["api"], exchange_url)
    return client
