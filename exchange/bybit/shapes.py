"""The thin translation between Bybit v5's order vocabulary and the one matching engine's (pure).

* ``order_request``: a ``/v5/order/create`` body -> ``exchange.orders.OrderRequest``. A plain
  Market/Limit order is a regular order; one with ``triggerPrice`` is a conditional order in
  the engine's algo book: it triggers when the price *rises to* (``triggerDirection`` 1) or
  *falls to* (2) the trigger, i.e. a stop for a buy rising / a sell falling, a take-profit
  otherwise (STOP_MARKET / TAKE_PROFIT_MARKET, with a limit price STOP / TAKE_PROFIT).
* ``order`` / ``execution`` / ``position`` / ``wallet``: engine values -> Bybit's JSON.
  A conditional order keeps its orderId through its life, as on Bybit: Untriggered, then the
  status of the order it placed (Filled ...), Deactivated when cancelled or expired.
* ``retcode_for``: the engine's refusals (Binance codes) -> Bybit's retCodes, so ccxt raises
  the same classes it raises against api.bybit.com.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from exchange.bybit.envelope import (DUPLICATE_ORDER_LINK_ID, INSUFFICIENT_BALANCE, ORDER_NOT_EXISTS, PARAMS_ERROR,
                                     BybitError, params_error, require)
from exchange.ledger import FuturesLedger, Rejected
from exchange.orders import PERP, Order, OrderRequest, Trade
from exchange.shapes import num

_SIDES = {"Buy": "BUY", "Sell": "SELL"}
_TIME_IN_FORCE = {"GTC": "GTC", "IOC": "IOC", "FOK": "FOK", "PostOnly": "GTX"}
_STATUS = {"NEW": "New", "PARTIALLY_FILLED": "PartiallyFilled", "FILLED": "Filled", "CANCELED": "Cancelled",
           "EXPIRED": "Cancelled", "REJECTED": "Rejected"}
_ALGO_STATUS = {"NEW": "Untriggered", "CANCELED": "Deactivated", "EXPIRED": "Deactivated", "REJECTED": "Rejected"}
OPEN_STATUSES = ("New", "PartiallyFilled", "Untriggered")

# The engine's (Binance) refusal codes -> Bybit's retCode; anything else is a params error (10001).
_RETCODES = {-2019: INSUFFICIENT_BALANCE, -2028: 110012, -2010: INSUFFICIENT_BALANCE,
             -2013: ORDER_NOT_EXISTS, -2011: ORDER_NOT_EXISTS, -4116: DUPLICATE_ORDER_LINK_ID,
             -2021: 110092, -2022: 110017, -2027: 110013, -4164: 110094, -1013: 110094}


def retcode_for(err: Rejected) -> BybitError:
    code = _RETCODES.get(err.code, PARAMS_ERROR)
    if err.code == -1121:
        return BybitError(PARAMS_ERROR, "Not supported symbols")
    return BybitError(code, f"{err.msg} (local exchange: engine code {err.code})")


def _decimal(params: dict, name: str) -> Decimal | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise params_error(f"{name} invalid") from None
    if not value.is_finite():
        raise params_error(f"{name} invalid")
    return value


def _bool(params: dict, name: str) -> bool:
    raw = params.get(name)
    return raw is True or str(raw).lower() == "true"


def order_request(params: dict) -> OrderRequest:
    side = _SIDES.get(require(params, "side"))
    if side is None:
        raise params_error("side invalid")
    kind = require(params, "orderType")
    if kind not in ("Market", "Limit"):
        raise params_error("orderType invalid")
    qty = _decimal(params, "qty")
    if qty is None:
        raise params_error("qty is required")
    if str(params.get("positionIdx", "0")) not in ("0", ""):
        raise params_error("position idx not match position mode (local exchange: one-way mode only)")
    tif = _TIME_IN_FORCE.get(params.get("timeInForce") or ("IOC" if kind == "Market" else "GTC"))
    if tif is None:
        raise params_error("timeInForce invalid")
    trigger = _decimal(params, "triggerPrice")
    order_type = kind.upper()
    if trigger is not None:
        direction = str(params.get("triggerDirection") or "")
        if direction not in ("1", "2"):
            raise params_error("triggerDirection must be 1 (rise to) or 2 (fall to) with triggerPrice")
        stop = (direction == "1") == (side == "BUY")
        order_type = ("STOP" if stop else "TAKE_PROFIT") + ("_MARKET" if kind == "Market" else "")
    return OrderRequest(market=PERP, symbol=require(params, "symbol"), side=side, type=order_type, quantity=qty,
                        price=_decimal(params, "price") if kind == "Limit" else None, stop_price=trigger,
                        time_in_force="GTC" if trigger is not None or kind == "Market" else tif,
                        reduce_only=_bool(params, "reduceOnly") or _bool(params, "closeOnTrigger"),
                        client_id=params.get("orderLinkId") or None, algo=trigger is not None)


def _bybit_side(side: str) -> str:
    return "Buy" if side == "BUY" else "Sell"


def order(o: Order, child: Order | None = None, fee: Decimal = Decimal(0)) -> dict:
    """Bybit's order shape; ``child`` is the regular order a triggered conditional placed,
    ``fee`` the commission of the order's fills (USDT)."""
    filled = child if o.algo else o
    if o.algo:
        status = _ALGO_STATUS.get(o.status) or (_STATUS[child.status] if child is not None else "Triggered")
    else:
        status = _STATUS[o.status]
        if status == "Cancelled" and o.executed_qty:
            status = "PartiallyFilledCanceled"
    executed = filled.executed_qty if filled is not None else Decimal(0)
    direction = ""
    if o.algo:
        rising = (o.type.startswith("STOP")) == (o.side == "BUY")
        direction = 1 if rising else 2
    leaves = o.qty - executed if status in OPEN_STATUSES else Decimal(0)
    return {
        "orderId": str(o.order_id), "orderLinkId": o.client_id or "", "blockTradeId": "", "symbol": o.symbol,
        "price": num(o.price), "qty": num(o.qty), "side": _bybit_side(o.side), "isLeverage": "",
        "positionIdx": 0, "orderStatus": status, "cancelType": "UNKNOWN", "rejectReason": "EC_NoError",
        "avgPrice": num(filled.avg_price) if filled is not None and executed else "",
        "leavesQty": num(leaves), "leavesValue": num(leaves * o.price),
        "cumExecQty": num(executed), "cumExecValue": num(filled.cum_quote if filled is not None else 0),
        "cumExecFee": num(fee), "timeInForce": {"GTX": "PostOnly"}.get(o.time_in_force, o.time_in_force),
        "orderType": "Market" if o.type in ("MARKET", "STOP_MARKET", "TAKE_PROFIT_MARKET") else "Limit",
        "stopOrderType": ("StopLoss" if o.type.startswith("STOP") else "TakeProfit") if o.algo and o.reduce_only
        else ("Stop" if o.algo else ""),
        "orderIv": "", "triggerPrice": num(o.stop_price) if o.algo else "", "takeProfit": "", "stopLoss": "",
        "tpTriggerBy": "", "slTriggerBy": "", "triggerDirection": direction,
        "triggerBy": "LastPrice" if o.algo else "", "lastPriceOnCreated": "", "reduceOnly": o.reduce_only,
        "closeOnTrigger": False, "smpType": "None", "smpGroup": 0, "smpOrderId": "", "tpslMode": "",
        "tpLimitPrice": "", "slLimitPrice": "", "placeType": "",
        "createdTime": str(o.created_ms), "updatedTime": str(o.updated_ms),
    }


def execution(t: Trade, o: Order, fee_rate: Decimal) -> dict:
    return {"symbol": t.symbol, "orderId": str(o.order_id if o.parent_algo_id is None else o.parent_algo_id),
            "orderLinkId": o.client_id or "", "side": _bybit_side(t.side), "orderPrice": num(o.price),
            "orderQty": num(o.qty), "leavesQty": num(o.remaining), "orderType": "Market" if o.type == "MARKET"
            else "Limit", "stopOrderType": "", "execFee": num(t.commission), "execId": str(t.trade_id),
            "execPrice": num(t.price), "execQty": num(t.qty), "execType": "Trade", "execValue": num(t.quote_qty),
            "execTime": str(t.time_ms), "isMaker": t.maker, "feeRate": num(fee_rate), "tradeIv": "",
            "markIv": "", "markPrice": num(t.price), "indexPrice": "", "underlyingPrice": "", "blockTradeId": "",
            "closedSize": num(t.qty) if t.realized_pnl else "0", "seq": t.trade_id}


def position(ledger: FuturesLedger, symbol: str, mark: Decimal, now_ms: int) -> dict:
    pos = ledger.position(symbol)
    size = abs(pos.amount)
    isolated = ledger.is_isolated(symbol)
    return {
        "positionIdx": 0, "riskId": 1, "riskLimitValue": "2000000", "symbol": symbol,
        "side": "" if not pos.amount else ("Buy" if pos.amount > 0 else "Sell"), "size": num(size),
        "avgPrice": num(pos.entry), "positionValue": num(size * pos.entry), "tradeMode": 1 if isolated else 0,
        "positionStatus": "Normal", "autoAddMargin": 0, "adlRankIndicator": 2 if size else 0,
        "leverage": str(ledger.leverage_of(symbol)), "positionBalance": num(pos.isolated_wallet),
        "markPrice": num(mark), "liqPrice": num(ledger.liquidation_price(symbol)) if isolated and size else "",
        "bustPrice": "", "positionMM": num(ledger.maint_margin(symbol, mark)),
        "positionIM": num(ledger.position_margin(symbol, mark)), "tpslMode": "Full", "takeProfit": "0",
        "stopLoss": "0", "trailingStop": "0", "unrealisedPnl": num(ledger.unrealized(symbol, mark)),
        "curRealisedPnl": "0", "cumRealisedPnl": "0", "seq": 0, "isReduceOnly": False,
        "createdTime": str(pos.updated_ms or now_ms), "updatedTime": str(pos.updated_ms or now_ms),
    }


def wallet(ledger: FuturesLedger, marks: dict[str, Decimal], order_margin: Decimal) -> dict:
    """The UNIFIED account's wallet: USDT only (the futures ledger's one asset)."""
    upnl = sum((ledger.unrealized(s, marks[s]) for s in ledger.open_symbols()), Decimal(0))
    position_im = sum((ledger.position_margin(s, marks[s]) for s in ledger.open_symbols()), Decimal(0))
    maint = sum((ledger.maint_margin(s, marks[s]) for s in ledger.open_symbols()), Decimal(0))
    equity = ledger.wallet + upnl
    available = ledger.available(marks, order_margin)
    coin = {"coin": ledger.asset, "equity": num(equity), "usdValue": num(equity), "walletBalance": num(ledger.wallet),
            "free": "", "locked": "0", "spotHedgingQty": "0", "borrowAmount": "0", "accruedInterest": "0",
            "totalOrderIM": num(order_margin), "totalPositionIM": num(position_im), "totalPositionMM": num(maint),
            "unrealisedPnl": num(upnl), "cumRealisedPnl": "0", "bonus": "0", "marginCollateral": True,
            "collateralSwitch": True, "availableToWithdraw": num(max(Decimal(0), available)),
            "availableToBorrow": ""}
    return {"accountType": "UNIFIED", "accountLTV": "0", "accountIMRate": "0", "accountMMRate": "0",
            "totalEquity": num(equity), "totalWalletBalance": num(ledger.wallet), "totalMarginBalance": num(equity),
            "totalAvailableBalance": num(available), "totalPerpUPL": num(upnl),
            "totalInitialMargin": num(position_im + order_margin), "totalMaintenanceMargin": num(maint),
            "coin": [coin]}


__all__ = ["OPEN_STATUSES", "execution", "order", "order_request", "position", "retcode_for", "wallet"]
