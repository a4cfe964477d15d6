"""The ccxt adapter: one place that builds the Binance clients the project uses.

``make_ccxt`` returns the real ccxt class (``binance`` for spot, ``binanceusdm`` for
USDT-M perpetuals), so the code that talks to our local exchange in tests and offline
runs is the code that would talk to Binance. Pointing it at another host rewrites
EVERY entry of ``urls['api']`` (keeping each path: ``/api/v3``, ``/fapi/v1``,
``/futures/data``, ``/sapi/v1`` ...): a single entry left on binance.com would make an
offline machine try the network and fail in a confusing way.

``load_markets`` is kept to one request (``exchangeInfo`` of the one market type):
currencies and margin pairs need signed ``/sapi`` calls the local exchange does not
serve and the pipeline does not need.

Error mapping: ccxt's binance picks its per-market error table (spot / linear) from the
*host* of the failing URL (``https://fapi.binance.com/...``); on any other host it falls back
to the common table, so the same Binance answer would raise a different exception class
(``-2019 Margin is insufficient.`` -> ``ExchangeError`` instead of ``InsufficientFunds``).
For a redirected client the table is chosen from the URL's *path* (``/api/`` spot, ``/fapi/``
linear, ``/dapi/`` inverse), so a broker tested against the local exchange sees the classes
it will see on Binance.

Error classification (one place for the collector and the live brokers): ``reason_for`` names
the refusal recorded for a ccxt exception (``REASONS``, most specific class first), ``one_line``
formats it on one line with secrets and signatures removed (``qt.redact``), ``is_lost_answer``
says whether an order sent may or may not exist now (timeouts, 5xx, 429, dropped connections).
"""

from __future__ import annotations

import types
from typing import Literal
from urllib.parse import urlsplit

import ccxt

from qt import redact
from qt.errors import ConfigError

Market = Literal["spot", "perp"]

# ccxt's name of the exchange class and of its fetchMarkets type for each of our markets.
_CCXT_CLASS = {"spot": "binance", "perp": "binanceusdm"}
_FETCH_MARKET_TYPES = {"spot": ["spot"], "perp": ["linear"]}

# ccxt exception class -> the reason recorded with the refusal (most specific first).
REASONS: tuple[tuple[type, str], ...] = (
    (ccxt.InsufficientFunds, "INSUFFICIENT_FUNDS"),
    (ccxt.OrderNotFound, "ORDER_NOT_FOUND"),
    (ccxt.InvalidOrder, "INVALID_ORDER"),
    (ccxt.BadSymbol, "BAD_SYMBOL"),
    (ccxt.BadRequest, "BAD_REQUEST"),
    (ccxt.AuthenticationError, "AUTHENTICATION"),
    (ccxt.PermissionDenied, "PERMISSION_DENIED"),
    (ccxt.DDoSProtection, "RATE_LIMITED"),
    (ccxt.NetworkError, "EXCHANGE_UNAVAILABLE"),
    (ccxt.ExchangeError, "EXCHANGE_ERROR"),
)


def reason_for(exc: BaseException) -> str:
    """The reason recorded with a refusal: the first ``REASONS`` class ``exc`` is, else ``ERROR``."""
    for cls, reason in REASONS:
        if isinstance(exc, cls):
            return reason
    return "ERROR"


def one_line(exc: BaseException, secrets: tuple[str, ...] = ()) -> str:
    """``ClassName: message`` on one line, at most 300 characters, secrets and signatures removed
    (``qt.redact``: the one redaction every exchange error goes through)."""
    return redact.one_line(exc, secrets)


def is_lost_answer(exc: BaseException) -> bool:
    """Timeouts, 5xx, 429 and dropped connections: the order may or may not exist now."""
    return isinstance(exc, ccxt.NetworkError)


def make_ccxt(market: Market, exchange_url: str | None, timeout_ms: int = 10_000,
              api_key: str | None = None, secret: str | None = None) -> ccxt.Exchange:
    """A ccxt Binance client for ``market``; ``exchange_url`` (e.g. ``http://127.0.0.1:8123``)
    redirects every API URL to that host, None means the real Binance (needs a network).

    ``timeout_ms`` is ccxt's per-request timeout; past it ccxt raises ``RequestTimeout``.
    ``api_key`` / ``secret`` enable the signed (order and account) endpoints.
    """
    if market not in _CCXT_CLASS:
        raise ConfigError(f"market {market!r} is not one of {sorted(_CCXT_CLASS)}; use 'spot' or 'perp'")
    if timeout_ms <= 0:
        raise ConfigError(f"timeout_ms must be positive, got {timeout_ms}")
    exchange_cls = getattr(ccxt, _CCXT_CLASS[market])
    credentials = {"apiKey": api_key, "secret": secret} if api_key is not None else {}
    exchange = exchange_cls({
        **credentials,
        "enableRateLimit": True,
        "timeout": int(timeout_ms),
        "options": {
            "fetchCurrencies": False,
            "fetchMargins": False,
            "fetchMarkets": {"types": list(_FETCH_MARKET_TYPES[market])},
        },
    })
    if exchange_url is not None:
        exchange.urls["api"] = rewrite_api_urls(exchange.urls["api"], exchange_url)
        exchange.get_exceptions_by_url = types.MethodType(_exceptions_by_path, exchange)
    return exchange


_PATH_MARKET_TYPES = (("/api/", "spot"), ("/fapi/", "linear"), ("/dapi/", "inverse"), ("/eapi/", "option"),
                      ("/papi/", "portfolioMargin"))


def _exceptions_by_path(exchange: ccxt.Exchange, url: str, exact_or_broad: str) -> dict:
    """ccxt's per-market error table for ``url``, chosen by its path instead of its host."""
    path = urlsplit(url).path
    for prefix, market_type in _PATH_MARKET_TYPES:
        if path.startswith(prefix):
            return exchange.safe_dict(exchange.safe_dict(exchange.exceptions, market_type, {}), exact_or_broad, {})
    return {}


def rewrite_api_urls(api_urls: dict[str, str], exchange_url: str) -> dict[str, str]:
    """Every URL of ``api_urls`` moved to ``exchange_url``'s scheme and host, path kept.

    Pure: ``{'public': 'https://api.binance.com/api/v3'}`` with ``http://127.0.0.1:9`` gives
    ``{'public': 'http://127.0.0.1:9/api/v3'}``. Raises ConfigError for a URL without
    scheme or host, or with a path (the paths come from ccxt, not from the caller).
    """
    target = urlsplit(exchange_url)
    if target.scheme not in ("http", "https") or not target.netloc:
        raise ConfigError(f"exchange URL {exchange_url!r} must look like http://HOST:PORT")
    if target.path not in ("", "/"):
        raise ConfigError(f"exchange URL {exchange_url!r} must not carry a path; "
                          f"ccxt's own paths (/api/v3, /fapi/v1 ...) are kept")
    base = f"{target.scheme}://{target.netloc}"
    out: dict[str, str] = {}
    for name, url in api_urls.items():
        if not isinstance(url, str):
            raise ConfigError(f"ccxt urls['api'][{name!r}] is not a URL string ({type(url).__name__}); "
                              f"this ccxt version is not supported by rewrite_api_urls")
        out[name] = base + urlsplit(url).path
    return out
