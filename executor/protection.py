"""One rule for a protective stop the price has already gone through.

After an entry fill, a restart, or a guard cancelled during a fall, the price can already be
at or below the stop level. Binance then refuses every stop (-2021 "Order would immediately
trigger" on USDT-M, -2010 "... would trigger immediately" on spot), so re-placing the same
level every bar leaves the position unguarded until max-hold. The paper broker and the backtest
assume the opposite - a gap through the stop exits at the open. This module is the single
decision all of them use, so the paper broker, the backtest and live decide the same way:

* ``stop_crossed``: is a long's stop at ``stop_price`` already crossed by ``price``? Then the
  position is closed at market now (paper/backtest: at the bar's open; live: a reduce-only
  market sell on perps, a market sell of the coins on spot), recorded as ``EMERGENCY_EXIT``;
* the exchange's answer to a stop that would trigger at once means the same thing
  (``executor.live.emergency.refused_as_crossed``), so it leads to the same exit, never a retry.

Pure: no I/O, no vendor types, so the backtest imports it without ccxt.
"""

from __future__ import annotations

EMERGENCY_EXIT = "EMERGENCY_EXIT"  # the decision reason and the alert kind
EMERGENCY_EXIT_REASON = "emergency_exit"  # the exit fill's reason


def stop_crossed(stop_price: float, price: float) -> bool:
    """A long's stop is crossed when the price is at or below it (the exchange would fire it at once)."""
    return price <= stop_price
