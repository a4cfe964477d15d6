"""Leverage and margin mode are verified, not assumed: set them on the exchange, read them back, compare.

A perpetual traded at a leverage or margin mode other than the configured one changes the
liquidation price and the margin every entry locks (cross margin puts the whole wallet behind
each position), so a symbol whose settings the exchange refused to change, or reports
differently afterwards, is refused for entries (``LEVERAGE_UNVERIFIED``) while the other
symbols trade. The check runs at start-up and again right before the first entry on each
symbol (someone may change the setting in the exchange's UI in between). Spot has neither.
Exits are never refused. The wanted leverage is ``risk.leverage_of(symbol)`` - the one the
decision core sized the notional with (margin x leverage).

Also read from the venue at start-up (``venue_brackets``, ``venue_funding``): its
maintenance-margin brackets, so the RiskEngine's LIQUIDATION_BEFORE_STOP check computes the
liquidation price the exchange will, and the settled funding rates its FUNDING_FILTER reads.
"""

from __future__ import annotations

import ccxt
import pandas as pd

from executor.funding import FUNDING_FRAME_COLUMNS, FundingSchedule
from qt import redact
from qt.margin import Bracket

LEVERAGE_UNVERIFIED = "LEVERAGE_UNVERIFIED"


def leverage_mismatch(symbol: str, wanted: int, actual: float | None, refusal: str | None = None) -> str | None:
    """None when the exchange reports the wanted leverage; else the one line that says why not."""
    if actual is not None and int(actual) == int(wanted):
        return None  # what counts is what the exchange reports, whatever it answered to the change
    why = f" (the exchange refused the change: {refusal})" if refusal else ""
    reported = "nothing" if actual is None else f"{actual:g}x"
    return f"{symbol}: leverage wanted {wanted}x, exchange reports {reported}{why}; no entries on {symbol}"


def margin_mode_mismatch(symbol: str, wanted: str, actual: str | None, refusal: str | None = None) -> str | None:
    """None when the exchange reports the wanted margin mode (``cross`` / ``isolated``); else the line."""
    if actual is not None and actual.lower() == wanted.lower():
        return None  # a refused change that was not needed is fine: what counts is what the exchange reports
    why = f" (the exchange refused the change: {refusal})" if refusal else ""
    return (f"{symbol}: margin mode wanted {wanted}, exchange reports {actual or 'nothing'}{why}; "
            f"no entries on {symbol}")


def _call(broker, fn, secrets: tuple[str, ...]):
    """(answer, None) or (None, the one-line refusal); authentication problems are raised."""
    try:
        return broker.read(fn), None
    except (ccxt.AuthenticationError, ccxt.PermissionDenied):
        raise
    except ccxt.BaseError as exc:
        return None, redact.one_line(exc, secrets)


def set_and_verify_leverage(broker, symbol: str, wanted: int, secrets: tuple[str, ...] = (),
                            margin_mode: str | None = None) -> str | None:
    """Set the margin mode (when given) and ``wanted`` leverage on the exchange, read both back
    (``fetch_margin_mode``, ``fetch_leverage``); None when both match, else the mismatch line(s).
    Authentication problems are raised: they stop the daemon, not one symbol."""
    ex, lines = broker.ex, []
    if margin_mode is not None:
        refusal = None
        if broker.venue.sets_margin_mode:  # Bybit's unified account has one mode for all: only read back
            _, refusal = _call(broker, lambda: ex.set_margin_mode(margin_mode, symbol), secrets)
        answer, failed = _call(broker, lambda: ex.fetch_margin_mode(symbol), secrets)
        actual = None if answer is None else answer.get("marginMode")
        if failed:
            refusal = refusal or f"read-back failed: {failed}"
        line = margin_mode_mismatch(symbol, margin_mode, actual, refusal)
        if line and not broker.venue.sets_margin_mode:
            line += (f" ({broker.venue.name}'s margin mode is account-wide: set it on the account or "
                     f"risk.margin_mode: {actual}; the executor does not switch it)")
        lines.append(line)
    _, refusal = _call(broker, lambda: ex.set_leverage(wanted, symbol), secrets)
    answer, failed = _call(broker, lambda: ex.fetch_leverage(symbol), secrets)
    actual = None if answer is None or answer.get("longLeverage") is None else float(answer["longLeverage"])
    if failed:
        refusal = refusal or f"read-back failed: {failed}"
    lines.append(leverage_mismatch(symbol, wanted, actual, refusal))
    found = [line for line in lines if line]
    return "; ".join(found) if found else None


def venue_brackets(broker, symbols: list[str]) -> dict[str, tuple[Bracket, ...]]:
    """The exchange's maintenance-margin brackets per symbol (ccxt ``fetch_leverage_tiers``, Binance's
    ``leverageBracket``) as ``qt.margin.Bracket``: what the RiskEngine's liquidation check must use
    live. A symbol the exchange does not answer for keeps the default table (logged by the caller)."""
    tiers = broker.read(lambda: broker.ex.fetch_leverage_tiers(symbols))
    out = {}
    for sym in symbols:
        rows = tiers.get(sym) or []
        if rows:
            out[sym] = tuple(Bracket(float(t["minNotional"]), float(t["maxNotional"]), int(t["maxLeverage"]),
                                     float(t["maintenanceMarginRate"]), float((t.get("info") or {}).get("cum") or 0.0))
                             for t in rows)
    return out


def venue_funding(broker, symbols: list[str], limit: int = 100) -> FundingSchedule:
    """The perpetuals' settled funding rates from the exchange (ccxt ``fetch_funding_rate_history``,
    ``GET /fapi/v1/fundingRate``, the newest ``limit`` each): the schedule the RiskEngine's funding
    filter reads (``last_rate_before``)."""
    rows = []
    for sym in symbols:
        for r in broker.read(lambda: broker.ex.fetch_funding_rate_history(sym, None, limit)):
            rows.append((sym, pd.Timestamp(int(r["timestamp"]), unit="ms", tz="UTC"), float(r["fundingRate"])))
    return FundingSchedule(pd.DataFrame(rows, columns=FUNDING_FRAME_COLUMNS))
