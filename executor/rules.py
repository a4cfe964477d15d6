"""The portfolio and signal rules of the RiskEngine that need more than one intent to judge:
the correlation cap, the funding filter, the model supervisor and the liquidation check.
Pure arithmetic and small state objects fed by the loop; no I/O. The same objects run in the
backtest, the paper daemon and live.

* ``CloseHistory`` - the closes the loop has seen (bars <= t), per symbol, with their times, so
  that a correlation at the close of t uses nothing after t. Two symbols' returns are paired on
  the bar times both have.
* ``cluster_of`` - the symbols whose return correlation with a candidate exceeds the threshold.
  A symbol without ``lookback`` paired returns yet cannot be judged and is counted IN the
  cluster (the cap binds more, never less, on thin history).
* ``SignalSupervisor`` - the champion's recent signals; degenerate (one-sided, or probabilities
  that hardly move) halts new entries until the window is healthy again.
* ``liquidation_problem`` - does the stop lie strictly between the entry and the liquidation
  price, with ``risk.liquidation_buffer`` of the distance to spare?
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import numpy as np
import pandas as pd

from qt.margin import Bracket, liquidation_price

SIGNAL_DEGENERATE = "SIGNAL_DEGENERATE"
SIGNAL_HEALTHY = "SIGNAL_HEALTHY"


class CloseHistory:
    """The last ``keep`` closes per symbol, with their bar times (the loop feeds every close it marks)."""

    def __init__(self, keep: int):
        self.keep = keep
        self._ts: dict[str, deque[int]] = {}
        self._close: dict[str, deque[float]] = {}
        self._cache: dict[tuple[str, str], float] = {}

    def observe(self, symbol: str, ts: pd.Timestamp, close: float) -> None:
        if symbol not in self._ts:
            self._ts[symbol] = deque(maxlen=self.keep)
            self._close[symbol] = deque(maxlen=self.keep)
        self._ts[symbol].append(pd.Timestamp(ts).value)
        self._close[symbol].append(close)
        self._cache.clear()

    def correlation(self, a: str, b: str, lookback: int) -> float | None:
        """Correlation of the one-bar log returns of ``a`` and ``b`` over their last ``lookback``
        shared bars; None when fewer than ``lookback`` shared returns exist."""
        key = (a, b) if a <= b else (b, a)
        if key in self._cache:
            return self._cache[key]
        value = None
        if a in self._ts and b in self._ts:
            ta = np.fromiter(self._ts[a], dtype=np.int64)
            tb = np.fromiter(self._ts[b], dtype=np.int64)
            _, ia, ib = np.intersect1d(ta, tb, assume_unique=True, return_indices=True)
            if len(ia) > lookback:
                ca = np.log(np.fromiter(self._close[a], dtype=np.float64)[ia][-(lookback + 1):])
                cb = np.log(np.fromiter(self._close[b], dtype=np.float64)[ib][-(lookback + 1):])
                ra, rb = np.diff(ca), np.diff(cb)
                if ra.std() > 0 and rb.std() > 0:
                    value = float(np.corrcoef(ra, rb)[0, 1])
                else:
                    value = 0.0
        self._cache[key] = value
        return value


def cluster_of(candidate: str, others: Iterable[str], history: CloseHistory | None, threshold: float,
               lookback: int) -> list[str]:
    """``candidate`` and the symbols of ``others`` correlated with it above ``threshold``
    (or not yet measurable: counted in)."""
    out = [candidate]
    for sym in sorted(set(others) - {candidate}):
        rho = None if history is None else history.correlation(candidate, sym, lookback)
        if rho is None or rho > threshold:
            out.append(sym)
    return out


class SignalSupervisor:
    """Watches the champion's signals over the last ``window`` bars.

    Degenerate when more than ``max_one_side`` of the window's signals are ``buy`` (or ``sell``),
    or when their probabilities' standard deviation is below ``min_prob_std``: a model stuck on
    one answer. ``hold`` is not a side: it opens nothing. Judged only once the window is full
    (after a restart it refills from the signals the loop receives)."""

    def __init__(self, window: int, max_one_side: float, min_prob_std: float):
        self.window = window
        self.max_one_side = max_one_side
        self.min_prob_std = min_prob_std
        self._bars: deque[tuple[int, int, list[float]]] = deque(maxlen=max(window, 1))
        self.degenerate = False
        self.why: dict = {}

    @property
    def enabled(self) -> bool:
        return self.window > 0

    def observe(self, actions: list[str], probabilities: list[float]) -> bool | None:
        """Add one bar's signals; returns the new state when it changed (True: degenerate), else None."""
        if not self.enabled:
            return None
        self._bars.append((sum(a == "buy" for a in actions), sum(a == "sell" for a in actions),
                           [p for p in probabilities if p == p]))
        if len(self._bars) < self.window:
            return None
        n = sum(len(p) for _, _, p in self._bars) or 1
        buys = sum(b for b, _, _ in self._bars)
        sells = sum(s for _, s, _ in self._bars)
        probs = [p for _, _, ps in self._bars for p in ps]
        std = float(np.std(probs)) if probs else 0.0
        one_side = max(buys, sells) / n
        bad = one_side > self.max_one_side or std < self.min_prob_std
        self.why = {"window_bars": self.window, "signals": n, "buy_share": buys / n, "sell_share": sells / n,
                    "prob_std": std, "max_one_side": self.max_one_side, "min_prob_std": self.min_prob_std}
        if bad != self.degenerate:
            self.degenerate = bad
            return bad
        return None


def liquidation_problem(side: str, price: float, stop_pct: float, leverage: int, notional: float,
                        brackets: tuple[Bracket, ...], buffer: float) -> dict | None:
    """None when the stop of an entry at ``price`` lies strictly between the entry and its
    liquidation price with ``buffer`` x (entry-to-liquidation distance) to spare; otherwise the
    numbers that say why not. Isolated arithmetic (the position's own margin): in cross mode the
    whole wallet backs the position, so this bound is the conservative one."""
    if price <= 0 or notional <= 0:
        return None
    qty = notional / price
    liq = liquidation_price(side, price, qty, notional / leverage, brackets)
    sign = 1.0 if side == "long" else -1.0
    stop = price * (1.0 - sign * stop_pct)
    if side == "long" and liq <= 0.0:
        return None  # a long that cannot be liquidated (its margin covers a fall to zero)
    room = abs(price - liq)
    spare = (stop - liq) * sign  # > 0: the stop comes before the liquidation
    if spare > buffer * room and (price - stop) * sign > 0:
        return None
    return {"side": side, "entry_price": price, "stop_price": stop, "liquidation_price": liq,
            "leverage": leverage, "buffer": buffer}
