"""Bybit v5 public market data (category ``linear``) from the data dir at the exchange clock.

The same visibility rules as the Binance side (``exchange.views``: a candle exists once it
opened, a settlement once it happened, a symbol once its first candle opened), in Bybit's
shapes: every number a string, lists **newest first**, ``limit`` checked against Bybit's
maxima. Row selection (Bybit's behaviour as its users report it, and the one ccxt's ``since``
pagination relies on): with ``start`` the first ``limit`` candles from the one whose interval
contains ``start`` (so ``start = last open + 1`` returns that last candle again; ccxt drops it,
ccxt/ccxt#20646), without it the last ``limit`` up to ``end`` (or now); funding history refuses
``startTime`` without ``endTime`` as Bybit documents, and with both gives the first ``limit``.

What the data dir cannot say is not invented: turnover is volume x mean(OHLC) (an estimate),
tickers have no bid/ask/open interest (empty strings), ``fundingRate`` in a ticker is the last
*settled* rate (Bybit shows a running estimate), the index price is the mark price, and
open interest is an empty list.
"""

from __future__ import annotations

from exchange.bybit.envelope import (int_param, limit_param, linear_category, not_supported_symbol, params_error,
                                     require)
from exchange.bybit.files import BybitFiles, BybitMarket
from exchange.datadir import Bars, DataDir
from exchange.views import (PERP_MARKET_MAX_QTY, PERP_MAX_QTY, KlineSource, aggregate_bars, derive_filters,
                            format_number, listed_markets, next_funding_ms, ticker_24h, visible_funding,
                            visible_window)
from qt.errors import DataError
from qt.timeframes import TIMEFRAME_MS

# Bybit interval -> our timeframe. W and M are aligned differently on Bybit: refused, not misaligned.
INTERVALS = {"1": "1m", "3": "3m", "5": "5m", "15": "15m", "30": "30m", "60": "1h", "120": "2h",
             "240": "4h", "360": "6h", "720": "12h", "D": "1d"}
KLINE_DEFAULT_LIMIT, KLINE_MAX_LIMIT = 200, 1000
FUNDING_DEFAULT_LIMIT, FUNDING_MAX_LIMIT = 200, 200
INSTRUMENTS_DEFAULT_LIMIT, INSTRUMENTS_MAX_LIMIT = 500, 1000
OI_INTERVALS = ("5min", "15min", "30min", "1h", "4h", "1d")


def _last_index(bars: Bars, now_ms: int) -> int:
    return int(bars.ts_ms.searchsorted(now_ms, side="right")) - 1


def kline_list(bars: Bars, with_volume: bool = True) -> list[list[str]]:
    """Bybit's kline rows, newest first: [start, open, high, low, close, volume, turnover]
    (mark-price klines: the first five)."""
    ts = bars.ts_ms.tolist()
    o, h, l, c, v = (getattr(bars, f).tolist() for f in ("open", "high", "low", "close", "volume"))
    rows = []
    for i in range(len(ts) - 1, -1, -1):
        row = [str(ts[i]), format_number(o[i]), format_number(h[i]), format_number(l[i]), format_number(c[i])]
        if with_volume:
            row += [format_number(v[i]), format_number(v[i] * (o[i] + h[i] + l[i] + c[i]) / 4.0)]
        rows.append(row)
    return rows


class BybitMarketData:
    """Builds the ``result`` of each public v5 endpoint."""

    def __init__(self, data: DataDir, clock):
        self.files, self.clock = BybitFiles(data), clock
        self.refused: dict[str, str] = {}  # symbol -> why its data file cannot be served

    # -- what is listed -------------------------------------------------------------------
    def listed(self, now_ms: int) -> dict[str, tuple[BybitMarket, Bars]]:
        """Markets whose first candle opened by ``now`` (a bad file hides only its own symbol)."""
        return listed_markets(dict(sorted(self.files.markets().items())), lambda m: self.files.bars(m, m.finest_timeframe),
                              self.refused, now_ms)

    def market(self, params, now_ms: int, default_category: str | None = None) -> tuple[BybitMarket, Bars]:
        linear_category(params, default_category)
        symbol = require(params, "symbol")
        hit = self.listed(now_ms).get(symbol)
        if hit is None:
            raise not_supported_symbol(self.refused.get(symbol))
        return hit

    # -- time -----------------------------------------------------------------------------
    def time(self, _params) -> dict:
        now_ms = self.clock.now_ms()
        return {"timeSecond": str(now_ms // 1000), "timeNano": str(now_ms * 1_000_000)}

    # -- instruments ----------------------------------------------------------------------
    def instruments_info(self, params) -> dict:
        now_ms = self.clock.now_ms()
        linear_category(params)
        limit = limit_param(params, INSTRUMENTS_DEFAULT_LIMIT, INSTRUMENTS_MAX_LIMIT)
        status = params.get("status") or "Trading"
        listed = self.listed(now_ms) if status == "Trading" else {}  # nothing pre-launch, settling or closed
        if params.get("symbol"):
            listed = {s: v for s, v in listed.items() if s == params["symbol"]}
        if params.get("baseCoin"):
            listed = {s: v for s, v in listed.items() if v[0].base == params["baseCoin"]}
        symbols = list(listed)
        cursor = params.get("cursor")
        start = 0
        if cursor:
            if not cursor.startswith("after=") or cursor[len("after="):] not in symbols:
                raise params_error("cursor invalid")
            start = symbols.index(cursor[len("after="):]) + 1
        page = symbols[start:start + limit]
        more = start + limit < len(symbols)
        return {"category": "linear",
                "list": [self._instrument(*listed[s], now_ms) for s in page],
                "nextPageCursor": f"after={page[-1]}" if more and page else ""}

    @staticmethod
    def _instrument(market: BybitMarket, bars: Bars, now_ms: int) -> dict:
        f = derive_filters(float(bars.close[_last_index(bars, now_ms)]))
        return {
            "symbol": market.symbol, "contractType": "LinearPerpetual", "status": "Trading",
            "baseCoin": market.base, "quoteCoin": market.quote, "settleCoin": market.quote,
            "launchTime": str(int(bars.ts_ms[0])), "deliveryTime": "0", "deliveryFeeRate": "",
            "priceScale": str(f.price_decimals),
            "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
            "priceFilter": {"minPrice": f.tick_size, "maxPrice": "1999999.80", "tickSize": f.tick_size},
            "lotSizeFilter": {"maxOrderQty": PERP_MAX_QTY, "maxMktOrderQty": PERP_MARKET_MAX_QTY,
                              "minOrderQty": f.step_size, "qtyStep": f.step_size,
                              "postOnlyMaxOrderQty": PERP_MAX_QTY, "minNotionalValue": f.min_notional},
            "unifiedMarginTrade": True, "fundingInterval": 480, "copyTrading": "both",
            "upperFundingRate": "0.0075", "lowerFundingRate": "-0.0075", "isPreListing": False,
            "preListingInfo": None,
        }

    # -- klines ---------------------------------------------------------------------------
    def _source(self, series: dict[str, Bars], interval: str) -> KlineSource:
        timeframe = INTERVALS.get(interval)
        if timeframe is None:
            raise params_error(f"interval {interval} is not served (W and M are not built locally)")
        step = TIMEFRAME_MS[timeframe]
        if timeframe in series:
            return KlineSource(series[timeframe], None, step)
        finer = [tf for tf in series if step % TIMEFRAME_MS[tf] == 0]
        if not finer:
            raise params_error(f"interval {interval} cannot be built from the stored {sorted(series)} candles")
        fine = series[min(finer, key=TIMEFRAME_MS.get)]
        return KlineSource(aggregate_bars(fine, step), fine, step)

    def _klines(self, params, mark: bool) -> dict:
        now_ms = self.clock.now_ms()
        market, _ = self.market(params, now_ms, default_category="linear")  # Bybit's kline default
        interval = require(params, "interval")
        limit = limit_param(params, KLINE_DEFAULT_LIMIT, KLINE_MAX_LIMIT)
        start, end = int_param(params, "start"), int_param(params, "end")
        if start is not None and end is not None and start > end:
            raise params_error("start must not be after end")
        files = market.mark_files if mark else market.candle_files
        read = self.files.mark_bars if mark else self.files.bars
        try:
            series = {tf: read(market, tf) for tf in files}
        except DataError as exc:  # another file of this symbol (a mark file) is bad
            raise not_supported_symbol(str(exc)) from None
        if not series:
            return {"category": "linear", "symbol": market.symbol, "list": []}
        source = self._source(series, interval)
        if start is not None:  # Bybit includes the candle whose interval contains ``start``
            start -= start % source.interval_ms
        window = visible_window(source, now_ms, start, end, limit)
        return {"category": "linear", "symbol": market.symbol, "list": kline_list(window, with_volume=not mark)}

    def kline(self, params) -> dict:
        return self._klines(params, mark=False)

    def mark_price_kline(self, params) -> dict:
        return self._klines(params, mark=True)

    # -- funding --------------------------------------------------------------------------
    def funding_history(self, params) -> dict:
        now_ms = self.clock.now_ms()
        market, _ = self.market(params, now_ms)
        limit = limit_param(params, FUNDING_DEFAULT_LIMIT, FUNDING_MAX_LIMIT)
        start, end = int_param(params, "startTime"), int_param(params, "endTime")
        if start is not None and end is None:
            raise params_error("endTime is required when startTime is given")
        if start is not None and start > end:
            raise params_error("startTime must not be after endTime")
        settled = visible_funding(self.files.funding(market), now_ms, start, end, limit)
        rows = [{"symbol": market.symbol, "fundingRate": format_number(r), "fundingRateTimestamp": str(t)}
                for t, r in zip(settled.ts_ms.tolist(), settled.rate.tolist())]
        return {"category": "linear", "list": rows[::-1]}

    # -- tickers --------------------------------------------------------------------------
    def tickers(self, params) -> dict:
        now_ms = self.clock.now_ms()
        linear_category(params)
        listed = self.listed(now_ms)
        symbol = params.get("symbol")
        if symbol:
            if symbol not in listed:
                raise not_supported_symbol()
            listed = {symbol: listed[symbol]}
        return {"category": "linear", "list": [self._ticker(m, b, now_ms) for m, b in listed.values()]}

    def _ticker(self, market: BybitMarket, bars: Bars, now_ms: int) -> dict:
        i = _last_index(bars, now_ms)
        last = float(bars.close[i])
        stats = ticker_24h(bars, now_ms)
        mark = last
        if market.mark_files:
            try:
                marks = self.files.mark_bars(market, min(market.mark_files, key=TIMEFRAME_MS.get))
                j = _last_index(marks, now_ms)
                mark = float(marks.close[j]) if j >= 0 else last
            except DataError:
                pass
        settled = visible_funding(self.files.funding(market), now_ms, None, None, 1)
        hour_ago = int(bars.ts_ms.searchsorted(now_ms - 3_600_000, side="right")) - 1
        prev_1h = float(bars.close[hour_ago]) if hour_ago >= 0 else float(bars.open[0])
        s = stats or {"openPrice": format_number(last), "highPrice": format_number(last),
                      "lowPrice": format_number(last), "volume": "0", "quoteVolume": "0"}
        prev_24h = float(s["openPrice"])
        return {
            "symbol": market.symbol, "lastPrice": format_number(last), "markPrice": format_number(mark),
            "indexPrice": format_number(mark), "prevPrice24h": s["openPrice"],
            "price24hPcnt": f"{(last / prev_24h - 1.0):.6f}" if prev_24h else "0",
            "highPrice24h": s["highPrice"], "lowPrice24h": s["lowPrice"], "prevPrice1h": format_number(prev_1h),
            "openInterest": "", "openInterestValue": "", "turnover24h": s["quoteVolume"], "volume24h": s["volume"],
            "fundingRate": format_number(float(settled.rate[-1])) if len(settled.rate) else "0",
            "nextFundingTime": str(next_funding_ms(now_ms)), "predictedDeliveryPrice": "", "basisRate": "",
            "deliveryFeeRate": "", "deliveryTime": "0", "bid1Price": "", "bid1Size": "", "ask1Price": "",
            "ask1Size": "", "fundingIntervalHour": "8",
        }

    # -- open interest --------------------------------------------------------------------
    def open_interest(self, params) -> dict:
        now_ms = self.clock.now_ms()
        market, _ = self.market(params, now_ms)
        interval = require(params, "intervalTime")
        if interval not in OI_INTERVALS:
            raise params_error(f"intervalTime must be one of {', '.join(OI_INTERVALS)}")
        limit_param(params, 50, 200)
        return {"category": "linear", "symbol": market.symbol, "list": [], "nextPageCursor": ""}


__all__ = ["BybitMarketData", "INTERVALS", "kline_list"]
