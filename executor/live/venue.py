"""What differs between the venues the live perps broker trades on, in one object per venue.

Why this module exists: the broker, its guards, reconciliation and the emergency exit are one
piece of code for Binance USDT-M (ccxt ``binanceusdm``) and Bybit USDT perpetuals (ccxt ``bybit``,
category ``linear``). What the two venues do differently - which params select a conditional
order, how an order is found by its client id, what a triggered conditional order's fills are
listed under, which refusal means "already crossed" - is answered here, chosen once by the ccxt
id (``venue_of(exchange)``), instead of ``if exchange.id == ...`` in the callers.

==========================  ======================================  ======================================
                            Binance (``binance``/``binanceusdm``)   Bybit (``bybit``, linear)
==========================  ======================================  ======================================
conditional orders          algo endpoints: ``{"trigger": True}``   ``orderFilter=StopOrder``
stop / take-profit params   ``stopLossPrice`` / ``takeProfitPrice`` the same: ccxt turns them into
                            + ``reduceOnly`` + ``clientOrderId``    ``triggerPrice`` + ``triggerDirection``
                                                                    + ``reduceOnly`` + ``orderLinkId``
look-up by client id        ``fetch_order(None, clientOrderId=)``   ``/v5/order/realtime?orderLinkId=``
                                                                    (open and the last 500 orders)
a created order's answer    the whole order (fills included)        ids only: read back (a market order
                                                                    until it is no longer open, ~1 s)
a triggered conditional     placed a regular order                  keeps its id: its fills are its own
                            (``info.actualOrderId``)
cancelling a finished one   -2011 -> ``OrderNotFound``              110008 -> ``InvalidOrder``: mapped
                                                                    to ``OrderNotFound`` here
stop already crossed        -2021 "would immediately trigger"       110092 / 110093
position mode               not checked (one-way assumed)           one-way (positionIdx 0) checked at
                                                                    start-up: hedge mode is refused
margin mode                 per symbol: set, then read back         account-wide (unified account): read
                                                                    back only, never switched here
native trailing stop        TRAILING_STOP_MARKET                    not offered (``/v5/position/
                                                                    trading-stop`` is a position TP/SL,
                                                                    not an order): refused at start-up,
                                                                    ``risk.trailing_mode: managed`` works
liquidations                ``forceOrders`` (autoclose orders)      not read: a liquidated position is
                                                                    reported as closed outside
maintenance brackets        ``leverageBracket``                     not read (the default table is used)
wallet balance              ``totalWalletBalance``                  ``result.list[0].totalWalletBalance``
==========================  ======================================  ======================================

Client order ids: Binance refuses a duplicate only among open orders, Bybit for the account's
life (110072); the broker's ids are derived per decision and generation, so both hold.
"""

from __future__ import annotations

import ccxt

from executor.live.emergency import refused_as_crossed
from qt.errors import ConfigError


class BinanceVenue:
    """Binance USDT-M futures (and the spot broker's ``binance``): the behaviour the broker was built on."""

    name = "binance"
    checks_position_mode = False  # positions are read at start-up to refuse hedge mode
    native_trailing = True
    sets_margin_mode = True
    liquidations = True
    leverage_tiers = True

    def prepare(self, exchange: ccxt.Exchange) -> None:
        """Options the broker needs on the client (none on Binance)."""

    def trigger(self) -> dict:
        """Params that select conditional (algo) orders in fetch_open_orders / fetch_order / cancel_order."""
        return {"trigger": True}

    def protective_params(self, kind: str, price: float, cid: str) -> dict:
        """The ccxt params of a reduce-only protective order of ``kind`` at ``price`` (a trailing
        stop: ``price`` is the callback rate in percent)."""
        key = {"stop_loss": "stopLossPrice", "trailing_stop": "trailingPercent"}.get(kind, "takeProfitPrice")
        return {key: price, "reduceOnly": True, "clientOrderId": cid}

    def lookup(self, broker, cid: str, symbol: str, algo: bool) -> dict:
        """The newest order with client id ``cid``; ccxt.OrderNotFound when there is none."""
        params = {"clientOrderId": cid, **({"trigger": True} if algo else {})}
        return broker.read(lambda: broker.ex.fetch_order(None, symbol, params))

    def placed(self, broker, answer: dict, symbol: str, algo: bool) -> dict:
        """The order as the broker books it, from the create call's answer (Binance: the answer)."""
        return answer

    def cancel(self, exchange: ccxt.Exchange, oid: str, symbol: str, algo: bool) -> dict:
        """Cancel; ccxt.OrderNotFound when the order is gone or already finished."""
        return exchange.cancel_order(oid, symbol, {"trigger": True}) if algo else exchange.cancel_order(oid, symbol)

    def filled_order_of(self, broker, symbol: str, algo: dict) -> dict | None:
        """The order whose fills a triggered conditional order made (Binance: the regular order it
        placed, ``actualOrderId``), None when it placed none."""
        actual = (algo.get("info") or {}).get("actualOrderId")
        return broker.read(lambda: broker.ex.fetch_order(str(actual), symbol)) if actual else None

    def guard_kind(self, order: dict) -> str:
        """stop_loss / take_profit / trailing_stop of an open conditional order (ladder rungs aside)."""
        kind = str((order.get("info") or {}).get("orderType") or (order.get("info") or {}).get("type") or "")
        return ("stop_loss" if kind in ("STOP_MARKET", "STOP") else
                "trailing_stop" if kind == "TRAILING_STOP_MARKET" else "take_profit")

    def position_mode_refusal(self, positions: list[dict]) -> str | None:
        """The line refusing to trade when the account is not in one-way mode, else None (Binance:
        not checked here, as before)."""
        return None

    def wallet_usdt(self, balance: dict) -> float:
        info = balance.get("info") or {}
        return float(info.get("totalWalletBalance") or balance.get("USDT", {}).get("total") or 0.0)

    def refused_as_crossed(self, exc: BaseException) -> bool:
        """The exchange refused a stop because the price is already through it."""
        return refused_as_crossed(exc)


class BybitVenue(BinanceVenue):
    """Bybit v5 USDT perpetuals (category linear, one-way mode, unified account) through ccxt ``bybit``."""

    name = "bybit"
    checks_position_mode = True
    native_trailing = False
    sets_margin_mode = False
    liquidations = False
    leverage_tiers = False
    _CROSSED = ("110092", "110093")  # expect Rising/Falling, but the trigger price is already passed
    _FINISHED = ("110008", "110001")  # completed or cancelled / does not exist
    MARKET_SETTLE_READS = 5  # read-backs of a market order still open (0.2 s apart) before booking what filled

    def prepare(self, exchange: ccxt.Exchange) -> None:
        # ccxt refuses fetch_order on a unified account unless told that it reads the open orders
        # and the last 500 (``/v5/order/realtime``): the broker only reads orders it just placed
        exchange.options.setdefault("fetchOrder", {})["acknowledged"] = True

    def trigger(self) -> dict:
        return {"orderFilter": "StopOrder"}

    def lookup(self, broker, cid: str, symbol: str, algo: bool) -> dict:
        ex = broker.ex
        market = ex.market(symbol)
        request = {"category": "linear", "symbol": market["id"], "orderLinkId": cid,
                   **({"orderFilter": "StopOrder"} if algo else {})}
        answer = broker.read(lambda: ex.privateGetV5OrderRealtime(request))
        rows = ((answer or {}).get("result") or {}).get("list") or []
        if not rows:
            raise ccxt.OrderNotFound(f"bybit: no order with orderLinkId {cid}")
        return ex.parse_order(rows[0], market)

    def placed(self, broker, answer: dict, symbol: str, algo: bool) -> dict:
        if algo:  # a conditional order: its id is all the broker keeps
            return answer
        order = broker.read(lambda: broker.ex.fetch_order(str(answer["id"]), symbol))
        for _ in range(self.MARKET_SETTLE_READS):  # Bybit matches a market order just after acknowledging it
            if order.get("type") != "market" or order.get("status") != "open":
                break
            broker.sleep(0.2)
            order = broker.read(lambda: broker.ex.fetch_order(str(answer["id"]), symbol))
        return order

    def cancel(self, exchange: ccxt.Exchange, oid: str, symbol: str, algo: bool) -> dict:
        try:
            return exchange.cancel_order(oid, symbol, self.trigger() if algo else {})
        except ccxt.InvalidOrder as exc:
            if any(f'"retCode":{code}' in str(exc).replace(" ", "") for code in self._FINISHED):
                raise ccxt.OrderNotFound(str(exc)) from exc
            raise

    def filled_order_of(self, broker, symbol: str, algo: dict) -> dict | None:
        return algo if float(algo.get("filled") or 0.0) > 0 else None

    def guard_kind(self, order: dict) -> str:
        kind = str((order.get("info") or {}).get("stopOrderType") or "")
        return {"StopLoss": "stop_loss", "TrailingStop": "trailing_stop"}.get(kind, "take_profit")

    def position_mode_refusal(self, positions: list[dict]) -> str | None:
        hedged = sorted({str(p.get("symbol")) for p in positions
                         if str((p.get("info") or {}).get("positionIdx", "0")) not in ("0", "")})
        if not hedged:
            return None
        return (f"the Bybit account holds {', '.join(hedged)} in hedge mode (positionIdx 1/2); the executor trades "
                f"one-way positions (positionIdx 0): switch the USDT perpetuals to one-way mode first")

    def wallet_usdt(self, balance: dict) -> float:
        rows = (((balance.get("info") or {}).get("result") or {}).get("list") or [{}])
        return float(rows[0].get("totalWalletBalance") or balance.get("USDT", {}).get("total") or 0.0)

    def refused_as_crossed(self, exc: BaseException) -> bool:
        text = str(exc).replace(" ", "")
        return refused_as_crossed(exc) or (isinstance(exc, ccxt.InvalidOrder)
                                           and any(f'"retCode":{c}' in text for c in self._CROSSED))


BINANCE = BinanceVenue()
BYBIT = BybitVenue()
LIVE_VENUES = {"binance": BINANCE, "binanceusdm": BINANCE, "bybit": BYBIT}


def venue_of(exchange) -> BinanceVenue:
    """The venue of a ccxt client, by its id (``binance``, ``binanceusdm``, ``bybit``); ConfigError otherwise."""
    name = str(getattr(exchange, "id", "") or "")
    try:
        return LIVE_VENUES[name]
    except KeyError:
        raise ConfigError(f"live trading through ccxt {name or type(exchange).__name__} is not supported; "
                          f"use one of {', '.join(LIVE_VENUES)}") from None
