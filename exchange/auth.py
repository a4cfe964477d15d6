"""Binance's SIGNED-endpoint check, as the local exchange applies it (pure).

A signed request carries ``X-MBX-APIKEY`` and, as its last parameter, ``signature`` =
hex HMAC-SHA256(secret, totalParams), where totalParams is the query string concatenated
with the request body (without the signature itself). ``timestamp`` must be within
``recvWindow`` (default 5000 ms) before the server's time and not more than 1 s after it.

The freshness check uses the *wall* clock, not the exchange's replay clock: clients sign with
their own wall time, and a replayed 2023 market must still accept them.

Secrets and keys are never put into an error message, a log line or a response.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qsl

from exchange.ledger import Rejected

DEFAULT_RECV_WINDOW_MS = 5000
MAX_RECV_WINDOW_MS = 60_000


def sign(secret: str, total_params: str) -> str:
    """hex HMAC-SHA256 of ``total_params`` with ``secret`` (Binance's signature)."""
    return hmac.new(secret.encode(), total_params.encode(), hashlib.sha256).hexdigest()


def _split_signature(raw: str) -> tuple[str, str | None]:
    """(``raw`` without its trailing ``signature=...``, the signature or None)."""
    if raw.startswith("signature="):
        return "", raw[len("signature="):]
    head, sep, tail = raw.rpartition("&signature=")
    if not sep:
        return raw, None
    return head, tail


def verify(api_keys: dict[str, str], api_key: str | None, query: str, body: str, wall_ms: int) -> dict[str, str]:
    """The request's parameters (query wins over body) if its key, signature and timestamp
    are valid; ``Rejected`` with Binance's code otherwise."""
    if not api_key:
        raise Rejected(-2014, "API-key format invalid.", status=401)
    secret = api_keys.get(api_key)
    if secret is None:
        raise Rejected(-2015, "Invalid API-key, IP, or permissions for action.", status=401)
    query_part, query_sig = _split_signature(query)
    body_part, body_sig = _split_signature(body)
    signature = query_sig if query_sig is not None else body_sig
    if not signature:
        raise Rejected(-1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
    expected = sign(secret, query_part + body_part)
    if not hmac.compare_digest(expected, signature.lower()):
        raise Rejected(-1022, "Signature for this request is not valid.")
    params = dict(parse_qsl(body_part, keep_blank_values=True))
    params.update(parse_qsl(query_part, keep_blank_values=True))
    check_timestamp(params, wall_ms)
    return params


def check_timestamp(params: dict[str, str], wall_ms: int) -> None:
    raw = params.get("timestamp")
    if not raw:
        raise Rejected(-1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.")
    try:
        timestamp = int(raw)
        window = int(params.get("recvWindow") or DEFAULT_RECV_WINDOW_MS)
    except ValueError:
        raise Rejected(-1100, "Illegal characters found in parameter 'timestamp'; legal range is '^[0-9]{1,20}$'.") \
            from None
    if window > MAX_RECV_WINDOW_MS:
        raise Rejected(-1131, "recvWindow must be less than 60000")
    if timestamp >= wall_ms + 1000:
        raise Rejected(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
    if wall_ms - timestamp > window:
        raise Rejected(-1021, "Timestamp for this request is outside of the recvWindow.")
