"""Bybit v5's signed-request check, as the local exchange applies it (pure).

A private request carries ``X-BAPI-API-KEY``, ``X-BAPI-TIMESTAMP`` (ms), ``X-BAPI-RECV-WINDOW``
(default 5000) and ``X-BAPI-SIGN`` = hex HMAC-SHA256(secret, timestamp + api key + recv window
+ payload), the payload being the raw query string of a GET or the raw JSON body of a POST.
The keys are the server's ``QT_EXCHANGE_API_KEYS`` (the Binance side's, ``exchange.auth``).

Freshness is judged on the *wall* clock (clients sign with their own time, also against a
replayed market), Bybit's rule: ``server - recv_window <= timestamp < server + 1000``.
Secrets and keys never appear in an error message.
"""

from __future__ import annotations

import hmac
import json
from urllib.parse import parse_qsl

from exchange.auth import sign
from exchange.bybit.envelope import (INVALID_API_KEY, SIGNATURE_ERROR, TIMESTAMP_ERROR, BybitError,
                                     params_error)

DEFAULT_RECV_WINDOW_MS = 5000


def verify(api_keys: dict[str, str], headers, method: str, query: str, body: str, wall_ms: int) -> dict:
    """The request's parameters (query for GET, JSON body for POST) if signed validly;
    ``BybitError`` with Bybit's code (10003 key, 10004 signature, 10002 time) otherwise."""
    api_key = headers.get("x-bapi-api-key")
    secret = api_keys.get(api_key or "")
    if not api_key or secret is None:
        raise BybitError(INVALID_API_KEY, "API key is invalid.")
    timestamp, window = headers.get("x-bapi-timestamp") or "", headers.get("x-bapi-recv-window") or ""
    signature = headers.get("x-bapi-sign") or ""
    if not timestamp.isdigit() or (window and not window.isdigit()):
        raise BybitError(TIMESTAMP_ERROR, "invalid request, please check your server timestamp or recv_window param")
    payload = query if method == "GET" else body
    expected = sign(secret, timestamp + api_key + window + payload)
    if not hmac.compare_digest(expected, signature.lower()):
        raise BybitError(SIGNATURE_ERROR, "error sign! origin_string[local exchange: not shown]")
    recv_window = int(window) if window else DEFAULT_RECV_WINDOW_MS
    if not (wall_ms - recv_window <= int(timestamp) < wall_ms + 1000):
        raise BybitError(TIMESTAMP_ERROR, f"invalid request, please check your server timestamp or recv_window "
                                          f"param. req_timestamp[{timestamp}],server_timestamp[{wall_ms}],"
                                          f"recv_window[{recv_window}]")
    if method == "GET":
        return dict(parse_qsl(query, keep_blank_values=True))
    try:
        params = json.loads(body or "{}")
    except ValueError:
        raise params_error("request body is not JSON") from None
    if not isinstance(params, dict):
        raise params_error("request body must be a JSON object")
    return params


__all__ = ["verify"]
