"""The risk engine: every denial reason carries its numbers; exits are never denied."""

from __future__ import annotations

import pytest

from executor.core import OrderIntent
from executor.portfolio import Portfolio, Position
from executor.risk import Approved, Denied, RiskEngine, TradingState
from executor.signals import Signal
from qt.config import CostParams, RiskParams, SignalParams

from tests.executor.exec_support import HOUR, ts

NOW = ts(10) + HOUR  # decision at the close of bar 10


def _signal(symbol="AAA/USDT", bar=10, action="buy"):
    return Signal(symbol, ts(bar), action, 0.8, 0.01, "3")


def _entry(notional, symbol="AAA/USDT", signal_bar=10, with_signal=True):
    return OrderIntent(symbol, "buy", "entry", "signal_buy", notional_usdt=notional,
                       signal=_signal(symbol, signal_bar) if with_signal else None,
                       stop_loss_pct=0.03, take_profit_pct=0.06)


def _position(symbol, qty, price):
    return Position(symbol, qty, price, ts(0), qty * price, 0.0, price * 0.9, price * 1.2, bars_held=1)


def _portfolio(cash=10_000.0, positions=(), last_exit=None):
    pf = Portfolio(cash_usdt=cash)
    for sym, qty, price in positions:
        pf.positions[sym] = _position(sym, qty, price)
        pf.marks[sym] = price
    if last_exit:
        pf.last_exit_ts.update(last_exit)
    return pf


def _engine(**risk):
    return RiskEngine(RiskParams(**risk), CostParams(fee_rate=0.001, slippage_bps=0.0),
                      SignalParams(max_age_bars=1), bar_ms=3_600_000)


DENIALS = [
    pytest.param({}, _portfolio(), _entry(5.0),
                 Denied("MIN_NOTIONAL", notional=5.0, limit=10.0), id="min-notional"),
    pytest.param({"max_open_positions": 2}, _portfolio(positions=[("X/USDT", 1.0, 100.0), ("Y/USDT", 1.0, 100.0)]),
                 _entry(1000.0), Denied("MAX_OPEN_POSITIONS", open_positions=2, limit=2), id="max-open-positions"),
    pytest.param({"max_position_notional_usdt": 8.0}, _portfolio(), _entry(50.0),
                 Denied("MAX_POSITION_NOTIONAL", requested=50.0, notional=8.0, min_notional=10.0, limit=8.0),
                 id="position-cap-below-min-notional"),
    # equity = 5005 cash + 4995 open = 10000; headroom = 0.5 * 10000 - 4995 = 5 < 10
    pytest.param({"max_gross_exposure": 0.5}, _portfolio(cash=5005.0, positions=[("X/USDT", 1.0, 4995.0)]),
                 _entry(2000.0), Denied("MAX_GROSS_EXPOSURE", requested=2000.0, notional=5.0, min_notional=10.0,
                                        gross=4995.0, equity=10000.0, limit=0.5), id="gross-exposure"),
    # spot: 5.005 USDT cash buys at most 5.005 / 1.001 = 5 USDT of notional
    pytest.param({"max_gross_exposure": 10.0}, _portfolio(cash=5.005, positions=[("X/USDT", 1.0, 9994.995)]),
                 _entry(2000.0), Denied("INSUFFICIENT_CASH", requested=2000.0, notional=pytest.approx(5.0),
                                        min_notional=10.0, cash_free=5.005), id="insufficient-cash"),
    # exit at bar 9 (open time); decision at close of bar 10: one full bar (10) since the exit bar
    pytest.param({"cooldown_bars": 3}, _portfolio(last_exit={"AAA/USDT": ts(9)}), _entry(1000.0),
                 Denied("COOLDOWN", bars_since_exit=1.0, limit=3), id="cooldown"),
    pytest.param({}, _portfolio(), _entry(1000.0, signal_bar=9),
                 Denied("STALE_SIGNAL", age_bars=2.0, limit=1), id="stale-signal"),
    pytest.param({}, _portfolio(), _entry(1000.0, signal_bar=11),
                 Denied("SIGNAL_FROM_FUTURE", age_bars=0.0, signal_ts=str(ts(11))), id="signal-from-future"),
    pytest.param({}, _portfolio(), _entry(1000.0, with_signal=False), Denied("NO_SIGNAL"), id="no-signal"),
    pytest.param({}, _portfolio(positions=[("AAA/USDT", 1.0, 100.0)]), _entry(1000.0),
                 Denied("ALREADY_IN_POSITION", symbol="AAA/USDT"), id="already-in-position"),
]


@pytest.mark.parametrize("risk,portfolio,intent,expected", DENIALS)
def test_denies_entry_with_reason_and_numbers(risk, portfolio, intent, expected):
    verdict = _engine(**risk).check(intent, portfolio, NOW)
    assert isinstance(verdict, Denied)
    assert verdict.reason == expected.reason
    assert verdict.numbers == expected.numbers


def test_clips_entry_above_max_position_notional_to_the_cap():
    verdict = _engine(max_position_notional_usdt=1000.0).check(_entry(1250.0), _portfolio(), NOW)
    assert isinstance(verdict, Approved)
    assert verdict.notional_usdt == 1000.0
    assert verdict.clipped_by == "MAX_POSITION_NOTIONAL"


def test_clips_entry_to_gross_exposure_headroom():
    # equity 10000, 3000 open, limit 0.5 -> 2000 headroom
    pf = _portfolio(cash=7000.0, positions=[("X/USDT", 30.0, 100.0)])
    verdict = _engine(max_gross_exposure=0.5).check(_entry(2500.0), pf, NOW)
    assert isinstance(verdict, Approved)
    assert verdict.notional_usdt == pytest.approx(2000.0)
    assert verdict.clipped_by == "MAX_GROSS_EXPOSURE"


def test_cooldown_allows_entry_once_enough_bars_passed():
    pf = _portfolio(last_exit={"AAA/USDT": ts(7)})  # bars 8, 9, 10 since the exit bar
    assert isinstance(_engine(cooldown_bars=3).check(_entry(1000.0), pf, NOW), Approved)


def test_fresh_signal_of_the_bar_that_just_closed_is_accepted():
    verdict = _engine().check(_entry(1000.0), _portfolio(), NOW)
    assert isinstance(verdict, Approved) and verdict.notional_usdt == 1000.0 and verdict.clipped_by is None


def test_reserved_entries_count_against_open_positions_and_cash():
    pf = _portfolio(cash=1000.0)
    pf.reserved_usdt["X/USDT"] = 995.0  # approved this bar, not filled yet
    verdict = _engine(max_open_positions=4).check(_entry(500.0), pf, NOW)
    # free cash: 1000 - 995 * 1.001 = 3.995 -> below min notional
    assert isinstance(verdict, Denied) and verdict.reason == "INSUFFICIENT_CASH"


def test_halted_after_max_drawdown_and_entries_denied():
    eng = _engine(max_drawdown_pct=0.25, daily_loss_limit_pct=0.5)
    assert eng.observe_equity(12_000.0, ts(0)) == []  # new peak
    alerts = eng.observe_equity(8_999.0, ts(1))  # 1 - 8999/12000 = 0.25008 >= 0.25
    assert eng.state is TradingState.HALTED
    assert alerts[0].numbers["drawdown"] == pytest.approx(1 - 8999 / 12000)
    verdict = eng.check(_entry(1000.0, signal_bar=1), _portfolio(cash=8999.0), ts(2))
    assert isinstance(verdict, Denied) and verdict.reason == "HALTED"


def test_halted_is_sticky_even_after_recovery_and_a_new_day():
    eng = _engine(max_drawdown_pct=0.1)
    eng.observe_equity(8_000.0, ts(0))
    eng.observe_equity(20_000.0, ts(30))
    assert eng.state is TradingState.HALTED


def test_reducing_after_daily_loss_then_active_next_utc_day():
    eng = _engine(daily_loss_limit_pct=0.05, max_drawdown_pct=0.5)
    eng.observe_equity(10_000.0, ts(22))  # 2024-01-01 22:00
    eng.observe_equity(10_000.0, ts(23))  # last bar of day 1: reference for day 2
    eng.observe_equity(9_600.0, ts(24))  # day 2: -4 %
    assert eng.state is TradingState.ACTIVE
    eng.observe_equity(9_499.0, ts(25))  # -5.01 % vs 10000 at the end of day 1
    assert eng.state is TradingState.REDUCING
    denied = eng.check(_entry(1000.0, signal_bar=25), _portfolio(cash=9499.0), ts(26))
    assert isinstance(denied, Denied) and denied.reason == "DAILY_LOSS_LIMIT"
    eng.observe_equity(9_499.0, ts(48))  # next UTC day
    assert eng.state is TradingState.ACTIVE
    assert isinstance(eng.check(_entry(1000.0, signal_bar=48), _portfolio(cash=9499.0), ts(49)), Approved)


def test_kill_switch_halts():
    eng = _engine()
    alert = eng.halt(ts(3), "kill switch")
    assert eng.state is TradingState.HALTED and "HALTED" in alert.message


@pytest.mark.parametrize("state", list(TradingState))
@pytest.mark.parametrize("reason", ["stop_loss", "signal_flip", "max_holding"])
def test_exits_are_never_denied(state, reason):
    eng = _engine(max_open_positions=1, cooldown_bars=10)
    eng.state = state
    pf = _portfolio(cash=0.0, positions=[("AAA/USDT", 2.0, 100.0)], last_exit={"AAA/USDT": ts(10)})
    exit_intent = OrderIntent("AAA/USDT", "sell", "exit", reason, qty=2.0, signal=None)
    assert isinstance(eng.check(exit_intent, pf, NOW), Approved)
