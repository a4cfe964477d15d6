"""The protective levels reconciliation guards a position with when it must place a guard anew.

Why this module exists: after a restart a missing stop or take-profit is re-placed. Its level must
be the one the entry was decided with, not a default: with ATR-scaled levels (``risk.stop_loss_atr``,
``take_profit_atr``, an ATR ladder) the percentages in ``risk`` are not this position's levels.
So, in order:

1. the journal: the first stop / take-profit this executor placed for the entry (its trigger price
   is the level the entry was decided with; rungs: ``executor.live.ladder.adopt_rungs``);
2. a position the journal does not know (opened by hand, or the journal lost): the configured
   levels through the decision core's own ``protective_levels``, ATR multiples with the ATR of the
   last closed bar computed from the exchange's candles by the feature code's formula
   (``talib.ATR(high, low, close, N) / close``, as ``features.compute``'s ``atr_N``) - logged,
   because that is the ATR at the restart, not at the entry.
"""

from __future__ import annotations

import logging

import numpy as np
import talib

from executor.core import protective_levels
from qt.config import RiskParams
from qt.errors import DataError
from qt.timeframes import TIMEFRAME_MS

log = logging.getLogger(__name__)
ATR_HISTORY_BARS = 500  # the Wilder smoothing of atr_14 forgets its start within ~200 bars


def timeframe_of(bar_ms: int) -> str:
    """The timeframe name of a bar length (the loop's ``bar_ms``)."""
    for name, ms in TIMEFRAME_MS.items():
        if ms == bar_ms:
            return name
    raise DataError(f"no timeframe has bars of {bar_ms} ms")


def recent_atr(broker, symbol: str, timeframe: str, period: int) -> float:
    """ATR / close of the last CLOSED bar of ``symbol`` on the exchange (the forming bar dropped)."""
    rows = broker.read(lambda: broker.ex.fetch_ohlcv(symbol, timeframe, limit=ATR_HISTORY_BARS))
    bars = np.asarray(rows[:-1], dtype="float64")
    if len(bars) <= period:
        raise DataError(f"{symbol}: the exchange returned {len(bars)} closed bars; the ATR levels need more than "
                        f"{period} to guard an adopted position")
    atr = talib.ATR(bars[:, 2], bars[:, 3], bars[:, 4], timeperiod=period)
    return float(atr[-1] / bars[-1, 4])


def adoption_levels(broker, risk: RiskParams, journal, symbol: str, entry_cid: str | None, timeframe: str) -> dict:
    """``{"stop_price" | "take_profit_price": journalled level or None, "stop_loss_pct", "take_profit_pct",
    "take_profit_ladder"}`` for guarding the position of ``entry_cid`` (None: not in the journal)."""
    atr = float("nan")
    if risk.uses_atr:
        atr = recent_atr(broker, symbol, timeframe, risk.atr_period)
    levels = protective_levels(risk, atr)
    if levels is None:  # unreachable: recent_atr raises rather than return no ATR
        raise DataError(f"{symbol}: no ATR to place ATR-scaled guards with")
    out = {"stop_loss_pct": levels["stop_loss_pct"], "take_profit_pct": levels["take_profit_pct"],
           "take_profit_ladder": levels.get("take_profit_ladder", ()), "stop_price": None,
           "take_profit_price": None}
    if entry_cid is not None:
        for purpose, key in (("stop_loss", "stop_price"), ("take_profit", "take_profit_price")):
            placed = journal.rows("entry_cid=? AND purpose=? AND price IS NOT NULL", (entry_cid, purpose))
            if placed:
                out[key] = float(placed[0]["price"])
    if risk.uses_atr and out["stop_price"] is None:
        log.warning("%s: guarding a position without journalled levels with the ATR of the last closed bar "
                    "(%.5f of the close), not the entry's", symbol, atr)
    return out
