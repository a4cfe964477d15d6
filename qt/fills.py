"""The one fill rule of a resting trigger level against an OHLC bar - stop, take-profit, trailing
stop - shared by the paper broker (and so the backtest), the local exchange's matching engine and
its OCO lists, and live trading's emergency exit.

**A level reached by a bar** (``stop_fill``): a long's stop at ``stop`` triggers when
``low <= stop`` and fills at the stop, or at the open when the bar opened at or below it (a gap).
Mirrored for a buy stop (a short's stop): ``high >= stop``, the stop or the open when the bar
opened at or above it. The same arithmetic serves every level a price reaches: a long's
take-profit is reached rising, like a buy stop (``selling=False``).

**A trailing stop** (``step_trail``): a long position's trail level is ``peak x (1 - pct)``,
where ``peak`` is the highest HIGH of the bars COMPLETED since entry (the entry fill price to
start with). Within a bar the level in force is the one from the previous bars: a bar's own high
does not raise the stop during that bar, because an OHLC bar does not say whether its high came
before or after its low (conservative). The level fills by ``stop_fill``. Only when the bar did
not trigger does the peak move up to its high. Mirrored for a buy-side trail (a short's stop):
trough, ``trough x (1 + pct)``, ``high >= level``.

**A stop already crossed** (``stop_crossed``): after an entry fill, a restart, or a guard
cancelled during a fall, the price can already be at or below the stop level. Binance then
refuses every stop (-2021 "Order would immediately trigger" on USDT-M, -2010 "... would trigger
immediately" on spot), so re-placing the same level every bar leaves the position unguarded
until max-hold. The paper broker and the backtest fill a gap through the stop at the open
(``stop_fill``); live asks ``stop_crossed`` and closes the position at market now (a reduce-only
market sell on perps, a market sell of the coins on spot), recorded as ``EMERGENCY_EXIT``. The
exchange's answer to a stop that would trigger at once means the same thing
(``executor.live.emergency.refused_as_crossed``), so it leads to the same exit, never a retry.

The functions are arithmetic only, so they work on floats (paper) and Decimals (the exchange,
which passes ``pct`` as a Decimal); callers hand them their own bar type (``open``/``high``/
``low``). Pure: no I/O, no vendor types, so the backtest imports this without ccxt.
"""

from __future__ import annotations

from typing import Any

EMERGENCY_EXIT = "EMERGENCY_EXIT"  # the decision reason and the alert kind
EMERGENCY_EXIT_REASON = "emergency_exit"  # the exit fill's reason


def stop_fill(stop, bar: Any, selling: bool = True):
    """The price a stop at ``stop`` fills at on ``bar``, or None when the bar does not reach it.

    Selling (a long's stop): ``low <= stop`` -> the stop, or the open when the bar opened at or
    below it (a gap). Buying (a short's stop, or any level reached rising): ``high >= stop`` ->
    the stop, or the open when the bar opened at or above it."""
    if selling:
        return min(stop, bar.open) if bar.low <= stop else None
    return max(stop, bar.open) if bar.high >= stop else None


def stop_crossed(stop_price: float, price: float, selling: bool = True) -> bool:
    """A stop is crossed when the exchange would fire it at once: a long's (sell) stop when the
    price is at or below it, a short's (buy) stop when the price is at or above it."""
    return price <= stop_price if selling else price >= stop_price


def trail_level(extreme, pct, selling: bool = True):
    """The trigger level of a trail whose best price so far is ``extreme``."""
    return extreme * (1 - pct) if selling else extreme * (1 + pct)


def step_trail(extreme, pct, bar: Any, selling: bool = True):
    """Offer one bar to a trailing stop: ``(fill_price or None, extreme after the bar)``.

    ``fill_price`` is the level (or the open when the bar gapped through it) if the bar
    triggered the stop; the extreme then stays as it was (the position is gone)."""
    price = stop_fill(trail_level(extreme, pct, selling), bar, selling)
    if price is not None:
        return price, extreme
    return None, max(extreme, bar.high) if selling else min(extreme, bar.low)
