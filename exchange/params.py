"""Reading a signed request's parameters the way Binance reads them: each malformed value is refused
with Binance's code and message (-1100 illegal characters, -1102 missing, -1130 not valid).

Its own module because the order and account endpoints (``exchange.trading``) and the OCO
order-list endpoints (``exchange.oco``) parse the same parameters, and the matching engine
(``exchange.matching``) refuses a missing one with the same answer.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from exchange.ledger import Rejected

DECIMAL_RANGE = "'^([0-9]{1,20})(\\.[0-9]{1,20})?$'"


def mandatory(name: str) -> Rejected:
    """Binance's -1102 for a parameter that was not sent (or was empty)."""
    return Rejected(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def decimal_param(params: dict, name: str) -> Decimal | None:
    """A non-negative decimal, or None when absent; -1100 when it is not one."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite() or value < 0:
        raise Rejected(-1100, f"Illegal characters found in parameter '{name}'; legal range is {DECIMAL_RANGE}.")
    return value


def int_param(params: dict, name: str) -> int | None:
    """A non-negative integer of at most 20 digits, or None when absent; -1100 when it is not one."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 20:
        raise Rejected(-1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.")
    return int(raw)


def bool_param(params: dict, name: str) -> bool:
    """``true`` / ``false`` (any case), False when absent; -1130 otherwise."""
    raw = params.get(name)
    if raw is None or raw == "":
        return False
    if raw.lower() not in ("true", "false"):
        raise Rejected(-1130, f"Data sent for parameter '{name}' is not valid.")
    return raw.lower() == "true"


def required(params: dict, name: str) -> str:
    """A parameter that must be sent (non-empty); -1102 otherwise."""
    value = params.get(name)
    if not value:
        raise mandatory(name)
    return value


__all__ = ["bool_param", "decimal_param", "int_param", "mandatory", "required"]
