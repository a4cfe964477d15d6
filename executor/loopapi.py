"""What a trading loop hands out (``executor.loop``): the listener interface every observer
implements (SQLite state, Redis events, metrics) and the result of a run.

Why apart from the loop: the loop's module holds the stepping rules; these are the types its
callers build on, and keeping them here keeps the loop's module to its one job.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from executor.core import Decision
from executor.funding import FundingPayment
from executor.paper import MarketOrder
from executor.portfolio import ClosedTrade, Fill, Portfolio
from executor.quiet import DecisionLog
from executor.risk import RiskAlert, TradingState
from executor.signals import Signal


class LoopListener:
    """Receives everything the loop does. Override what you need; all default to no-ops."""

    def on_signals(self, ts: pd.Timestamp, signals: list[Signal]) -> None: ...
    def on_signal_unavailable(self, ts: pd.Timestamp, error: Exception) -> None: ...
    def on_order(self, order: MarketOrder, decision: Decision) -> None: ...
    def on_cancel(self, order: MarketOrder, ts: pd.Timestamp) -> None: ...
    def on_fill(self, fill: Fill, portfolio: Portfolio, trade: ClosedTrade | None) -> None: ...
    def on_funding(self, payment: FundingPayment, portfolio: Portfolio) -> None: ...
    def on_decision(self, decision: Decision) -> None: ...
    def on_equity(self, ts: pd.Timestamp, equity_usdt: float, cash_usdt: float, state: TradingState,
                  portfolio: Portfolio) -> None: ...
    def on_alert(self, alert: RiskAlert) -> None: ...
    def on_bar_done(self, ts: pd.Timestamp) -> None: ...
    def on_listener_failure(self, listener: str) -> None: ...  # another listener raised (metrics count it)


@dataclass
class LoopResult:
    starting_equity_usdt: float
    bar_ms: int
    equity: pd.Series  # USDT at the close of each bar, indexed by bar open time
    exposure: pd.Series  # bool: any position open at the close of the bar
    fills: list[Fill] = field(default_factory=list)
    funding: list[FundingPayment] = field(default_factory=list)
    orders: list[MarketOrder] = field(default_factory=list)
    decision_log: DecisionLog = field(default_factory=DecisionLog)  # quiet spans kept as columns
    alerts: list[RiskAlert] = field(default_factory=list)
    closed_trades: list[ClosedTrade] = field(default_factory=list)
    signals_received: int = 0
    portfolio: Portfolio | None = None
    final_state: TradingState = TradingState.ACTIVE

    @property
    def decisions(self) -> list[Decision]:
        """Every decision in order (one per symbol per bar, plus intents' verdicts)."""
        return self.decision_log.decisions()
