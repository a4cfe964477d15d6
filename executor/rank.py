"""The cross-sectional portfolio (``signal.mode: rank``): hold the symbols the model ranks best.

Why a mode of its own: timing each symbol on its own with a probability threshold trades every
small wiggle of every symbol (the turnover that ate the ensemble's edge); ranking the universe by
the model's expected return and holding the top of it uses the model's real skill, the ORDER of
the returns (its information coefficient), and trades only when the order changes enough.

Every ``signal.rebalance_bars`` bars (bars whose open time, counted in bars since the epoch, is a
multiple of it, so the backtest, the paper daemon and a restarted live executor rebalance on the
same bars), with the fresh signals (this bar's) ranked by ``expected_return``, best first:

* long book: the top ``signal.top_k``; a held long is kept while its rank stays within
  ``top_k + signal.rank_buffer`` (hysteresis, as Qlib's TopkDropout: a symbol that slips one place
  is not sold and bought back);
* short book (``risk.allow_short``, perpetuals only): the bottom ``top_k`` by the same rule from the
  other end;
* a held position that leaves its book is closed (reason ``rank_exit``); a symbol that enters a
  book while flat is opened (``rank_long`` / ``rank_short``), its margin ``risk.position_fraction``
  of equity (``rank_weighting: equal``) or volatility-targeted and capped at it (``volatility``),
  times its leverage. The RiskEngine then judges each entry like any other.

A symbol held on the other side (a short that became the best) is closed at this rebalance and
can join its new book at the next one: an exit and an entry are two orders, never one that flips
(as in the timing mode); the book takes the next best symbol meanwhile.

Between rebalances positions are held; the protective orders and ``risk.max_holding_bars`` still
act (a risk limit, not a signal). Symbols without a fresh signal are not ranked: a held one is
kept until a rebalance can judge it. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pandas as pd

from executor.core import CoreOutput, Decision, OrderIntent, protective_levels
from executor.portfolio import Bar, Portfolio
from executor.signals import Signal
from executor.sizing import VOL_WARMING_UP, entry_fraction
from qt.config import RiskParams, SignalParams

NOT_REBALANCE_BAR = "NOT_REBALANCE_BAR"
RANK_HELD = "RANK_HELD"
NOT_RANKED = "NOT_RANKED"


def is_rebalance_bar(bar_ts: pd.Timestamp, bar_ms: int, every: int) -> bool:
    """Bars whose open time in bars since the epoch is a multiple of ``every``."""
    return (pd.Timestamp(bar_ts).value // 1_000_000 // bar_ms) % every == 0


def books(signals: list[Signal], held_long: set[str], held_short: set[str], top_k: int, buffer: int,
          can_short: Callable[[str], bool]) -> tuple[list[str], list[str]]:
    """(long book, short book): symbols to hold after this rebalance, best first."""
    order = sorted(signals, key=lambda s: (-s.expected_return, s.symbol))
    ranked = [s.symbol for s in order]
    keep_long = [s for s in ranked[:top_k + buffer] if s in held_long]
    longs = keep_long + [s for s in ranked if s not in keep_long and s not in held_short][:max(top_k - len(keep_long), 0)]
    shorts: list[str] = []
    bottom = [s for s in reversed(ranked) if can_short(s)]
    if bottom:
        keep_short = [s for s in bottom[:top_k + buffer] if s in held_short and s not in longs]
        fresh = [s for s in bottom if s not in keep_short and s not in longs and s not in held_long]
        shorts = keep_short + fresh[:max(top_k - len(keep_short), 0)]
    return longs, shorts


def decide_rank(bar_ts: pd.Timestamp, bars: Mapping[str, Bar], signals: Mapping[str, Signal] | None,
                portfolio: Portfolio, risk: RiskParams, symbols: list[str], signal_params: SignalParams,
                bar_ms: int, volatility: Callable[[str], float | None] | None = None) -> CoreOutput:
    """Intents (exits first, then entries best-ranked first) and decisions of the rank mode for the
    close of ``bar_ts`` (see the module docstring); the loop calls it instead of ``core.decide``."""
    exits: list[OrderIntent] = []
    entries: list[OrderIntent] = []
    decisions: list[Decision] = []
    held = portfolio.positions
    for sym in symbols:  # risk limits first: they need no signal
        pos = held.get(sym)
        if pos is not None and sym not in portfolio.pending_exits and pos.bars_held >= risk.max_holding_bars:
            exits.append(OrderIntent(sym, pos.close_side, "exit", "max_holding", qty=pos.qty,
                                     signal=(signals or {}).get(sym)))
    leaving = {i.symbol for i in exits}
    if signals is None or not is_rebalance_bar(bar_ts, bar_ms, signal_params.rebalance_bars):
        reason = "NO_SIGNAL" if signals is None else NOT_REBALANCE_BAR
        for sym in symbols:
            if sym not in leaving:
                decisions.append(Decision(bar_ts, sym, None, "hold", reason))
        return CoreOutput(intents=exits, decisions=decisions)
    fresh = [s for sym, s in signals.items() if sym in bars and s.timestamp == bar_ts and sym in symbols]
    long_held = {s for s, p in held.items() if p.side == "long"}
    short_held = {s for s, p in held.items() if p.side == "short"}
    longs, shorts = books(fresh, long_held, short_held, signal_params.top_k, signal_params.rank_buffer,
                          lambda s: risk.allow_short and ":" in s)
    ranked = {s.symbol for s in fresh}
    equity = portfolio.equity_usdt()
    for sym in symbols:
        sig = signals.get(sym)
        pos = held.get(sym)
        if sym in leaving:
            continue
        if pos is not None:
            book = longs if pos.side == "long" else shorts
            if sym in ranked and sym not in book and sym not in portfolio.pending_exits:
                exits.append(OrderIntent(sym, pos.close_side, "exit", "rank_exit", qty=pos.qty, signal=sig))
            else:
                decisions.append(Decision(bar_ts, sym, None, "hold", RANK_HELD if sym in ranked else NOT_RANKED))
            continue
        side = "buy" if sym in longs else "sell" if sym in shorts else None
        if side is None or sym in portfolio.reserved_usdt:
            decisions.append(Decision(bar_ts, sym, None, "hold", NOT_RANKED if sym not in ranked else RANK_HELD))
            continue
        lv = protective_levels(risk, sig.atr)
        fraction = risk.position_fraction
        if signal_params.rank_weighting == "volatility":
            fraction = entry_fraction(risk.model_copy(update={"sizing": "volatility_target"}),
                                      volatility(sym) if volatility is not None else None)
        if fraction is None or lv is None:
            decisions.append(Decision(bar_ts, sym, None, "skip", VOL_WARMING_UP if fraction is None
                                           else "ATR_UNAVAILABLE"))
            continue
        lev = risk.leverage_of(sym)
        entries.append(OrderIntent(sym, side, "entry", "rank_long" if side == "buy" else "rank_short",
                                   notional_usdt=fraction * equity * lev, signal=sig,
                                   trailing_stop_pct=risk.trailing_stop_pct, trailing_mode=risk.trailing_mode,
                                   breakeven_after_first_tp=risk.breakeven_after_first_tp, leverage=lev,
                                   reference_price=bars[sym].close, **lv))
    rank_of = {s: i for i, s in enumerate(longs + shorts)}
    entries.sort(key=lambda i: (rank_of.get(i.symbol, 0), i.symbol))
    return CoreOutput(intents=exits + entries, decisions=decisions)
