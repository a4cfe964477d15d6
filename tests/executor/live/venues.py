"""One live-broker test, two venues: what differs between Binance USDT-M and Bybit USDT perpetuals on
the local exchange (client, account reset, how the protective orders are read back and cancelled, the
risk settings the account needs, the order route and the wording of a refusal) lives in one small
adapter per venue, and ``venue_fixtures`` writes the module fixtures of a parametrised test file once:
``adapter`` (the venue), ``exchange`` (a local exchange serving the module's market on that venue),
``venue`` (a fresh account per test), ``make_trader`` (started LiveTraders over real ccxt).

A behaviour only one venue has stays a single-venue test: mark it ``@only(BINANCE)`` or ``@only(BYBIT)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import ccxt
import pandas as pd
import pytest

from exchange import LocalExchange
from tests.executor.live import support
from tests.executor.live.support import SYMBOL


@dataclass(frozen=True)
class Venue:
    name: str
    stop: str  # the stop-loss's order type as the venue reports it
    take: str  # the take-profit's
    trigger: dict  # the params that list (open) conditional orders
    order_route: str  # the path the order placement is sent to (for faults)
    funds_error: str  # what the venue's insufficient-funds refusal says
    ccxt_id: str  # the ccxt exchange id, recorded as the run's venue
    risk: dict = field(default_factory=dict)  # risk settings the local account needs (Bybit: cross margin)

    def __repr__(self) -> str:
        return self.name

    def client(self, ex: LocalExchange, timeout_ms: int = 10_000) -> ccxt.Exchange:
        return support.bybit_client(ex, timeout_ms) if self.name == "bybit" else support.client(ex, timeout_ms)

    def reset(self, ex: LocalExchange, **kwargs) -> dict:
        return support.reset_bybit(ex, **kwargs) if self.name == "bybit" else ex.reset_account(**kwargs)

    def order_count(self, ex: LocalExchange) -> int:
        """Every order the account ever took (entries, guards, exits)."""
        return (support.bybit_account(ex) if self.name == "bybit" else ex.account_state())["orders"]

    def kind(self, order: dict) -> str:
        return order["info"]["stopOrderType" if self.name == "bybit" else "orderType"]

    def protective_orders(self, ex: LocalExchange) -> list[dict]:
        """The open conditional orders as ccxt returns them."""
        return self.client(ex).fetch_open_orders(SYMBOL, params=self.trigger)

    def protectives(self, ex: LocalExchange) -> list[tuple]:
        """The open conditional orders as (type, amount, trigger price, reduce-only), lowest trigger first."""
        return sorted(((self.kind(o), o["amount"], o["triggerPrice"], o["reduceOnly"])
                       for o in self.protective_orders(ex)), key=lambda r: r[2])

    def guarded(self, qty: float, stop: float, take: float) -> list[tuple]:
        """``protectives`` of a long of ``qty`` guarded at ``stop`` and ``take``."""
        return [(self.stop, pytest.approx(qty), pytest.approx(stop), True),
                (self.take, pytest.approx(qty), pytest.approx(take), True)]

    def protective_id(self, ex: LocalExchange, kind: str) -> str:
        (order,) = [o for o in self.protective_orders(ex) if self.kind(o) == kind]
        return order["id"]

    def cancel_protective(self, ex: LocalExchange, order_id: str) -> None:
        c = self.client(ex)
        c.cancel_order(order_id, SYMBOL) if self.name == "bybit" else c.cancel_order(order_id, SYMBOL, self.trigger)

    def fetch_protective(self, ex: LocalExchange, order_id: str) -> dict:
        params = {"orderFilter": "StopOrder", "acknowledged": True} if self.name == "bybit" else self.trigger
        return self.client(ex).fetch_order(order_id, SYMBOL, params)

    def orders(self, ex: LocalExchange) -> list[dict]:
        """Every plain (not conditional) order, open or finished."""
        c = self.client(ex)
        if self.name == "bybit":  # its finished orders include the conditional ones
            orders = c.fetch_open_orders(SYMBOL) + c.fetch_canceled_and_closed_orders(SYMBOL)
            return [o for o in orders if not o.get("triggerPrice")]
        return c.fetch_orders(SYMBOL)

    def entries(self, ex: LocalExchange) -> list[dict]:
        """Every order that is not reduce-only (entries), open or finished."""
        return [o for o in self.orders(ex) if not o["reduceOnly"]]

    def position_qty(self, ex: LocalExchange) -> float:
        return sum(float(p["contracts"] or 0.0) for p in self.client(ex).fetch_positions([SYMBOL]))

    def position(self, ex: LocalExchange) -> tuple[str | None, float]:
        """(side, contracts) of the open position, (None, 0.0) when flat."""
        held = [p for p in self.client(ex).fetch_positions([SYMBOL]) if p["contracts"]]
        return (held[0]["side"], held[0]["contracts"]) if held else (None, 0.0)

    def wallet_usdt(self, ex: LocalExchange) -> float:
        info = self.client(ex).fetch_balance()["info"]
        return float(info["result"]["list"][0]["totalWalletBalance"] if self.name == "bybit"
                     else info["totalWalletBalance"])


BINANCE = Venue("binance", "STOP_MARKET", "TAKE_PROFIT_MARKET", {"trigger": True}, "/fapi/v1/order",
                "Margin is insufficient", "binanceusdm")
BYBIT = Venue("bybit", "StopLoss", "TakeProfit", {"orderFilter": "StopOrder"}, "/v5/order/create", "retCode", "bybit",
              {"margin_mode": "cross"})
VENUES = (BINANCE, BYBIT)


def expected_qty(notional: float = 2_000.0) -> float:
    """0.2 x 10 000 USDT at 30 000, floored to the 0.00001 step the exchange derives for 30 000."""
    return int(notional / support.PRICE * 100_000) / 100_000


def journal_rows(trader, purpose: str) -> list[tuple]:
    """The executor's own journal of its ``purpose`` orders: (client id, exchange id, status, qty)."""
    return trader.store.conn.execute("SELECT client_id, exchange_id, status, qty FROM exchange_orders "
                                     "WHERE purpose=? ORDER BY rowid", (purpose,)).fetchall()


def only(venue: Venue):
    """Mark a test of a parametrised module as one venue's behaviour."""
    return pytest.mark.parametrize("adapter", [venue], indirect=True, ids=[venue.name])


def venue_fixtures(frame: Callable[[], pd.DataFrame] = support.candles,
                   signals: Callable[[], pd.DataFrame] | None = None, clock_bar: int | None = None,
                   namespace: str = "test", risk: dict | None = None, venues: tuple[Venue, ...] = VENUES):
    """The fixtures ``adapter``, ``exchange``, ``venue`` and ``make_trader`` of a test module parametrised
    over ``VENUES``: the market ``frame()`` served on each venue (Binance with a zero funding event every
    8 h), a fresh account (10 000 USDT) without faults per test with the clock at ``clock_bar`` when
    given, and ``make_trader(timeout_ms=10_000, **risk)`` (over the module's ``risk``) fed by a signal service
    serving ``signals()``; ``venues=(BINANCE,)`` for a module of one venue's tests (not parametrised).
    Unpack them into the module: ``adapter, exchange, venue, make_trader = venue_fixtures(...)``."""
    if len(venues) == 1:  # one venue's tests: not parametrised, their ids unchanged
        @pytest.fixture(scope="module")
        def adapter() -> Venue:
            return venues[0]
    else:
        @pytest.fixture(scope="module", params=venues, ids=[v.name for v in venues])
        def adapter(request) -> Venue:
            return request.param

    @pytest.fixture(scope="module")
    def exchange(adapter, tmp_path_factory):
        root: Path = tmp_path_factory.mktemp(f"{adapter.name}-market")
        if adapter.name == "bybit":
            with support.running_exchange(support.write_bybit_market(root, frame())) as ex:
                yield ex
        else:
            with support.serving_market(root, frame()) as ex:
                yield ex

    @pytest.fixture
    def venue(exchange, adapter):
        exchange.set_faults({})
        adapter.reset(exchange)
        if clock_bar is not None:
            exchange.move_clock_to(support.bar_ms(clock_bar))
        yield exchange
        exchange.set_faults({})

    @pytest.fixture
    def make_trader(venue, adapter, tmp_path):
        with support.trader_factory(lambda timeout_ms=10_000: adapter.client(venue, timeout_ms),
                                    signals() if signals else support.buy_signals(), SYMBOL,
                                    tmp_path / "state.sqlite", namespace, base_risk={**adapter.risk, **(risk or {})}) as make:
            yield make

    return adapter, exchange, venue, make_trader
