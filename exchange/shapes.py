"""Binance's JSON shapes for the local exchange's orders, trades and accounts (pure).

Field names and types follow Binance's REST answers (spot ``/api/v3``, USDT-M ``/fapi``,
including the algo-order shape of USDT-M conditional orders), because ccxt parses exactly
these: a missing field silently becomes ``None`` in a ccxt order or position. Numbers are
strings, written without exponent (``num``).
"""

from __future__ import annotations

from decimal import Decimal

from qt.margin import max_notional
from exchange.ledger import BRACKETS, FuturesLedger, SpotWallet
from exchange.orders import Order, Trade


def num(value: Decimal | int | None) -> str:
    """``Decimal('0.00100')`` -> ``'0.001'``; never ``1E-3``; None -> ``'0'``."""
    if value is None:
        return "0"
    text = format(Decimal(value).normalize(), "f")
    return "0" if text in ("-0", "") else text


# -- spot -------------------------------------------------------------------------------------
def spot_order(o: Order, trades: list[Trade] | None = None, resp_type: str = "QUERY") -> dict:
    """GET/openOrders shape (``QUERY``), or the POST answer (``ACK``/``RESULT``/``FULL``)."""
    list_id = o.order_list_id  # set on OCO legs (exchange.oco)
    head = {"symbol": o.symbol, "orderId": o.order_id, "orderListId": -1 if list_id is None else list_id,
            "clientOrderId": o.client_id}
    if resp_type == "ACK":
        return {**head, "transactTime": o.created_ms}
    body = {"price": num(o.price), "origQty": num(o.qty), "executedQty": num(o.executed_qty),
            "origQuoteOrderQty": num(o.quote_qty), "cummulativeQuoteQty": num(o.cum_quote),
            "status": o.status, "timeInForce": o.time_in_force if o.type != "MARKET" else "GTC",
            "type": o.type, "side": o.side}
    if o.type in ("STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"):
        body["stopPrice"] = num(o.stop_price)
    tail = {"workingTime": o.trigger_ms or (o.created_ms if o.working else -1),
            "selfTradePreventionMode": "EXPIRE_MAKER"}
    if resp_type == "QUERY":
        return {**head, **body, "stopPrice": num(o.stop_price), "icebergQty": "0", "time": o.created_ms,
                "updateTime": o.updated_ms, "isWorking": o.working, **tail}
    out = {**head, "transactTime": o.created_ms, **body, **tail}
    if resp_type == "FULL":
        out["fills"] = [{"price": num(t.price), "qty": num(t.qty), "commission": num(t.commission),
                         "commissionAsset": t.commission_asset, "tradeId": t.trade_id} for t in trades or []]
    return out


def spot_cancel(o: Order, cancel_client_id: str) -> dict:
    return {"symbol": o.symbol, "origClientOrderId": o.client_id, "orderId": o.order_id, "orderListId": -1,
            "clientOrderId": cancel_client_id, "transactTime": o.updated_ms, "price": num(o.price),
            "origQty": num(o.qty), "executedQty": num(o.executed_qty), "origQuoteOrderQty": num(o.quote_qty),
            "cummulativeQuoteQty": num(o.cum_quote), "status": o.status, "timeInForce": o.time_in_force,
            "type": o.type, "side": o.side, "selfTradePreventionMode": "EXPIRE_MAKER"}


def spot_trade(t: Trade) -> dict:
    return {"symbol": t.symbol, "id": t.trade_id, "orderId": t.order_id, "orderListId": -1,
            "price": num(t.price), "qty": num(t.qty), "quoteQty": num(t.quote_qty), "commission": num(t.commission),
            "commissionAsset": t.commission_asset, "time": t.time_ms, "isBuyer": t.side == "BUY",
            "isMaker": t.maker, "isBestMatch": True}


def spot_account(wallet: SpotWallet, maker: Decimal, taker: Decimal, now_ms: int, omit_zero: bool) -> dict:
    balances = [{"asset": a, "free": num(wallet.free_of(a)), "locked": num(wallet.locked_of(a))}
                for a in wallet.assets()]
    if omit_zero:
        balances = [b for b in balances if b["free"] != "0" or b["locked"] != "0"]
    return {"makerCommission": int(maker * 10_000), "takerCommission": int(taker * 10_000),
            "buyerCommission": 0, "sellerCommission": 0,
            "commissionRates": {"maker": num(maker), "taker": num(taker), "buyer": "0", "seller": "0"},
            "canTrade": True, "canWithdraw": False, "canDeposit": False, "brokered": False,
            "requireSelfTradePrevention": False, "preventSor": False, "updateTime": now_ms,
            "accountType": "SPOT", "balances": balances, "permissions": ["SPOT"], "uid": 1}


# -- USDT-M -----------------------------------------------------------------------------------
def perp_order(o: Order, with_time: bool = True) -> dict:
    out = {"orderId": o.order_id, "symbol": o.symbol, "status": o.status, "clientOrderId": o.client_id,
           "price": num(o.price), "avgPrice": num(o.avg_price), "origQty": num(o.qty),
           "executedQty": num(o.executed_qty), "cumQty": num(o.executed_qty), "cumQuote": num(o.cum_quote),
           "timeInForce": o.time_in_force if o.type != "MARKET" else "GTC", "type": o.type,
           "reduceOnly": o.reduce_only, "closePosition": o.close_position, "side": o.side, "positionSide": "BOTH",
           "stopPrice": "0", "workingType": "CONTRACT_PRICE", "priceProtect": False, "origType": o.type,
           "priceMatch": "NONE", "selfTradePreventionMode": "EXPIRE_MAKER", "goodTillDate": 0,
           "updateTime": o.updated_ms}
    if with_time:
        out["time"] = o.created_ms
    return out


def algo_order(o: Order, child: Order | None) -> dict:
    trailing = o.type == "TRAILING_STOP_MARKET"
    return {"algoId": o.order_id, "clientAlgoId": o.client_id, "algoType": "CONDITIONAL", "orderType": o.type,
            "symbol": o.symbol, "side": o.side, "positionSide": "BOTH", "timeInForce": o.time_in_force,
            "quantity": num(o.qty), "algoStatus": o.status, "triggerPrice": num(o.stop_price),
            "price": num(o.price), "icebergQuantity": None, "selfTradePreventionMode": "EXPIRE_MAKER",
            "workingType": "CONTRACT_PRICE", "priceMatch": "NONE", "closePosition": o.close_position,
            "priceProtect": False, "reduceOnly": o.reduce_only,
            "activatePrice": num(o.activation_price) if trailing and o.activation_price is not None else None,
            "callbackRate": num(o.callback_rate) if trailing else None,
            "actualOrderId": str(o.actual_order_id) if o.actual_order_id is not None else "",
            "actualPrice": num(o.actual_price), "executedQty": num(child.executed_qty if child else 0),
            "avgPrice": num(child.avg_price if child else 0),
            "createTime": o.created_ms, "updateTime": o.updated_ms, "triggerTime": o.trigger_ms, "goodTillDate": 0}


def perp_trade(t: Trade) -> dict:
    return {"buyer": t.side == "BUY", "commission": num(t.commission), "commissionAsset": t.commission_asset,
            "id": t.trade_id, "maker": t.maker, "orderId": t.order_id, "price": num(t.price), "qty": num(t.qty),
            "quoteQty": num(t.quote_qty), "realizedPnl": num(t.realized_pnl), "side": t.side,
            "positionSide": "BOTH", "symbol": t.symbol, "time": t.time_ms}


def max_notional_of(ledger: FuturesLedger, symbol: str) -> str:
    """The largest notional the symbol's leverage allows (Binance's ``maxNotionalValue``)."""
    return num(Decimal(max_notional(ledger.leverage_of(symbol), BRACKETS)))


def _position_numbers(ledger: FuturesLedger, symbol: str, mark: Decimal, order_margin: Decimal) -> dict:
    pos = ledger.position(symbol)
    notional = pos.amount * mark
    position_im = ledger.position_margin(symbol, mark)
    upnl = ledger.unrealized(symbol, mark)
    isolated = ledger.is_isolated(symbol) and pos.amount != 0
    wallet = pos.isolated_wallet if isolated else Decimal(0)
    return {"symbol": symbol, "positionSide": "BOTH", "positionAmt": num(pos.amount),
            "entryPrice": num(pos.entry), "breakEvenPrice": num(pos.entry), "markPrice": num(mark),
            "unRealizedProfit": num(upnl), "liquidationPrice": num(ledger.liquidation_price(symbol)),
            "isolatedMargin": num(wallet + upnl if isolated else 0), "notional": num(notional),
            "isolatedWallet": num(wallet), "initialMargin": num(position_im + order_margin),
            "maintMargin": num(ledger.maint_margin(symbol, mark)),
            "positionInitialMargin": num(position_im), "openOrderInitialMargin": num(order_margin),
            "adl": 0, "bidNotional": "0", "askNotional": "0", "marginAsset": ledger.asset,
            "updateTime": pos.updated_ms}


def position_risk(ledger: FuturesLedger, marks: dict[str, Decimal], order_margins: dict[str, Decimal],
                  symbols: list[str], version: int) -> list[dict]:
    """v3: symbols with a position or open orders; v2: every symbol asked for, with leverage."""
    rows = []
    for symbol in symbols:
        row = _position_numbers(ledger, symbol, marks[symbol], order_margins.get(symbol, Decimal(0)))
        if version == 2:
            for key in ("breakEvenPrice", "initialMargin", "maintMargin", "positionInitialMargin",
                        "openOrderInitialMargin", "adl", "bidNotional", "askNotional", "marginAsset"):
                row.pop(key)
            isolated = ledger.is_isolated(symbol)
            row.update({"leverage": str(ledger.leverage_of(symbol)),
                        "maxNotionalValue": max_notional_of(ledger, symbol),
                        "marginType": "isolated" if isolated else "cross", "isAutoAddMargin": "false",
                        "isolated": isolated, "adlQuantile": 0})
        rows.append(row)
    return rows


def futures_account(ledger: FuturesLedger, marks: dict[str, Decimal], order_margins: dict[str, Decimal],
                    now_ms: int, version: int) -> dict:
    symbols = sorted(set(ledger.open_symbols()) | {s for s, m in order_margins.items() if m})
    upnl = sum((ledger.unrealized(s, marks[s]) for s in symbols), Decimal(0))
    cross_upnl, cross_wallet = ledger.cross_unrealized(marks), ledger.cross_wallet()
    pos_im = sum((ledger.position_margin(s, marks[s]) for s in symbols), Decimal(0))
    ord_im = sum(order_margins.values(), Decimal(0))
    maint = sum((ledger.maint_margin(s, marks[s]) for s in symbols), Decimal(0))
    margin_balance = ledger.wallet + upnl
    available = ledger.available(marks, ord_im)
    withdraw = num(max(Decimal(0), min(available, cross_wallet)))
    totals = {"totalInitialMargin": num(pos_im + ord_im), "totalMaintMargin": num(maint),
              "totalWalletBalance": num(ledger.wallet), "totalUnrealizedProfit": num(upnl),
              "totalMarginBalance": num(margin_balance), "totalPositionInitialMargin": num(pos_im),
              "totalOpenOrderInitialMargin": num(ord_im), "totalCrossWalletBalance": num(cross_wallet),
              "totalCrossUnPnl": num(cross_upnl), "availableBalance": num(available), "maxWithdrawAmount": withdraw}
    asset = {"asset": ledger.asset, "walletBalance": num(ledger.wallet), "unrealizedProfit": num(upnl),
             "marginBalance": num(margin_balance), "maintMargin": num(maint), "initialMargin": num(pos_im + ord_im),
             "positionInitialMargin": num(pos_im), "openOrderInitialMargin": num(ord_im),
             "crossWalletBalance": num(cross_wallet), "crossUnPnl": num(cross_upnl),
             "availableBalance": num(available), "maxWithdrawAmount": withdraw, "marginAvailable": True,
             "updateTime": now_ms}
    positions = []
    for s in symbols:
        row = _position_numbers(ledger, s, marks[s], order_margins.get(s, Decimal(0)))
        keep = ("symbol", "positionSide", "positionAmt", "unrealizedProfit", "isolatedMargin", "notional",
                "isolatedWallet", "initialMargin", "maintMargin", "updateTime")
        row["unrealizedProfit"] = row.pop("unRealizedProfit")
        row = {k: row[k] for k in keep}
        if version == 2:
            row.update({"leverage": str(ledger.leverage_of(s)), "entryPrice": num(ledger.position(s).entry),
                        "maxNotional": max_notional_of(ledger, s), "isolated": ledger.is_isolated(s),
                        "bidNotional": "0", "askNotional": "0"})
        positions.append(row)
    out = {**totals, "assets": [asset], "positions": positions}
    if version == 2:
        out = {"feeTier": 0, "canTrade": True, "canDeposit": False, "canWithdraw": False, "updateTime": 0,
               "multiAssetsMargin": False, "tradeGroupId": -1, **out}
    return out


def futures_balance(ledger: FuturesLedger, marks: dict[str, Decimal], order_margin: Decimal, now_ms: int) -> list:
    available = ledger.available(marks, order_margin)
    cross_wallet = ledger.cross_wallet()
    return [{"accountAlias": "local", "asset": ledger.asset, "balance": num(ledger.wallet),
             "crossWalletBalance": num(cross_wallet), "crossUnPnl": num(ledger.cross_unrealized(marks)),
             "availableBalance": num(available),
             "maxWithdrawAmount": num(max(Decimal(0), min(available, cross_wallet))), "marginAvailable": True,
             "updateTime": now_ms}]


def leverage_brackets(symbols: list[str]) -> list[dict]:
    """``qt.margin``'s brackets (Binance's BTCUSDT table) for every symbol."""
    rows = [{"bracket": i, "initialLeverage": b.max_leverage, "notionalCap": int(b.cap), "notionalFloor": int(b.floor),
             "maintMarginRatio": b.mmr, "cum": b.cum} for i, b in enumerate(BRACKETS, start=1)]
    return [{"symbol": s, "notionalCoef": 1.0, "brackets": [dict(r) for r in rows]} for s in symbols]
