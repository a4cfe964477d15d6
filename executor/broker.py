"""What the trading loop asks of a broker: the one interface of the paper, perps and spot brokers.

Why this module exists: ``TradingLoop`` (``executor.loop``) is the same for the backtest, the
paper daemon and live trading; only the broker changes. ``Broker`` names what the loop calls
on it, so the paper broker (``executor.paper.PaperBroker``) and the live ones
(``executor.live.broker.CcxtBroker`` for USDT-M perpetuals, ``executor.live.spot.SpotBroker``)
implement one interface instead of duck-typing the paper one.

* ``submit(order)`` at the close of bar t; ``process_bar(bars)`` at the close of t+1 hands back
  what happened in between (fills, protective orders placed, cancelled and expired orders);
* ``pending_orders`` / ``protective(symbol)``: what is working now; ``cancel_all()``: withdraw it.

``SimulatedBroker`` adds ``close_at_close``: closing a position at a bar's close is something
only a simulation can do (a backtest that liquidates at its last bar, ``run(close_at_end=True)``).

``Rejection`` is a refusal that reaches the loop after the fact (live: the exchange refused an
order the loop had already sent); ``TradingLoop.book_refusals`` books it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from executor.paper import BarExecution, MarketOrder, Protective
from executor.portfolio import Bar, Fill


@runtime_checkable
class Broker(Protocol):
    @property
    def pending_orders(self) -> list[MarketOrder]: ...

    def protective(self, symbol: str) -> Protective | None: ...

    def submit(self, order: MarketOrder) -> None: ...

    def process_bar(self, bars: Mapping[str, Bar]) -> BarExecution: ...

    def cancel_all(self) -> list[MarketOrder]: ...


@runtime_checkable
class SimulatedBroker(Broker, Protocol):
    def close_at_close(self, symbol: str, qty: float, bar: Bar, order_id: int,
                       reason: str = "end_of_run") -> Fill: ...


@dataclass(frozen=True, slots=True)
class Rejection:
    order_id: int
    symbol: str
    purpose: str
    reason: str  # INSUFFICIENT_FUNDS | INVALID_ORDER | BAD_REQUEST | MIN_NOTIONAL | EXCHANGE_UNAVAILABLE ...
    message: str
    client_id: str | None = None
