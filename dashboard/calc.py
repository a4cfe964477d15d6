"""Pure arithmetic of the dashboard: drawdown, buy-and-hold, unrealised PnL, heartbeat age.

Inputs are plain frames/dicts read by the adapters (``dashboard.state_reader``,
``dashboard.health``); nothing here does I/O, so each figure can be checked by hand.
"""

from __future__ import annotations

import pandas as pd


def drawdown(equity: pd.Series, starting_equity_usdt: float) -> pd.Series:
    """Fraction below the highest equity seen so far (the run's starting equity counts as
    the first peak, as in the executor's risk engine): 0 at a new high, 0.1 = 10 % below."""
    peak = equity.cummax().clip(lower=starting_equity_usdt)
    return 1.0 - equity / peak


def buy_and_hold(candles: pd.DataFrame, bar_ts: pd.Series | pd.DatetimeIndex, starting_equity_usdt: float
                 ) -> pd.Series:
    """Equity of the passive alternative over the same bars: the starting equity split equally
    over the symbols in ``candles``, bought at the OPEN of the first bar (the executor's first
    equity point is marked at that bar's close), marked at each bar's close; no costs.

    ``candles``: ``symbol, timestamp, open, close``; ``bar_ts``: the executor's equity bar open
    times. Returns a series indexed by ``bar_ts``; a bar a symbol lacks carries its last close."""
    index = pd.DatetimeIndex(pd.to_datetime(pd.Series(bar_ts), utc=True))
    if len(index) == 0 or candles.empty:
        return pd.Series(dtype=float, index=index)
    c = candles.assign(timestamp=pd.to_datetime(candles["timestamp"], utc=True))
    c = c[(c["timestamp"] >= index.min()) & (c["timestamp"] <= index.max())]
    symbols = sorted(c["symbol"].unique())
    if not symbols:
        return pd.Series(float("nan"), index=index)
    per_symbol = starting_equity_usdt / len(symbols)
    total = pd.Series(0.0, index=index)
    for sym in symbols:
        g = c[c["symbol"] == sym].sort_values("timestamp")
        closes = g.set_index("timestamp")["close"].reindex(index).ffill()
        total += (per_symbol * closes / float(g["open"].iloc[0])).fillna(per_symbol)
    return total


def unrealised_pnl(positions: pd.DataFrame, closes: dict[str, float]) -> pd.DataFrame:
    """``positions`` (symbol, qty, entry_price, ...) with ``mark_price`` = the latest close in
    ``closes`` (the executor's own mark when the symbol has none) and ``unrealised_pnl_usdt`` =
    qty x (mark - entry). Long-only spot positions: qty > 0. Fees of the exit are not deducted."""
    out = positions.copy()
    if out.empty:
        return out.assign(mark_price=pd.Series(dtype=float), unrealised_pnl_usdt=pd.Series(dtype=float))
    own = out["mark_price"] if "mark_price" in out else pd.Series(float("nan"), index=out.index)
    out["mark_price"] = [closes.get(s, m) for s, m in zip(out["symbol"], own)]
    out["unrealised_pnl_usdt"] = out["qty"] * (out["mark_price"] - out["entry_price"])
    return out


def heartbeat_age_s(ttl_left_ms: int | None, ttl_s: int) -> float | None:
    """Seconds since the executor last finished a bar, from the heartbeat key's remaining TTL
    (the executor re-sets it with ``ttl_s`` every bar). None when the key is gone: no
    executor has finished a bar for ``ttl_s`` seconds, or none ever ran on this Redis."""
    if ttl_left_ms is None or ttl_left_ms < 0:
        return None
    return max(0.0, ttl_s - ttl_left_ms / 1000.0)
