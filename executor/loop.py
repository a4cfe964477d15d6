"""The one trading loop: backtest, paper replay and live differ only in what is injected
(the broker is an ``executor.broker.Broker``: paper, perps or spot).

Per bar t (all symbols sharing the open time ``ts``), in this order:

  0. funding events since the previous bar (``prev < F <= ts``) are settled on the perp
     positions held into this open, marked at their last close (``executor.funding``);
  a. the broker fills the orders decided at the close of t-1 at the open of t;
  a'. resting limit entries fill (at the open, or intrabar strictly below the limit) or, past
     ``risk.limit_ttl_bars``, expire: the reservation is released and a ``cancelled`` decision
     with reason ``LIMIT_EXPIRED`` is recorded;
  b. the broker triggers protective orders intrabar (stop - fixed or trailing, whichever is
     higher - before take-profit), then the trailing stops' peaks take this bar's high;
  c. positions are marked at the close of t, equity is recorded, the risk engine updates
     its state (daily loss -> REDUCING, drawdown / kill switch -> HALTED);
  d. the signal source is asked for signals ``as_of=ts`` (features of bar t); the pure core
     proposes intents, the risk engine approves or denies each, approved ones go to the
     broker for the open of t+1. A bar a live executor missed (``step(missed=True)``) asks
     for no signals: only exits that need none (max holding) are sent.

Perpetual symbols need a funding schedule: ``run`` refuses a perp without funding history
covering its bars (``DataError``), so funding is never silently zero.

Every decision is recorded with its reason; listeners (SQLite state, Redis events) see
every signal, order, fill, decision, equity point and alert as it happens. A listener
that fails never stops the loop (exits must keep being managed) and is never silent
(``executor.listeners``): the state recorder failing blocks new entries (``STATE_WRITE_FAILED``)
until it writes a whole bar again; any other listener's failures are counted and logged once per
outage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import pandas as pd

from executor.bartable import bar_table, last_bars, symbol_spans
from executor.core import Decision, OrderIntent, decide
from executor.funding import FundingSchedule, as_schedule, require_funding, settle_funding
from executor.loopapi import LoopListener, LoopResult  # noqa: F401 - re-exported: callers import them from here
from executor.listeners import STATE_WRITE_FAILED, STATE_WRITE_RECOVERED, ListenerHealth
from executor.broker import Broker, Rejection, SimulatedBroker
from executor.paper import LIMIT_EXPIRED, MarketOrder, PaperBroker
from executor.portfolio import Bar, Fill, Portfolio, make_bar
from executor.rank import decide_rank
from executor.risk import Approved, RiskAlert, RiskEngine
from executor.quiet import quiet_plan
from executor.signals import Signal, SignalSource, SignalUnavailable
from executor.spans import SpanStepper
from executor.sizing import RealisedVolatility
from qt.config import Params
from qt.timeframes import timeframe_ms
from qt.values import positional_maker

log = logging.getLogger(__name__)
MISSED_BAR = "MISSED_BAR"
# an order and a decision per intent a backtest approves or denies: made field by field (qt.values)
_market_order = positional_maker(MarketOrder)
_make_decision = positional_maker(Decision)


class TradingLoop:
    def __init__(self, params: Params, source: SignalSource, broker: Broker,
                 listeners: Sequence[LoopListener] = (), kill_switch: Callable[[], bool] | None = None,
                 bar_ms: int | None = None, funding: pd.DataFrame | FundingSchedule | None = None,
                 exchange_settles_funding: bool = False):
        """``exchange_settles_funding``: live, the exchange debits funding from the wallet itself,
        so the loop books none (its schedule is not needed)."""
        self.params = params
        self.funding = as_schedule(funding)
        self.exchange_settles_funding = exchange_settles_funding
        self._funding_after: pd.Timestamp | None = None  # open time of the last bar stepped
        self.source = source
        self.broker = broker
        self.listeners = list(listeners)
        self.health = ListenerHealth()
        self._ts: pd.Timestamp | None = None  # bar being stepped (for alerts raised by listener failures)
        self.kill_switch = kill_switch
        self.bar_ms = bar_ms or timeframe_ms(params.data.timeframe)
        self.risk = RiskEngine(params.risk, params.costs, params.signal, self.bar_ms, params.labels.horizon_bars)
        self.risk.funding = self.funding  # the funding filter reads the last settled rate
        self.portfolio = Portfolio(cash_usdt=params.risk.starting_equity_usdt)
        self._next_order_id = 1
        self._outage_since: pd.Timestamp | None = None  # first bar of the current signal outage
        self._outage_bars = 0
        self._bar_delta = pd.Timedelta(milliseconds=self.bar_ms)
        self._result = LoopResult(params.risk.starting_equity_usdt, self.bar_ms,
                                  pd.Series(dtype="float64"), pd.Series(dtype=bool))
        self._eq_ts: list[pd.Timestamp] = []
        self._eq_index: pd.DatetimeIndex | None = None  # _eq_ts as an index, when a run stepped a whole table
        self._planned: tuple[SpanStepper, int] | None = None  # the plan and row of the bar run() steps
        self._eq_val: list[float] = []
        self._exposed: list[bool] = []
        # volatility-targeted sizing: fed with every close the loop sees (``_mark``), before it decides
        vol_sized = params.risk.sizing == "volatility_target" or (
            params.signal.mode == "rank" and params.signal.rank_weighting == "volatility")
        self.volatility = RealisedVolatility(params.risk.vol_lookback_bars, self.bar_ms) if vol_sized else None

    def prime_volatility(self, candles: pd.DataFrame, before: pd.Timestamp) -> None:
        """Feed the volatility estimate with the closes of the bars before the first one stepped, so
        that a run starting at ``before`` sizes from its first bar - the same numbers whether the
        loop stepped those bars itself (a backtest from the start) or not (a replay or a restart)."""
        history = self.risk.history
        if (self.volatility is None and history is None) or candles.empty:
            return
        past = candles[candles["timestamp"] < before].sort_values(["symbol", "timestamp"])
        for sym, g in past.groupby("symbol", sort=True):
            closes = g["close"].to_numpy()
            if self.volatility is not None:
                for close in closes[-(self.volatility.lookback + 1):]:
                    self.volatility.observe(str(sym), float(close))
            if history is not None:
                stamps = pd.to_datetime(g["timestamp"], utc=True).to_numpy()
                for t, close in zip(stamps[-history.keep:], closes[-history.keep:]):
                    history.observe(str(sym), pd.Timestamp(t), float(close))

    # ---- public ----------------------------------------------------------------------
    def run(self, candles: pd.DataFrame, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None,
            close_at_end: bool = False, skip_quiet: bool = True, skip_held: bool = True) -> LoopResult:
        """Step every bar with ``start <= ts <= end``; optionally liquidate at the last close.

        ``skip_quiet``: a bar where the ledger is flat and idle and no symbol's signal can act is
        stepped with the run of quiet bars it starts; ``skip_held``: so is a bar in a position
        before the next event (``executor.spans``: same result, a fraction of the time; most bars
        of a backtest). ``skip_quiet=False`` steps every bar through ``step`` (the differential
        test's reference)."""
        table = bar_table(candles, start, end)
        require_funding(self.funding, symbol_spans(table))
        if len(table.timestamps):
            self.prime_volatility(candles, table.timestamps[0])
        symbols = table.symbols
        stamps = list(table.timestamps)  # one Timestamp per bar, shared by its equity point and decisions
        spans = self._span_stepper(table, stamps, skip_held) if skip_quiet else None
        i = 0
        while i < len(stamps):
            if spans is not None:
                after = spans.advance(i)
                if after > i:
                    i = after
                    continue
            ts, bars = stamps[i], {}
            # Python floats for the row at once, not four numpy scalars per symbol
            for sym, (o, h, lo, c) in zip(symbols, table.ohlc[i].tolist()):
                if o == o and c == c:  # not NaN
                    bars[sym] = make_bar(sym, ts, o, h, lo, c)
            self._planned = None if spans is None else (spans, i)
            try:
                self.step(ts, bars, symbols)
            finally:
                self._planned = None
            i += 1
        if len(self._eq_ts) == len(table.timestamps):  # one point per bar of the table: this run's
            self._eq_index = table.timestamps
        if close_at_end:
            self._liquidate(last_bars(table))
        return self.result()

    # ---- spans: most bars of a backtest, stepped at once between events (executor.spans) ----
    def _span_stepper(self, table, stamps: list[pd.Timestamp], held: bool) -> SpanStepper | None:
        """Read the signals ahead from a source that can (``signals_on``), where nothing else
        watches a bar (no listeners, kill switch or supervisor; the paper broker), in timing mode
        (rank mode's rebalances are not flat_noop's rule)."""
        signals_on = getattr(self.source, "signals_on", None)
        if (signals_on is None or self.listeners or self.kill_switch is not None or self.risk.supervisor.enabled
                or not isinstance(self.broker, PaperBroker) or not len(table.timestamps)
                or self.params.signal.mode != "timing"):
            return None
        return SpanStepper(self, table, quiet_plan(table, signals_on(table.symbols, table.timestamps),
                                                   self.params.risk), stamps, held)

    def settled(self) -> bool:
        """Nothing reserved, pending or guarded against: a bar then fills and opens nothing
        unless a signal, a guard, max holding or funding makes it (``executor.spans``); flat too
        (no guards): a quiet bar does nothing at all."""
        pf = self.portfolio
        return (not pf.reserved_usdt and not pf.pending_exits and not self.broker.pending_orders
                and self._outage_since is None and not self.health.entries_blocked
                and (bool(pf.positions) or self.broker.idle))

    def book_span(self, stamps: list[pd.Timestamp], lo: int, hi: int, equity: list[float], exposed: bool,
                  decisions, signals: int) -> None:
        """Record bars ``lo:hi`` stepped at once: equity points, the span's decisions, signals received."""
        self._ts = self._funding_after = stamps[hi - 1]  # a span holds no funding time of a held perp
        self._eq_ts.extend(stamps[lo:hi])
        self._eq_val.extend(equity)
        self._exposed.extend([exposed] * (hi - lo))
        if decisions is not None:
            self._result.decision_log.add_span(decisions)
        self._result.signals_received += signals

    def decide_planned(self, ts: pd.Timestamp, bars: dict[str, Bar], symbols: list[str], planned) -> None:
        """The decision phase of a bar whose fills, funding and marks a span did (``executor.spans``:
        flat and idle, nothing to fill or settle): signals, the core, the risk engine, the orders -
        ``_decide`` as ``step`` calls it, ``bars`` holding the bars of the symbols that act."""
        self._ts = ts
        self._planned = planned
        try:
            self._decide(ts, bars, symbols)
        finally:
            self._planned = None

    def step(self, ts: pd.Timestamp, bars: dict[str, Bar], symbols: list[str], missed: bool = False) -> None:
        """Step bar ``ts`` (the order in the module docstring).

        ``missed=True``: a bar that closed while a live executor was not looking (its catch-up):
        the same accounting (funding bookkeeping, fills and triggers, marks, ``bars_held``,
        equity) but no signals and no entries - only exits that need no signal (max holding);
        flat symbols get a ``skip`` / ``MISSED_BAR`` decision so the record says why nothing was
        opened. A missed bar leaves the bar of listener-failure alerts and the state-write
        outage to the next full bar."""
        if not missed:
            self._ts = ts
        self._settle_funding(ts)
        self._execute(ts, bars)
        self._mark(ts, bars)
        if missed:
            self._decide_missed(ts, bars, symbols)
        else:
            self._decide(ts, bars, symbols)
        self._emit("on_bar_done", ts)
        if missed:
            return
        since = self.health.end_bar()
        if since is not None:
            self.raise_alert(RiskAlert(ts, STATE_WRITE_RECOVERED, "state recorder writes again: new entries allowed "
                                       "from the next bar; the journal lacks what happened in between",
                                       {"failed_since": str(since)}))

    def adopt(self, portfolio: Portfolio, equity_usdt: float) -> None:
        """Trade from a reconciled ledger (live start-up); drawdown and daily loss count from its equity."""
        self.portfolio = portfolio
        self.risk.reset_equity(equity_usdt)

    def book_refusals(self, ts: pd.Timestamp, rejections: Sequence[Rejection]) -> None:
        """Refusals the broker reports after the fact (live: the exchange's). A refused entry
        releases its reservation (its order row reads ``cancelled``); a refused exit is decided
        again next bar (exits are never blocked). Each refusal is a decision ``rejected`` with
        the reason and the exchange's one-line message."""
        orders = {o.order_id: o for o in self._result.orders}
        for rej in rejections:
            details = {"order_id": rej.order_id, "message": rej.message, "client_id": rej.client_id}
            self.record(Decision(ts, rej.symbol, None, "rejected", rej.reason, details=details))
            if rej.purpose == "entry":
                self.portfolio.release_reservation(rej.symbol)
                if rej.order_id in orders:
                    self._emit("on_cancel", orders[rej.order_id], ts)
            elif rej.purpose == "exit":
                self.portfolio.pending_exits.discard(rej.symbol)

    def result(self) -> LoopResult:
        r = self._result
        index = self._eq_index if self._eq_index is not None and len(self._eq_index) == len(self._eq_ts) else self._eq_ts
        r.equity = pd.Series(self._eq_val, index=pd.DatetimeIndex(index, name="timestamp"),
                             name="equity_usdt", dtype="float64")
        r.exposure = pd.Series(self._exposed, index=r.equity.index, name="exposed", dtype=bool)
        r.closed_trades = list(self.portfolio.closed_trades)
        r.portfolio = self.portfolio
        r.final_state = self.risk.state
        return r

    # ---- steps -----------------------------------------------------------------------
    def _settle_funding(self, ts: pd.Timestamp) -> None:
        if self.exchange_settles_funding:
            self._funding_after = ts
            return
        pf = self.portfolio
        if pf.positions:  # flat: nothing is paid
            for pay in settle_funding(self.funding, pf.positions, pf.marks, self._funding_after, ts):
                pf.apply_funding(pay.symbol, pay.amount_usdt)
                self._result.funding.append(pay)
                self._emit("on_funding", pay, pf)
        self._funding_after = ts

    def _execute(self, ts: pd.Timestamp, bars: dict[str, Bar]) -> None:
        exe = self.broker.process_bar(bars)
        for order in exe.cancelled:
            self.portfolio.release_reservation(order.symbol)
            self._emit("on_cancel", order, ts)
        for order in exe.expired:  # limit entries past their TTL
            self.portfolio.release_reservation(order.symbol)
            self._emit("on_cancel", order, ts)
            self.record(Decision(ts, order.symbol, None, "cancelled", LIMIT_EXPIRED,
                                 details={"order_id": order.order_id, "limit_price": order.limit_price,
                                          "ttl_bars": order.ttl_bars}))
        for fill in exe.fills:
            self._book(fill, exe.protective_placed.get(fill.symbol))

    def _book(self, fill: Fill, protective=None) -> None:
        if fill.purpose == "entry":
            trade = self.portfolio.apply_fill(fill, protective.stop_price, protective.take_profit_price,
                                              leverage=self.params.risk.leverage_of(fill.symbol))
        else:
            trade = self.portfolio.apply_fill(fill)
        self._result.fills.append(fill)
        self._emit("on_fill", fill, self.portfolio, trade)

    def _mark(self, ts: pd.Timestamp, bars: dict[str, Bar]) -> None:
        pf = self.portfolio
        marks, positions, volatility, history = pf.marks, pf.positions, self.volatility, self.risk.history
        if volatility is None and history is None:  # no windows to feed (the default)
            for sym, bar in bars.items():
                marks[sym] = bar.close
        else:
            for sym, bar in bars.items():
                marks[sym] = bar.close
                if volatility is not None:
                    volatility.observe(sym, bar.close)
                if history is not None:
                    history.observe(sym, ts, bar.close)
        for sym, pos in positions.items():
            if sym in bars:
                pos.bars_held += 1
        equity = pf.equity_usdt()
        alerts = self.risk.observe_equity(equity, ts)
        if self.kill_switch is not None:
            if self.kill_switch():
                alert = self.risk.halt(ts, "kill switch set (qt:kill): no new entries, exits only")
            else:
                alert = self.risk.resume(ts, "kill switch cleared (qt resume): trading again")
            if alert is not None:
                alerts.append(alert)
        for alert in alerts:
            log.warning("risk: %s %s", alert.message, alert.numbers)
            self.raise_alert(alert)
        self._eq_ts.append(ts)
        self._eq_val.append(equity)
        self._exposed.append(bool(pf.positions))
        self._emit("on_equity", ts, equity, pf.cash_usdt, self.risk.state, pf)

    def _decide(self, ts: pd.Timestamp, bars: dict[str, Bar], symbols: list[str]) -> None:
        """Signals, the core's intents, the risk engine's verdicts. In a backtest with a plan
        (``executor.spans``) the symbols whose decision the plan knows - no bar, or flat with a
        signal ``flat_noop`` says does nothing - are neither fetched nor decided: their decisions
        are the plan's (``decide``'s for them), the others' are ``decide``'s."""
        signals: dict[str, Signal] | None
        planned = self._planned
        if planned is not None:
            symbols = planned[0].to_decide(planned[1])
            if not symbols:  # every decision is the plan's (its source reads ahead: never down): nothing to ask
                self._result.signals_received += planned[0].signals_at(planned[1])
                self._result.decision_log.add_span(planned[0].bar_decisions(planned[1], []))
                return
        try:
            received = self.source.fetch(symbols, ts)
        except SignalUnavailable as exc:
            signals = None
            self._log_outage(ts, exc)
            self._emit("on_signal_unavailable", ts, exc)
            self.raise_alert(RiskAlert(ts, "NO_SIGNAL", f"signal source unavailable: {exc}"))
        else:
            if self._outage_since is not None:
                log.warning("signal source back at %s after %d bar(s) without signals (since %s)",
                            ts, self._outage_bars, self._outage_since)
                self._outage_since, self._outage_bars = None, 0
            self._result.signals_received += len(received) if planned is None else planned[0].signals_at(planned[1])
            signals = {s.symbol: s for s in received}
            self._emit("on_signals", ts, received)
            if self.risk.supervisor.enabled:  # off: nothing to feed it (saves two lists per bar)
                fresh = [s for s in received if s.timestamp == ts]  # this bar's: a lagging source repeats old ones
                alert = self.risk.observe_signals(ts, [s.action for s in fresh], [s.confidence for s in fresh])
                if alert is not None:
                    log.warning("risk: %s %s", alert.message, alert.numbers)
                    self.raise_alert(alert)
        vol = None if self.volatility is None else self.volatility.annual
        if self.params.signal.mode == "rank":
            out = decide_rank(ts, bars, signals, self.portfolio, self.params.risk, symbols, self.params.signal,
                              self.bar_ms, vol)
        else:
            out = decide(ts, bars, signals, self.portfolio, self.params.risk, symbols, vol, self.params.signal)
        if self.listeners:
            for d in out.decisions:
                self.record(d)
        elif planned is not None:  # the plan's decisions and the core's, in symbol order
            self._result.decision_log.add_span(planned[0].bar_decisions(planned[1], out.decisions))
        else:  # what record does without listeners
            self._result.decision_log.extend(out.decisions)
        # the decision time: a plan has it made already (a Timestamp costs a couple of us)
        now = planned[0].next_open(planned[1]) if planned is not None and out.intents else None
        now = ts + self._bar_delta if now is None and out.intents else now
        for intent in out.intents:
            if not intent.is_exit and self.health.entries_blocked:
                self.record(_decision_for(ts, intent, "denied", STATE_WRITE_FAILED, 0.0,
                                          {"failed_since": str(self.health.state_write_failed_since)}))
                continue
            verdict = self.risk.check(intent, self.portfolio, now)
            if isinstance(verdict, Approved):
                self._submit(ts, intent, verdict)
            else:
                self.record(_decision_for(ts, intent, "denied", verdict.reason, 0.0, dict(verdict.numbers)))

    def _decide_missed(self, ts: pd.Timestamp, bars: dict[str, Bar], symbols: list[str]) -> None:
        """A missed bar's decisions (``step(missed=True)``): exits that need no signal, no entries."""
        out = decide(ts, bars, {}, self.portfolio, self.params.risk, symbols)
        now = ts + self._bar_delta
        for intent in out.intents:
            if intent.is_exit:
                self._submit(ts, intent, self.risk.check(intent, self.portfolio, now))
            else:
                self.record(Decision(ts, intent.symbol, None, "skip", MISSED_BAR,
                                     details={"why": "bar closed while the executor was not polling; "
                                                     "entries are decided on the newest bar only"}))

    def _submit(self, ts: pd.Timestamp, intent: OrderIntent, verdict: Approved) -> None:
        oid = self._next_order_id
        self._next_order_id += 1
        # MarketOrder(oid, symbol, side, purpose, reason, notional_usdt=verdict's, qty=..., decided_ts=ts, ...)
        order = _market_order(oid, intent.symbol, intent.side, intent.purpose, intent.reason, verdict.notional_usdt,
                              intent.qty, intent.stop_loss_pct, intent.take_profit_pct, ts, intent.order_type,
                              intent.limit_price, intent.ttl_bars, intent.trailing_stop_pct, intent.trailing_mode,
                              intent.take_profit_ladder, intent.breakeven_after_first_tp, intent.leverage)
        if intent.is_exit:
            self.portfolio.pending_exits.add(intent.symbol)
            decision = _decision_for(ts, intent, "exit", intent.reason, 0.0,
                                     {"order_id": oid, "qty": intent.qty})
        else:
            self.portfolio.reserved_usdt[intent.symbol] = verdict.notional_usdt
            details = {"order_id": oid, "requested": intent.notional_usdt}
            if intent.is_short:
                self.portfolio.reserved_short.add(intent.symbol)
                details["side"] = "short"
            if intent.leverage > 1:
                details["leverage"] = intent.leverage
            if intent.take_profit_ladder:
                details["ladder"] = [list(r) for r in intent.take_profit_ladder]
            if intent.order_type == "limit":
                details.update(order_type="limit", limit_price=intent.limit_price, ttl_bars=intent.ttl_bars)
            if verdict.clipped_by:
                details["clipped_by"] = verdict.clipped_by
            decision = _decision_for(ts, intent, "enter", intent.reason, verdict.notional_usdt, details)
        self.broker.submit(order)
        self._result.orders.append(order)
        self.record(decision)
        self._emit("on_order", order, decision)

    def _liquidate(self, last_bars: dict[str, Bar]) -> None:
        if not isinstance(self.broker, SimulatedBroker):
            raise TypeError(f"close_at_end needs a simulated broker (close_at_close); "
                            f"{type(self.broker).__name__} trades on an exchange")
        for sym in sorted(self.portfolio.positions):
            pos = self.portfolio.positions[sym]
            oid = self._next_order_id
            self._next_order_id += 1
            self._book(self.broker.close_at_close(sym, pos.qty, last_bars[sym], oid, side=pos.close_side))
        self.portfolio.reserved_usdt.clear()
        self.broker.cancel_all()  # orders for a bar that will never come
        if self._eq_val:
            self._eq_val[-1] = self.portfolio.equity_usdt()

    # ---- plumbing --------------------------------------------------------------------
    def record(self, decision: Decision) -> None:
        """One decision into the result and to every listener."""
        self._result.decision_log.append(decision)
        self._emit("on_decision", decision)

    def _log_outage(self, ts: pd.Timestamp, exc: Exception) -> None:
        """Loud at the start of an outage and every 100 bars of it; not one line per bar."""
        if self._outage_since is None:
            self._outage_since = ts
        self._outage_bars += 1
        if self._outage_bars == 1 or self._outage_bars % 100 == 0:
            log.error("signal source unavailable at %s (%d bar(s) since %s): %s -> opening nothing, "
                      "exits still managed", ts, self._outage_bars, self._outage_since, exc)

    def raise_alert(self, alert: RiskAlert) -> None:
        """One alert into the result and to every listener (the loop's own, and a live trader's)."""
        self._result.alerts.append(alert)
        self._emit("on_alert", alert)

    def _emit(self, method: str, *args) -> None:
        if not self.listeners:  # a backtest has none: skip the loop, called several times per symbol-bar
            return
        for listener in self.listeners:
            try:
                getattr(listener, method)(*args)
            except Exception:  # noqa: BLE001 - a broken recorder must not stop exits
                self._count_listener_failure(type(listener).__name__)
                if self.health.failed(listener, method, self._ts):
                    self.raise_alert(RiskAlert(self._ts, STATE_WRITE_FAILED, f"state recorder failed in {method}: "
                                               "no new entries until it writes again, exits still managed", {}))
            else:
                self.health.succeeded(listener, method)

    def _count_listener_failure(self, name: str) -> None:
        for listener in self.listeners:
            try:
                listener.on_listener_failure(name)
            except Exception:  # noqa: BLE001 - the counter itself is best effort
                log.debug("listener %s could not count a failure of %s", type(listener).__name__, name)


def _decision_for(ts: pd.Timestamp, intent: OrderIntent, outcome: str, reason: str, notional: float,
                  details: dict) -> Decision:
    sig = intent.signal
    if sig is None:
        return _make_decision(ts, intent.symbol, None, outcome, reason, notional, float("nan"), None, details)
    return _make_decision(ts, intent.symbol, sig.action, outcome, reason, notional, sig.confidence, sig.model_version,
                          details)
