"""Quiet spans of a backtest: runs of bars where nothing can happen, stepped in one go.

Why: a search runs many backtests, and most of their bars are quiet - the ledger is flat (no
position, no order pending or resting, nothing reserved) and no symbol's signal can act (no bar,
or a signal ``executor.core.flat_noop`` says does nothing while flat). On such a bar ``step``
would only mark the closes, record a constant equity point, let the risk engine see it and log a
hold / skip decision per symbol. ``TradingLoop.run`` steps a whole run of them at once instead
(``TradingLoop._quiet_span``): the marks, the volatility and correlation windows get the span's
last closes, the risk engine sees the first bar and each new UTC day (with equity constant no
other bar can change its state), and the decisions are kept here as columns (``DecisionLog``),
turned into ``Decision`` objects only if someone iterates them - the backtest's decisions frame
reads the columns. ``tests/executor/test_backtest_differential.py`` holds the result to the loop
stepping every bar.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from executor.bartable import BarTable, present
from executor.core import NO_BAR, Decision, flat_noop
from executor.signals import ACTIONS
from qt.config import RiskParams

_DAY_NS = 86_400 * 10**9


@dataclass(frozen=True)
class QuietPlan:
    """Per bar and symbol of a bar table: what the signal source answers and whether the bar is quiet."""

    quiet: np.ndarray  # (n_ts,) bool: quiet whenever the ledger is flat and idle
    span_end: np.ndarray  # (n_ts,) int: for a quiet bar, the index after the run of quiet bars it starts
    has_bar: np.ndarray  # (n_ts, n_sym) bool
    actions: np.ndarray  # (n_ts, n_sym) object: the signal's action, None without one
    confidences: np.ndarray  # (n_ts, n_sym) float: the signal's confidence, NaN without one
    versions: np.ndarray  # (n_ts, n_sym) object
    reasons: np.ndarray  # (n_ts, n_sym) object: flat_noop's reason where quiet with a bar
    new_day: np.ndarray  # (n_ts,) bool: the bar opens a UTC day other than the previous bar's
    codes: np.ndarray  # (n_ts, n_sym) int8: the action's index in ACTIONS, -1 without a signal
    flat_event: np.ndarray  # (n_ts, n_sym) bool: a bar whose signal a flat symbol acts on (not flat_noop's)


def next_true(mask: np.ndarray) -> np.ndarray:
    """(n + 1, ...): for each bar k, the first bar >= k where ``mask`` is true (n: none), per column."""
    n = mask.shape[0]
    columns = mask.reshape(n, int(np.prod(mask.shape[1:])))
    out = np.empty((n + 1, columns.shape[1]), dtype=np.int64)
    bars = np.arange(n + 1)
    for j in range(columns.shape[1]):  # a search in each column's true bars: sparse, cheaper than a scan
        at = np.append(np.flatnonzero(columns[:, j]), n)
        out[:, j] = at[np.searchsorted(at, bars)]
    return out.reshape((n + 1,) + mask.shape[1:])


def quiet_plan(table: BarTable, per_symbol: list[tuple], risk: RiskParams) -> QuietPlan:
    """The plan from the table and, per symbol, the source's actions / confidences / versions / action
    codes (``ACTIONS`` index, -1: none) on its grid."""
    n, m = len(table.timestamps), len(table.symbols)
    has = present(table)
    actions, versions, reasons = (np.empty((n, m), dtype=object) for _ in range(3))
    confidences = np.empty((n, m), dtype="float64")
    codes = np.empty((n, m), dtype=np.int8)
    acts_on = np.empty((n, m), dtype=bool)
    for j, (sym, (acts, confs, vers, code)) in enumerate(zip(table.symbols, per_symbol)):
        actions[:, j], confidences[:, j], versions[:, j], codes[:, j] = acts, confs, vers, code
        # flat_noop's reason for each action this symbol can have (the last cell: no signal)
        noop = np.array([flat_noop(a, sym, risk) for a in ACTIONS] + [None], dtype=object)
        reasons[:, j] = noop[code]
        acts_on[:, j] = np.equal(noop, None)[code]
    flat_event = has & acts_on
    quiet = ~flat_event.any(axis=1)
    span_end = next_true(~quiet)[:n]  # the first non-quiet bar at or after i
    days = table.timestamps.as_unit("ns").asi8 // _DAY_NS
    new_day = np.concatenate([[True], days[1:] != days[:-1]]) if n else np.zeros(0, dtype=bool)
    return QuietPlan(quiet, span_end, has, actions, confidences, versions, reasons, new_day, codes, flat_event)


def mark_span(table: BarTable, stamps: list[pd.Timestamp], plan: QuietPlan, lo: int, hi: int, marks: dict,
              volatility, history) -> None:
    """The closes of bars ``lo:hi`` into the marks (the last one), the volatility estimate (its window
    keeps the last lookback + 1 closes) and the correlation history (its last ``keep``)."""
    for j, sym in enumerate(table.symbols):
        rows = lo + np.flatnonzero(plan.has_bar[lo:hi, j])
        if not len(rows):
            continue
        closes = table.ohlc[rows, j, 3].tolist()
        marks[sym] = closes[-1]
        if volatility is not None:
            for c in closes[-(volatility.lookback + 1):]:
                volatility.observe(sym, c)
        if history is not None:
            for r, c in zip(rows[-history.keep:].tolist(), closes[-history.keep:]):
                history.observe(sym, stamps[r], c)


class QuietSpan:
    """A quiet span's decisions, made when read: ``decide``'s for a flat symbol on each bar."""

    def __init__(self, timestamps: list[pd.Timestamp], symbols: list[str], plan: QuietPlan, lo: int, hi: int):
        self.timestamps, self.symbols, self.plan, self.lo, self.hi = timestamps, symbols, plan, lo, hi

    def __len__(self) -> int:
        return len(self.symbols) * (self.hi - self.lo)

    def columns(self, stepped_columns=None) -> dict[str, list]:
        cols = span_columns(self.timestamps, self.symbols, self.plan, self.lo, self.hi)
        cols["details"] = ["{}"] * len(cols["symbol"])
        return cols

    def decisions(self) -> list[Decision]:
        cols = span_columns(self.timestamps, self.symbols, self.plan, self.lo, self.hi)
        return [Decision(t, s, a, o, r, notional_usdt=0.0, confidence=c, model_version=v)
                for t, s, a, o, r, c, v in zip(cols["timestamp"], cols["symbol"], cols["signal_action"],
                                               cols["outcome"], cols["reason"], cols["confidence"],
                                               cols["model_version"])]


class DecisionLog:
    """The loop's decisions in order: stepped ones as ``Decision`` objects, spans of bars stepped at
    once (``QuietSpan``, ``executor.spans.HeldSpan``) as what makes their columns when read."""

    def __init__(self):
        self._stepped: list[Decision] = []
        self._spans: list[tuple[int, object]] = []  # (decisions stepped before it, span)
        self._all: list[Decision] | None = None

    def append(self, decision: Decision) -> None:
        self._stepped.append(decision)
        self._all = None

    def extend(self, decisions: list[Decision]) -> None:
        self._stepped.extend(decisions)
        self._all = None

    def add_quiet(self, timestamps: list[pd.Timestamp], symbols: list[str], plan: QuietPlan, lo: int, hi: int) -> None:
        """Bars ``lo:hi`` of the plan, all quiet, one decision per symbol each (``decide``'s for a flat symbol)."""
        self.add_span(QuietSpan(timestamps, symbols, plan, lo, hi))

    def add_span(self, span) -> None:
        """Decisions kept as what makes them: ``len``, ``columns(stepped_columns)`` and ``decisions()``."""
        self._spans.append((len(self._stepped), span))
        self._all = None

    def __len__(self) -> int:
        return len(self._stepped) + sum(len(span) for _, span in self._spans)

    def decisions(self) -> list[Decision]:
        """Every decision in order (a span's made now, once)."""
        if self._all is None:
            out: list[Decision] = []
            done = 0
            for at, span in self._spans:
                out.extend(self._stepped[done:at])
                done = at
                out.extend(span.decisions())
            out.extend(self._stepped[done:])
            self._all = out
        return self._all

    def columns(self, stepped_columns) -> dict[str, list]:
        """The log as columns, in order: ``stepped_columns(decisions)`` turns a run of stepped
        decisions into the same columns a span has (plus any others it adds)."""
        pieces: list[dict[str, list]] = []
        done = 0
        for at, span in self._spans:
            pieces.append(stepped_columns(self._stepped[done:at]))
            done = at
            pieces.append(span.columns(stepped_columns))
        pieces.append(stepped_columns(self._stepped[done:]))
        return {k: [x for p in pieces for x in p[k]] for k in pieces[0]}


def span_columns(timestamps: list[pd.Timestamp], symbols: list[str], plan: QuietPlan, lo: int, hi: int) -> dict[str, list]:
    """A quiet span's decisions as columns: hold with flat_noop's reason where the symbol has a bar
    and a signal, else skip / NO_BAR (only the action kept, as ``decide`` records it)."""
    k, m = hi - lo, len(symbols)
    hold = (plan.has_bar[lo:hi] & np.not_equal(plan.actions[lo:hi], None)).ravel()
    conf = np.where(hold, plan.confidences[lo:hi].ravel(), np.nan).tolist()
    return {
        "timestamp": [t for t in timestamps[lo:hi] for _ in range(m)],
        "symbol": symbols * k,
        "signal_action": plan.actions[lo:hi].ravel().tolist(),
        "outcome": np.where(hold, "hold", "skip").astype(object).tolist(),
        "reason": np.where(hold, plan.reasons[lo:hi].ravel(), NO_BAR).tolist(),
        "notional_usdt": [0.0] * (k * m),
        "confidence": conf,
        "model_version": np.where(hold, plan.versions[lo:hi].ravel(), None).tolist(),
    }
