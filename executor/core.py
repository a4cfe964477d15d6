"""The pure decision core: bar + signals + portfolio -> order intents. No I/O, no clock.

Called once per bar t, after the close of t is known; every intent it returns is executed
at the OPEN of bar t+1 (by whichever broker the loop was given). Per symbol it returns at
most one intent:

* in a position: an EXIT when the position has been held ``risk.max_holding_bars`` bars
  (``bars_held`` counts the closes it has seen, the entry bar included, so the position is
  exposed for exactly ``max_holding_bars`` bars and leaves at the next open - the same
  span as a label of that horizon), or when the signal is ``sell`` and
  ``risk.exit_on_signal_flip``. Exits do not look at the signal's age: reducing risk on
  old information is allowed, opening on it is not (the risk engine refuses stale entries).
* flat: an ENTRY on ``buy``, sized ``risk.position_fraction`` of equity at the close of t (or
  volatility-targeted, capped at that fraction: ``executor.sizing``),
  carrying the protective levels (``stop_loss_pct`` / ``take_profit_pct`` of the entry fill
  price) that the broker places on the exchange right after the fill, and the trailing stop
  (``risk.trailing_stop_pct``, see ``qt.fills``). With ``risk.entry_order: limit`` the
  entry is a limit order at ``close of t x (1 - limit_offset_bps / 10 000)`` that works for
  ``limit_ttl_bars`` bars; while it rests the symbol is ENTRY_PENDING (its notional reserved).

Long-only: ``sell`` never opens a short, also not for perpetual symbols (``BASE/USDT:USDT``);
shorting is left for later. Perp positions pay funding, settled by the loop outside this
core (``executor.funding``).

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
from qt.config import RiskParams

# Reasons for non-events (the risk engine adds the denial reasons).
NO_SIGNAL = "NO_SIGNAL"
NO_BAR = "NO_BAR"
HOLD_SIGNAL = "HOLD_SIGNAL"
IN_POSITION = "IN_POSITION"
SELL_WHILE_FLAT = "SELL_WHILE_FLAT"
EXIT_PENDING = "EXIT_PENDING"
ENTRY_PENDING = "ENTRY_PENDING"
FLIP_EXIT_DISABLED = "FLIP_EXIT_DISABLED"


@dataclass(frozen=True, slots=True)
class OrderIntent:
    symbol: str
    side: str  # "buy" | "sell"
    purpose: str  # "entry" | "exit"
    reason: str  # "signal_buy" | "signal_flip" | "max_holding" | "end_of_run"
    notional_usdt: float = 0.0  # entries: notional to buy; exits: 0 (close the whole position)
    qty: float = 0.0  # exits: position qty to sell
    signal: Signal | None = None
    stop_loss_pct: float = 0.0
    take_profit_pct: float = 0.0
    order_type: str = "market"  # entries: "market" | "limit"
    limit_price: float = 0.0  # limit entries: close of the deciding bar x (1 - offset)
    ttl_bars: int = 0  # limit entries: bars it works before it is cancelled
    trailing_stop_pct: float = 0.0
    trailing_mode: str = "native"  # live only: "native" | "managed" (paper follows the same rule either way)

    @property
    def is_exit(self) -> bool:
        return self.purpose == "exit"


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


@dataclass(frozen=True, slots=True)
class CoreOutput:
    intents: list[OrderIntent]  # exits first, then entry candidates (for the risk engine)
    decisions: list[Decision]  # non-intent decisions (hold / skip / no signal)


def decide(bar_ts: pd.Timestamp, bars: Mapping[str, Bar], signals: Mapping[str, Signal] | None,
           portfolio: Portfolio, risk: RiskParams, symbols: list[str],
           volatility: Callable[[str], float | None] | None = None) -> CoreOutput:
    """Intents for the open of the next bar. ``signals=None`` means the source was down.

    ``volatility(symbol)`` is the annualised volatility ``risk.sizing: volatility_target`` sizes
    with (``executor.sizing``; the loop's ``RealisedVolatility``); None = no estimate yet.

    Entry candidates are ordered by confidence (highest first), then symbol, so that when
    limits bind, the strongest signals get the capacity - deterministically.
    """
    equity = portfolio.equity_usdt()
    exits: list[OrderIntent] = []
    entries: list[OrderIntent] = []
    decisions: list[Decision] = []
    for sym in symbols:
        sig = signals.get(sym) if signals is not None else None
        action = sig.action if sig is not None else None
        conf = sig.confidence if sig is not None else float("nan")
        version = sig.model_version if sig is not None else None
        if sym not in bars:
            decisions.append(Decision(bar_ts, sym, action, "skip", NO_BAR))
            continue
        pos = portfolio.positions.get(sym)
        if pos is not None:
            if sym in portfolio.pending_exits:
                decisions.append(Decision(bar_ts, sym, action, "hold", EXIT_PENDING, confidence=conf,
                                          model_version=version))
            elif pos.bars_held >= risk.max_holding_bars:
                exits.append(OrderIntent(sym, "sell", "exit", "max_holding", qty=pos.qty, signal=sig))
            elif action == "sell" and risk.exit_on_signal_flip:
                exits.append(OrderIntent(sym, "sell", "exit", "signal_flip", qty=pos.qty, signal=sig))
            else:
                reason = (NO_SIGNAL if sig is None else
                          FLIP_EXIT_DISABLED if action == "sell" else
                          IN_POSITION if action == "buy" else HOLD_SIGNAL)
                decisions.append(Decision(bar_ts, sym, action, "hold", reason, confidence=conf,
                                          model_version=version, details={"bars_held": pos.bars_held}))
            continue
        if sym in portfolio.reserved_usdt:
            decisions.append(Decision(bar_ts, sym, action, "hold", ENTRY_PENDING, confidence=conf,
                                      model_version=version))
        elif action == "buy" or sig is None:
            # a missing signal still goes to the risk engine, which records NO_SIGNAL
            sigma = volatility(sym) if volatility is not None and sig is not None else None
            fraction = entry_fraction(risk, sigma) if sig is not None else risk.position_fraction
            if fraction is None:
                decisions.append(Decision(bar_ts, sym, action, "skip", VOL_WARMING_UP, confidence=conf,
                                          model_version=version,
                                          details={"why": f"fewer than {risk.vol_lookback_bars} returns seen "
                                                          f"to size a volatility-targeted entry"}))
                continue
            entries.append(OrderIntent(sym, "buy", "entry", "signal_buy",
                                       notional_usdt=fraction * equity, signal=sig,
                                       stop_loss_pct=risk.stop_loss_pct, take_profit_pct=risk.take_profit_pct,
                                       trailing_stop_pct=risk.trailing_stop_pct,
                                       trailing_mode=risk.trailing_mode, **_entry_order(bars[sym], risk)))
        else:
            reason = SELL_WHILE_FLAT if action == "sell" else HOLD_SIGNAL
            decisions.append(Decision(bar_ts, sym, action, "hold", reason, confidence=conf, model_version=version))
    entries.sort(key=lambda i: (-(i.signal.confidence if i.signal is not None else -1.0), i.symbol))
    return CoreOutput(intents=exits + entries, decisions=decisions)


def _entry_order(bar: Bar, risk: RiskParams) -> dict:
    """The order type of an entry: market, or a limit below the deciding close."""
    if risk.entry_order != "limit":
        return {}
    return {"order_type": "limit", "limit_price": bar.close * (1.0 - risk.limit_offset_bps / 10_000.0),
            "ttl_bars": risk.limit_ttl_bars}
