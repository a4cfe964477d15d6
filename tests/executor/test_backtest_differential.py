"""Randomised differential test of the backtest's fast paths against the plain event loop (issue 17).

Why: a backtest fast enough to search with (>= 1 M symbol-bars/s) must stay trade-for-trade the
loop that paper and live run. Every shortcut the backtest takes is therefore checked here against
the loop taking none of them, on random markets, signals and risk settings covering every rule and
both sides, comparing everything a backtest returns - fills, trades, equity, decisions, alerts,
funding payments, metrics - exactly (no tolerance: the same float operations in the same order).

* **fast**: ``run_backtest`` as the bench and the search call it (quiet and held spans).
* **quiet**: the same loop with quiet spans only (``skip_held=False``): every bar in a position
  goes through ``step``, so a difference between **fast** and **plain** that **quiet** lacks is
  the held spans'.
* **plain**: the same ``TradingLoop`` stepping every bar through ``step`` (``skip_quiet=False``),
  fed by a signal source that scans the signal rows for the latest one at or before ``as_of`` (no
  cursor, no shared objects), with a listener attached, so that every bookkeeping step goes the
  slow way (decisions recorded one by one, every event emitted).

The shortcuts this compares (``executor.spans``): quiet spans (runs of bars where the ledger is
flat and idle and no signal can act, stepped at once, their decisions kept as columns) and held
spans (runs of bars **in a position** up to the next event: an actionable signal on a flat symbol
- a buy, a sell that may short, no signal at all -, a signal against a held position with
``exit_on_signal_flip``, ``bars_held`` reaching ``max_holding_bars``, a stop / take-profit /
ladder rung / trail touched - one array scan of low/high against the levels, the trail's peak a
running extreme -, a funding time of a held perp, an order pending or resting; between events
equity is ``cash + sum(sign * qty * close)`` added position by position in the ledger's order,
the risk engine sees every bar's equity, and the decisions - IN_POSITION / HOLD_SIGNAL with
``bars_held``, FLIP_EXIT_DISABLED, NO_SIGNAL - go to the same column log); on event bars, the
plan's decisions for the symbols that cannot act (only the others go to the signal source and the
core: ``SpanStepper.to_decide``) and, on a bar where only flat symbols act, the span's accounting
with the loop's decision phase alone (``decide_planned``); ``FrameSignalSource``'s cursor,
read-ahead (``signals_on``), lazy Signals and shared timestamps, ``_emit`` / ``record`` without
listeners; and the loop's own decision list (spans made into objects on demand) against the
plain one. Event bars go through the loop's decision phase: one decision core, one risk engine,
one broker.
Shortcuts inside code all runners share (the decision core's flat-and-hold branch, the bar table
as Python floats) cannot be told apart here; they were compared against the code before them on
the bench's real data (every output identical), and the by-hand tests pin them.

The generators cover every rule on both sides: longs and shorts, spot and perps with funding,
fixed / ATR stops and take-profits, ladders with and without break-even, trailing stops, limit
entries, max holding, signal flips on and off, cooldown, sizing modes, exposure / cluster caps,
the supervisor, daily loss and drawdown limits tight enough to trip.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from executor.backtest import decisions_frame, result_from_loop, run_backtest
from executor.loop import LoopListener, TradingLoop
from executor.paper import PaperBroker
from executor.signals import FrameSignalSource, Signal
from executor.paper import Protective
from executor.spans import SpanStepper, first_touch, first_touch_array

from tests.executor.exec_support import params, ts

SPOT = ["A/USDT", "B/USDT", "C/USDT"]
PERPS = ["A/USDT:USDT", "B/USDT:USDT", "C/USDT:USDT"]


class PlainSource:
    """The 'latest signal at or before as_of' rule by a scan of the rows: no cursor, no sharing."""

    def __init__(self, frame: pd.DataFrame):
        self.rows = [Signal(str(r.symbol), pd.Timestamp(r.timestamp), str(r.action), float(r.confidence),
                            float(r.expected_return), str(r.model_version), float(r.atr))
                     for r in frame.itertuples(index=False)]
        self.by_symbol: dict[str, list[Signal]] = {}
        for s in self.rows:
            self.by_symbol.setdefault(s.symbol, []).append(s)

    def fetch(self, symbols, as_of):
        out = []
        for sym in symbols:
            seen = sorted((s for s in self.by_symbol.get(sym, ()) if s.timestamp <= as_of), key=lambda s: s.timestamp)
            if seen:
                out.append(seen[-1])  # of equal times, the last row (a stable sort keeps their order)
        return out


def _quiet_only_backtest(candles, signals, p, funding):
    """``run_backtest``'s steps with quiet spans only: every bar in a position through ``step``."""
    source = FrameSignalSource(signals)
    start, end = source.first_timestamp, source.last_timestamp + pd.Timedelta(hours=1)
    traded = candles[candles["symbol"].isin(set(signals["symbol"]))]
    loop = TradingLoop(p, source, PaperBroker(p.costs), bar_ms=3_600_000, funding=funding)
    return result_from_loop(loop.run(traded, start=start, end=end, close_at_end=True, skip_held=False), start, end)


def _plain_backtest(candles, signals, p, funding):
    """``run_backtest``'s steps (window, loop, result) with the plain source and a listener."""
    source = PlainSource(signals)
    start = min(s.timestamp for s in source.rows)
    end = max(s.timestamp for s in source.rows) + pd.Timedelta(hours=1)
    traded = candles[candles["symbol"].isin(set(signals["symbol"]))]
    loop = TradingLoop(p, source, PaperBroker(p.costs), listeners=[LoopListener()], bar_ms=3_600_000,
                       funding=funding)
    return result_from_loop(loop.run(traded, start=start, end=end, close_at_end=True, skip_quiet=False), start, end)


@st.composite
def markets(draw):
    perps = draw(st.booleans())
    n_sym = draw(st.integers(1, 3))
    symbols = (PERPS if perps else SPOT)[:n_sym]
    n_bars = draw(st.integers(12, 160))  # days: quiet spans across UTC midnights
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    vol = draw(st.sampled_from([0.005, 0.02, 0.05]))
    candles, signals = [], []
    for sym in symbols:
        close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, vol, n_bars)))
        open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(rng.normal(0.0, vol / 3, n_bars))
        high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, vol, n_bars)))
        low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, vol, n_bars)))
        keep = rng.random(n_bars) > 0.05  # exchange gaps
        keep[:2] = True
        idx = np.flatnonzero(keep)
        candles.append(pd.DataFrame({"symbol": sym, "timestamp": [ts(int(i)) for i in idx], "open": open_[idx],
                                     "high": high[idx], "low": low[idx], "close": close[idx], "volume": 1.0}))
        u = rng.random(n_bars)
        p_act = draw(st.sampled_from([0.02, 0.05, 0.3]))  # sparse: long quiet spans
        action = np.where(u < p_act, "buy", np.where(u > 1 - p_act, "sell", "hold"))
        rows = np.flatnonzero(rng.random(n_bars) > 0.1)  # missing rows: repeated, then stale signals
        atr = np.where(rng.random(n_bars) < 0.1, np.nan, 0.005 + 0.03 * rng.random(n_bars))
        signals.append(pd.DataFrame({"symbol": sym, "timestamp": [ts(int(i)) for i in rows],
                                     "action": action[rows].astype(object), "confidence": rng.random(n_bars)[rows],
                                     "expected_return": 0.0, "model_version": "m", "atr": atr[rows]}))
    candles = pd.concat(candles, ignore_index=True)
    candles["timestamp"] = candles["timestamp"].astype("datetime64[ms, UTC]")
    signals = pd.concat(signals, ignore_index=True)
    signals["timestamp"] = signals["timestamp"].astype("datetime64[ms, UTC]")
    funding = None
    if perps:
        f_ts = [ts(i) for i in range(-8, n_bars + 16, 8)]
        funding = pd.DataFrame([(s, t, float(r)) for s in symbols for t, r in
                                zip(f_ts, rng.normal(0.0, 0.0005, len(f_ts)))],
                               columns=["symbol", "timestamp", "funding_rate"])
    return symbols, perps, candles, signals, funding


@st.composite
def risk_settings(draw, perps: bool):
    r = {"max_open_positions": draw(st.integers(1, 3)),
         "max_holding_bars": draw(st.one_of(st.integers(1, 10), st.just(48))),  # 48: long held spans
         "position_fraction": draw(st.sampled_from([0.1, 0.3, 0.6])),
         "exit_on_signal_flip": draw(st.booleans()), "cooldown_bars": draw(st.integers(0, 3)),
         "daily_loss_limit_pct": draw(st.sampled_from([0.01, 0.05, 0.5])),
         "max_drawdown_pct": draw(st.sampled_from([0.03, 0.25, 0.9])),
         "sizing": draw(st.sampled_from(["fixed_fraction", "volatility_target", "confidence"])),
         "vol_lookback_bars": draw(st.integers(2, 8)), "max_position_notional_usdt": 1e9,
         "max_gross_exposure": draw(st.sampled_from([0.5, 1.0, 5.0]))}
    levels = draw(st.sampled_from(["pct", "atr", "ladder_pct", "ladder_atr"]))
    if levels == "pct":
        r.update(stop_loss_pct=draw(st.sampled_from([0.01, 0.03])), take_profit_pct=draw(st.sampled_from([0.01, 0.05])))
    elif levels == "atr":
        r.update(stop_loss_atr=draw(st.sampled_from([0.5, 2.0])), take_profit_atr=draw(st.sampled_from([1.0, 3.0])))
    else:
        r.update(take_profit_ladder=[[0.5, 0.01], [0.5, 0.03]] if levels == "ladder_pct" else [[0.3, 1.0], [0.3, 2.0]],
                 take_profit_ladder_unit="pct" if levels == "ladder_pct" else "atr",
                 breakeven_after_first_tp=draw(st.booleans()))
    if draw(st.booleans()):
        r.update(trailing_stop_pct=draw(st.sampled_from([0.01, 0.04])), trailing_mode="managed")
    if draw(st.booleans()):
        r.update(entry_order="limit", limit_offset_bps=draw(st.sampled_from([0.0, 30.0])),
                 limit_ttl_bars=draw(st.integers(1, 3)))
    if draw(st.booleans()):
        r.update(max_cluster_exposure=0.5, correlation_lookback_bars=4)
    if draw(st.booleans()):
        r.update(supervisor_window_bars=3, supervisor_max_one_side=0.6)
    if perps:
        r.update(allow_short=draw(st.booleans()), leverage=draw(st.integers(1, 4)),
                 max_net_exposure=draw(st.sampled_from([None, 0.5])),
                 max_entry_funding_rate=draw(st.sampled_from([None, 0.0003])))
    return r


def _same(fast, plain) -> None:
    assert fast.metrics == plain.metrics
    pd.testing.assert_series_equal(fast.equity, plain.equity, check_exact=True)
    pd.testing.assert_series_equal(fast.bar_returns, plain.bar_returns, check_exact=True)
    for name in ("fills", "trades", "decisions", "funding"):
        pd.testing.assert_frame_equal(getattr(fast, name), getattr(plain, name), check_exact=True, obj=name)
    assert [repr(a) for a in fast.alerts] == [repr(a) for a in plain.alerts]
    assert (fast.start, fast.end) == (plain.start, plain.end)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_backtest_fast_paths_trade_exactly_like_the_plain_loop(data):
    symbols, perps, candles, signals, funding = data.draw(markets())
    risk = data.draw(risk_settings(perps))
    p = params(data={"symbols": symbols}, risk=risk, labels={"horizon_bars": 1},
               costs={"fee_rate": data.draw(st.sampled_from([0.0, 0.001])), "slippage_bps": 2.0})
    fast = run_backtest(candles, signals, p, funding=funding)
    plain = _plain_backtest(candles, signals, p, funding)
    assert len(fast.decisions) > 0
    _same(fast, plain)
    _same(_quiet_only_backtest(candles, signals, p, funding), plain)
    # the loop's own decision list (quiet spans made into objects on demand), as listeners would read it
    loop = TradingLoop(p, FrameSignalSource(signals), PaperBroker(p.costs), bar_ms=3_600_000, funding=funding)
    listed = loop.run(candles[candles["symbol"].isin(set(signals["symbol"]))], start=fast.start, end=fast.end,
                      close_at_end=True).decisions
    assert decisions_frame(listed).equals(plain.decisions) and len(listed) == len(plain.decisions)


def test_the_differential_sees_trades_of_every_kind():
    """The generators are worth something only if the runs trade: one fixed draw per side must
    produce entries, protective exits and signal exits, and bars in a position stepped as held
    spans (else the comparison above is vacuous)."""
    kinds = set()
    held = mock.patch.object(SpanStepper, "_held", autospec=True, side_effect=SpanStepper._held)
    held_spans = held.start()
    for perps, seed in ((False, 11), (True, 12)):
        rng = np.random.default_rng(seed)
        symbols = PERPS[:2] if perps else SPOT[:2]
        n = 200
        frames, sigs = [], []
        for sym in symbols:
            close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, n)))
            frames.append(pd.DataFrame({"symbol": sym, "timestamp": [ts(i) for i in range(n)], "open": close,
                                        "high": close * 1.02, "low": close * 0.98, "close": close, "volume": 1.0}))
            u = rng.random(n)
            sigs.append(pd.DataFrame({"symbol": sym, "timestamp": [ts(i) for i in range(n)],
                                      "action": np.where(u < 0.2, "buy", np.where(u > 0.8, "sell", "hold")).astype(object),
                                      "confidence": 0.5, "expected_return": 0.0, "model_version": "m",
                                      "atr": 0.01}))
        funding = pd.DataFrame([(s, ts(i), 0.0001) for s in symbols for i in range(0, n + 8, 8)],
                               columns=["symbol", "timestamp", "funding_rate"]) if perps else None
        risk = {"allow_short": True, "leverage": 2} if perps else {}
        res = run_backtest(pd.concat(frames, ignore_index=True), pd.concat(sigs, ignore_index=True),
                           params(data={"symbols": symbols}, risk={"max_drawdown_pct": 0.9, **risk}), funding=funding)
        plain = _plain_backtest(pd.concat(frames, ignore_index=True), pd.concat(sigs, ignore_index=True),
                                params(data={"symbols": symbols}, risk={"max_drawdown_pct": 0.9, **risk}), funding)
        _same(res, plain)
        kinds |= set(res.trades["exit_reason"]) | {f"side:{s}" for s in res.trades["side"]}
    held.stop()
    assert {"stop_loss", "take_profit", "signal_flip", "side:long", "side:short"} <= kinds
    assert held_spans.call_count > 10


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_the_guard_scan_finds_the_same_bar_as_a_loop_and_as_arrays(data):
    """A held span's guard scan runs as a loop over a few bars and as array scans over many: both
    must stop at the same bar (the loop's is the one the differential runs cover most)."""
    n = data.draw(st.integers(1, 60))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    high, low = close * (1 + rng.random(n) * 0.02), close * (1 - rng.random(n) * 0.02)
    has = rng.random(n) > 0.1
    low[~has] = high[~has] = np.nan
    low[rng.random(n) < 0.02] = np.nan  # a bar with a hole is touched
    side = data.draw(st.sampled_from(["long", "short"]))
    sign = 1.0 if side == "long" else -1.0
    far = data.draw(st.sampled_from([0.01, 0.03, 0.2]))
    rungs = ((1.0, 100.0 * (1 + sign * far)),) if data.draw(st.booleans()) else ()
    guard = Protective("A/USDT", 1.0, 100.0 * (1 - sign * data.draw(st.sampled_from([0.01, 0.05, 0.3]))),
                       float("nan") if rungs else 100.0 * (1 + sign * far), 1,
                       trail_pct=data.draw(st.sampled_from([0.0, 0.01, 0.05])), peak=100.0, side=side, rungs=rungs)
    assert first_touch(guard, has.tolist(), low.tolist(), high.tolist()) == first_touch_array(guard, has, low, high)
