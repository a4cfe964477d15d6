"""The local exchange's order vocabulary: markets, order types, the request / order / trade / bar
values, Binance's trading filters and when a stop or take-profit triggers (pure, Decimal).

Its own module because every part of the venue speaks it - the matching engine
(``exchange.matching``), the spot OCO lists (``exchange.oco``), the JSON shapes
(``exchange.shapes``) and the HTTP adapter (``exchange.trading``) - and none of them should
have to import the engine, or each other, to name an order.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from qt.fills import stop_fill, trail_level
from exchange.ledger import ZERO, Rejected

SPOT, PERP = "spot", "perp"
SIDES = ("BUY", "SELL")
SPOT_TYPES = ("MARKET", "LIMIT", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT")
PERP_TYPES = ("MARKET", "LIMIT")
ALGO_TYPES = ("STOP_MARKET", "TAKE_PROFIT_MARKET", "STOP", "TAKE_PROFIT", "TRAILING_STOP_MARKET")
OPEN_STATUSES = ("NEW", "PARTIALLY_FILLED")


@dataclass(frozen=True)
class Bar:
    ts_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal


@dataclass(frozen=True)
class SymbolRules:
    """The trading filters of one market, as its exchangeInfo entry states them."""

    market: str  # "spot" | "perp"
    symbol: str  # Binance id, BTCUSDT
    base: str
    quote: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    market_max_qty: Decimal
    min_notional: Decimal


@dataclass(frozen=True)
class OrderRequest:
    market: str
    symbol: str
    side: str
    type: str
    quantity: Decimal | None = None
    price: Decimal | None = None
    stop_price: Decimal | None = None
    quote_qty: Decimal | None = None  # spot MARKET quoteOrderQty
    time_in_force: str = "GTC"
    reduce_only: bool = False
    close_position: bool = False
    client_id: str | None = None
    callback_rate: Decimal | None = None  # percent, trailing stops
    activation_price: Decimal | None = None
    algo: bool = False  # placed through the USDT-M algo (conditional) endpoint


@dataclass
class Order:
    order_id: int
    market: str
    symbol: str
    client_id: str
    side: str
    type: str
    qty: Decimal  # 0 for closePosition
    price: Decimal
    stop_price: Decimal
    time_in_force: str
    reduce_only: bool
    close_position: bool
    algo: bool
    created_ms: int
    updated_ms: int
    status: str = "NEW"
    executed_qty: Decimal = ZERO
    cum_quote: Decimal = ZERO
    quote_qty: Decimal = ZERO  # origQuoteOrderQty
    callback_rate: Decimal | None = None
    activation_price: Decimal | None = None
    trail_extreme: Decimal | None = None  # best price since activation (trailing stops)
    working: bool = True  # spot stop-limits: False until triggered
    trigger_ms: int = 0
    actual_order_id: int | None = None  # algo: the regular order it placed
    actual_price: Decimal = ZERO
    parent_algo_id: int | None = None
    order_list_id: int | None = None  # spot OCO legs: the list they belong to (exchange.oco)
    auto_close: str | None = None  # "LIQUIDATION": the exchange's own closing order (exchange.liquidation)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def remaining(self) -> Decimal:
        return self.qty - self.executed_qty

    @property
    def avg_price(self) -> Decimal:
        return self.cum_quote / self.executed_qty if self.executed_qty else ZERO


@dataclass(frozen=True)
class Trade:
    trade_id: int
    order_id: int
    market: str
    symbol: str
    side: str
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    realized_pnl: Decimal
    maker: bool
    time_ms: int


@dataclass(frozen=True)
class FeeRates:
    """Commission rates (fractions): Binance's base tier by default (spot 0.1 %; USDT-M
    maker 0.02 %, taker 0.05 %)."""

    spot_maker: Decimal = Decimal("0.001")
    spot_taker: Decimal = Decimal("0.001")
    perp_maker: Decimal = Decimal("0.0002")
    perp_taker: Decimal = Decimal("0.0005")

    def rate(self, market: str, maker: bool) -> Decimal:
        if market == SPOT:
            return self.spot_maker if maker else self.spot_taker
        return self.perp_maker if maker else self.perp_taker



def _is_multiple(value: Decimal, step: Decimal, base: Decimal = ZERO) -> bool:
    return step == 0 or (value - base) % step == 0


def check_filters(req: OrderRequest, rules: SymbolRules, qty: Decimal | None, ref_price: Decimal) -> None:
    """PRICE_FILTER, LOT_SIZE / MARKET_LOT_SIZE and the notional minimum, with the codes
    and messages each market answers (spot: -1013 "Filter failure: X"; USDT-M: per-rule codes)."""
    spot = rules.market == SPOT
    for name, price in (("price", req.price), ("stopPrice", req.stop_price), ("activationPrice", req.activation_price)):
        if price is None:
            continue
        if price <= 0:
            raise Rejected(-1013, "Filter failure: PRICE_FILTER") if spot else Rejected(-4001, "Price less than 0.")
        if not _is_multiple(price, rules.tick_size):
            raise Rejected(-1013, "Filter failure: PRICE_FILTER") if spot else \
                Rejected(-4014, "Price not increased by tick size.")
    if qty is None:
        return
    max_qty = rules.market_max_qty if req.type == "MARKET" else rules.max_qty
    if spot:
        if qty < rules.min_qty or qty > max_qty or not _is_multiple(qty, rules.step_size, rules.min_qty):
            raise Rejected(-1013, "Filter failure: LOT_SIZE")  # spot symbols here serve no MARKET_LOT_SIZE
        if qty * ref_price < rules.min_notional:
            raise Rejected(-1013, "Filter failure: NOTIONAL")
        return
    if qty <= 0:
        raise Rejected(-4003, "Quantity less than or equal to zero.")
    if qty.as_tuple().exponent < rules.step_size.as_tuple().exponent:
        raise Rejected(-1111, "Precision is over the maximum defined for this asset.")
    if not _is_multiple(qty, rules.step_size):
        raise Rejected(-4023, "Qty not increased by step size.")
    if qty < rules.min_qty:
        raise Rejected(-4004, "Quantity less than min quantity.")
    if qty > max_qty:
        raise Rejected(-4005, "Quantity greater than max quantity.")
    if not (req.reduce_only or req.close_position) and qty * ref_price < rules.min_notional:
        raise Rejected(-4164, f"Order's notional must be no smaller than {rules.min_notional} "
                              f"(unless you choose reduce only).")


def triggered_at(order: Order, bar: Bar) -> Decimal | None:
    """The price a stop / take-profit fills at on ``bar`` (None when the bar does not reach
    it): the trigger price, or the open when the bar opened beyond it (``qt.fills.stop_fill``,
    the paper broker's rule)."""
    falling = (order.type in ("STOP_LOSS_LIMIT", "STOP_MARKET", "STOP")) == (order.side == "SELL")
    return stop_fill(order.stop_price, bar, selling=falling)  # falling: triggers when the price falls to it


def stop_level(order: Order) -> Decimal | None:
    """The price a stop-type order (stop, stop-limit, trailing stop once active) triggers at
    now; None for other orders and a trailing stop still waiting for its activation price."""
    if order.type == "TRAILING_STOP_MARKET":
        if order.trail_extreme is None:
            return None
        return trail_level(order.trail_extreme, order.callback_rate / 100, order.side == "SELL")
    if order.type in ("STOP_LOSS_LIMIT", "STOP_MARKET", "STOP"):
        return order.stop_price
    return None


def would_trigger_now(order_type: str, side: str, stop: Decimal, last: Decimal) -> bool:
    falling = (order_type in ("STOP_LOSS_LIMIT", "STOP_MARKET", "STOP")) == (side == "SELL")
    return last <= stop if falling else last >= stop


__all__ = ["ALGO_TYPES", "Bar", "FeeRates", "OPEN_STATUSES", "Order", "OrderRequest", "PERP", "PERP_TYPES", "SIDES",
           "SPOT", "SPOT_TYPES", "SymbolRules", "Trade", "check_filters", "stop_level", "triggered_at",
           "would_trigger_now"]
