"""The rules of issue 16 in the one RiskEngine and the paper broker, each with its reason code.

Expected numbers are worked out here from the formulas the issue names (Binance's isolated
liquidation price, margin = notional / leverage, ...) and from the candles, not read back.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from executor.backtest import run_backtest
from executor.core import ATR_UNAVAILABLE, OrderIntent
from executor.portfolio import Portfolio, Position
from executor.risk import (CORRELATION_CAP, FUNDING_FILTER, LIQUIDATION_BEFORE_STOP, MARGIN_GUARD, NET_EXPOSURE,
                           Approved, Denied, RiskEngine)
from executor.funding import FundingSchedule
from executor.rules import SIGNAL_DEGENERATE, SIGNAL_HEALTHY
from executor.signals import Signal

from tests.executor.exec_support import candles_from_rows, params, signals_frame, ts

PERP, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"
NOW = ts(1)  # decisions at the close of bar 0


def _engine(**risk) -> RiskEngine:
    p = params(data={"symbols": [PERP, ETH]}, costs={"fee_rate": 0.0, "slippage_bps": 0.0},
               risk={"allow_short": True, "max_gross_exposure": 50.0, "max_position_notional_usdt": 1e9,
                     "max_open_positions": 10, **risk})
    return RiskEngine.from_params(p)


def _entry(symbol=PERP, side="buy", notional=1_000.0, leverage=1, stop=0.02, price=100.0) -> OrderIntent:
    sig = Signal(symbol, ts(0), side, 0.8 if side == "buy" else 0.2, 0.0, "1")
    return OrderIntent(symbol, side, "entry", f"signal_{side}", notional_usdt=notional, signal=sig,
                       stop_loss_pct=stop, take_profit_pct=0.04, leverage=leverage, reference_price=price)


def _portfolio(**positions: tuple[str, float]) -> Portfolio:
    """Portfolio of 10 000 USDT equity with positions {symbol_key: (side, notional)} at price 100."""
    pf = Portfolio(cash_usdt=10_000.0)
    for key, (side, notional) in positions.items():
        sym = {"btc": PERP, "eth": ETH}[key]
        qty = notional / 100.0
        pf.cash_usdt += notional if side == "short" else -notional
        pf.positions[sym] = Position(sym, qty, 100.0, ts(0), notional, 0.0, 98.0, 104.0, side=side)
        pf.marks[sym] = 100.0
    return pf


def test_liquidation_before_stop_refuses_a_stop_beyond_the_liquidation_price():
    # 20x long at 100: margin 5 per unit, Binance isolated LP = (100 - 5) / (1 - 0.004) = 95.38
    liq = (100.0 - 100.0 / 20) / (1 - 0.004)
    engine = _engine(liquidation_buffer=0.1)
    verdict = engine.check(_entry(leverage=20, notional=20_000.0, stop=0.06), _portfolio(), NOW)
    assert isinstance(verdict, Denied) and verdict.reason == LIQUIDATION_BEFORE_STOP
    assert verdict.numbers["liquidation_price"] == pytest.approx(liq)
    assert verdict.numbers["stop_price"] == pytest.approx(94.0)
    # a 3 % stop (97) lies between the entry and 95.38 with more than 10 % of the distance to spare
    assert isinstance(engine.check(_entry(leverage=20, notional=20_000.0, stop=0.03), _portfolio(), NOW), Approved)
    # a short mirrors it: LP = (100 + 5) / (1 + 0.004) = 104.58; a stop at 106 lies beyond it
    short = engine.check(_entry(side="sell", leverage=20, notional=20_000.0, stop=0.06), _portfolio(), NOW)
    assert isinstance(short, Denied) and short.reason == LIQUIDATION_BEFORE_STOP
    assert short.numbers["liquidation_price"] == pytest.approx(105.0 / 1.004)
    # the buffer: a stop at 95.6 is before 95.38 but within 10 % of the 4.62 distance -> refused
    assert engine.check(_entry(leverage=20, notional=20_000.0, stop=0.044), _portfolio(), NOW).reason == \
        LIQUIDATION_BEFORE_STOP


def test_margin_guard_refuses_an_entry_that_would_leave_too_little_free_margin():
    # open: 30 000 long at 5x -> 6 000 margin in use; 4 000 free of 10 000 equity
    pf = _portfolio(btc=("long", 30_000.0))
    pf.positions[PERP].leverage = 5
    engine = _engine(min_free_margin_fraction=0.35, leverage=5)
    verdict = engine.check(_entry(ETH, notional=5_000.0, leverage=5), pf, NOW)
    # free after the floor: 4 000 - 3 500 = 500 of margin -> at most 2 500 notional at 5x: clipped
    assert isinstance(verdict, Approved) and verdict.clipped_by == MARGIN_GUARD
    assert verdict.notional_usdt == pytest.approx(2_500.0)
    strict = _engine(min_free_margin_fraction=0.4, leverage=5).check(_entry(ETH, notional=5_000.0, leverage=5),
                                                                     pf, NOW)
    assert isinstance(strict, Denied) and strict.reason == MARGIN_GUARD
    assert strict.numbers["free_margin_usdt"] == pytest.approx(4_000.0)


def _correlated_engine(cap: float, rho_sign: float = 1.0) -> RiskEngine:
    engine = _engine(max_cluster_exposure=cap, correlation_threshold=0.8, correlation_lookback_bars=20)
    rng = np.random.default_rng(1)
    r = rng.normal(0, 0.01, 30)
    for i in range(31):
        engine.history.observe(PERP, ts(i - 31), 100 * float(np.exp(r[:i].sum())))
        engine.history.observe(ETH, ts(i - 31), 100 * float(np.exp(rho_sign * r[:i].sum())))
    return engine


def test_correlation_cap_clips_and_refuses_entries_in_a_correlated_cluster():
    pf = _portfolio(btc=("long", 2_000.0))  # 20 % of equity long in BTC
    verdict = _correlated_engine(0.3).check(_entry(ETH, notional=2_000.0), pf, NOW)
    assert isinstance(verdict, Approved) and verdict.clipped_by == CORRELATION_CAP
    assert verdict.notional_usdt == pytest.approx(1_000.0)  # 30 % - 20 %
    refused = _correlated_engine(0.2).check(_entry(ETH, notional=2_000.0), pf, NOW)
    assert isinstance(refused, Denied) and refused.reason == CORRELATION_CAP
    assert refused.numbers["cluster"] == f"{ETH},{PERP}"
    # the opposite direction reduces the cluster's net exposure: a short is not capped
    assert isinstance(_correlated_engine(0.2).check(_entry(ETH, side="sell", notional=2_000.0), pf, NOW), Approved)
    # uncorrelated (anti-correlated) symbols are separate clusters
    assert isinstance(_correlated_engine(0.2, -1.0).check(_entry(ETH, notional=2_000.0), pf, NOW), Approved)


def test_net_exposure_cap_counts_longs_minus_shorts():
    pf = _portfolio(btc=("short", 3_000.0))
    engine = _engine(max_net_exposure=0.2)
    assert engine.check(_entry(ETH, notional=5_000.0), pf, NOW).notional_usdt == pytest.approx(5_000.0)
    more_short = engine.check(_entry(ETH, side="sell", notional=5_000.0), pf, NOW)
    assert isinstance(more_short, Denied) and more_short.reason == NET_EXPOSURE


def test_funding_filter_refuses_longs_above_and_shorts_below_the_limit():
    engine = _engine(max_entry_funding_rate=0.0005)
    engine.funding = FundingSchedule(pd.DataFrame({"symbol": [PERP, PERP, ETH], "funding_rate": [0.0001, 0.001, -0.001],
                                                   "timestamp": [ts(-16), ts(-8), ts(-8)]}))
    long_btc = engine.check(_entry(PERP), _portfolio(), NOW)
    assert isinstance(long_btc, Denied) and long_btc.reason == FUNDING_FILTER and long_btc.numbers["rate"] == 0.001
    assert isinstance(engine.check(_entry(PERP, side="sell"), _portfolio(), NOW), Approved)
    assert isinstance(engine.check(_entry(ETH), _portfolio(), NOW), Approved)
    assert engine.check(_entry(ETH, side="sell"), _portfolio(), NOW).reason == FUNDING_FILTER
    # no rate known: refused, not waved through
    engine.funding = None
    assert engine.check(_entry(PERP), _portfolio(), NOW).numbers["rate"] is None


def test_supervisor_halts_entries_on_one_sided_signals_and_resumes_when_healthy():
    engine = _engine(supervisor_window_bars=4, supervisor_max_one_side=0.75)
    alerts = [engine.observe_signals(ts(i), ["buy", "buy"], [0.8, 0.7]) for i in range(4)]
    assert [a.kind if a else None for a in alerts] == [None, None, None, SIGNAL_DEGENERATE]
    denied = engine.check(_entry(), _portfolio(), NOW)
    assert isinstance(denied, Denied) and denied.reason == SIGNAL_DEGENERATE and denied.numbers["buy_share"] == 1.0
    # exits are never blocked
    assert isinstance(engine.check(OrderIntent(PERP, "sell", "exit", "signal_flip", qty=1.0), _portfolio(), NOW),
                      Approved)
    # one varied bar: 6 of the window's 8 signals buy = 0.75, not more than the limit -> healthy again
    healthy = engine.observe_signals(ts(4), ["sell", "hold"], [0.3, 0.5])
    assert healthy is not None and healthy.kind == SIGNAL_HEALTHY and healthy.numbers["buy_share"] == 0.75
    assert isinstance(engine.check(_entry(), _portfolio(), NOW), Approved)
    # a flat model (probabilities that do not move) is degenerate too
    flat = _engine(supervisor_window_bars=2, supervisor_min_prob_std=0.01)
    flat.observe_signals(ts(0), ["hold", "hold"], [0.5, 0.5])
    assert flat.observe_signals(ts(1), ["hold", "hold"], [0.5, 0.501]).kind == SIGNAL_DEGENERATE


def test_supervisor_alerts_come_from_the_loop_on_the_bars_the_window_turns():
    rows = {PERP: [(100.0, 100.5, 99.5, 100.0)] * 12}
    actions = ["buy"] * 4 + ["hold", "sell", "hold", "buy", "hold", "sell", "hold"]
    p = params(data={"symbols": [PERP]}, risk={"allow_short": True, "supervisor_window_bars": 4,
                                               "supervisor_max_one_side": 0.75})
    funding = pd.DataFrame({"symbol": PERP, "timestamp": [ts(i) for i in range(0, 24, 8)], "funding_rate": 0.0})
    bt = run_backtest(candles_from_rows(rows), signals_frame({PERP: actions}), p, funding=funding)
    kinds = [(a.kind, a.timestamp) for a in bt.alerts if a.kind in (SIGNAL_DEGENERATE, SIGNAL_HEALTHY)]
    # bars 0-3 all buy (4/4 > 0.75) -> halt at 3; bars 1-4 hold 3/4 buys, not more than 0.75 -> healthy at 4
    assert kinds == [(SIGNAL_DEGENERATE, ts(3)), (SIGNAL_HEALTHY, ts(4))]


def test_atr_levels_scale_the_stop_and_take_profit_with_the_signals_atr():
    rows = {PERP: [(100.0, 100.5, 99.5, 100.0), (100.0, 100.5, 99.5, 100.0), (100.0, 103.5, 99.0, 103.0),
                   (100.0, 100.5, 99.5, 100.0)]}
    sigs = signals_frame({PERP: ["buy", "hold", "hold"]}).assign(atr=0.01)
    p = params(data={"symbols": [PERP]}, costs={"slippage_bps": 0.0, "fee_rate": 0.0},
               risk={"stop_loss_atr": 1.5, "take_profit_atr": 3.0})
    funding = pd.DataFrame({"symbol": PERP, "timestamp": [ts(0), ts(8)], "funding_rate": 0.0})
    bt = run_backtest(candles_from_rows(rows), sigs, p, funding=funding, close_at_end=False)
    exit_ = bt.fills.iloc[1]
    assert (exit_["reason"], exit_["price"]) == ("take_profit", pytest.approx(100.0 * (1 + 3.0 * 0.01)))
    # the stop lies 1.5 ATR below the fill (98.5): bar 2's low 99.0 does not reach it
    no_atr = run_backtest(candles_from_rows(rows), signals_frame({PERP: ["buy", "hold", "hold"]}), p,
                          funding=funding, close_at_end=False)
    assert no_atr.fills.empty and ATR_UNAVAILABLE in set(no_atr.decisions["reason"])


def test_take_profit_ladder_closes_part_then_moves_the_stop_to_break_even():
    rows = {PERP: [(100.0, 100.5, 99.5, 100.0), (100.0, 100.5, 99.5, 100.0), (100.0, 102.5, 99.8, 102.0),
                   (102.0, 102.2, 99.9, 100.5), (100.0, 100.5, 99.5, 100.0)]}
    sigs = signals_frame({PERP: ["buy", "hold", "hold", "hold"]})
    p = params(data={"symbols": [PERP]}, costs={"slippage_bps": 0.0, "fee_rate": 0.0},
               risk={"take_profit_ladder": [[0.5, 0.02], [0.5, 0.05]], "breakeven_after_first_tp": True,
                     "stop_loss_pct": 0.03, "position_fraction": 0.1})
    funding = pd.DataFrame({"symbol": PERP, "timestamp": [ts(0), ts(8)], "funding_rate": 0.0})
    bt = run_backtest(candles_from_rows(rows), sigs, p, funding=funding, close_at_end=False)
    qty = 1_000.0 / 100.0
    exits = bt.fills[bt.fills["purpose"] == "exit"]
    # bar 2 reaches rung 1 (102) and not rung 2 (105); bar 3's low 99.9 reaches the stop moved to 100
    assert exits[["timestamp", "reason", "qty", "price"]].values.tolist() == [
        [ts(2), "take_profit_1", pytest.approx(qty / 2), pytest.approx(102.0)],
        [ts(3), "breakeven_stop", pytest.approx(qty / 2), pytest.approx(100.0)]]
    assert bt.trades["pnl_usdt"].tolist() == [pytest.approx(qty / 2 * 2.0), pytest.approx(0.0)]
    assert bt.equity.iloc[-1] == pytest.approx(10_000.0 + qty / 2 * 2.0)


def test_confidence_sizing_scales_with_the_distance_beyond_the_threshold():
    rows = {PERP: [(100.0, 100.5, 99.5, 100.0)] * 3, ETH: [(100.0, 100.5, 99.5, 100.0)] * 3}
    sigs = signals_frame({PERP: ["buy", "hold"], ETH: ["buy", "hold"]})
    sigs.loc[(sigs["symbol"] == PERP) & (sigs["action"] == "buy"), "confidence"] = 0.775  # halfway 0.55 -> 1
    sigs.loc[(sigs["symbol"] == ETH) & (sigs["action"] == "buy"), "confidence"] = 0.99
    p = params(data={"symbols": [PERP, ETH]}, costs={"slippage_bps": 0.0, "fee_rate": 0.0},
               risk={"sizing": "confidence", "position_fraction": 0.2})
    funding = pd.DataFrame({"symbol": [PERP, ETH], "timestamp": [ts(0), ts(0)], "funding_rate": 0.0})
    bt = run_backtest(candles_from_rows(rows), sigs, p, funding=funding, close_at_end=False)
    notional = bt.fills.set_index("symbol")["notional_usdt"]
    assert notional[PERP] == pytest.approx(10_000 * 0.2 * 0.5)
    assert notional[ETH] == pytest.approx(10_000 * 0.2 * (0.99 - 0.55) / 0.45)


def test_min_edge_refuses_entries_whose_expected_move_does_not_beat_fees_slippage_and_funding():
    p = params(data={"symbols": [PERP, ETH]}, costs={"fee_rate": 0.001, "slippage_bps": 2.0},
               signal={"min_edge_bps": 10.0}, labels={"horizon_bars": 16}, risk={"allow_short": True})
    engine = RiskEngine.from_params(p)
    engine.funding = FundingSchedule(pd.DataFrame({"symbol": [PERP, ETH], "funding_rate": [0.0001, 0.0],
                                                   "timestamp": [ts(-8), ts(-8)]}))
    cost = 2 * (0.001 + 0.0002)  # taker fee and slippage, in and out
    funding = 0.0001 * 16 / 8  # two funding times in 16 one-hour bars, paid by a long when positive

    def entry(symbol, side, move):
        sig = Signal(symbol, ts(0), side, 0.8 if side == "buy" else 0.2, float(np.log1p(move)), "1")
        return OrderIntent(symbol, side, "entry", f"signal_{side}", notional_usdt=1_000.0, signal=sig,
                           stop_loss_pct=0.02, take_profit_pct=0.04, reference_price=100.0)

    need = 0.001
    assert isinstance(engine.check(entry(ETH, "buy", cost + need + 1e-4), _portfolio(), NOW), Approved)
    short_of = engine.check(entry(ETH, "buy", cost + need - 1e-4), _portfolio(), NOW)
    assert short_of.reason == "EDGE_BELOW_COST" and short_of.numbers["round_trip_cost"] == pytest.approx(cost)
    # the perpetual's long also pays the expected funding; its short receives it
    assert engine.check(entry(PERP, "buy", cost + need + 1e-4), _portfolio(), NOW).reason == "EDGE_BELOW_COST"
    assert isinstance(engine.check(entry(PERP, "buy", cost + funding + need + 1e-4), _portfolio(), NOW), Approved)
    assert isinstance(engine.check(entry(PERP, "sell", -(cost - funding + need + 1e-4)), _portfolio(), NOW), Approved)
    # a sell whose model expects the price to rise has no edge at all
    assert engine.check(entry(ETH, "sell", 0.01), _portfolio(), NOW).numbers["expected_move"] == pytest.approx(-0.01)
