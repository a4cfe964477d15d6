"""run_backtest / buy_and_hold on hand-built frames whose PnL is computed by hand here."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from executor.backtest import METRIC_KEYS, buy_and_hold, compute_metrics, flat_baseline, run_backtest
from qt.errors import DataError

from tests.executor.exec_support import candles_from_rows, params, signals_frame, ts

F = 0.001  # fee rate
S = 0.001  # slippage (10 bps)
HOURS_PER_YEAR = 365 * 24

AAA = [(100, 101, 99, 100), (100, 103, 99.5, 102), (102, 105, 101, 104), (105, 106, 102, 103),
       (103, 104, 102, 103), (103, 104, 102, 103), (103, 104, 102, 103), (103, 104, 102, 103)]
BBB = [(50, 51, 49, 50), (50, 51, 49.5, 50), (51, 52.5, 50.5, 52), (52, 53.5, 51.5, 53),
       (53, 54.5, 52.5, 54), (55, 56, 54, 55), (55, 56, 54, 55), (55, 56, 54, 55)]


def _params(**risk):
    base = {"starting_equity_usdt": 10_000.0, "position_fraction": 0.4, "stop_loss_pct": 0.1,
            "take_profit_pct": 0.5, "max_holding_bars": 3, "cooldown_bars": 0}
    base.update(risk)
    return params(costs={"fee_rate": F, "slippage_bps": 10.0}, labels={"horizon_bars": 1}, risk=base)


@pytest.fixture
def two_symbol_run():
    candles = candles_from_rows({"AAA/USDT": AAA, "BBB/USDT": BBB})
    signals = signals_frame({
        "AAA/USDT": ["buy", "hold", "sell", "hold", "hold", "hold", "hold"],  # enter @open1, flip exit @open3
        "BBB/USDT": ["hold", "buy", "buy", "buy", "hold", "hold", "hold"],  # enter @open2, max-holding exit @open5
    })
    return run_backtest(candles, signals, _params())


def _hand_path():
    """Equity at each close, computed by hand from the rules in the docstrings."""
    n_a = 0.4 * 10_000.0
    q_a = n_a / (100 * (1 + S))
    cash1 = 10_000.0 - n_a * (1 + F)
    e1 = cash1 + q_a * 102
    n_b = 0.4 * e1
    q_b = n_b / (51 * (1 + S))
    cash2 = cash1 - n_b * (1 + F)
    proceeds_a = q_a * 105 * (1 - S)
    cash3 = cash2 + proceeds_a * (1 - F)
    proceeds_b = q_b * 55 * (1 - S)
    cash5 = cash3 + proceeds_b * (1 - F)
    path = [10_000.0, e1, cash2 + q_a * 104 + q_b * 52, cash3 + q_b * 53, cash3 + q_b * 54, cash5, cash5, cash5]
    fees = n_a * F + n_b * F + proceeds_a * F + proceeds_b * F
    traded = n_a + n_b + proceeds_a + proceeds_b
    return path, fees, traded, (q_a, q_b, n_b)


def test_strategy_pnl_matches_hand_computation(two_symbol_run):
    path, fees, _, _ = _hand_path()
    res = two_symbol_run
    assert res.equity.index.tolist() == [ts(i) for i in range(8)]
    np.testing.assert_allclose(res.equity.to_numpy(), path, rtol=1e-12)
    assert res.metrics["net_pnl"] == pytest.approx(path[-1] - 10_000.0, rel=1e-12)
    assert res.metrics["net_return"] == pytest.approx(path[-1] / 10_000.0 - 1.0, rel=1e-12)
    assert res.metrics["fees"] == pytest.approx(fees, rel=1e-12)


def test_orders_fill_at_the_open_after_the_signal_bar(two_symbol_run):
    q_a, q_b, n_b = _hand_path()[3]
    fills = two_symbol_run.fills.set_index(["symbol", "purpose"])
    assert fills.loc[("AAA/USDT", "entry"), "timestamp"] == ts(1)
    assert fills.loc[("AAA/USDT", "entry"), "price"] == pytest.approx(100 * (1 + S))
    assert fills.loc[("AAA/USDT", "exit"), ["timestamp", "reason"]].tolist() == [ts(3), "signal_flip"]
    assert fills.loc[("AAA/USDT", "exit"), "qty"] == pytest.approx(q_a)
    assert fills.loc[("BBB/USDT", "entry"), "timestamp"] == ts(2)
    assert fills.loc[("BBB/USDT", "entry"), "notional_usdt"] == pytest.approx(n_b)
    assert fills.loc[("BBB/USDT", "exit"), ["timestamp", "reason"]].tolist() == [ts(5), "max_holding"]
    assert fills.loc[("BBB/USDT", "exit"), "price"] == pytest.approx(55 * (1 - S))


def test_metrics_follow_their_definitions(two_symbol_run):
    path, _, traded, _ = _hand_path()
    m = two_symbol_run.metrics
    assert set(m) == set(METRIC_KEYS)
    full = np.array([10_000.0] + path)
    r = full[1:] / full[:-1] - 1
    assert m["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(HOURS_PER_YEAR), rel=1e-9)
    assert m["max_drawdown"] == pytest.approx(max(1 - full[i] / full[: i + 1].max() for i in range(len(full))))
    assert m["trades"] == 2 and m["hit_rate"] == 1.0
    assert m["exposure"] == pytest.approx(4 / 8)  # a position is open at the closes of bars 1..4
    assert m["turnover"] == pytest.approx(traded / np.mean(path), rel=1e-12)


def test_every_bar_and_symbol_has_a_decision_with_a_reason(two_symbol_run):
    d = two_symbol_run.decisions.set_index(["timestamp", "symbol"])
    assert len(d) == 16
    assert d.loc[(ts(0), "AAA/USDT"), "outcome"] == "enter"
    assert d.loc[(ts(0), "BBB/USDT"), "reason"] == "HOLD_SIGNAL"
    assert d.loc[(ts(2), "AAA/USDT"), ["outcome", "reason"]].tolist() == ["exit", "signal_flip"]
    assert d.loc[(ts(2), "BBB/USDT"), "reason"] == "IN_POSITION"
    assert d.loc[(ts(4), "BBB/USDT"), ["outcome", "reason"]].tolist() == ["exit", "max_holding"]
    assert json.loads(d.loc[(ts(4), "BBB/USDT"), "details"])["qty"] == pytest.approx(_hand_path()[3][1])


def test_stop_exits_and_a_stale_buy_does_not_reopen():
    candles = candles_from_rows({"AAA/USDT": [(100, 101, 99, 100), (100, 101, 99, 100), (99, 99, 80, 85),
                                              (85, 86, 84, 85), (85, 86, 84, 85)]})
    signals = signals_frame({"AAA/USDT": ["buy"]}).pipe(
        lambda df: pd.concat([df, signals_frame({"AAA/USDT": ["hold"] * 4}).iloc[[3]]], ignore_index=True))
    res = run_backtest(candles, signals, _params(), close_at_end=False)
    exit_fill = res.fills[res.fills["purpose"] == "exit"].iloc[0]
    stop = 100 * (1 + S) * 0.9
    assert exit_fill["reason"] == "stop_loss" and exit_fill["timestamp"] == ts(2)
    assert exit_fill["price"] == pytest.approx(stop * (1 - S))
    d = res.decisions.set_index("timestamp")
    assert d.loc[ts(2), ["signal_action", "outcome", "reason"]].tolist() == ["buy", "denied", "STALE_SIGNAL"]
    assert json.loads(d.loc[ts(2), "details"]) == {"age_bars": 3.0, "limit": 1}
    assert (res.fills["purpose"] == "entry").sum() == 1


def test_drawdown_halts_entries_but_max_holding_exit_still_happens():
    candles = candles_from_rows({
        "AAA/USDT": [(100, 101, 99, 100), (100, 100, 89, 90), (90, 91, 89, 90), (90, 91, 89, 90), (90, 91, 89, 90)],
        "BBB/USDT": [(50, 51, 49, 50)] * 5})
    signals = signals_frame({"AAA/USDT": ["buy", "hold", "hold", "hold"], "BBB/USDT": ["hold", "buy", "buy", "buy"]})
    p = _params(position_fraction=0.5, max_drawdown_pct=0.04, stop_loss_pct=0.2, max_holding_bars=2)
    res = run_backtest(candles, signals, p, close_at_end=False)
    d = res.decisions.set_index(["timestamp", "symbol"])
    # equity at close 1 = 10000 - 5005 + 5000/100.1*90 = 9490.5 -> drawdown 5.1 % >= 4 %
    assert d.loc[(ts(1), "BBB/USDT"), ["outcome", "reason"]].tolist() == ["denied", "HALTED"]
    assert d.loc[(ts(2), "AAA/USDT"), ["outcome", "reason"]].tolist() == ["exit", "max_holding"]
    assert res.fills["purpose"].tolist() == ["entry", "exit"]
    assert any("HALTED" in a.message for a in res.alerts)


def test_buy_and_hold_matches_hand_computation():
    candles = candles_from_rows({"AAA/USDT": [(100, 101, 99, 100), (100, 111, 99, 110), (110, 121, 109, 120)],
                                 "BBB/USDT": [(50, 51, 49, 50), (50, 51, 44, 45), (45, 46, 39, 40)]})
    res = buy_and_hold(candles, _params())
    q_a = 5000 / (1 + F) / (100 * (1 + S))
    q_b = 5000 / (1 + F) / (50 * (1 + S))
    final = (q_a * 120 * (1 - S) + q_b * 40 * (1 - S)) * (1 - F)
    np.testing.assert_allclose(res.equity.to_numpy(), [q_a * 100 + q_b * 50, q_a * 110 + q_b * 45, final])
    assert res.metrics["net_pnl"] == pytest.approx(final - 10_000)
    assert res.metrics["trades"] == 2 and res.metrics["hit_rate"] == 0.5
    assert res.metrics["fees"] == pytest.approx(2 * 5000 / (1 + F) * F + (q_a * 120 + q_b * 40) * (1 - S) * F)
    assert res.metrics["exposure"] == 1.0
    assert set(res.metrics) == set(METRIC_KEYS)


def test_buy_and_hold_over_a_window_only_uses_its_bars():
    candles = candles_from_rows({"AAA/USDT": [(100, 101, 99, 100), (200, 201, 199, 200), (300, 301, 299, 300)]})
    res = buy_and_hold(candles, _params(), start=ts(1), end=ts(2))
    q = 10_000 / (1 + F) / (200 * (1 + S))
    assert res.metrics["net_pnl"] == pytest.approx(q * 300 * (1 - S) * (1 - F) - 10_000)


def test_flat_baseline_earns_nothing():
    res = flat_baseline(candles_from_rows({"AAA/USDT": AAA}), _params())
    assert res.metrics == {"net_return": 0.0, "net_pnl": 0.0, "sharpe": 0.0, "sortino": 0.0, "max_drawdown": 0.0,
                           "trades": 0, "fees": 0.0, "turnover": 0.0, "hit_rate": 0.0, "exposure": 0.0,
                           "funding": 0.0, "long_trades": 0, "short_trades": 0, "pnl_long_usdt": 0.0,
                           "pnl_short_usdt": 0.0, "funding_long_usdt": 0.0, "funding_short_usdt": 0.0}


def test_sortino_and_drawdown_on_a_three_bar_equity():
    eq = pd.Series([10_100.0, 9_999.0, 10_200.0], index=[ts(0), ts(1), ts(2)])
    m, rets = compute_metrics(eq, 10_000.0, 3_600_000, 0.0, 0.0, [], pd.Series([False, True, True]))
    r = np.array([0.01, 9_999 / 10_100 - 1, 10_200 / 9_999 - 1])
    np.testing.assert_allclose(rets.to_numpy(), r)
    assert m["sortino"] == pytest.approx(r.mean() / math.sqrt((r[1] ** 2) / 3) * math.sqrt(HOURS_PER_YEAR))
    assert m["max_drawdown"] == pytest.approx(1 - 9_999 / 10_100)
    assert m["exposure"] == pytest.approx(2 / 3)


def test_refuses_candles_of_another_timeframe():
    candles = candles_from_rows({"AAA/USDT": AAA})
    with pytest.raises(DataError, match="timeframe"):
        run_backtest(candles, signals_frame({"AAA/USDT": ["buy"] * 7}), params(data={"timeframe": "4h"}))


def test_refuses_an_empty_signals_frame():
    with pytest.raises(DataError, match="empty"):
        run_backtest(candles_from_rows({"AAA/USDT": AAA}), signals_frame({}), _params())
