"""``GET /api/v3/depth`` and ``/fapi/v1/depth``: an order book *invented* from the current candle.

The data dir holds candles, not books, so the local exchange makes one up - enough for a REST
recorder and a book walk to be exercised offline, and nothing a strategy should learn from.
What is invented, all deterministic in (candle, clock):

* the price: the close of the last candle opened at or before the clock (``lastPrice`` of the
  24h ticker); the best bid is that close rounded down to the tick, the best ask one tick above
  (a one-tick spread, always);
* the levels: ``limit`` per side (Binance's allowed limits), one tick apart, no holes;
* the sizes: the candle's volume / 100 at every level, rounded down to the step size (at least
  one step) - a flat book, no imbalance;
* ``lastUpdateId``: the clock in ms, so a later request is a newer snapshot (and two requests in
  the same ms are the same book); USDT-M answers also carry ``E`` and ``T`` (the clock).

The tick and step are the symbol's exchangeInfo filters (``exchange.views.derive_filters``).
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal

from exchange.datadir import Bars
from exchange.views import derive_filters

SPOT_LIMITS = (5, 10, 20, 50, 100, 500, 1000, 5000)
PERP_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
DEFAULT_LIMIT = 100


def synthetic_book(bars: Bars, now_ms: int, limit: int, perp: bool) -> dict:
    """The invented book at ``now_ms`` in Binance's depth JSON (see the module doc)."""
    i = int(bars.ts_ms.searchsorted(now_ms, side="right")) - 1
    close, volume = float(bars.close[max(i, 0)]), float(bars.volume[max(i, 0)])
    filters = derive_filters(close)
    tick, step = Decimal(filters.tick_size), Decimal(filters.step_size)
    best_bid = (Decimal(repr(close)) / tick).to_integral_value(ROUND_FLOOR) * tick
    size = max(step, (Decimal(repr(volume)) / 100 / step).to_integral_value(ROUND_FLOOR) * step)
    qty = format(size, "f")
    bids = [[format(best_bid - k * tick, "f"), qty] for k in range(limit) if best_bid - k * tick > 0]
    asks = [[format(best_bid + (k + 1) * tick, "f"), qty] for k in range(limit)]
    book: dict = {"lastUpdateId": int(now_ms)}
    if perp:
        book.update(E=int(now_ms), T=int(now_ms))
    book.update(bids=bids, asks=asks)
    return book
