"""The backtest's bars between events, stepped at once: quiet spans (flat) and held spans (in a position).

Why: a search runs many backtests and ``step`` costs tens of microseconds a bar, while on most
bars nothing can happen. ``SpanStepper.advance`` steps, from a bar where the ledger is settled
(no order pending or resting, nothing reserved, no exit pending), the run of bars up to the next
bar where anything can happen; that bar goes through ``step`` (one decision core, one risk
engine, one broker). Bars where something can happen (events):

* a flat symbol with a bar and a signal ``executor.core.flat_noop`` lets through (a buy, a sell
  that may short, no signal at all: NO_SIGNAL);
* a held symbol whose signal turns against it with ``risk.exit_on_signal_flip``, or whose
  ``bars_held`` reaches ``risk.max_holding_bars`` (the closes it sees, counted on the bar grid);
* a held symbol's guard touched: the stop, the take-profit or the ladder's nearest rung (a scan of
  low / high against the levels); the trailing stop conservatively, its peak taken as the running
  extreme including the bar's own high / low (a level at least the real one: the scan may stop
  early, never late);
* a funding time of a held perpetual (the bar it is booked in).

Between events a held span does what ``step`` would (``TradingLoop._mark``, ``decide``'s held and
flat branches): equity is ``cash + sum(sign * qty * mark)`` added position by position in the
ledger's order (numpy adds the same doubles in the same order: bit-identical), the risk engine
sees every bar's equity (``observe_equity``: the same engine, so daily loss / drawdown states
change on the same bar), ``bars_held`` counts the span's bars of each held symbol, a trail's peak
takes the span's extreme, and the decisions (IN_POSITION / HOLD_SIGNAL / NO_SIGNAL /
FLIP_EXIT_DISABLED with ``bars_held``) are kept as columns (``HeldSpan``).

Event bars: on a bar where the only event is flat symbols acting (nothing can fill, trigger, exit
or be paid there), the span's accounting covers the bar and the loop runs only its decision phase
(``TradingLoop.decide_planned``: ``_decide``, the same core, risk engine and orders). On every
bar the loop decides, the core and the signal source are asked only about the symbols whose
decision may be other than the plan's (``to_decide``: flat ones that act or have an entry
reserved, held ones that may exit); the others' decisions are the plan's, merged in symbol order
(``SteppedBar``). ``tests/executor/test_backtest_differential.py`` holds every output to the loop
stepping every bar.
"""

from __future__ import annotations

import bisect
import logging
import math

import numpy as np
import pandas as pd

from executor.bartable import BarTable
from executor.core import FLIP_EXIT_DISABLED, HOLD_SIGNAL, IN_POSITION, NO_SIGNAL, Decision
from executor.funding import is_perp
from executor.portfolio import Bar, make_bar
from executor.quiet import QuietPlan, QuietSpan, mark_span, next_true, span_columns
from executor.signals import ACTIONS

log = logging.getLogger(__name__)
_NAN = float("nan")
_BUY, _SELL = ACTIONS.index("buy"), ACTIONS.index("sell")
_SCAN_IN_PYTHON = 32  # bars: a guard scan over fewer costs less in a loop than in array calls


class SpanStepper:
    """Steps the spans of one run of ``loop`` (a ``TradingLoop``) over ``table`` with ``plan``;
    ``held=False``: quiet spans only (the differential test's third runner)."""

    def __init__(self, loop, table: BarTable, plan: QuietPlan, stamps: list[pd.Timestamp], held: bool = True):
        self.loop, self.table, self.plan, self.stamps, self.held = loop, table, plan, stamps, held
        self._asked: tuple = (-1, set(), {})  # the bar to_decide answered last: asked symbols, held known ones
        has = plan.has_bar
        self.n = len(table.timestamps)
        self.col = {s: j for j, s in enumerate(table.symbols)}
        self.next_flat_event = next_true(plan.flat_event)
        self.next_sell = next_true(has & (plan.codes == ACTIONS.index("sell")))
        self.next_buy = next_true(has & (plan.codes == ACTIONS.index("buy")))
        self.counts = np.concatenate([np.zeros((1, has.shape[1]), dtype=np.int64),
                                      np.cumsum(has, axis=0)]).T.copy()  # (m, n + 1): bars before k
        self.stamps_ns = table.timestamps.as_unit("ns").asi8
        self.high = np.ascontiguousarray(table.ohlc[:, :, 1].T)
        self.low = np.ascontiguousarray(table.ohlc[:, :, 2].T)
        self.has_t = np.ascontiguousarray(has.T)
        self.rows_of = [np.flatnonzero(col) for col in self.has_t]  # each symbol's bars
        # per symbol, the last bar at or before k (-1: none yet), and its close: the mark at k
        self.last_row = np.maximum.accumulate(np.where(self.has_t, np.arange(self.n), -1), axis=1)
        self.mark_at = np.take_along_axis(np.ascontiguousarray(table.ohlc[:, :, 3].T), np.maximum(self.last_row, 0),
                                          axis=1)
        # the columns of flat_event per row that has any (few: the bars a flat symbol acts on), ascending
        self.flat_cols: dict[int, list[int]] = {}
        for cell in np.flatnonzero(plan.flat_event).tolist():
            row, j = divmod(cell, has.shape[1])
            self.flat_cols.setdefault(row, []).append(j)
        self.signals_seen = np.concatenate([[0], np.cumsum((plan.codes >= 0).sum(axis=1))]).tolist()
        self.day_starts = np.flatnonzero(plan.new_day).tolist()
        # bar k + 1 opens one bar after bar k (no gap in the grid): its Timestamp is bar k's decision time
        self.next_is_one_bar = (np.diff(self.stamps_ns) == loop.bar_ms * 1_000_000).tolist()
        self.windows = loop.volatility is not None or loop.risk.history is not None

    def advance(self, i: int) -> int:
        """Step the span starting at bar ``i`` if there is one; the index of the next bar to step."""
        loop, stamps = self.loop, self.stamps
        if not loop.settled():
            return i
        if not loop.portfolio.positions:
            hi = int(self.plan.span_end[i])  # the first bar from i where a flat symbol acts
            if hi == self.n:
                self._quiet(i, hi, stamps)
                return hi
            # that bar's accounting is a quiet bar's (flat and idle), stepped with the quiet ones before it
            # (equity constant: seeing it again on the same day changes no state); its decisions the loop's
            self._quiet(i, hi + 1, stamps, decided_to=hi)
            loop.decide_planned(stamps[hi], self._bars(hi, self.flat_acting(hi)), self.table.symbols, (self, hi))
            return hi + 1
        if not self.held:
            return i
        hi, acts = self._held_end(i)
        if acts is not None:  # only flat symbols act at bar acts: a held bar's accounting, the loop's decisions
            self._held(i, acts + 1, stamps, decided_to=acts)
            loop.decide_planned(stamps[acts], self._bars(acts, self.flat_acting(acts)), self.table.symbols, (self, acts))
            return acts + 1
        if hi > i:
            self._held(i, hi, stamps)
        return hi

    def _mark(self, lo: int, hi: int, stamps: list[pd.Timestamp]) -> None:
        """The closes of bars ``lo:hi`` into the marks (each symbol's last), and into the volatility
        and correlation windows when the run keeps them (``mark_span``)."""
        loop = self.loop
        if self.windows:
            mark_span(self.table, stamps, self.plan, lo, hi, loop.portfolio.marks, loop.volatility, loop.risk.history)
            return
        marks = loop.portfolio.marks
        at = hi - 1
        for sym, r, close in zip(self.table.symbols, self.last_row[:, at].tolist(), self.mark_at[:, at].tolist()):
            if r >= lo:
                marks[sym] = close

    def _observe(self, equity: float, at: int, stamps: list[pd.Timestamp]) -> None:
        self._alert(self.loop.risk.observe_equity(equity, stamps[at]))

    def _alert(self, alerts) -> None:
        for alert in alerts:
            log.warning("risk: %s %s", alert.message, alert.numbers)
            self.loop.raise_alert(alert)

    def _signals(self, lo: int, hi: int) -> int:
        return self.signals_seen[hi] - self.signals_seen[lo]

    def flat_acting(self, i: int) -> list[int]:
        """The columns of ``plan.flat_event[i]`` (symbols a flat ledger acts on at bar ``i``), ascending."""
        return self.flat_cols.get(i, [])

    # ---- bars that go through step: the plan decides the symbols it knows -------------------
    def to_decide(self, i: int) -> list[str]:
        """The symbols of bar ``i`` (after its fills and marks) whose decision needs the core, in
        symbol order: flat ones with a bar whose signal acts or whose entry is reserved, held ones
        with a bar that may exit (an exit pending, ``bars_held`` at max holding, a signal against
        them with ``exit_on_signal_flip``). The others' decisions are the plan's: no bar, NO_BAR;
        flat with a ``flat_noop`` signal, its hold; held, a held span's hold with ``bars_held``."""
        pf, risk, col = self.loop.portfolio, self.loop.params.risk, self.col
        asked = set(self.flat_acting(i))  # signals a flat symbol acts on (held ones: below)
        held = {}
        if pf.positions or pf.reserved_usdt:
            has, codes = self.plan.has_bar[i].tolist(), self.plan.codes[i].tolist()  # the row as Python values
            for sym, pos in pf.positions.items():
                j = col.get(sym)
                if j is None:  # not a symbol of this run: decide is not asked about it
                    continue
                asked.discard(j)
                if not has[j]:
                    continue
                if (sym in pf.pending_exits or pos.bars_held >= risk.max_holding_bars
                        or (risk.exit_on_signal_flip and codes[j] == (_SELL if pos.side == "long" else _BUY))):
                    asked.add(j)
                else:
                    held[j] = ("sell" if pos.side == "long" else "buy", pos.bars_held - 1)  # bars_held before this bar
            for sym in pf.reserved_usdt:
                j = col.get(sym)
                if j is not None and has[j]:
                    asked.add(j)
        self._asked = (i, asked, held)
        symbols = self.table.symbols
        return [symbols[j] for j in sorted(asked)]

    def next_open(self, i: int) -> pd.Timestamp | None:
        """The open of the bar after bar ``i`` (its decision time, ``ts + one bar``) when the grid holds
        it - the same instant, made once - else None."""
        return self.stamps[i + 1] if i + 1 < self.n and self.next_is_one_bar[i] else None

    def signals_at(self, i: int) -> int:
        """How many symbols have a signal at bar ``i`` (what ``fetch`` of all of them would return)."""
        return self._signals(i, i + 1)

    def bar_decisions(self, i: int, decided: list[Decision]) -> SteppedBar:
        """Bar ``i``'s decisions: ``decided`` (the core's for the symbols ``to_decide`` gave) and the plan's."""
        at, asked, held = self._asked
        if at != i:
            raise RuntimeError(f"bar_decisions({i}) after to_decide({at}): ask the core about the bar first")
        return SteppedBar(HeldSpan(self.stamps, self.table.symbols, self.plan, i, i + 1, held), asked, decided,
                          self.col)

    # ---- quiet spans (executor.quiet) ----------------------------------------------------
    def _quiet(self, lo: int, hi: int, stamps: list[pd.Timestamp], decided_to: int | None = None) -> None:
        """Bars ``lo:hi`` while flat and idle, all quiet up to ``decided_to`` (default ``hi``): what
        ``step`` would do to each: marks, windows, equity points, risk state, and for the bars before
        ``decided_to`` the signal count and decisions (the others' are the loop's decision phase's)."""
        loop = self.loop
        self._mark(lo, hi, stamps)
        equity = loop.portfolio.equity_usdt()
        # equity is constant: only the span's first bar and a new UTC day can change the state
        self._observe(equity, lo, stamps)
        days = self.day_starts
        for k in range(bisect.bisect_right(days, lo), bisect.bisect_left(days, hi)):
            self._observe(equity, days[k], stamps)
        upto = hi if decided_to is None else decided_to
        loop.book_span(stamps, lo, hi, [equity] * (hi - lo), False,
                       QuietSpan(stamps, self.table.symbols, self.plan, lo, upto) if upto > lo else None,
                       self._signals(lo, upto))

    def _bars(self, i: int, which: list[int]) -> dict[str, Bar]:
        """Bar ``i`` of the symbols in columns ``which``, as ``step`` is given them."""
        ts, symbols, out = self.stamps[i], self.table.symbols, {}
        for j in which:
            o, h, lo, c = self.table.ohlc[i, j].tolist()
            out[symbols[j]] = make_bar(symbols[j], ts, o, h, lo, c)
        return out

    # ---- held spans ------------------------------------------------------------------
    def _held_end(self, i: int) -> tuple[int, int | None]:
        """The first event bar at or after ``i`` (``i`` itself: step it), and that bar again when the
        only event there is flat symbols acting (nothing held exits, fills or pays there: the span's
        accounting covers it, the loop runs its decision phase), else None."""
        loop, pf = self.loop, self.loop.portfolio
        risk = loop.params.risk
        nxt = self.next_flat_event[i].tolist()
        held = []
        for sym, pos in pf.positions.items():
            j = self.col.get(sym)
            guard = loop.broker.protective(sym)
            if j is None or guard is None:
                return i, None
            held.append((j, pos, guard))
            nxt[j] = self.n  # a held symbol's signal is read below
        flat_end, end = min(nxt), self.n
        schedule = loop.funding if not loop.exchange_settles_funding else None
        for j, pos, guard in held:
            if risk.exit_on_signal_flip:
                end = min(end, int((self.next_sell if pos.side == "long" else self.next_buy)[i, j]))
            # max holding: the bar where bars_held reaches it is the symbol's need-th bar from i
            rows, nth = self.rows_of[j], int(self.counts[j, i]) + max(risk.max_holding_bars - pos.bars_held, 1) - 1
            if nth < len(rows):
                end = min(end, int(rows[nth]))
            if schedule is not None and is_perp(pos.symbol) and i > 0:
                due = schedule.next_time_after(pos.symbol, int(self.stamps_ns[i - 1]))
                if due is not None:
                    end = min(end, int(np.searchsorted(self.stamps_ns, due, side="left")))
            if end <= i:
                return i, None
        acting = flat_end < end  # a flat symbol acts first: the guards matter up to that bar, itself included
        if acting:
            end = flat_end + 1
        for j, pos, guard in held:
            touched = self._first_touch(j, guard, i, end)
            if touched is not None:
                end = i + touched
            if end <= i:
                return i, None
        return (flat_end, flat_end) if acting and end > flat_end else (end, None)

    def _first_touch(self, j: int, guard, i: int, end: int) -> int | None:
        """The offset of the first bar in ``i:end`` where a guard of symbol ``j`` may fill (None: none)."""
        has, low, high = self.has_t[j, i:end], self.low[j, i:end], self.high[j, i:end]
        if end - i > _SCAN_IN_PYTHON:
            return first_touch_array(guard, has, low, high)
        return first_touch(guard, has.tolist(), low.tolist(), high.tolist())

    def _held(self, lo: int, hi: int, stamps: list[pd.Timestamp], decided_to: int | None = None) -> None:
        """Bars ``lo:hi`` in a position, no event among them but flat symbols acting at ``decided_to``
        and after (default ``hi``): what ``step`` would do to each, the decisions and their signal
        count only for the bars before ``decided_to`` (the others' are the loop's decision phase's)."""
        loop, pf = self.loop, self.loop.portfolio
        total = 0.0
        held = {}
        for sym, pos in pf.positions.items():  # the ledger's order: equity_usdt's sum
            j = self.col[sym]
            # a held symbol has had a bar (its entry's): its mark is the close of its last bar
            total = total + pos.sign * pos.qty * self.mark_at[j, lo:hi]
            held[j] = ("sell" if pos.side == "long" else "buy", pos.bars_held)
            seen = int(self.counts[j, hi] - self.counts[j, lo])
            pos.bars_held += seen
            guard = loop.broker.protective(sym)
            if guard.trail_pct > 0 and seen:
                has = self.has_t[j, lo:hi]
                extreme = float(self.high[j, lo:hi][has].max() if guard.selling else self.low[j, lo:hi][has].min())
                loop.broker.carry_trail(sym, max(guard.peak, extreme) if guard.selling else min(guard.peak, extreme))
        equity = (pf.cash_usdt + total).tolist()
        observe = loop.risk.observe_equity  # every bar of the span: the risk engine sees each equity point
        for ts, eq in zip(stamps[lo:hi], equity):
            alerts = observe(eq, ts)
            if alerts:
                self._alert(alerts)
        self._mark(lo, hi, stamps)
        upto = hi if decided_to is None else decided_to
        loop.book_span(stamps, lo, hi, equity, True,
                       HeldSpan(stamps, self.table.symbols, self.plan, lo, upto, held) if upto > lo else None,
                       self._signals(lo, upto))


def first_touch(guard, has: list[bool], low: list[float], high: list[float]) -> int | None:
    """The first bar (offset) where ``guard`` (a ``Protective``) may fill, None: none: its stop, its
    take-profit or nearest rung, its trail at the level of the peak including the bar's own
    extreme (at least the real level: a scan may stop early, never late); a bar with a NaN high or
    low counts. Bars without ``has`` are skipped. A loop: cheaper than array calls on a few bars."""
    selling, stop, pct, extreme = guard.selling, guard.stop_price, guard.trail_pct, guard.peak
    take = guard.rungs[0][1] if guard.rungs else guard.take_profit_price
    for k, (present, lo, hi) in enumerate(zip(has, low, high)):
        if not present:
            continue
        if lo != lo or hi != hi:
            return k
        if selling:  # a long's guards: stop and trail below, take-profit above
            extreme = max(extreme, hi)
            if lo <= stop or hi >= take or (pct > 0 and lo <= extreme * (1 - pct)):
                return k
        else:
            extreme = min(extreme, lo)
            if hi >= stop or lo <= take or (pct > 0 and hi >= extreme * (1 + pct)):
                return k
    return None


def first_touch_array(guard, has: np.ndarray, low: np.ndarray, high: np.ndarray) -> int | None:
    """``first_touch`` as array scans (long windows)."""
    take = guard.rungs[0][1] if guard.rungs else guard.take_profit_price
    odd = has & (np.isnan(low) | np.isnan(high))
    if guard.selling:
        hit = (low <= guard.stop_price) | odd | (high >= take)
        if guard.trail_pct > 0:
            peak = np.maximum(np.fmax.accumulate(np.where(has, high, -math.inf)), guard.peak)
            hit |= low <= peak * (1 - guard.trail_pct)
    else:
        hit = (high >= guard.stop_price) | odd | (low <= take)
        if guard.trail_pct > 0:
            trough = np.minimum(np.fmin.accumulate(np.where(has, low, math.inf)), guard.peak)
            hit |= high >= trough * (1 + guard.trail_pct)
    hits = np.flatnonzero(hit & has)
    return int(hits[0]) if len(hits) else None


class HeldSpan:
    """A held span's decisions, made when read: ``decide``'s for a flat symbol (as a quiet span's)
    and, for a held one with a bar, ``hold`` with the reason ``decide`` gives and ``bars_held``."""

    def __init__(self, timestamps, symbols, plan: QuietPlan, lo: int, hi: int, held: dict[int, tuple[str, int]]):
        self.timestamps, self.symbols, self.plan, self.lo, self.hi, self.held = timestamps, symbols, plan, lo, hi, held

    def __len__(self) -> int:
        return (self.hi - self.lo) * len(self.symbols)

    def _columns(self) -> tuple[dict[str, list], list]:
        plan, lo, hi, m = self.plan, self.lo, self.hi, len(self.symbols)
        cols = span_columns(self.timestamps, self.symbols, plan, lo, hi)
        details: list = [None] * len(self)
        outcome, reason, conf, version = cols["outcome"], cols["reason"], cols["confidence"], cols["model_version"]
        for j, (against, held_before) in self.held.items():
            has = plan.has_bar[lo:hi, j]
            held_now = (held_before + np.cumsum(has)).tolist()
            for r in np.flatnonzero(has).tolist():
                action, at = plan.actions[lo + r, j], r * m + j
                outcome[at] = "hold"
                reason[at] = (NO_SIGNAL if action is None else FLIP_EXIT_DISABLED if action == against else
                              IN_POSITION if action in ("buy", "sell") else HOLD_SIGNAL)
                conf[at] = _NAN if action is None else float(plan.confidences[lo + r, j])
                version[at] = None if action is None else plan.versions[lo + r, j]
                details[at] = {"bars_held": held_now[r]}
        return cols, details

    def columns(self, stepped_columns=None) -> dict[str, list]:
        cols, details = self._columns()
        cols["details"] = ["{}" if d is None else f'{{"bars_held": {d["bars_held"]}}}' for d in details]
        return cols

    def decisions(self) -> list[Decision]:
        cols, details = self._columns()
        return [Decision(t, s, a, o, r, notional_usdt=0.0, confidence=c, model_version=v, details=d or {})
                for t, s, a, o, r, c, v, d in zip(cols["timestamp"], cols["symbol"], cols["signal_action"],
                                                  cols["outcome"], cols["reason"], cols["confidence"],
                                                  cols["model_version"], details)]


class SteppedBar:
    """A stepped bar's non-intent decisions: the core's (``decided``) for the symbols it was asked
    about (``asked``: those that gave an intent have none here) and the plan's for the others
    (``planned``: a one-bar ``HeldSpan``), in symbol order - what ``decide`` over every symbol gives."""

    def __init__(self, planned: HeldSpan, asked: set[int], decided: list[Decision], col: dict[str, int]):
        self.planned, self.asked, self.decided, self.col = planned, asked, decided, col

    def __len__(self) -> int:
        return len(self.planned) - len(self.asked) + len(self.decided)

    def _merge(self, planned: list, decided: list) -> list:
        at = {self.col[d.symbol]: k for k, d in enumerate(self.decided)}  # when read: most bars never are
        return [decided[at[j]] if j in at else x for j, x in enumerate(planned) if j not in self.asked or j in at]

    def columns(self, stepped_columns) -> dict[str, list]:
        planned, decided = self.planned.columns(), stepped_columns(self.decided)
        return {k: self._merge(v, decided[k]) for k, v in planned.items()}

    def decisions(self) -> list[Decision]:
        return self._merge(self.planned.decisions(), self.decided)
