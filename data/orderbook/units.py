"""Exact fixed-point units for Binance's decimal strings.

Why not float64: a book is compared level for level with Binance's own numbers and quantities
are summed (imbalance, book walks); binary floats cannot hold 0.1 and a sum of them drifts. Every
price and quantity is therefore an int64 count of 1e-8 (Binance quotes at most 8 decimals, spot
``"61837.63000000"``; USDT-M ``"61800.20"`` / ``"0.014"``). int64 holds up to 9.2e10 whole units
at that scale, far above any price or size here. Parsing never goes through a float.
"""

from __future__ import annotations

DECIMALS = 8
SCALE = 10 ** DECIMALS


def to_units(text: str) -> int:
    """``"61800.20"`` -> 6180020000000: the decimal string as an exact count of 1e-8."""
    whole, _, frac = text.partition(".")
    if len(frac) > DECIMALS:
        if frac[DECIMALS:].strip("0"):
            raise ValueError(f"{text!r} has more than {DECIMALS} decimals")
        frac = frac[:DECIMALS]
    return int(whole + frac.ljust(DECIMALS, "0"))


def to_float(units: int) -> float:
    """For display and features only (never for book state)."""
    return units / SCALE


def float_to_units(value: float) -> int:
    """A float that came from a decimal string (ccxt parses Binance's strings to floats): its
    shortest round-tripping decimal is that string, so the units are exact for any price or
    size with at most 15 significant digits - every Binance quote."""
    from decimal import Decimal

    return to_units(format(Decimal(repr(float(value))), "f"))
