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

import math
from dataclasses import dataclass, field
from enum import Enum

import pandas as pd

from executor.core import OrderIntent
from executor.portfolio import Portfolio
from executor.rules import SIGNAL_DEGENERATE, SIGNAL_HEALTHY, CloseHistory, SignalSupervisor, cluster_of, \
    liquidation_problem
from qt.config import CostParams, RiskParams, SignalParams
from qt.margin import BINANCE_BTCUSDT_BRACKETS, Bracket
from qt.timeframes import timeframe_ms

_UTC = pd.Timestamp(0, tz="UTC").tzinfo
_DAY_NS = 86_400 * 10**9

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
SHORT_NOT_ALLOWED = "SHORT_NOT_ALLOWED"
FUNDING_FILTER = "FUNDING_FILTER"
CORRELATION_CAP = "CORRELATION_CAP"
NET_EXPOSURE = "NET_EXPOSURE"
MARGIN_GUARD = "MARGIN_GUARD"
LIQUIDATION_BEFORE_STOP = "LIQUIDATION_BEFORE_STOP"
EDGE_BELOW_COST = "EDGE_BELOW_COST"
FUNDING_INTERVAL_MS = 8 * 3_600_000  # Binance's usual funding interval (the expected-funding estimate)


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
                 bar_ms: int = 3_600_000, horizon_bars: int = 1):
        self.horizon_bars = horizon_bars  # the label horizon the signal's expected_return spans
        self.risk = risk
        self.costs = costs
        self.signal = signal or SignalParams()
        self.bar_ms = bar_ms
        self.state = TradingState.ACTIVE
        self.state_reason = ""
        self.halted_from_outside = False  # HALTED by ``halt`` (kill switch), not by the drawdown limit
        self.peak_equity_usdt = risk.starting_equity_usdt
        self.day: object | None = None
        self._day_ns: tuple = (0, 0, None)  # [first, end) ns of a UTC day and its date (observe_equity)
        self.day_start_equity_usdt = risk.starting_equity_usdt
        self._last_equity_usdt = risk.starting_equity_usdt
        # symbol -> the exchange's own minimum notional (live: from ccxt markets); the stricter
        # of it and ``risk.min_notional_usdt`` applies. Empty in backtest and paper.
        self.market_min_notional_usdt: dict[str, float] = {}
        # symbol -> (reason, one line) for symbols the exchange set-up could not confirm (live:
        # ``executor.live.leverage``): entries there are denied, exits never. Empty in backtest and paper.
        self.refused_symbols: dict[str, tuple[str, str]] = {}
        # maintenance-margin brackets per symbol (live: the exchange's leverageBracket); others use
        # Binance's BTCUSDT table (qt.margin) - the liquidation check's arithmetic
        self.brackets: dict[str, tuple[Bracket, ...]] = {}
        # fed by the loop: closes seen (correlation cap), the funding schedule (funding filter)
        self.history: CloseHistory | None = (CloseHistory(risk.correlation_lookback_bars + 1)
                                             if risk.max_cluster_exposure is not None else None)
        self.funding = None  # executor.funding.FundingSchedule (last settled rate per symbol)
        self.supervisor = SignalSupervisor(risk.supervisor_window_bars, risk.supervisor_max_one_side,
                                           risk.supervisor_min_prob_std)

    @classmethod
    def from_params(cls, params) -> "RiskEngine":
        return cls(params.risk, params.costs, params.signal, timeframe_ms(params.data.timeframe),
                   params.labels.horizon_bars)

    def reset_equity(self, equity_usdt: float) -> None:
        """Count drawdown and daily loss from ``equity_usdt`` (live: the reconciled ledger at start-up)."""
        self.peak_equity_usdt = self.day_start_equity_usdt = equity_usdt
        self._last_equity_usdt = equity_usdt

    def free_margin_usdt(self, portfolio: Portfolio) -> float:
        """Margin free for a new perpetual entry: equity minus the initial margin of the open
        positions (notional at the marks / their leverage; a spot holding takes its whole value)
        and of the reserved entries (their notional / leverage, plus the fee)."""
        used = 0.0
        for sym, pos in portfolio.positions.items():
            used += portfolio.notional_usdt(sym) / max(pos.leverage, 1)
        for sym, notional in portfolio.reserved_usdt.items():
            used += notional * (1.0 / self.risk.leverage_of(sym) + self.costs.fee_rate)
        return portfolio.equity_usdt() - used

    def _funding_filter(self, intent: OrderIntent, now: pd.Timestamp) -> Denied | None:
        """No long when the last settled funding rate is above the limit, no short below its negative."""
        limit = self.risk.max_entry_funding_rate
        rate = None if self.funding is None else self.funding.last_rate_before(intent.symbol, now)
        if rate is None:
            return Denied(FUNDING_FILTER, rate=None, limit=limit,
                          why="no settled funding rate known for the symbol; collect funding")
        if (rate > limit and not intent.is_short) or (rate < -limit and intent.is_short):
            return Denied(FUNDING_FILTER, rate=rate, limit=limit, side="short" if intent.is_short else "long")
        return None

    def _edge_filter(self, intent: OrderIntent, now: pd.Timestamp) -> Denied | None:
        """Cost-aware entry: the expected move over the label horizon, in the entry's direction
        (``exp(expected_return) - 1``, the model's out-of-fold calibrated mapping), must beat the
        round trip - entry and exit fee and slippage (a limit entry: the maker fee, no slippage)
        plus, on a perpetual, the last settled funding rate over the horizon's funding times, paid
        by the side that pays it - by ``signal.min_edge_bps``."""
        c = self.costs
        slip = c.slippage_bps / 10_000.0
        maker = c.fee_rate if c.maker_fee_rate is None else c.maker_fee_rate
        entry_cost = maker if intent.order_type == "limit" else c.fee_rate + slip
        cost = entry_cost + c.fee_rate + slip
        direction = -1.0 if intent.is_short else 1.0
        funding = 0.0
        if ":" in intent.symbol:
            rate = None if self.funding is None else self.funding.last_rate_before(intent.symbol, now)
            if rate is None:
                return Denied(EDGE_BELOW_COST, why="no settled funding rate known to price the holding cost")
            funding = direction * rate * self.horizon_bars * self.bar_ms / FUNDING_INTERVAL_MS
        move = direction * (math.exp(intent.signal.expected_return) - 1.0)
        edge = move - cost - funding
        need = self.signal.min_edge_bps / 10_000.0
        if edge < need:
            return Denied(EDGE_BELOW_COST, expected_move=move, round_trip_cost=cost, expected_funding=funding,
                          edge=edge, min_edge=need)
        return None

    # ---- state machine -------------------------------------------------------------
    def observe_equity(self, equity_usdt: float, bar_ts: pd.Timestamp) -> list[RiskAlert]:
        """Feed the equity marked at the close of the bar opened at ``bar_ts``.

        The UTC day of a bar is the day of its open time; the day's reference equity is
        the equity at the close of the previous day's last bar.
        """
        alerts: list[RiskAlert] = []
        # called on every bar a backtest steps (held spans too): the day's key is the open time's
        # nanoseconds // one day while it is UTC (the date only when the day changes), not a date per bar
        value = bar_ts.value
        first, end, known = self._day_ns
        if first <= value < end and known is self.day and bar_ts.tzinfo is _UTC:
            day = known
        else:
            day = bar_ts.date()
            first = value - value % _DAY_NS
            self._day_ns = (first, first + _DAY_NS, day) if bar_ts.tzinfo is _UTC else (0, 0, None)
        if day != self.day:
            if self.day is not None:
                self.day_start_equity_usdt = self._last_equity_usdt
            self.day = day
            if self.state is TradingState.REDUCING:
                alerts.append(self._set_state(TradingState.ACTIVE, bar_ts, "new UTC day", {}))
        self._last_equity_usdt = equity_usdt
        peak = self.peak_equity_usdt
        if equity_usdt > peak:  # max(peak, equity): the peak kept on a tie or a NaN
            peak = self.peak_equity_usdt = equity_usdt
        drawdown = 1.0 - equity_usdt / peak
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

    def observe_signals(self, bar_ts: pd.Timestamp, actions: list[str], probabilities: list[float]) -> RiskAlert | None:
        """One bar's champion signals for the supervisor; an alert when it halts or resumes entries."""
        changed = self.supervisor.observe(actions, probabilities)
        if changed is None:
            return None
        if changed:
            return RiskAlert(bar_ts, SIGNAL_DEGENERATE, "model supervisor: the champion's signals are degenerate "
                             "(one-sided or flat probabilities): no new entries, exits still managed",
                             dict(self.supervisor.why))
        return RiskAlert(bar_ts, SIGNAL_HEALTHY, "model supervisor: signals healthy again: entries allowed",
                         dict(self.supervisor.why))

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
        age_bars = _ns_between(now, sig.timestamp) / (self.bar_ms * 1_000_000)
        if age_bars < 1.0:  # its bar has not closed at `now`: acting on it would be lookahead
            return Denied(SIGNAL_FROM_FUTURE, age_bars=age_bars, signal_ts=str(sig.timestamp))
        if age_bars > self.signal.max_age_bars:
            return Denied(STALE_SIGNAL, age_bars=age_bars, limit=self.signal.max_age_bars)
        if intent.symbol in portfolio.positions or intent.symbol in portfolio.reserved_usdt:
            return Denied(ALREADY_IN_POSITION, symbol=intent.symbol)
        last_exit = portfolio.last_exit_ts.get(intent.symbol)
        if last_exit is not None and r.cooldown_bars > 0:
            # bars between the exit bar and the decision bar (now is that bar's close)
            bars_since_exit = _ns_between(now, last_exit) / (self.bar_ms * 1_000_000) - 1.0
            if bars_since_exit < r.cooldown_bars:
                return Denied(COOLDOWN, bars_since_exit=bars_since_exit, limit=r.cooldown_bars)
        n_open = len(portfolio.positions) + len(portfolio.reserved_usdt)
        if n_open >= r.max_open_positions:
            return Denied(MAX_OPEN_POSITIONS, open_positions=n_open, limit=r.max_open_positions)
        if self.supervisor.degenerate:
            return Denied(SIGNAL_DEGENERATE, **self.supervisor.why)
        if intent.is_short and (not r.allow_short or ":" not in intent.symbol):
            return Denied(SHORT_NOT_ALLOWED, symbol=intent.symbol)
        if r.max_entry_funding_rate is not None and ":" in intent.symbol:
            denied = self._funding_filter(intent, now)
            if denied is not None:
                return denied
        if self.signal.min_edge_bps is not None:
            denied = self._edge_filter(intent, now)
            if denied is not None:
                return denied
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
        direction = -1.0 if intent.is_short else 1.0
        numbers: dict = {}
        if r.max_net_exposure is not None:
            net = direction * portfolio.signed_exposure_usdt()
            room = r.max_net_exposure * equity - net
            if notional > room:
                notional, clipped_by = max(room, 0.0), NET_EXPOSURE
                numbers.update(net_usdt=net, equity=equity, limit=r.max_net_exposure)
        if r.max_cluster_exposure is not None:
            others = set(portfolio.positions) | set(portfolio.reserved_usdt)
            cluster = cluster_of(intent.symbol, others, self.history, r.correlation_threshold,
                                 r.correlation_lookback_bars)
            same = direction * portfolio.signed_exposure_usdt(set(cluster))
            room = r.max_cluster_exposure * equity - same
            if notional > room:
                notional, clipped_by = max(room, 0.0), CORRELATION_CAP
                numbers = {"cluster": ",".join(cluster), "cluster_usdt": same, "equity": equity,
                           "limit": r.max_cluster_exposure}
        fee = self.costs.fee_rate
        if ":" in intent.symbol:  # a perpetual: the margin it takes must be free (wallet + uPnL - margins in use)
            free = self.free_margin_usdt(portfolio)
            floor = r.min_free_margin_fraction * equity
            affordable = max(free - floor, 0.0) / (1.0 / intent.leverage + fee)
            if notional > affordable:
                notional, clipped_by = affordable, MARGIN_GUARD if floor > 0 else INSUFFICIENT_CASH
                numbers = {"free_margin_usdt": free, "floor_usdt": floor, "leverage": intent.leverage}
        else:
            cash_free = portfolio.cash_usdt - portfolio.reserved_total_usdt() * (1.0 + fee)
            affordable = max(cash_free, 0.0) / (1.0 + fee)
            if notional > affordable:
                notional, clipped_by = affordable, INSUFFICIENT_CASH
                numbers = {"cash_free": cash_free}
        if notional < min_notional:
            numbers.update(requested=requested, notional=notional, min_notional=min_notional)
            if clipped_by == MAX_POSITION_NOTIONAL:
                numbers["limit"] = r.max_position_notional_usdt
            elif clipped_by == MAX_GROSS_EXPOSURE:
                numbers.update(gross=gross, equity=equity, limit=r.max_gross_exposure)
            return Denied(clipped_by or MIN_NOTIONAL, **numbers)
        if ":" in intent.symbol:
            problem = liquidation_problem("short" if intent.is_short else "long", intent.reference_price,
                                          intent.stop_loss_pct, intent.leverage, notional,
                                          self.brackets.get(intent.symbol, BINANCE_BTCUSDT_BRACKETS),
                                          r.liquidation_buffer)
            if problem is not None:
                return Denied(LIQUIDATION_BEFORE_STOP, **problem)
        return Approved(intent, notional, clipped_by)


def _ns_between(now, then: pd.Timestamp) -> int:
    """``(pd.Timestamp(now) - then).value``: nanoseconds as integers when both carry the same zone
    (every check of an entry; a Timedelta costs a microsecond), else pandas' own difference
    (which refuses a naive time against an aware one)."""
    now = pd.Timestamp(now)
    if isinstance(then, pd.Timestamp) and now.tzinfo is then.tzinfo:
        return now.value - then.value
    return (now - then).value
