"""Leverage is verified, not assumed: set it on the exchange, read it back, compare.

A perpetual traded at a leverage other than the configured one changes the liquidation price
and the margin every entry locks, so a symbol whose leverage the exchange refused to change, or
reports differently afterwards, is refused for entries (``LEVERAGE_UNVERIFIED``) while the other
symbols trade. Spot has no leverage. Exits are never refused.
"""

from __future__ import annotations

import ccxt

LEVERAGE_UNVERIFIED = "LEVERAGE_UNVERIFIED"


def leverage_mismatch(symbol: str, wanted: int, actual: float | None, refusal: str | None = None) -> str | None:
    """None when the exchange reports the wanted leverage; else the one line that says why not."""
    if refusal is None and actual is not None and int(actual) == int(wanted):
        return None
    why = f" (the exchange refused the change: {refusal})" if refusal else ""
    reported = "nothing" if actual is None else f"{actual:g}x"
    return f"{symbol}: leverage wanted {wanted}x, exchange reports {reported}{why}; no entries on {symbol}"


def set_and_verify_leverage(broker, symbol: str, wanted: int, secrets: tuple[str, ...] = ()) -> str | None:
    """Set ``wanted`` on the exchange, read it back (``fetch_leverage``); the mismatch line or None.
    Authentication problems are raised: they stop the daemon, not one symbol."""
    from executor.ccxt_broker import one_line

    ex, refusal = broker.ex, None
    try:
        broker.read(lambda: ex.set_leverage(wanted, symbol))
    except (ccxt.AuthenticationError, ccxt.PermissionDenied):
        raise
    except ccxt.BaseError as exc:
        refusal = one_line(exc, secrets)
    try:
        actual = broker.read(lambda: ex.fetch_leverage(symbol)).get("longLeverage")
    except (ccxt.AuthenticationError, ccxt.PermissionDenied):
        raise
    except ccxt.BaseError as exc:
        actual, refusal = None, refusal or f"read-back failed: {one_line(exc, secrets)}"
    return leverage_mismatch(symbol, wanted, None if actual is None else float(actual), refusal)
