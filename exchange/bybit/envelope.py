"""Bybit v5's answer envelope, its error codes and its request-parameter checks (pure).

Every v5 answer, success or failure, is ``{"retCode", "retMsg", "result", "retExtInfo", "time"}``;
business errors come with HTTP 200 and a non-zero ``retCode`` (Bybit's real codes, so ccxt's
``bybit.exceptions`` table raises the class it raises against api.bybit.com: 10001 BadRequest,
"Not supported symbols" BadSymbol, 10002 InvalidNonce, 10003/10004 AuthenticationError, 10006
RateLimitExceeded, 110001 OrderNotFound, 110007 InsufficientFunds, 110043 BadRequest, ...).
``time`` is the exchange clock (a replayed instant in replay), the value ccxt's ``fetch_time`` reads.
"""

from __future__ import annotations

import json

from starlette.responses import Response

PARAMS_ERROR = 10001
TIMESTAMP_ERROR = 10002
INVALID_API_KEY = 10003
SIGNATURE_ERROR = 10004
RATE_LIMITED = 10006
ROUTE_NOT_FOUND = 10017
ORDER_NOT_EXISTS = 110001
INSUFFICIENT_BALANCE = 110007
LEVERAGE_NOT_MODIFIED = 110043
DUPLICATE_ORDER_LINK_ID = 110072


class BybitError(Exception):
    """An error answered the way Bybit answers it: ``retCode`` + ``retMsg`` (HTTP 200 unless
    Bybit itself uses another status, e.g. 404 for an unknown route)."""

    def __init__(self, ret_code: int, msg: str, status: int = 200):
        super().__init__(msg)
        self.ret_code, self.msg, self.status = ret_code, msg, status


def envelope(result, now_ms: int, ret_code: int = 0, msg: str = "OK") -> dict:
    return {"retCode": ret_code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": now_ms}


def json_response(payload: dict, status: int = 200) -> Response:
    return Response(json.dumps(payload, separators=(",", ":")), status_code=status, media_type="application/json")


def error_response(exc: BybitError, now_ms: int) -> Response:
    return json_response(envelope({}, now_ms, exc.ret_code, exc.msg), exc.status)


def not_supported_symbol(reason: str | None = None) -> BybitError:
    """Bybit's answer for an unknown symbol (ccxt: BadSymbol); ``reason`` (a bad data file) is
    appended so a client sees why in one line."""
    return BybitError(PARAMS_ERROR, "Not supported symbols" + (f" (local exchange: {reason})" if reason else ""))


def params_error(detail: str) -> BybitError:
    return BybitError(PARAMS_ERROR, f"params error: {detail}")


def require(params, name: str) -> str:
    value = params.get(name)
    if value is None or value == "":
        raise params_error(f"{name} is required")
    return value


def int_param(params, name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    text = str(raw)
    if not text.isdigit() or len(text) > 20:
        raise params_error(f"{name} invalid")
    return int(text)


def limit_param(params, default: int, maximum: int) -> int:
    """Bybit's ``limit`` in [1, maximum]: outside it is a params error, not silently capped."""
    limit = int_param(params, "limit")
    if limit is None:
        return default
    if not 1 <= limit <= maximum:
        raise params_error(f"limit must be in [1, {maximum}]")
    return limit


def linear_category(params, default: str | None = None) -> str:
    """Only USDT perpetuals are served: ``category=linear``; the others are answered honestly.
    ``default``: what Bybit assumes when the endpoint lets ``category`` be left out (kline)."""
    category = params.get("category") or default
    if not category:
        raise params_error("category is required")
    if category != "linear":
        raise params_error(f"category {category} is not served by the local exchange (linear only)")
    return category


# Fault answers in Bybit's dialect (``exchange.local`` asks for them on /v5/ paths). Rate limits
# are HTTP 200 + retCode 10006 as Bybit sends them; an IP ban is Bybit's HTTP 403 "access too
# frequent" page; 5xx are gateway pages (not JSON), which ccxt maps by status.
_FAULT_CODES = {"429": (RATE_LIMITED, "Too many visits. Exceeded the API Rate Limit."),
                "refuse": (PARAMS_ERROR, "Request refused (local exchange fault rule).")}
_FAULT_PAGES = {
    "418": (403, b"access too frequent", "text/plain"),
    "500": (500, b"Internal Server Error", "text/plain"),
    "502": (502, b"<html><head><title>502 Bad Gateway</title></head></html>", "text/html"),
    "503": (503, b"Service Unavailable.", "text/plain"),
}


def fault_answer(kind: str, now_ms: int) -> tuple[int, bytes, str]:
    """(HTTP status, body, media type) of an injected fault of ``kind`` at ``now_ms``."""
    if kind in _FAULT_CODES:
        code, msg = _FAULT_CODES[kind]
        return 200, json.dumps(envelope({}, now_ms, code, msg), separators=(",", ":")).encode(), "application/json"
    return _FAULT_PAGES[kind]
