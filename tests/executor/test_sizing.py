"""Volatility-targeted sizing: calm symbols get larger positions, wild ones smaller, capped; no
estimate means no entry (said so), never another size; backtest and paper replay agree."""

from __future__ import annotations

import json
import math
import sqlite3

import numpy as np
import pandas as pd
import pytest

from executor.backtest import run_backtest
from executor.core import decide
from executor.daemon import run_paper_replay
from executor.portfolio import Bar, Portfolio
from executor.signals import HttpSignalSource, Signal
from executor.sizing import VOL_WARMING_UP, RealisedVolatility
from qt.config import ConfigError, RiskParams, load_params

from tests.executor.exec_support import FakeSignalService, momentum_signals, paper_market, params, ts

YEAR_BARS_1H = 365.25 * 24  # a 24/7 market: bars per year at 1h


def test_realised_volatility_is_the_sample_std_of_the_last_log_returns_annualised_by_hand():
    vol = RealisedVolatility(lookback=2, bar_ms=3_600_000)
    for close in (100.0, 110.0):
        vol.observe("A", close)
    assert vol.annual("A") is None  # one return seen, two needed
    vol.observe("A", 99.0)
    r1, r2 = math.log(110 / 100), math.log(99 / 110)
    mean = (r1 + r2) / 2
    by_hand = math.sqrt(((r1 - mean) ** 2 + (r2 - mean) ** 2) / (2 - 1)) * math.sqrt(YEAR_BARS_1H)
    assert vol.annual("A") == pytest.approx(by_hand, rel=1e-12)
    vol.observe("A", 99.0)  # the window slides: now ln(99/110) and 0
    r3 = 0.0
    mean = (r2 + r3) / 2
    slid = math.sqrt(((r2 - mean) ** 2 + (r3 - mean) ** 2)) * math.sqrt(YEAR_BARS_1H)
    assert vol.annual("A") == pytest.approx(slid, rel=1e-12)


def _decide_with(volatility: dict, risk: RiskParams):
    bar_ts = ts(10)
    symbols = sorted(volatility)
    bars = {s: Bar(s, bar_ts, 100.0, 101.0, 99.0, 100.0) for s in symbols}
    signals = {s: Signal(s, bar_ts, "buy", 0.8, 0.01, "3") for s in symbols}
    out = decide(bar_ts, bars, signals, Portfolio(cash_usdt=10_000.0), risk, symbols, volatility.get)
    return {i.symbol: i.notional_usdt for i in out.intents}, {d.symbol: d for d in out.decisions}


def test_each_entry_carries_the_same_volatility_budget_and_the_cap_binds_calm_symbols():
    risk = RiskParams(sizing="volatility_target", vol_target_annual=0.15, position_fraction=0.5)
    notional, _ = _decide_with({"CALM/USDT": 0.2, "WILD/USDT": 1.5, "MID/USDT": 0.6, "FLAT/USDT": 0.0}, risk)
    assert notional["FLAT/USDT"] == pytest.approx(10_000 * 0.5)  # a price that never moved: the cap
    assert notional["WILD/USDT"] == pytest.approx(10_000 * 0.15 / 1.5)  # 1 000 USDT
    assert notional["MID/USDT"] == pytest.approx(10_000 * 0.15 / 0.6)  # 2 500 USDT
    assert notional["CALM/USDT"] == pytest.approx(10_000 * 0.5)  # 7 500 wanted, capped at 5 000


def test_without_an_estimate_nothing_opens_and_the_decision_says_why():
    risk = RiskParams(sizing="volatility_target")
    notional, decisions = _decide_with({"NEW/USDT": None, "OLD/USDT": 0.5}, risk)
    assert "NEW/USDT" not in notional and "OLD/USDT" in notional
    assert (decisions["NEW/USDT"].outcome, decisions["NEW/USDT"].reason) == ("skip", VOL_WARMING_UP)


def test_fixed_fraction_ignores_volatility():
    notional, _ = _decide_with({"A/USDT": 3.0, "B/USDT": None}, RiskParams(position_fraction=0.2))
    assert notional == {"A/USDT": 2_000.0, "B/USDT": 2_000.0}


@pytest.mark.parametrize("risk", [{"sizing": "kelly"}, {"vol_target_annual": 0}, {"vol_lookback_bars": 1}])
def test_a_wrong_sizing_setting_is_refused_at_start_up(risk):
    with pytest.raises(ConfigError, match="risk"):
        load_params(overrides={"risk": risk})


def _vol_params():
    return params(risk={"sizing": "volatility_target", "vol_target_annual": 0.1, "vol_lookback_bars": 48,
                        "position_fraction": 0.9, "max_position_notional_usdt": 1e9, "max_gross_exposure": 10.0,
                        "max_open_positions": 10, "max_holding_bars": 6})


def test_backtest_sizes_each_entry_from_the_returns_up_to_its_decision_bar():
    candles = paper_market()
    signals = momentum_signals(candles)
    bt = run_backtest(candles, signals, _vol_params(), close_at_end=False)
    entries = bt.decisions[bt.decisions["outcome"] == "enter"]
    assert len(entries) >= 5
    for _, row in entries.head(8).iterrows():
        closes = candles[(candles["symbol"] == row["symbol"]) & (candles["timestamp"] <= row["timestamp"])]
        returns = np.log(closes["close"].to_numpy()[-49:])
        sigma = float(pd.Series(np.diff(returns)).std(ddof=1)) * math.sqrt(YEAR_BARS_1H)
        equity = float(bt.equity.loc[row["timestamp"]])
        assert json.loads(row["details"])["requested"] == pytest.approx(equity * 0.1 / sigma, rel=1e-9)


def test_paper_replay_primed_from_earlier_candles_sizes_like_the_backtest(tmp_path):
    candles = paper_market()
    signals = momentum_signals(candles)
    p = _vol_params()
    bt = run_backtest(candles, signals, p, close_at_end=False)
    with FakeSignalService(signals) as svc:
        source = HttpSignalSource(svc.url, timeout_s=5)
        try:
            report = run_paper_replay(candles, source, p, tmp_path / "state.sqlite", None,
                                      start=signals["timestamp"].min())
        finally:
            source.close()
    with sqlite3.connect(tmp_path / "state.sqlite") as db:
        orders = pd.read_sql_query("SELECT symbol, purpose, notional_usdt FROM orders ORDER BY rowid", db)
    entered = bt.decisions[bt.decisions["outcome"] == "enter"]
    assert orders[orders["purpose"] == "entry"]["notional_usdt"].tolist() == entered["notional_usdt"].tolist()
    assert report.metrics == bt.metrics


def test_a_loop_starting_later_is_primed_to_the_estimate_of_one_that_stepped_every_bar():
    """What a restart or a replay from a later bar relies on: the same volatility, hence the same size."""
    from executor.loop import TradingLoop
    from executor.paper import PaperBroker
    from executor.signals import FrameSignalSource

    candles = paper_market(bars=120)
    signals = momentum_signals(candles)
    p = _vol_params()
    end = candles["timestamp"].max()
    whole, late = (TradingLoop(p, FrameSignalSource(signals), PaperBroker(p.costs)) for _ in range(2))
    whole.run(candles, start=candles["timestamp"].min(), end=end)
    late.run(candles, start=candles["timestamp"].min() + pd.Timedelta(hours=100), end=end)
    for sym in sorted(candles["symbol"].unique()):
        assert late.volatility.annual(sym) is not None
        assert late.volatility.annual(sym) == whole.volatility.annual(sym)
