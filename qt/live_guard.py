"""Which exchange URLs are Binance (or Bybit) production, so testnet mode can never trade on mainnet.

``qt execute --mode testnet --exchange-url URL`` is meant for a test exchange (Binance's sandbox or the
local one). Real keys plus a production URL would otherwise reach mainnet without ``--i-understand-live``;
this module decides, without I/O, whether a URL names a production host. The host table comes from ccxt's
own production URL table for the Binance venues (its ``urls['api']``, never ``urls['test']``) plus the
alternates Binance documents (api1..api4, api-gcp, data-api, fapi1..fapi3, binance.us).
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlsplit

from qt.errors import UserError

_CCXT_BINANCE_VENUES = ("binance", "binanceusdm", "binancecoinm", "binanceus")

# Documented production alternates that ccxt's table does not list (they serve the same accounts).
_KNOWN_ALTERNATES = frozenset({
    "api.binance.com", "api1.binance.com", "api2.binance.com", "api3.binance.com", "api4.binance.com",
    "api-gcp.binance.com", "data-api.binance.vision", "data.binance.vision",
    "fapi.binance.com", "fapi1.binance.com", "fapi2.binance.com", "fapi3.binance.com",
    "dapi.binance.com", "dapi1.binance.com", "dapi2.binance.com",
    "papi.binance.com", "eapi.binance.com", "vapi.binance.com", "sapi.binance.com", "www.binance.com",
    "stream.binance.com", "fstream.binance.com", "dstream.binance.com", "ws-api.binance.com",
    "ws-fapi.binance.com", "api.binance.us", "www.binance.us", "stream.binance.us",
})
# Bybit's production REST hosts (``qt execute --venue bybit``): ccxt's table holds them as templates
# (``https://api.{hostname}``), so they are listed here; the testnet/demo hosts are not production.
_BYBIT_PRODUCTION = frozenset({
    "api.bybit.com", "api.bytick.com", "api.bybit.nl", "api.byhkbit.com", "api.bybit.kz", "api.bybit.eu",
    "api.bybitglobal.com", "stream.bybit.com",
})


def _hosts_in(table) -> set[str]:
    """Every URL host in a (nested) ccxt ``urls`` entry."""
    if isinstance(table, str):
        host = urlsplit(table).hostname
        return {host.lower()} if host else set()
    if isinstance(table, dict):
        table = list(table.values())
    if isinstance(table, (list, tuple)):
        return set().union(*(_hosts_in(v) for v in table)) if table else set()
    return set()


@lru_cache(maxsize=1)
def production_hosts() -> frozenset[str]:
    """ccxt's production hosts for the Binance venues, minus its sandbox hosts, plus known alternates."""
    import ccxt

    hosts: set[str] = set(_KNOWN_ALTERNATES | _BYBIT_PRODUCTION)
    for name in _CCXT_BINANCE_VENUES:
        urls = getattr(ccxt, name)().urls
        hosts |= _hosts_in(urls.get("api")) - _hosts_in(urls.get("test"))
    return frozenset(hosts)


def _host_of(url: str) -> str:
    """The URL's host, lower case, without port, credentials or the trailing dot DNS ignores."""
    return (urlsplit(url.strip()).hostname or "").rstrip(".").lower()


def is_binance_production_host(url: str) -> bool:
    """True if ``url`` points at a Binance (or Bybit) production host (any case, port, path or trailing dot)."""
    return _host_of(url) in production_hosts()


def refuse_production_url_for_testnet(url: str | None) -> None:
    """Raise a one-line UserError if testnet mode was given a Binance or Bybit production URL."""
    if url is not None and is_binance_production_host(url):
        raise UserError(f"--exchange-url {_host_of(url)} is a Binance or Bybit production host; --mode testnet "
                        f"never trades there (real orders need --mode live --i-understand-live)")
