"""Backtest = the trading loop fed from a signals frame, with the paper broker.

``run_backtest`` runs the SAME decision core, risk engine and paper broker as the paper
daemon (``executor.daemon.run_paper_replay``); only the signal source differs. Baselines
(``buy_and_hold``, ``flat_baseline``) return the same metric keys so the promotion gate
can compare like with like, net of fees, slippage and (perpetuals) funding.

Window: the backtest steps the bars from the first signal's bar to the bar after the last
signal (where that signal's orders would fill). With ``close_at_end`` (default) every
position still open is sold at the last close with slippage and fee, so that the
strategy, like buy-and-hold, pays its way out. Pass ``res.start``/``res.end`` to the
baselines to measure them over the same window.

Metrics (all computed from per-bar equity at the close, starting equity prepended):

* ``net_return`` final/start - 1; ``net_pnl`` final - start (USDT)
* ``sharpe`` mean/std(ddof=1) of bar returns x sqrt(bars per year), 365-day crypto year;
  ``sortino`` mean / sqrt(mean(min(r, 0)^2)) x sqrt(bars per year); both 0.0 when the
  denominator is 0 (e.g. never traded)
* ``max_drawdown`` largest fall from a running peak, positive fraction
* ``trades`` closed round trips; ``hit_rate`` fraction of them with pnl > 0 after both fees
  and funding (0.0 without trades); ``fees`` total USDT; ``turnover`` traded notional / mean
  equity; ``exposure`` fraction of bars with any position open at the close.
* ``funding`` USDT of funding paid by perpetual positions (negative = received); already
  inside equity, ``net_return`` and ``net_pnl``. 0.0 for spot.
* by side (``side_metrics``): ``long_trades`` / ``short_trades`` count the closed round trips
  (rows of ``trades``) of each side; ``pnl_long_usdt`` / ``pnl_short_usdt`` sum their
  ``pnl_usdt``; ``funding_long_usdt`` / ``funding_short_usdt`` sum the funding payments of
  long (signed qty > 0) and short (qty < 0) positions, paid + / received -. The two funding
  figures add up to ``funding``; buy-and-hold is all long, flat all zero.

Perpetuals (``BASE/USDT:USDT``) pay or receive funding from the ``funding`` frame (``symbol,
timestamp, funding_rate``) by the rule in ``executor.funding``; a perp without funding history
is refused (``DataError``), never charged zero. With ``risk.allow_short`` a ``sell`` while flat
opens a short on a perpetual (the decision core's rule); otherwise every position is long.
"""

from __future__ import annotations

import gc
import json
import logging
import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from operator import attrgetter

import numpy as np
import pandas as pd

from executor.funding import (PAYMENT_COLUMNS, FundingSchedule, as_schedule, holding_payments, is_perp,
                              payments_frame, require_funding)
from executor.bartable import infer_bar_ms
from executor.loop import LoopResult, TradingLoop
from executor.paper import PaperBroker
from executor.quiet import DecisionLog
from executor.signals import FrameSignalSource
from qt.config import Params
from qt.errors import DataError
from qt.timeframes import timeframe_ms

log = logging.getLogger(__name__)

METRIC_KEYS = ("net_return", "net_pnl", "sharpe", "sortino", "max_drawdown", "trades", "fees", "turnover",
               "hit_rate", "exposure", "funding", "long_trades", "short_trades", "pnl_long_usdt", "pnl_short_usdt",
               "funding_long_usdt", "funding_short_usdt")
SIDE_KEYS = METRIC_KEYS[-6:]
FILL_COLUMNS = ["order_id", "symbol", "timestamp", "side", "purpose", "reason", "qty", "price", "notional_usdt",
                "fee_usdt"]
DECISION_COLUMNS = ["timestamp", "symbol", "signal_action", "outcome", "reason", "notional_usdt", "confidence",
                    "model_version", "details"]
TRADE_COLUMNS = ["symbol", "entry_ts", "exit_ts", "qty", "entry_price", "exit_price", "fees_usdt", "pnl_usdt",
                 "exit_reason", "bars_held", "funding_usdt", "side"]


@dataclass
class BacktestResult:
    metrics: dict[str, float]
    equity: pd.Series  # USDT at each bar's close, indexed by bar open time
    bar_returns: pd.Series
    fills: pd.DataFrame
    decisions_source: pd.DataFrame | Callable[[], pd.DataFrame]  # the frame, or what builds it (``decisions``)
    trades: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=TRADE_COLUMNS))
    alerts: list = field(default_factory=list)
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None
    funding: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PAYMENT_COLUMNS))  # payments

    @property
    def decisions(self) -> pd.DataFrame:
        """One row per symbol per bar, with ``reason`` and JSON ``details``. Built on first access:
        a search reads the metrics of many backtests and never this frame of one row per symbol-bar."""
        if not isinstance(self.decisions_source, pd.DataFrame):
            self.decisions_source = self.decisions_source()
        return self.decisions_source


def bars_per_year(bar_ms: int) -> float:
    return 365.0 * 86_400_000 / bar_ms


def compute_metrics(equity: pd.Series, starting_equity_usdt: float, bar_ms: int, traded_notional_usdt: float,
                    fees_usdt: float, trade_pnls: list[float], exposure: pd.Series,
                    funding_usdt: float = 0.0, by_side: dict | None = None) -> tuple[dict, pd.Series]:
    """The metric dict and the bar-return series (see module docstring for definitions).
    ``by_side``: the ``SIDE_KEYS`` figures (``side_metrics``); absent ones are 0."""
    values = equity.to_numpy(dtype="float64")
    path = np.concatenate([[starting_equity_usdt], values])
    rets = path[1:] / path[:-1] - 1.0
    bar_returns = pd.Series(rets, index=equity.index, name="bar_return")
    ann = math.sqrt(bars_per_year(bar_ms))
    sharpe = sortino = 0.0
    if len(rets) >= 2:
        sd = float(np.std(rets, ddof=1))
        if sd > 0:
            sharpe = float(np.mean(rets)) / sd * ann
        downside = float(np.sqrt(np.mean(np.minimum(rets, 0.0) ** 2)))
        if downside > 0:
            sortino = float(np.mean(rets)) / downside * ann
    peak = np.maximum.accumulate(path)
    max_dd = float(np.max(1.0 - path / peak))
    final = float(path[-1])
    n_trades = len(trade_pnls)
    metrics = {
        "net_return": final / starting_equity_usdt - 1.0,
        "net_pnl": final - starting_equity_usdt,
        "sharpe": sharpe,
        "sortino": sortino,
        "max_drawdown": max_dd,
        "trades": n_trades,
        "fees": float(fees_usdt),
        "turnover": float(traded_notional_usdt / np.mean(values)) if len(values) else 0.0,
        "hit_rate": float(sum(p > 0 for p in trade_pnls) / n_trades) if n_trades else 0.0,
        "exposure": float(exposure.mean()) if len(exposure) else 0.0,
        "funding": float(funding_usdt),
    }
    metrics.update({k: 0 if k.endswith("_trades") else 0.0 for k in SIDE_KEYS})
    metrics.update(by_side or {})
    return metrics, bar_returns


def side_metrics(trades: pd.DataFrame, funding: pd.DataFrame) -> dict:
    """``SIDE_KEYS`` from the closed trades (``side`` column) and the funding payments (signed
    ``qty``: a long's is > 0, a short's < 0)."""
    # the sides as Python strings compared in numpy (a string column's own comparisons cost more than the rest)
    side = trades["side"].to_numpy(dtype=object) if len(trades) else np.array([], dtype=object)
    long, short = side == "long", side == "short"
    pnl = trades["pnl_usdt"].astype("float64") if len(trades) else pd.Series([], dtype="float64")
    qty = funding["qty"].astype("float64") if len(funding) else pd.Series([], dtype="float64")
    amount = funding["amount_usdt"].astype("float64") if len(funding) else pd.Series([], dtype="float64")
    return {
        "long_trades": int(long.sum()),
        "short_trades": int(short.sum()),
        "pnl_long_usdt": float(pnl[long].sum()),
        "pnl_short_usdt": float(pnl[short].sum()),
        "funding_long_usdt": float(amount[(qty > 0).to_numpy()].sum()),
        "funding_short_usdt": float(amount[(qty < 0).to_numpy()].sum()),
    }


def result_from_loop(loop_result: LoopResult, start=None, end=None) -> BacktestResult:
    r = loop_result
    fills = _frame(r.fills, FILL_COLUMNS)
    trades = _frame(r.closed_trades, TRADE_COLUMNS)
    funding = payments_frame(r.funding)
    metrics, bar_returns = compute_metrics(
        r.equity, r.starting_equity_usdt, r.bar_ms, float(fills["notional_usdt"].sum()) if len(fills) else 0.0,
        float(fills["fee_usdt"].sum()) if len(fills) else 0.0, trades["pnl_usdt"].tolist(), r.exposure,
        funding_usdt=float(sum(p.amount_usdt for p in r.funding)), by_side=side_metrics(trades, funding))
    return BacktestResult(metrics, r.equity, bar_returns, fills, partial(decisions_frame, r.decision_log), trades,
                          list(r.alerts), start, end, funding)


def _frame(items: list, columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(list(map(attrgetter(*columns), items)), columns=columns)


def decisions_frame(decisions: list | DecisionLog) -> pd.DataFrame:
    """One row per decision; a loop's ``DecisionLog`` is read as columns (its quiet spans never
    become objects)."""
    if not len(decisions):
        return pd.DataFrame([], columns=DECISION_COLUMNS)
    columns = decisions.columns(_decision_columns) if isinstance(decisions, DecisionLog) else _decision_columns(decisions)
    return pd.DataFrame(columns, columns=DECISION_COLUMNS)


def _decision_columns(decisions: list) -> dict[str, list]:
    # column-wise: a backtest has one row per symbol-bar, and tuples per row cost twice as much
    columns = {c: list(map(attrgetter(c), decisions)) for c in DECISION_COLUMNS[:-1]}
    columns["details"] = [json.dumps(d, sort_keys=True, default=str) if d else "{}"  # most carry none
                          for d in map(attrgetter("details"), decisions)]
    return columns


def check_timeframe(candles: pd.DataFrame, params: Params) -> int:
    bar_ms = timeframe_ms(params.data.timeframe)
    seen = infer_bar_ms(candles)
    if seen != bar_ms:
        raise DataError(f"candles are {seen} ms bars but params.data.timeframe is {params.data.timeframe} "
                        f"({bar_ms} ms); pass candles of the configured timeframe")
    return bar_ms


def warn_if_perps(symbols, allow_short: bool = False) -> None:
    """Say once per run how perps are traded: long-only, or with shorts (``risk.allow_short``)."""
    perps = sorted(s for s in symbols if is_perp(s))
    if perps:
        log.info("perpetual symbols %s are traded %s; funding is settled from their funding history", perps,
                 "long and short (a sell while flat opens a short)" if allow_short else "long-only (no shorts)")


def run_backtest(candles: pd.DataFrame, signals_df: pd.DataFrame, params: Params,
                 close_at_end: bool = True,
                 funding: pd.DataFrame | FundingSchedule | None = None) -> BacktestResult:
    """Replay ``signals_df`` over ``candles`` through the trading loop with the paper broker.

    Only symbols present in ``signals_df`` are traded. ``funding`` (``symbol, timestamp,
    funding_rate``) is required when a perp symbol is traded. Raises ``DataError`` when there
    are no signals, no candles in the window, the candles' bar size is not the configured
    one, or a perp lacks funding history over the window.
    """
    if signals_df is None or len(signals_df) == 0:
        raise DataError("signals frame is empty; nothing to backtest (check the prediction step)")
    with cyclic_gc_paused():
        return _run_backtest(candles, signals_df, params, close_at_end, funding)


@contextmanager
def cyclic_gc_paused():
    """Pause Python's cyclic garbage collector for one backtest, restoring it after.

    Why: the loop makes a few objects per symbol-bar it steps (signals, bars, decisions) and keeps
    many of them (the decision log, the source's signals), so the collector's passes over a heap
    growing by tens of thousands of objects took about a third of a backtest - for nothing: the
    loop's objects form no reference cycles (reference counting frees what it drops; a cycle some
    library makes is collected once the collector runs again, after the backtest). ``timeit``
    pauses it the same way. Process-wide while it lasts: a backtest takes a fraction of a second."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _run_backtest(candles: pd.DataFrame, signals_df: pd.DataFrame, params: Params, close_at_end: bool,
                  funding: pd.DataFrame | FundingSchedule | None) -> BacktestResult:
    source = FrameSignalSource(signals_df)
    bar_ms = check_timeframe(candles, params)
    symbols = source.symbols
    traded = candles[candles["symbol"].isin(symbols)]
    warn_if_perps(symbols, params.risk.allow_short)
    start = source.first_timestamp
    end = source.last_timestamp + pd.Timedelta(milliseconds=bar_ms)
    loop = TradingLoop(params, source, PaperBroker(params.costs), bar_ms=bar_ms, funding=funding)
    result = loop.run(traded, start=start, end=end, close_at_end=close_at_end)
    return result_from_loop(result, start, end)


def _window(candles: pd.DataFrame, start, end) -> pd.DataFrame:
    ts = pd.to_datetime(candles["timestamp"], utc=True)
    mask = np.ones(len(candles), dtype=bool)
    if start is not None:
        mask &= (ts >= pd.Timestamp(start)).to_numpy()
    if end is not None:
        mask &= (ts <= pd.Timestamp(end)).to_numpy()
    out = candles.loc[mask].assign(timestamp=ts[mask])
    if out.empty:
        raise DataError(f"no candles between {start} and {end}")
    return out


def buy_and_hold(candles: pd.DataFrame, params: Params, start=None, end=None,
                 funding: pd.DataFrame | FundingSchedule | None = None) -> BacktestResult:
    """Equal-weight buy-and-hold of every symbol in ``candles`` over [start, end].

    Always long (its metrics count every round trip as a long). Each symbol gets
    ``starting_equity / n`` of cash; it is spent, fee included, at the open of the symbol's
    first bar (price ``open * (1 + slippage)``, notional ``cash / (1 + fee_rate)``);
    everything is sold at the last close
    (``close * (1 - slippage)``, fee on that notional). Equity is marked at each close
    (gaps carry the last close); the last point is the liquidation value. A perp symbol
    pays funding on its held quantity by the loop's rule (``executor.funding``), so the
    baseline is charged exactly like the strategy would be.
    """
    df = _window(candles, start, end)
    bar_ms = check_timeframe(df, params) if df.groupby("symbol").size().max() > 1 else timeframe_ms(
        params.data.timeframe)
    fee, slip = params.costs.fee_rate, params.costs.slippage_bps / 10_000.0
    start_eq = params.risk.starting_equity_usdt
    closes = df.pivot(index="timestamp", columns="symbol", values="close").sort_index()
    opens = df.pivot(index="timestamp", columns="symbol", values="open").sort_index()
    symbols = list(closes.columns)
    warn_if_perps(symbols)
    schedule = as_schedule(funding)
    require_funding(schedule, {s: (opens[s].first_valid_index(), closes[s].last_valid_index()) for s in symbols})
    budget = start_eq / len(symbols)
    index = closes.index
    equity = np.zeros(len(index))
    fills, pnls, payments = [], [], []
    for sym in symbols:
        first = opens[sym].first_valid_index()
        last = closes[sym].last_valid_index()
        entry_notional = budget / (1.0 + fee)
        entry_price = float(opens.at[first, sym]) * (1.0 + slip)
        qty = entry_notional / entry_price
        exit_price = float(closes.at[last, sym]) * (1.0 - slip)
        exit_notional = qty * exit_price
        held = (index >= first).astype(float)
        mark = closes[sym].ffill().fillna(0.0).to_numpy()
        equity += np.where(held > 0, qty * mark, budget)
        sym_pay = holding_payments(schedule, sym, qty, closes[sym].dropna(), index)
        for pay in sym_pay:
            equity -= np.where(index >= pay.timestamp, pay.amount_usdt, 0.0)
        payments += sym_pay
        fills.append((0, sym, first, "buy", "entry", "buy_and_hold", qty, entry_price, entry_notional,
                      entry_notional * fee))
        fills.append((0, sym, last, "sell", "exit", "end_of_run", qty, exit_price, exit_notional,
                      exit_notional * fee))
        pnls.append(exit_notional * (1.0 - fee) - budget - sum(p.amount_usdt for p in sym_pay))
    # the last point is the liquidation value: every symbol sold at its last close, fee and funding paid
    paid = float(sum(p.amount_usdt for p in payments))
    equity[-1] = sum(f[8] - f[9] for f in fills if f[4] == "exit") - paid
    eq = pd.Series(equity, index=pd.DatetimeIndex(index, name="timestamp"), name="equity_usdt")
    fills_df = pd.DataFrame(fills, columns=FILL_COLUMNS)
    exposure = pd.Series(np.ones(len(index), dtype=bool), index=eq.index)
    by_side = {"long_trades": len(pnls), "pnl_long_usdt": float(sum(pnls)), "funding_long_usdt": paid}
    metrics, bar_returns = compute_metrics(eq, start_eq, bar_ms, float(fills_df["notional_usdt"].sum()),
                                           float(fills_df["fee_usdt"].sum()), pnls, exposure, funding_usdt=paid,
                                           by_side=by_side)
    return BacktestResult(metrics, eq, bar_returns, fills_df, pd.DataFrame(columns=DECISION_COLUMNS),
                          start=index[0], end=index[-1], funding=payments_frame(payments))


def flat_baseline(candles: pd.DataFrame, params: Params, start=None, end=None) -> BacktestResult:
    """Never trade: equity stays at the starting equity. The floor every strategy must beat."""
    df = _window(candles, start, end)
    index = pd.DatetimeIndex(sorted(df["timestamp"].unique()), name="timestamp")
    start_eq = params.risk.starting_equity_usdt
    eq = pd.Series(start_eq, index=index, name="equity_usdt", dtype="float64")
    exposure = pd.Series(np.zeros(len(index), dtype=bool), index=index)
    metrics, bar_returns = compute_metrics(eq, start_eq, timeframe_ms(params.data.timeframe), 0.0, 0.0, [],
                                           exposure)
    return BacktestResult(metrics, eq, bar_returns, pd.DataFrame(columns=FILL_COLUMNS),
                          pd.DataFrame(columns=DECISION_COLUMNS), start=index[0], end=index[-1])
