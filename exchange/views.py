"""Pure arithmetic behind the local exchange's answers: what is visible at ``now``, which
rows a klines/fundingRate request selects, candles rolled up to a longer interval, the
trading filters of a symbol, the 24h ticker. No I/O; ``exchange.local`` only turns
requests into these calls and the results into Binance's JSON.

Visibility (no lookahead in replay): a candle exists once its open time is <= now; the
candle containing now is the still-open one. Served at a stored timeframe it carries that
bar's stored values (the collector must drop it, as on the real exchange); rolled up from a
finer stored timeframe it is built from the finer candles opened so far, like a live bar.
Funding settlements exist once their time is <= now.

Numbers are written the shortest way that parses back to the same float64 and never in
exponent notation (Binance never sends ``1e-05``), so a client reads back exactly the
stored values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from exchange.datadir import Bars, Funding
from qt.errors import DataError

FUNDING_INTERVAL_MS = 8 * 3_600_000
DAY_MS = 86_400_000
# Maximum order quantities served in exchangeInfo (LOT_SIZE / MARKET_LOT_SIZE maxQty) and
# enforced by the matching engine: one source for both.
SPOT_MAX_QTY = "9000000.00000000"
PERP_MAX_QTY = "1000"
PERP_MARKET_MAX_QTY = "120"


def format_number(value: float) -> str:
    """Shortest round-tripping decimal string, positional (``0.00001``, not ``1e-05``)."""
    text = repr(float(value))
    if "e" in text or "E" in text:
        text = np.format_float_positional(value, unique=True, trim="-")
    elif text.endswith(".0"):
        text = text[:-2]
    return text


def _empty_bars() -> Bars:
    f = np.empty(0, dtype=np.float64)
    return Bars(np.empty(0, dtype=np.int64), f, f, f, f, f)


def concat_bars(parts: list[Bars]) -> Bars:
    parts = [p for p in parts if len(p)]
    if not parts:
        return _empty_bars()
    if len(parts) == 1:
        return parts[0]
    return Bars(*(np.concatenate([getattr(p, f) for p in parts])
                  for f in ("ts_ms", "open", "high", "low", "close", "volume")))


def aggregate_bars(bars: Bars, interval_ms: int) -> Bars:
    """Roll candles up to ``interval_ms`` buckets aligned on the UTC epoch (Binance's
    alignment for 1m..1d): open of the first, max high, min low, close of the last, summed
    volume. A bucket with no finer candle (an outage) produces no candle, as on Binance."""
    if len(bars) == 0:
        return _empty_bars()
    bucket = bars.ts_ms - bars.ts_ms % interval_ms
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    ends = np.r_[starts[1:], len(bucket)] - 1
    return Bars(bucket[starts], bars.open[starts], np.maximum.reduceat(bars.high, starts),
                np.minimum.reduceat(bars.low, starts), bars.close[ends], np.add.reduceat(bars.volume, starts))


@dataclass(frozen=True)
class KlineSource:
    """Where the candles of one (symbol, interval) come from: the stored series at the
    requested interval (``ratio == 1``), or a finer stored series rolled up (``full`` is its
    complete roll-up, ``fine`` the finer candles, needed to build the open bar)."""

    full: Bars
    fine: Bars | None  # None when served at the stored timeframe
    interval_ms: int


def visible_window(source: KlineSource, now_ms: int, start_ms: int | None, end_ms: int | None,
                   limit: int) -> Bars:
    """Candles a klines request selects at ``now_ms``: open time in [start, end] and <= now;
    with ``start`` the first ``limit`` of them, without it the last ``limit`` (Binance)."""
    full, step = source.full, source.interval_ms
    upper = now_ms if end_ms is None else min(end_ms, now_ms)
    if source.fine is None:
        head_end = int(np.searchsorted(full.ts_ms, upper, side="right"))
        partial = _empty_bars()
    else:
        open_bucket = now_ms - now_ms % step
        head_end = int(np.searchsorted(full.ts_ms, min(open_bucket - 1, upper), side="right"))
        partial = _empty_bars()
        if open_bucket <= upper and (start_ms is None or open_bucket >= start_ms):
            lo = int(np.searchsorted(source.fine.ts_ms, open_bucket, side="left"))
            hi = int(np.searchsorted(source.fine.ts_ms, now_ms, side="right"))
            partial = aggregate_bars(source.fine.slice(lo, hi), step)
    if start_ms is not None:
        lo = int(np.searchsorted(full.ts_ms, start_ms, side="left"))
        head = full.slice(lo, min(head_end, lo + limit)) if lo < head_end else _empty_bars()
        out = concat_bars([head, partial])
        return out.slice(0, limit)
    head = full.slice(max(0, head_end - limit), head_end)
    out = concat_bars([head, partial])
    return out.slice(max(0, len(out) - limit), len(out))


def kline_rows(bars: Bars, interval_ms: int) -> list[list]:
    """Binance's 12-field kline arrays. Fields the data dir does not hold are not invented:
    quote volume is base volume x the bar's mean of OHLC (an estimate, flagged in the
    module docstring), trade count and taker-buy volumes are 0."""
    ts = bars.ts_ms.tolist()
    o, h, l, c, v = (getattr(bars, f).tolist() for f in ("open", "high", "low", "close", "volume"))
    rows = []
    for i, t in enumerate(ts):
        quote_volume = v[i] * (o[i] + h[i] + l[i] + c[i]) / 4.0
        rows.append([t, format_number(o[i]), format_number(h[i]), format_number(l[i]), format_number(c[i]),
                     format_number(v[i]), t + interval_ms - 1, format_number(quote_volume), 0, "0", "0", "0"])
    return rows


def visible_funding(funding: Funding, now_ms: int, start_ms: int | None, end_ms: int | None,
                    limit: int) -> Funding:
    """Settlements a fundingRate request selects: time in [start, end] and <= now; with
    ``start`` the first ``limit``, without it the most recent ``limit`` (Binance)."""
    upper = now_ms if end_ms is None else min(end_ms, now_ms)
    hi = int(np.searchsorted(funding.ts_ms, upper, side="right"))
    if start_ms is not None:
        lo = int(np.searchsorted(funding.ts_ms, start_ms, side="left"))
        hi = max(lo, min(hi, lo + limit))
    else:
        lo = max(0, hi - limit)
    return Funding(funding.ts_ms[lo:hi], funding.rate[lo:hi])


def next_funding_ms(now_ms: int) -> int:
    """Next 8-hourly settlement (00:00, 08:00, 16:00 UTC) strictly after ``now_ms``."""
    return (now_ms // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS


@dataclass(frozen=True)
class SymbolFilters:
    """Trading filters derived from the price level (the data dir has none):
    about seven significant digits of price, and a quantity step worth at most about 1 quote
    unit (BTC at 30 000 -> tick 0.01, step 0.00001; XRP at 0.5 -> tick 0.0000001, step 1)."""

    tick_size: str
    step_size: str
    price_decimals: int
    qty_decimals: int
    min_notional: str = "5"


def listed_markets(markets: dict, bars_of, refused: dict[str, str], now_ms: int) -> dict:
    """``{id: (market, bars)}`` of the markets whose first candle opened by ``now``, with their finest
    stored candles (``bars_of(market)``). A bad file refuses only its own symbol (its one-line reason
    kept in ``refused``, cleared once the file reads again), never the others."""
    out = {}
    for market_id, market in markets.items():
        try:
            bars = bars_of(market)
        except DataError as exc:
            refused[market_id] = str(exc)
            continue
        refused.pop(market_id, None)
        if len(bars) and bars.ts_ms[0] <= now_ms:
            out[market_id] = (market, bars)
    return out


def derive_filters(price: float) -> SymbolFilters:
    if not (price > 0 and math.isfinite(price)):
        raise ValueError(f"price level must be positive and finite, got {price}")
    tick_exp = math.floor(math.log10(price)) - 6
    step_exp = min(0, math.floor(math.log10(1.0 / price)))
    return SymbolFilters(tick_size=_pow10(tick_exp), step_size=_pow10(step_exp),
                         price_decimals=max(0, -tick_exp), qty_decimals=max(0, -step_exp))


def _pow10(exp: int) -> str:
    return format(Decimal(1).scaleb(exp), "f")


def ticker_24h(bars: Bars, now_ms: int) -> dict | None:
    """Rolling 24h statistics at ``now_ms`` from the visible candles (open time in
    (now - 24h, now]); None when the window holds none (nothing traded)."""
    hi = int(np.searchsorted(bars.ts_ms, now_ms, side="right"))
    lo = int(np.searchsorted(bars.ts_ms, now_ms - DAY_MS, side="right"))
    if hi <= lo:
        return None
    w = bars.slice(lo, hi)
    volume = float(w.volume.sum())
    quote_volume = float((w.volume * (w.open + w.high + w.low + w.close) / 4.0).sum())
    open_price, last = float(w.open[0]), float(w.close[-1])
    prev_close = float(bars.close[lo - 1]) if lo > 0 else open_price
    return {
        "priceChange": format_number(last - open_price),
        "priceChangePercent": f"{(last / open_price - 1.0) * 100.0:.3f}",
        "weightedAvgPrice": format_number(quote_volume / volume) if volume > 0 else format_number(last),
        "prevClosePrice": format_number(prev_close),
        "lastPrice": format_number(last),
        "openPrice": format_number(open_price),
        "highPrice": format_number(float(w.high.max())),
        "lowPrice": format_number(float(w.low.min())),
        "volume": format_number(volume),
        "quoteVolume": format_number(quote_volume),
        "openTime": int(now_ms - DAY_MS),
        "closeTime": int(now_ms),
    }
