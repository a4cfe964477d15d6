"""The local exchange's USDT-M account endpoints: leverage, margin type, brackets, account,
balance, positions and liquidation orders (HTTP params in, Binance JSON out).

    POST /fapi/v1/leverage            1..125 (-4028), at most the bracket's leverage for the
                                      position's notional (-2027), enough margin to lower it (-2028)
    POST /fapi/v1/marginType          ISOLATED | CROSSED; -4046 unchanged, -4048 with a position,
                                      -4047 with open orders (regular or algo)
    GET  /fapi/v1/symbolConfig        marginType, leverage, maxNotionalValue per symbol
    GET|POST /fapi/v1/positionSide/dual   one-way mode only
    GET  /fapi/v1/leverageBracket     ``qt.margin``'s brackets (Binance's BTCUSDT table, every symbol)
    GET  /fapi/v1/commissionRate
    GET  /fapi/v1/forceOrders         the account's liquidation orders (``exchange.liquidation``)
    GET  /fapi/v2|v3/account, /fapi/v2|v3/balance, /fapi/v2|v3/positionRisk

Served through ``exchange.trading.TradingVenue`` (signed, under its lock); the venue is passed
in (``futures_routes(venue)``) so this module does not import it.
"""

from __future__ import annotations

from decimal import Decimal

from qt.margin import max_notional
from exchange import shapes
from exchange.ledger import BRACKETS, Rejected
from exchange.liquidation import force_orders
from exchange.orders import PERP
from exchange.params import bool_param, int_param, mandatory, required


def futures_routes(venue) -> list[tuple[str, str, object]]:
    """(method, path, handler(params, now_ms)) of the USDT-M account endpoints of ``venue``
    (an ``exchange.trading.TradingVenue``)."""

    def listed_symbols(now_ms: int) -> list[str]:
        return sorted(s for s in venue.data.markets(PERP) if venue.is_listed(PERP, s, now_ms))

    def leverage(params: dict, now_ms: int) -> dict:
        symbol = required(params, "symbol")
        value = int_param(params, "leverage")
        if value is None:
            raise mandatory("leverage")
        venue.listed(PERP, symbol, now_ms)
        venue.engine.set_leverage(symbol, value, venue.marks(now_ms, (symbol,)))
        return {"leverage": value, "maxNotionalValue": shapes.num(Decimal(max_notional(value, BRACKETS))),
                "symbol": symbol}

    def symbol_config(params: dict, now_ms: int) -> list[dict]:
        """Leverage and margin type per symbol (what ccxt's fetch_leverage / fetch_margin_mode read)."""
        symbol = params.get("symbol")
        if symbol:
            venue.listed(PERP, symbol, now_ms)
        futures = venue.engine.futures
        return [{"symbol": s, "marginType": futures.margin_type_of(s), "isAutoAddMargin": False,
                 "leverage": futures.leverage_of(s), "maxNotionalValue": shapes.max_notional_of(futures, s)}
                for s in ([symbol] if symbol else listed_symbols(now_ms))]

    def margin_type(params: dict, now_ms: int) -> dict:
        symbol = required(params, "symbol")
        venue.listed(PERP, symbol, now_ms)
        wanted = required(params, "marginType").upper()
        venue.engine.set_margin_type(symbol, "CROSSED" if wanted == "CROSS" else wanted)
        return {"code": 200, "msg": "success"}

    def position_mode(params: dict, now_ms: int) -> dict:
        return {"dualSidePosition": False}

    def set_position_mode(params: dict, now_ms: int) -> dict:
        if bool_param(params, "dualSidePosition"):
            raise Rejected(-1130, "Data sent for parameter 'dualSidePosition' is not valid. "
                                  "(local exchange: only one-way mode is simulated)")
        raise Rejected(-4059, "No need to change position side.")

    def leverage_bracket(params: dict, now_ms: int) -> list:
        symbol = params.get("symbol")
        if symbol:
            venue.listed(PERP, symbol, now_ms)
            return shapes.leverage_brackets([symbol])
        return shapes.leverage_brackets(sorted(venue.data.markets(PERP)))

    def commission_rate(params: dict, now_ms: int) -> dict:
        symbol = required(params, "symbol")
        venue.listed(PERP, symbol, now_ms)
        fees = venue.engine.fees
        return {"symbol": symbol, "makerCommissionRate": shapes.num(fees.perp_maker),
                "takerCommissionRate": shapes.num(fees.perp_taker)}

    def order_margins(symbols) -> dict[str, Decimal]:
        return {s: venue.engine.open_order_margin(s) for s in symbols}

    def symbols_in_use() -> list[str]:
        engine = venue.engine
        return sorted({*engine.futures.open_symbols(), *(o.symbol for o in engine.open_orders(PERP)),
                       *(o.symbol for o in engine.open_orders(PERP, algo=True))})

    def account(version: int):
        def handler(params: dict, now_ms: int) -> dict:
            symbols = symbols_in_use()
            return shapes.futures_account(venue.engine.futures, venue.marks(now_ms, tuple(symbols)),
                                          order_margins(symbols), now_ms, version)
        return handler

    def balance(params: dict, now_ms: int) -> list:
        return shapes.futures_balance(venue.engine.futures, venue.marks(now_ms), venue.engine.open_order_margin(),
                                      now_ms)

    def position_risk(version: int):
        def handler(params: dict, now_ms: int) -> list:
            symbol = params.get("symbol")
            if symbol:
                venue.listed(PERP, symbol, now_ms)
                symbols = [symbol]
            elif version == 2:
                symbols = listed_symbols(now_ms)
            else:
                symbols = symbols_in_use()
            if version == 3:
                in_use = set(symbols_in_use())
                symbols = [s for s in symbols if s in in_use]
            return shapes.position_risk(venue.engine.futures, venue.marks(now_ms, tuple(symbols)),
                                        order_margins(symbols), symbols, version)
        return handler

    def liquidations(params: dict, now_ms: int) -> list:
        symbol = params.get("symbol") or None
        if symbol:
            venue.listed(PERP, symbol, now_ms)
        rows = force_orders(list(venue.engine.orders.values()), symbol, params.get("autoCloseType") or None,
                            int_param(params, "startTime"), int_param(params, "endTime"), int_param(params, "limit"),
                            now_ms)
        return [shapes.perp_order(o) for o in rows]

    return [
        ("POST", "/fapi/v1/leverage", leverage), ("POST", "/fapi/v1/marginType", margin_type),
        ("GET", "/fapi/v1/symbolConfig", symbol_config),
        ("GET", "/fapi/v1/positionSide/dual", position_mode), ("POST", "/fapi/v1/positionSide/dual", set_position_mode),
        ("GET", "/fapi/v1/leverageBracket", leverage_bracket), ("GET", "/fapi/v1/commissionRate", commission_rate),
        ("GET", "/fapi/v1/forceOrders", liquidations),
        ("GET", "/fapi/v2/account", account(2)), ("GET", "/fapi/v3/account", account(3)),
        ("GET", "/fapi/v2/balance", balance), ("GET", "/fapi/v3/balance", balance),
        ("GET", "/fapi/v2/positionRisk", position_risk(2)), ("GET", "/fapi/v3/positionRisk", position_risk(3)),
    ]


__all__ = ["futures_routes"]
