"""The one risk engine: the same limits in backtest, paper and live.

``check(intent, portfolio, now)`` returns a value - ``Approved`` (possibly with a smaller
notional) or ``Denied(reason, **numbers)`` - and never raises for a refusal.

Time: ``now`` is the DECISION time, i.e. the close of bar t (= open time of bar t + one
bar). A signal computed on bar t therefore has age 1 bar at ``now``; it is stale when its
age exceeds ``signal.max_age_bars`` (default 1: only the signal of the bar that just closed
may open a position).

Sizing policy (decided here, documented once):

* a request above ``max_position_notional_usdt`` is CLIPPED to the cap, not denied;
* it is then clipped to the gross-exposure headroom (``max_gross_exposure * equity -
  gross open notional - reserved entries``) and to the cash available (spot: no leverage,
  ``notional * (1 + fee_rate)`` must be covered);
* if the result is below ``min_notional_usdt`` the entry is DENIED, with the reason naming
  the constraint that bound (``MIN_NOTIONAL`` when the request itself was too small).

Trading state is one enum. ACTIVE -> REDUCING when equity falls ``daily_loss_limit_pct``
below the equity at the start of the UTC day (no entries until the next UTC day);
any -> HALTED when the drawdown from the peak reaches ``max_drawdown_pct`` or the kill
switch is set. A drawdown halt is sticky: only a restart by a person clears it; a kill-switch
halt ends when a person clears the switch (``qt resume``, ``resume``). Exits (stops,
take-profits, max holding, signal flip) are never blocked, in any state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import pandas as pd

from executor.core import OrderIntent
from executor.portfolio import Portfolio
from qt.config import CostParams, RiskParams, SignalParams
from qt.timeframes import timeframe_ms

NO_SIGNAL = "NO_SIGNAL"
HALTED_REASON = "HALTED"
DAILY_LOSS_LIMIT = "DAILY_LOSS_LIMIT"
STALE_SIGNAL = "STALE_SIGNAL"
ALREADY_IN_POSITION = "ALREADY_IN_POSITION"
COOLDOWN = "COOLDOWN"
MAX_OPEN_POSITIONS = "MAX_OPEN_POSITIONS"
MIN_NOTIONAL = "MIN_NOTIONAL"
MAX_POSITION_NOTIONAL = "MAX_POSITION_NOTIONAL"
MAX_GROSS_EXPOSURE = "MAX_GROSS_EXPOSURE"
INSUFFICIENT_CASH = "INSUFFICIENT_CASH"
SIGNAL_FROM_FUTURE = "SIGNAL_FROM_FUTURE"


class TradingState(str, Enum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"  # daily loss limit hit: exits only until the next UTC day
    HALTED = "HALTED"  # kill switch / max drawdown: exits only until a person restarts


@dataclass(frozen=True, slots=True)
class Approved:
    intent: OrderIntent
    notional_usdt: float  # what may be bought (<= requested); 0 for exits
    clipped_by: str | None = None  # MAX_POSITION_NOTIONAL / MAX_GROSS_EXPOSURE / INSUFFICIENT_CASH

    @property
    def ok(self) -> bool:
        return True


class Denied:
    """A refusal as a value: ``Denied("MAX_OPEN_POSITIONS", open_positions=4, limit=4)``."""

    __slots__ = ("reason", "numbers")

    def __init__(self, reason: str, **numbers: float | int | str | None):
        self.reason = reason
        self.numbers = numbers

    @property
    def ok(self) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Denied) and (self.reason, self.numbers) == (other.reason, other.numbers)

    def __repr__(self) -> str:
        nums = ", ".join(f"{k}={v!r}" for k, v in self.numbers.items())
        return f"Denied({self.reason!r}{', ' if nums else ''}{nums})"


@dataclass(frozen=True, slots=True)
class RiskAlert:
    timestamp: pd.Timestamp
    kind: str  # "STATE_CHANGE" | "NO_SIGNAL" | "EVENTS_LOST" ...
    message: str
    numbers: dict = field(default_factory=dict)


class RiskEngine:
    """Holds the trading state; ``check`` is otherwise a pure function of its arguments."""

    def __init__(self, risk: RiskParams, costs: CostParams, signal: SignalParams | None = None,
                 bar_ms: int = 3_600_000):
        self.risk = risk
        self.costs = costs
        self.signal = signal or SignalParams()
        self.bar_ms = bar_ms
        self.state = TradingState.ACTIVE
        self.state_reason = ""
        self.halted_from_outside = False  # HALTED by ``halt`` (kill switch), not by the drawdown limit
        self.peak_equity_usdt = risk.starting_equity_usdt
        self.day: object | None = None
        self.day_start_equity_usdt = risk.starting_equity_usdt
        self._last_equity_usdt = risk.starting_equity_usdt
        # symbol -> the exchange's own minimum notional (live: from ccxt markets); the stricter
        # of it and ``risk.min_notional_usdt`` applies. Empty in backtest and paper.
        self.market_min_notional_usdt: dict[str, float] = {}
        # symbol -> (reason, one line) for symbols the exchange set-up could not confirm (live:
        # ``executor.live.leverage``): entries there are denied, exits never. Empty in backtest and paper.
        self.refused_symbols: dict[str, tuple[str, str]] = {}

    @classmethod
    def from_params(cls, params) -> "RiskEngine":
        return cls(params.risk, params.costs, params.signal, timeframe_ms(params.data.timeframe))

    def reset_equity(self, equity_usdt: float) -> None:
        """Count drawdown and daily loss from ``equity_usdt`` (live: the reconciled ledger at start-up)."""
        self.peak_equity_usdt = self.day_start_equity_usdt = equity_usdt
        self._last_equity_usdt = equity_usdt

    # ---- state machine -------------------------------------------------------------
    def observe_equity(self, equity_usdt: float, bar_ts: pd.Timestamp) -> list[RiskAlert]:
        """Feed the equity marked at the close of the bar opened at ``bar_ts``.

        The UTC day of a bar is the day of its open time; the day's reference equity is
        the equity at the close of the previous day's last bar.
        """
        alerts: list[RiskAlert] = []
        day = bar_ts.date()
        if day != self.day:
            if self.day is not None:
                self.day_start_equity_usdt = self._last_equity_usdt
            self.day = day
            if self.state is TradingState.REDUCING:
                alerts.append(self._set_state(TradingState.ACTIVE, bar_ts, "new UTC day", {}))
        self._last_equity_usdt = equity_usdt
        self.peak_equity_usdt = max(self.peak_equity_usdt, equity_usdt)
        drawdown = 1.0 - equity_usdt / self.peak_equity_usdt
        day_loss = 1.0 - equity_usdt / self.day_start_equity_usdt
        if self.state is not TradingState.HALTED and drawdown >= self.risk.max_drawdown_pct:
            alerts.append(self._set_state(
                TradingState.HALTED, bar_ts, "max drawdown reached: kill switch, exits only",
                {"drawdown": drawdown, "limit": self.risk.max_drawdown_pct, "equity_usdt": equity_usdt,
                 "peak_equity_usdt": self.peak_equity_usdt}))
        elif self.state is TradingState.ACTIVE and day_loss >= self.risk.daily_loss_limit_pct:
            alerts.append(self._set_state(
                TradingState.REDUCING, bar_ts, "daily loss limit reached: no new entries today",
                {"day_loss": day_loss, "limit": self.risk.daily_loss_limit_pct, "equity_usdt": equity_usdt,
                 "day_start_equity_usdt": self.day_start_equity_usdt}))
        return alerts

    def halt(self, bar_ts: pd.Timestamp, why: str) -> RiskAlert | None:
        """Kill switch from outside (the ``qt:kill`` key): HALTED until ``resume`` (switch cleared)."""
        if self.state is TradingState.HALTED:
            return None
        self.halted_from_outside = True
        return self._set_state(TradingState.HALTED, bar_ts, why, {})

    def resume(self, bar_ts: pd.Timestamp, why: str) -> RiskAlert | None:
        """Kill switch cleared: end a halt ``halt`` set, into the state the limits allow now
        (HALTED stays if the drawdown limit is reached, REDUCING past the daily loss limit).
        A drawdown halt is left alone: it needs a restart."""
        if self.state is not TradingState.HALTED or not self.halted_from_outside:
            return None
        self.halted_from_outside = False
        if 1.0 - self._last_equity_usdt / self.peak_equity_usdt >= self.risk.max_drawdown_pct:
            self.state_reason = "max drawdown reached: kill switch, exits only"
            return None
        day_loss = 1.0 - self._last_equity_usdt / self.day_start_equity_usdt
        to = TradingState.REDUCING if day_loss >= self.risk.daily_loss_limit_pct else TradingState.ACTIVE
        return self._set_state(to, bar_ts, why, {})

    def _set_state(self, state: TradingState, ts: pd.Timestamp, why: str, numbers: dict) -> RiskAlert:
        old = self.state
        self.state = state
        self.state_reason = why
        return RiskAlert(ts, "STATE_CHANGE", f"{old.value} -> {state.value}: {why}",
                         {"from": old.value, "to": state.value, **numbers})

    # ---- the check -----------------------------------------------------------------
    def check(self, intent: OrderIntent, portfolio: Portfolio, now: pd.Timestamp) -> Approved | Denied:
        """Approve or deny one intent against the portfolio at decision time ``now``."""
        if intent.is_exit:
            return Approved(intent, 0.0)
        r = self.risk
        sig = intent.signal
        if sig is None:
            return Denied(NO_SIGNAL)
        if intent.symbol in self.refused_symbols:
            reason, why = self.refused_symbols[intent.symbol]
            return Denied(reason, why=why)
        if self.state is TradingState.HALTED:
            return Denied(HALTED_REASON, state=self.state.value, why=self.state_reason)
        if self.state is TradingState.REDUCING:
            return Denied(DAILY_LOSS_LIMIT, state=self.state.value,
                          day_start_equity_usdt=self.day_start_equity_usdt)
        age_bars = (pd.Timestamp(now) - sig.timestamp).value / (self.bar_ms * 1_000_000)
        if age_bars < 1.0:  # its bar has not closed at `now`: acting on it would be lookahead
            return Denied(SIGNAL_FROM_FUTURE, age_bars=age_bars, signal_ts=str(sig.timestamp))
        if age_bars > self.signal.max_age_bars:
            return Denied(STALE_SIGNAL, age_bars=age_bars, limit=self.signal.max_age_bars)
        if intent.symbol in portfolio.positions or intent.symbol in portfolio.reserved_usdt:
            return Denied(ALREADY_IN_POSITION, symbol=intent.symbol)
        last_exit = portfolio.last_exit_ts.get(intent.symbol)
        if last_exit is not None and r.cooldown_bars > 0:
            # bars between the exit bar and the decision bar (now is that bar's close)
            bars_since_exit = (pd.Timestamp(now) - last_exit).value / (self.bar_ms * 1_000_000) - 1.0
            if bars_since_exit < r.cooldown_bars:
                return Denied(COOLDOWN, bars_since_exit=bars_since_exit, limit=r.cooldown_bars)
        n_open = len(portfolio.positions) + len(portfolio.reserved_usdt)
        if n_open >= r.max_open_positions:
            return Denied(MAX_OPEN_POSITIONS, open_positions=n_open, limit=r.max_open_positions)
        requested = intent.notional_usdt
        min_notional = max(r.min_notional_usdt, self.market_min_notional_usdt.get(intent.symbol, 0.0))
        if requested < min_notional:
            return Denied(MIN_NOTIONAL, notional=requested, limit=min_notional)
        notional, clipped_by = requested, None
        if notional > r.max_position_notional_usdt:
            notional, clipped_by = r.max_position_notional_usdt, MAX_POSITION_NOTIONAL
        equity = portfolio.equity_usdt()
        gross = portfolio.gross_notional_usdt() + portfolio.reserved_total_usdt()
        headroom = r.max_gross_exposure * equity - gross
        if notional > headroom:
            notional, clipped_by = max(headroom, 0.0), MAX_GROSS_EXPOSURE
        fee = self.costs.fee_rate
        cash_free = portfolio.cash_usdt - portfolio.reserved_total_usdt() * (1.0 + fee)
        affordable = max(cash_free, 0.0) / (1.0 + fee)
        if notional > affordable:
            notional, clipped_by = affordable, INSUFFICIENT_CASH
        if notional < min_notional:
            numbers = {"requested": requested, "notional": notional, "min_notional": min_notional}
            if clipped_by == MAX_POSITION_NOTIONAL:
                numbers["limit"] = r.max_position_notional_usdt
            elif clipped_by == MAX_GROSS_EXPOSURE:
                numbers.update(gross=gross, equity=equity, limit=r.max_gross_exposure)
            elif clipped_by == INSUFFICIENT_CASH:
                numbers["cash_free"] = cash_free
            return Denied(clipped_by or MIN_NOTIONAL, **numbers)
        return Approved(intent, notional, clipped_by)
