"""The local exchange's public market-data answers, built from the data dir at the exchange clock.

``MarketData`` answers one market type (spot or perp): exchangeInfo, klines (stored or built
from finer candles), 24h tickers, funding rates, premium index and open-interest history, in
Binance's JSON shapes with its error codes (``BinanceError``). Its own module, apart from the
server (``exchange.local``: the app, the clock, fault injection and request weights), because
what a market looks like at an instant is one job and serving it over HTTP another.
"""

from __future__ import annotations

import json
import threading

from exchange.datadir import Bars, DataDir, Kind, MarketFiles
from exchange.depth import DEFAULT_LIMIT, PERP_LIMITS, SPOT_LIMITS, synthetic_book
from exchange.views import (PERP_MARKET_MAX_QTY, PERP_MAX_QTY, SPOT_MAX_QTY, KlineSource, aggregate_bars,
                            derive_filters, format_number, kline_rows, listed_markets, next_funding_ms, ticker_24h,
                            visible_funding, visible_window)
from qt.errors import DataError
from qt.timeframes import TIMEFRAME_MS

# Binance intervals we can build from stored candles (epoch-aligned buckets). 3d/1w/1M are
# aligned differently on Binance and are refused rather than served misaligned.
INTERVAL_MS = TIMEFRAME_MS
BINANCE_INTERVALS = (*INTERVAL_MS, "1s", "3d", "1w", "1M")
KLINES_MAX_LIMIT = {"spot": 1000, "perp": 1500}
KLINES_DEFAULT_LIMIT = 500
FUNDING_DEFAULT_LIMIT, FUNDING_MAX_LIMIT = 100, 1000
OI_PERIODS = ("5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d")


class BinanceError(Exception):
    """An error answered the way Binance answers it: HTTP status + {"code", "msg"}."""

    def __init__(self, status: int, code: int, msg: str):
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def _invalid_symbol(reason: str | None = None) -> BinanceError:
    """Binance's -1121; ``reason`` (a bad data file) is appended so a client sees why in one line."""
    return BinanceError(400, -1121, "Invalid symbol." + (f" (local exchange: {reason})" if reason else ""))


def _mandatory(name: str) -> BinanceError:
    return BinanceError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def _int_param(params, name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 20:
        raise BinanceError(400, -1100, f"Illegal characters found in parameter '{name}'; "
                                       f"legal range is '^[0-9]{{1,20}}$'.")
    return int(raw)


def _limit_param(params, default: int, maximum: int) -> int:
    limit = _int_param(params, "limit")
    if limit is None:
        return default
    if limit < 1:
        raise BinanceError(400, -1130, "Data sent for parameter 'limit' is not valid.")
    return min(limit, maximum)  # Binance caps an oversized limit at the maximum


def _time_range(params) -> tuple[int | None, int | None]:
    start, end = _int_param(params, "startTime"), _int_param(params, "endTime")
    if start is not None and end is not None and start > end:
        raise BinanceError(400, -1023, "Start time is greater than end time.")
    return start, end


class MarketData:
    """Builds the answers for one market type (spot or perp) from the data dir at the clock."""

    def __init__(self, data: DataDir, kind: Kind, clock):
        self.data, self.kind, self.clock = data, kind, clock
        self._agg_lock = threading.Lock()
        self._agg_cache: dict[tuple[str, int, int], Bars] = {}
        self.refused: dict[str, str] = {}  # exchange id -> why its data file cannot be served

    # -- what is listed -------------------------------------------------------------------
    def listed(self, now_ms: int) -> dict[str, tuple[MarketFiles, Bars]]:
        """Markets whose first candle opened by ``now``, with their finest stored candles."""
        return listed_markets(self.data.markets(self.kind), lambda m: self.data.bars(m, m.finest_timeframe),
                              self.refused, now_ms)

    def market(self, params, now_ms: int, required: bool = True) -> tuple[MarketFiles, Bars] | None:
        symbol = params.get("symbol")
        if not symbol:
            if required:
                raise _mandatory("symbol")
            return None
        hit = self.listed(now_ms).get(symbol)
        if hit is None:
            raise _invalid_symbol(self.refused.get(symbol))
        return hit

    # -- klines ---------------------------------------------------------------------------
    def kline_source(self, market: MarketFiles, interval: str) -> KlineSource:
        if interval not in BINANCE_INTERVALS:
            raise BinanceError(400, -1120, "Invalid interval.")
        step = INTERVAL_MS.get(interval)
        if interval in market.candle_files:
            return KlineSource(self.data.bars(market, interval), None, step)
        divisors = [tf for tf in market.candle_files if step is not None and step % INTERVAL_MS[tf] == 0]
        if not divisors:
            have = ", ".join(sorted(market.candle_files, key=lambda t: INTERVAL_MS[t]))
            raise BinanceError(400, -1120, f"Invalid interval. (local exchange: {market.exchange_id} has only "
                                           f"{have} candles; {interval} cannot be built from them)")
        finest = min(divisors, key=lambda t: INTERVAL_MS[t])
        fine = self.data.bars(market, finest)
        key = (str(market.candle_files[finest]), id(fine), step)
        with self._agg_lock:
            full = self._agg_cache.get(key)
        if full is None:
            full = aggregate_bars(fine, step)
            with self._agg_lock:
                self._agg_cache = {k: v for k, v in self._agg_cache.items() if k[0] != key[0] or k[2] != step}
                self._agg_cache[key] = full
        return KlineSource(full, fine, step)

    def klines(self, params) -> list[list]:
        now_ms = self.clock.now_ms()
        market, _ = self.market(params, now_ms)
        interval = params.get("interval")
        if not interval:
            raise _mandatory("interval")
        try:
            source = self.kline_source(market, interval)
        except DataError as exc:  # another timeframe's file of this symbol is bad
            raise _invalid_symbol(str(exc)) from None
        limit = _limit_param(params, KLINES_DEFAULT_LIMIT, KLINES_MAX_LIMIT[self.kind])
        start, end = _time_range(params)
        return kline_rows(visible_window(source, now_ms, start, end, limit), source.interval_ms)

    # -- exchangeInfo ---------------------------------------------------------------------
    def exchange_info(self, params) -> dict:
        now_ms = self.clock.now_ms()
        listed = self.listed(now_ms)
        wanted = _wanted_symbols(params)
        if wanted is not None:
            unknown = [s for s in wanted if s not in listed]
            if unknown:
                raise _invalid_symbol(next((self.refused[s] for s in unknown if s in self.refused), None))
            listed = {s: listed[s] for s in wanted}
        symbols = [self._symbol_info(market, bars, now_ms) for market, bars in listed.values()]
        info = {"timezone": "UTC", "serverTime": now_ms, "rateLimits": _RATE_LIMITS, "exchangeFilters": [],
                "symbols": symbols}
        if self.kind == "perp":
            info["futuresType"] = "U_MARGINED"
            info["assets"] = [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}]
        return info

    def _symbol_info(self, market: MarketFiles, bars: Bars, now_ms: int) -> dict:
        last = int(bars.ts_ms.searchsorted(now_ms, side="right")) - 1
        f = derive_filters(float(bars.close[last]))
        if self.kind == "spot":
            return {
                "symbol": market.exchange_id, "status": "TRADING",
                "baseAsset": market.base, "baseAssetPrecision": 8,
                "quoteAsset": market.quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
                "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
                "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
                "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True,
                "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": True, "cancelReplaceAllowed": True,
                "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": f.tick_size, "maxPrice": "1000000.00000000",
                     "tickSize": f.tick_size},
                    {"filterType": "LOT_SIZE", "minQty": f.step_size, "maxQty": SPOT_MAX_QTY,
                     "stepSize": f.step_size},
                    {"filterType": "NOTIONAL", "minNotional": f.min_notional, "applyMinToMarket": True,
                     "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
                ],
                "permissions": [], "permissionSets": [["SPOT"]],
                "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
            }
        return {
            "symbol": market.exchange_id, "pair": market.exchange_id, "contractType": "PERPETUAL",
            "deliveryDate": 4133404800000, "onboardDate": int(bars.ts_ms[0]), "status": "TRADING",
            "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000",
            "baseAsset": market.base, "quoteAsset": market.quote, "marginAsset": "USDT",
            "pricePrecision": f.price_decimals, "quantityPrecision": f.qty_decimals,
            "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN", "underlyingSubType": [],
            "settlePlan": 0, "triggerProtect": "0.0500", "liquidationFee": "0.012500",
            "marketTakeBound": "0.05", "maxMoveOrderLimit": 10000,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": f.tick_size, "maxPrice": "4529764",
                 "tickSize": f.tick_size},
                {"filterType": "LOT_SIZE", "minQty": f.step_size, "maxQty": PERP_MAX_QTY, "stepSize": f.step_size},
                {"filterType": "MARKET_LOT_SIZE", "minQty": f.step_size, "maxQty": PERP_MARKET_MAX_QTY,
                 "stepSize": f.step_size},
                {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                {"filterType": "MIN_NOTIONAL", "notional": f.min_notional},
                {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
                 "multiplierDecimal": "4"},
            ],
            "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                           "TRAILING_STOP_MARKET"],
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
        }

    # -- order book (invented from the current candle: exchange.depth) ----------------------
    def depth(self, params) -> dict:
        now_ms = self.clock.now_ms()
        _, bars = self.market(params, now_ms)
        limits = PERP_LIMITS if self.kind == "perp" else SPOT_LIMITS
        limit = _int_param(params, "limit") or DEFAULT_LIMIT
        if limit not in limits:
            raise BinanceError(400, -1100, f"Illegal characters found in parameter 'limit'; legal range is "
                                           f"'{', '.join(map(str, limits))}'.")
        return synthetic_book(bars, now_ms, limit, perp=self.kind == "perp")

    # -- tickers --------------------------------------------------------------------------
    def ticker_24hr(self, params) -> dict | list[dict]:
        now_ms = self.clock.now_ms()
        listed = self.listed(now_ms)
        single = params.get("symbol")
        wanted = [single] if single else _wanted_symbols(params)
        if wanted is not None and any(s not in listed for s in wanted):
            raise _invalid_symbol()
        ids = wanted if wanted is not None else list(listed)
        out = [self._ticker(exchange_id, listed[exchange_id][1], now_ms) for exchange_id in ids]
        return out[0] if single else out

    def _ticker(self, exchange_id: str, bars: Bars, now_ms: int) -> dict:
        stats = ticker_24h(bars, now_ms)
        if stats is None:  # listed, but nothing traded in the last 24h (the data stops before now)
            last = format_number(float(bars.close[int(bars.ts_ms.searchsorted(now_ms, side="right")) - 1]))
            stats = {"priceChange": "0", "priceChangePercent": "0.000", "weightedAvgPrice": last,
                     "prevClosePrice": last, "lastPrice": last, "openPrice": last, "highPrice": last,
                     "lowPrice": last, "volume": "0", "quoteVolume": "0",
                     "openTime": now_ms - 86_400_000, "closeTime": now_ms}
        if self.kind == "perp":
            stats.pop("prevClosePrice")
        return {"symbol": exchange_id, **stats}

    # -- funding (perps) ------------------------------------------------------------------
    def funding_rate(self, params) -> list[dict]:
        now_ms = self.clock.now_ms()
        limit = _limit_param(params, FUNDING_DEFAULT_LIMIT, FUNDING_MAX_LIMIT)
        start, end = _time_range(params)
        hit = self.market(params, now_ms, required=False)
        markets = [hit[0]] if hit else [m for m, _ in self.listed(now_ms).values()]
        rows = []
        for market in markets:
            settled = visible_funding(self.data.funding(market), now_ms, start, end, limit)
            rows += [{"symbol": market.exchange_id, "fundingTime": t, "fundingRate": format_number(r)}
                     for t, r in zip(settled.ts_ms.tolist(), settled.rate.tolist())]
        if len(markets) > 1:
            rows.sort(key=lambda r: (r["fundingTime"], r["symbol"]))
            rows = rows[:limit] if start is not None else rows[-limit:]
        return rows

    def premium_index(self, params) -> dict | list[dict]:
        now_ms = self.clock.now_ms()
        hit = self.market(params, now_ms, required=False)
        pairs = [hit] if hit else list(self.listed(now_ms).values())
        out = []
        for market, bars in pairs:
            last = format_number(float(bars.close[int(bars.ts_ms.searchsorted(now_ms, side="right")) - 1]))
            settled = visible_funding(self.data.funding(market), now_ms, None, None, 1)
            rate = format_number(float(settled.rate[-1])) if len(settled.rate) else "0"
            out.append({"symbol": market.exchange_id, "markPrice": last, "indexPrice": last,
                        "estimatedSettlePrice": last, "lastFundingRate": rate, "interestRate": "0.00010000",
                        "nextFundingTime": next_funding_ms(now_ms), "time": now_ms})
        return out[0] if hit else out

    def open_interest_hist(self, params) -> list:
        now_ms = self.clock.now_ms()
        self.market(params, now_ms)
        period = params.get("period")
        if not period:
            raise _mandatory("period")
        if period not in OI_PERIODS:
            raise BinanceError(400, -1130, "Data sent for parameter 'period' is not valid.")
        _limit_param(params, 30, 500)
        _time_range(params)
        return []  # the data dir holds no open interest: the exchange offers none here


_RATE_LIMITS = [
    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
    {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
]


def _wanted_symbols(params) -> list[str] | None:
    """``symbols=["BTCUSDT","ETHUSDT"]`` (Binance's JSON-array parameter), or None when absent."""
    raw = params.get("symbols")
    if raw is None:
        symbol = params.get("symbol")
        return [symbol] if symbol else None
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise BinanceError(400, -1100, "Illegal characters found in parameter 'symbols'; legal range is "
                                       "'^\\[(\"[A-Z0-9-_.]{1,20}\"(,\"[A-Z0-9-_.]{1,20}\"){0,}){0,1}\\]$'.")
    return value


__all__ = ["BINANCE_INTERVALS", "BinanceError", "INTERVAL_MS", "KLINES_DEFAULT_LIMIT", "MarketData"]
