"""The pure decision core: bar + signals + portfolio -> order intents. No I/O, no clock.

Called once per bar t, after the close of t is known; every intent it returns is executed
at the OPEN of bar t+1 (by whichever broker the loop was given). Per symbol it returns at
most one intent:

* in a position: an EXIT when the position has been held ``risk.max_holding_bars`` bars
  (``bars_held`` counts the closes it has seen, the entry bar included, so the position is
  exposed for exactly ``max_holding_bars`` bars and leaves at the next open - the same
  span as a label of that horizon), or when the signal turns against it (``sell`` for a long,
  ``buy`` for a short) and ``risk.exit_on_signal_flip``. Exits do not look at the signal's
  age: reducing risk on old information is allowed, opening on it is not (the risk engine
  refuses stale entries).
* flat: an ENTRY on ``buy`` (a long), or on ``sell`` for a perpetual (``BASE/USDT:USDT``)
  with ``risk.allow_short`` (a short; spot never shorts). Its margin is ``risk.position_fraction``
  of equity at the close of t (or volatility-targeted / confidence-scaled, capped at that
  fraction: ``executor.sizing``, ``confidence_fraction``); its notional is that margin x the
  symbol's leverage (1 on spot). It carries the protective levels as distances from the entry
  fill (``stop_loss_pct`` / ``take_profit_pct``, or ATR multiples turned into distances with the
  ATR of bar t the signal carries, or a take-profit ladder) that the broker places on the
  exchange right after the fill, and the trailing stop (``risk.trailing_stop_pct``, see
  ``qt.fills``). With ``risk.entry_order: limit`` the entry is a limit order at ``close of t x
  (1 - limit_offset_bps / 10 000)`` (a short: ``1 +``) that works for ``limit_ttl_bars`` bars;
  while it rests the symbol is ENTRY_PENDING (its notional reserved).

A flip is two orders on two bars: the signal against a position closes it at the next open;
at that bar's close the core sees the symbol flat and, if the signal still points the other
way, opens the opposite side at the following open. One rule in backtest, paper and live, and
no order that both closes and opens (which a reduce-only exit on the exchange cannot be).

Perp positions pay or receive funding, settled by the loop outside this core (``executor.funding``).

Anything that is not an intent is still a ``Decision`` with a reason, so a person can read
why nothing happened.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pandas as pd

from executor.portfolio import Bar, Portfolio
from executor.signals import Signal
from executor.sizing import VOL_WARMING_UP, entry_fraction
from qt.config import RiskParams, SignalParams
from qt.values import positional_maker

# Reasons for non-events (the risk engine adds the denial reasons).
NO_SIGNAL = "NO_SIGNAL"
NO_BAR = "NO_BAR"
HOLD_SIGNAL = "HOLD_SIGNAL"
IN_POSITION = "IN_POSITION"
SELL_WHILE_FLAT = "SELL_WHILE_FLAT"
EXIT_PENDING = "EXIT_PENDING"
ENTRY_PENDING = "ENTRY_PENDING"
FLIP_EXIT_DISABLED = "FLIP_EXIT_DISABLED"
ATR_UNAVAILABLE = "ATR_UNAVAILABLE"
_NAN = float("nan")


@dataclass(frozen=True, slots=True)
class OrderIntent:
    symbol: str
    side: str  # "buy" | "sell" (an entry that sells opens a short)
    purpose: str  # "entry" | "exit"
    reason: str  # "signal_buy" | "signal_sell" | "signal_flip" | "max_holding" | "end_of_run"
    notional_usdt: float = 0.0  # entries: notional to open; exits: 0 (close the whole position)
    qty: float = 0.0  # exits: position qty to close
    signal: Signal | None = None
    stop_loss_pct: float = 0.0  # distance of the stop from the entry fill, as a fraction of it
    take_profit_pct: float = 0.0  # 0 with a ladder
    order_type: str = "market"  # entries: "market" | "limit"
    limit_price: float = 0.0  # limit entries: close of the deciding bar x (1 -/+ offset)
    ttl_bars: int = 0  # limit entries: bars it works before it is cancelled
    trailing_stop_pct: float = 0.0
    trailing_mode: str = "native"  # live only: "native" | "managed" (paper follows the same rule either way)
    # take-profit ladder: ((fraction of the position, distance from the entry fill as a fraction), ...)
    take_profit_ladder: tuple[tuple[float, float], ...] = ()
    breakeven_after_first_tp: bool = False
    leverage: int = 1
    reference_price: float = 0.0  # entries: the deciding close (the risk engine's liquidation check)

    @property
    def is_exit(self) -> bool:
        return self.purpose == "exit"

    @property
    def is_short(self) -> bool:
        """An entry that opens a short (exits are the opposite side of their position)."""
        return self.purpose == "entry" and self.side == "sell"


@dataclass(frozen=True, slots=True)
class Decision:
    """One row of the decision log: what was decided for one symbol at the close of one bar."""

    timestamp: pd.Timestamp  # open time of bar t (the decision is taken at its close)
    symbol: str
    signal_action: str | None
    outcome: str  # "enter" | "exit" | "hold" | "denied" | "skip"
    reason: str
    notional_usdt: float = 0.0
    confidence: float = float("nan")
    model_version: str | None = None
    details: dict = field(default_factory=dict)


# one Decision per symbol-bar on the hot paths: made field by field (qt.values), the class's own NaN
# where it would have filled in the default (so they equal Decisions made the usual way)
_decision = positional_maker(Decision)
_DEFAULT_NAN = Decision.__dataclass_fields__["confidence"].default


@dataclass(frozen=True, slots=True)
class CoreOutput:
    intents: list[OrderIntent]  # exits first, then entry candidates (for the risk engine)
    decisions: list[Decision]  # non-intent decisions (hold / skip / no signal)


# made on every bar the core decides (an intent per entry or exit): field by field, as _decision
_intent = positional_maker(OrderIntent)
_core_output = positional_maker(CoreOutput)


def decide(bar_ts: pd.Timestamp, bars: Mapping[str, Bar], signals: Mapping[str, Signal] | None,
           portfolio: Portfolio, risk: RiskParams, symbols: list[str],
           volatility: Callable[[str], float | None] | None = None,
           signal_params: SignalParams | None = None) -> CoreOutput:
    """Intents for the open of the next bar. ``signals=None`` means the source was down.

    ``volatility(symbol)`` is the annualised volatility ``risk.sizing: volatility_target`` sizes
    with (``executor.sizing``; the loop's ``RealisedVolatility``); None = no estimate yet.
    ``signal_params``: the thresholds ``risk.sizing: confidence`` measures a probability from.

    Entry candidates are ordered by the strength of their signal (the probability for a long,
    one minus it for a short; highest first), then symbol, so that when limits bind, the
    strongest signals get the capacity - deterministically.
    """
    equity = None  # the equity at the close, summed when an entry needs it (the ledger does not change here)
    exits: list[OrderIntent] = []
    entries: list[tuple[float, OrderIntent]] = []
    decisions: list[Decision] = []
    positions, reserved = portfolio.positions, portfolio.reserved_usdt
    no_signals: Mapping[str, Signal] = {}
    for sym in symbols:
        sig = (signals if signals is not None else no_signals).get(sym)
        if sig is None:
            action, conf, version = None, _NAN, None
        else:
            action, conf, version = sig.action, sig.confidence, sig.model_version
        if sym not in bars:
            decisions.append(_decision(bar_ts, sym, action, "skip", NO_BAR, 0.0, _DEFAULT_NAN, None, {}))
            continue
        pos = positions.get(sym)
        if pos is None and action == "hold" and sym not in reserved:  # the common case: flat, nothing to do
            decisions.append(_decision(bar_ts, sym, action, "hold", HOLD_SIGNAL, 0.0, conf, version, {}))
            continue
        if pos is not None:
            against = "sell" if pos.side == "long" else "buy"
            if sym in portfolio.pending_exits:
                decisions.append(Decision(bar_ts, sym, action, "hold", EXIT_PENDING, confidence=conf,
                                          model_version=version))
            elif pos.bars_held >= risk.max_holding_bars:
                exits.append(_exit_intent(sym, pos, "max_holding", sig))
            elif action == against and risk.exit_on_signal_flip:
                exits.append(_exit_intent(sym, pos, "signal_flip", sig))
            else:
                reason = (NO_SIGNAL if sig is None else
                          FLIP_EXIT_DISABLED if action == against else
                          IN_POSITION if action in ("buy", "sell") else HOLD_SIGNAL)
                decisions.append(_decision(bar_ts, sym, action, "hold", reason, 0.0, conf, version,
                                           {"bars_held": pos.bars_held}))
            continue
        if sym in reserved:
            decisions.append(Decision(bar_ts, sym, action, "hold", ENTRY_PENDING, confidence=conf,
                                      model_version=version))
            continue
        reason = flat_noop(action, sym, risk)
        if reason is not None:
            decisions.append(_decision(bar_ts, sym, action, "hold", reason, 0.0, conf, version, {}))
            continue
        short = action == "sell"  # flat_noop let it through: this symbol may short
        # a missing signal still goes to the risk engine, which records NO_SIGNAL
        fraction = _fraction(sym, sig, risk, volatility, signal_params)
        levels = protective_levels(risk, sig.atr) if sig is not None else _levels_pct(risk)
        if fraction is None or levels is None:
            reason = VOL_WARMING_UP if fraction is None else ATR_UNAVAILABLE
            if levels is None:
                why = (f"ATR-scaled levels need the signal's atr_{risk.atr_period}; the source sent none "
                       f"(an old model or service): no entry without a stop")
            else:  # only volatility-targeted sizing leaves an entry without a size
                why = f"fewer than {risk.vol_lookback_bars} returns seen to size a volatility-targeted entry"
            decisions.append(Decision(bar_ts, sym, action, "skip", reason, confidence=conf,
                                      model_version=version, details={"why": why}))
            continue
        if equity is None:
            equity = portfolio.equity_usdt()
        lev = risk.leverage_of(sym)
        bar = bars[sym]
        order = _entry_order(bar, risk, short)
        # OrderIntent(sym, side, "entry", reason, notional_usdt=..., signal=sig, **levels, **order, ...), every
        # field in its order; what levels and order leave out keeps the class's default
        intent = _intent(sym, "sell" if short else "buy", "entry", "signal_sell" if short else "signal_buy",
                         fraction * equity * lev, 0.0, sig, levels["stop_loss_pct"], levels["take_profit_pct"],
                         order.get("order_type", "market"), order.get("limit_price", 0.0), order.get("ttl_bars", 0),
                         risk.trailing_stop_pct, risk.trailing_mode, levels.get("take_profit_ladder", ()),
                         risk.breakeven_after_first_tp, lev, bar.close)
        strength = -1.0 if sig is None else (1.0 - sig.confidence if short else sig.confidence)
        entries.append((strength, intent))
    if len(entries) > 1:
        entries.sort(key=lambda pair: (-pair[0], pair[1].symbol))
    return _core_output(exits + [i for _, i in entries], decisions)


def _exit_intent(sym: str, pos, reason: str, sig: Signal | None) -> OrderIntent:
    """OrderIntent(sym, pos.close_side, "exit", reason, qty=pos.qty, signal=sig), the other fields the defaults."""
    return _intent(sym, pos.close_side, "exit", reason, 0.0, pos.qty, sig, 0.0, 0.0, "market", 0.0, 0, 0.0, "native",
                   (), False, 1, 0.0)


def flat_noop(action: str | None, symbol: str, risk: RiskParams) -> str | None:
    """Why a flat symbol (no entry pending) does nothing on ``action``: ``HOLD_SIGNAL``, or
    ``SELL_WHILE_FLAT`` when it cannot short; None when the action goes on to the risk engine (a
    buy, a sell that opens a short, or no signal at all, which the engine records as NO_SIGNAL).
    One rule for ``decide`` and for the loop, which steps bars where every symbol is such a
    no-op without calling ``decide`` (``TradingLoop.run``)."""
    if action is None or action == "buy":
        return None
    if action == "sell":
        return None if risk.allow_short and ":" in symbol else SELL_WHILE_FLAT
    return HOLD_SIGNAL


def _fraction(sym: str, sig: Signal | None, risk: RiskParams, volatility, signal_params) -> float | None:
    """Fraction of equity (the margin on a perpetual) for an entry; None: no size yet (``decide`` says why)."""
    if sig is None:
        return risk.position_fraction
    if risk.sizing == "confidence":
        return confidence_fraction(risk, sig, signal_params or SignalParams())
    sigma = volatility(sym) if volatility is not None else None
    return entry_fraction(risk, sigma)


def confidence_fraction(risk: RiskParams, sig: Signal, thresholds: SignalParams) -> float:
    """``position_fraction`` x how far the probability lies beyond its threshold, as a share of
    the way to certainty: a buy at p is scaled by ``(p - buy) / (1 - buy)``, a sell by
    ``(sell - p) / sell``; never above ``position_fraction`` (a probability just over the threshold
    risks little, a confident one up to the cap)."""
    p = sig.confidence
    if sig.action == "sell":
        beyond = (thresholds.sell_threshold - p) / thresholds.sell_threshold
    else:
        beyond = (p - thresholds.buy_threshold) / (1.0 - thresholds.buy_threshold)
    return risk.position_fraction * min(1.0, max(beyond, 0.0))


def _levels_pct(risk: RiskParams) -> dict:
    return {"stop_loss_pct": risk.stop_loss_pct, "take_profit_pct": risk.take_profit_pct}


def protective_levels(risk: RiskParams, atr: float) -> dict | None:
    """Stop, take-profit and ladder distances as fractions of the entry fill; ATR multiples are
    turned into fractions with ``atr`` (ATR / close of the decision bar; ignored without ATR levels).
    None: ATR levels configured and no ATR. Also what live reconciliation guards a position with
    whose levels the journal does not hold (``executor.live.reconcile``)."""
    if risk.uses_atr and not (atr == atr and atr > 0.0):
        return None
    stop = risk.stop_loss_pct if risk.stop_loss_atr is None else risk.stop_loss_atr * atr
    take = risk.take_profit_pct if risk.take_profit_atr is None else risk.take_profit_atr * atr
    if not risk.take_profit_ladder:
        return {"stop_loss_pct": min(stop, 0.99), "take_profit_pct": take}
    scale = atr if risk.take_profit_ladder_unit == "atr" else 1.0
    ladder = tuple(sorted(((f, lvl * scale) for f, lvl in risk.take_profit_ladder), key=lambda r: r[1]))
    return {"stop_loss_pct": min(stop, 0.99), "take_profit_pct": 0.0, "take_profit_ladder": ladder}


def _entry_order(bar: Bar, risk: RiskParams, short: bool = False) -> dict:
    """The order type of an entry: market, or a limit below (a short: above) the deciding close."""
    if risk.entry_order != "limit":
        return {}
    offset = risk.limit_offset_bps / 10_000.0
    return {"order_type": "limit", "limit_price": bar.close * (1.0 + offset if short else 1.0 - offset),
            "ttl_bars": risk.limit_ttl_bars}
