"""The one trailing-stop rule, shared by the paper broker and the local exchange's matching engine.

A long position's trail level is ``peak x (1 - pct)``, where ``peak`` is the highest HIGH of the
bars COMPLETED since entry (the entry fill price to start with). Within a bar the level in force
is the one from the previous bars: a bar's own high does not raise the stop during that bar,
because an OHLC bar does not say whether its high came before or after its low (conservative).
The stop triggers when ``low <= level``, at the level, or at the open when the bar opened at or
below it (a gap). Only when the bar did not trigger does the peak move up to its high.

Mirrored for a buy-side trail (a short's stop): trough, ``trough x (1 + pct)``, ``high >= level``.

The function is arithmetic only, so it works on floats (paper) and Decimals (the exchange, which
passes ``pct`` as a Decimal); both callers hand it their own bar type (``open``/``high``/``low``).
"""

from __future__ import annotations

from typing import Any


def trail_level(extreme, pct, selling: bool = True):
    """The trigger level of a trail whose best price so far is ``extreme``."""
    return extreme * (1 - pct) if selling else extreme * (1 + pct)


def step_trail(extreme, pct, bar: Any, selling: bool = True):
    """Offer one bar to a trailing stop: ``(fill_price or None, extreme after the bar)``.

    ``fill_price`` is the level (or the open when the bar gapped through it) if the bar
    triggered the stop; the extreme then stays as it was (the position is gone)."""
    level = trail_level(extreme, pct, selling)
    if selling:
        if bar.low <= level:
            return min(level, bar.open), extreme
        return None, max(extreme, bar.high)
    if bar.high >= level:
        return max(level, bar.open), extreme
    return None, min(extreme, bar.low)
