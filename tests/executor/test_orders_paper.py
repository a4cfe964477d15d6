"""Limit entries and trailing stops in paper and backtest, on tiny bars with hand-computed prices.

Rules under test (``executor.paper``, ``qt.fills``): a limit fills at the open when the
open is at or below it, intrabar at the limit only when the low goes strictly below it, never
with slippage, and expires after ``limit_ttl_bars``; the trail level in force during a bar comes
from the highs of the bars before it, the effective stop is the higher of the fixed stop and
the trail.
"""

from __future__ import annotations

import json

import pytest

from executor.backtest import run_backtest
from executor.paper import LIMIT_EXPIRED, MarketOrder, PaperBroker
from executor.portfolio import Bar
from qt.config import CostParams

from tests.executor.exec_support import candles_from_rows, params, signals_frame, ts

SYM = "AAA/USDT"
COSTS = CostParams(fee_rate=0.001, slippage_bps=10.0)  # 0.1 % fee (no separate maker rate), 0.1 % slippage


def _bar(i, o, h, lo, c):
    return Bar(SYM, ts(i), o, h, lo, c)


def _limit(limit_price, ttl_bars=1, stop=0.03, take=0.06, trail=0.0):
    return MarketOrder(1, SYM, "buy", "entry", "signal_buy", notional_usdt=1000.0, stop_loss_pct=stop,
                       take_profit_pct=take, decided_ts=ts(0), order_type="limit", limit_price=limit_price,
                       ttl_bars=ttl_bars, trailing_stop_pct=trail)


def _market(stop=0.03, take=0.5, trail=0.05):
    return MarketOrder(1, SYM, "buy", "entry", "signal_buy", notional_usdt=1000.0, stop_loss_pct=stop,
                       take_profit_pct=take, decided_ts=ts(0), trailing_stop_pct=trail)


# -- limit entries ------------------------------------------------------------------------
def test_limit_fills_at_the_open_when_the_market_opens_below_it_without_slippage():
    broker = PaperBroker(COSTS)
    broker.submit(_limit(99.0))
    exe = broker.process_bar({SYM: _bar(1, 98.5, 99.5, 98.0, 99.0)})
    (fill,) = exe.fills
    assert (fill.price, fill.timestamp) == (98.5, ts(1))
    assert fill.qty == pytest.approx(1000.0 / 98.5)
    assert fill.fee_usdt == pytest.approx(1.0)  # 0.1 % of 1000: the only fee rate the cost model has
    prot = exe.protective_placed[SYM]
    assert (prot.stop_price, prot.take_profit_price) == (pytest.approx(98.5 * 0.97), pytest.approx(98.5 * 1.06))


def test_limit_fill_pays_the_maker_fee_rate_and_a_market_entry_the_taker_rate():
    costs = CostParams(fee_rate=0.001, maker_fee_rate=0.0002, slippage_bps=10.0)
    broker = PaperBroker(costs)
    broker.submit(_limit(99.0))
    (fill,) = broker.process_bar({SYM: _bar(1, 100.0, 100.5, 98.9, 100.0)}).fills
    assert fill.fee_usdt == pytest.approx(1000.0 * 0.0002)  # a resting order filled: maker
    taker = PaperBroker(costs)
    taker.submit(_market())
    (entry,) = taker.process_bar({SYM: _bar(1, 100.0, 100.5, 99.9, 100.0)}).fills
    assert entry.fee_usdt == pytest.approx(1000.0 * 0.001)  # a market order: taker


def test_limit_fills_intrabar_at_its_price_when_the_low_goes_strictly_below():
    broker = PaperBroker(COSTS)
    broker.submit(_limit(99.0))
    (fill,) = broker.process_bar({SYM: _bar(1, 100.0, 100.5, 98.9, 100.0)}).fills
    assert fill.price == 99.0 and fill.qty == pytest.approx(1000.0 / 99.0)


def test_a_low_that_only_touches_the_limit_does_not_fill_and_it_keeps_working_within_its_ttl():
    broker = PaperBroker(COSTS)
    broker.submit(_limit(99.0, ttl_bars=2))
    first = broker.process_bar({SYM: _bar(1, 100.0, 100.5, 99.0, 100.0)})
    assert first.fills == [] and first.expired == [] and len(broker.pending_orders) == 1
    (fill,) = broker.process_bar({SYM: _bar(2, 100.0, 100.5, 98.0, 99.5)}).fills
    assert (fill.price, fill.timestamp) == (99.0, ts(2))


def test_an_unfilled_limit_expires_after_its_ttl_bars():
    broker = PaperBroker(COSTS)
    order = _limit(99.0, ttl_bars=2)
    broker.submit(order)
    assert broker.process_bar({SYM: _bar(1, 100.0, 101.0, 99.5, 100.0)}).expired == []
    exe = broker.process_bar({SYM: _bar(2, 100.0, 101.0, 99.5, 100.0)})
    assert exe.expired == [order] and exe.fills == [] and broker.pending_orders == []


def test_after_an_intrabar_limit_fill_the_stop_works_that_bar_but_not_the_take_profit():
    broker = PaperBroker(COSTS)
    broker.submit(_limit(99.0, stop=0.03, take=0.06))
    # the bar goes from 100 up to 120 and down to 90: the high may have come before the fill
    entry, exit_ = broker.process_bar({SYM: _bar(1, 100.0, 120.0, 90.0, 95.0)}).fills
    assert entry.price == 99.0
    assert (exit_.reason, exit_.price) == ("stop_loss", pytest.approx(99.0 * 0.97 * (1 - 0.001)))


# -- trailing stop ------------------------------------------------------------------------
def test_trailing_stop_follows_completed_highs_and_triggers_at_the_level_from_earlier_bars():
    broker = PaperBroker(COSTS)
    broker.submit(_market(stop=0.03, take=0.5, trail=0.05))
    entry_price = 100.0 * 1.001  # open + 0.1 % slippage
    (entry,) = broker.process_bar({SYM: _bar(1, 100.0, 104.0, 99.0, 103.0)}).fills  # level 95.095: no
    assert entry.price == pytest.approx(entry_price)
    assert broker.process_bar({SYM: _bar(2, 103.0, 108.0, 102.0, 107.0)}).fills == []  # level 104 x 0.95 = 98.8
    # bar 3's own high (112) does not raise the level: in force is 108 x 0.95 = 102.6 (not 106.4)
    (exit_,) = broker.process_bar({SYM: _bar(3, 107.0, 112.0, 102.0, 103.0)}).fills
    assert exit_.reason == "trailing_stop" and exit_.order_id == -1
    assert exit_.price == pytest.approx(108.0 * 0.95 * (1 - 0.001))


def test_trailing_stop_fills_at_the_open_when_the_bar_gaps_below_it():
    broker = PaperBroker(COSTS)
    broker.submit(_market(trail=0.05))
    broker.process_bar({SYM: _bar(1, 100.0, 110.0, 99.0, 109.0)})  # peak 110, level 104.5
    (exit_,) = broker.process_bar({SYM: _bar(2, 103.0, 103.5, 101.0, 102.0)}).fills
    assert exit_.reason == "trailing_stop" and exit_.price == pytest.approx(103.0 * (1 - 0.001))


def test_the_fixed_stop_still_stands_while_it_is_above_the_trail():
    broker = PaperBroker(COSTS)
    broker.submit(_market(stop=0.03, trail=0.05))
    fixed = 100.0 * 1.001 * 0.97  # above the trail 100.1 x 0.95
    (_, exit_) = broker.process_bar({SYM: _bar(1, 100.0, 100.5, 96.0, 97.0)}).fills
    assert exit_.reason == "stop_loss" and exit_.price == pytest.approx(fixed * (1 - 0.001))


# -- through the trading loop (the backtest) -----------------------------------------------
def _limit_params(**risk):
    return params(costs={"fee_rate": 0.001, "slippage_bps": 0.0},
                  risk={"entry_order": "limit", "limit_offset_bps": 100.0, "limit_ttl_bars": 2,
                        "position_fraction": 0.1, "take_profit_pct": 0.5, **risk})


def test_backtest_limit_entry_at_the_deciding_close_minus_offset_expires_and_releases_its_reservation():
    # buy decided at the close of bar 0 (100): limit 99; bars 1 and 2 never trade below 99 -> expired
    # after bar 2; the buy decided at the close of bar 3 (100) fills at bar 4, whose low is 98
    rows = [(100, 101, 99.5, 100), (100, 101, 99.2, 100), (100, 101, 99.0, 100), (100, 101, 99.5, 100),
            (100, 100.5, 98.0, 99.0), (99, 100, 98.5, 99.5)]
    bt = run_backtest(candles_from_rows({SYM: rows}),
                      signals_frame({SYM: ["buy", "hold", "hold", "buy", "hold"]}), _limit_params(),
                      close_at_end=False)
    d = bt.decisions
    expired = d[d["reason"] == LIMIT_EXPIRED]
    assert expired[["timestamp", "outcome"]].values.tolist() == [[ts(2), "cancelled"]]
    assert json.loads(expired["details"].iloc[0])["limit_price"] == pytest.approx(99.0)
    pending = d[(d["timestamp"] == ts(1)) & (d["symbol"] == SYM)]["reason"].tolist()
    assert pending == ["ENTRY_PENDING"]  # while it rests, nothing else opens for the symbol
    (fill,) = bt.fills.itertuples()
    assert (fill.timestamp, fill.price) == (ts(4), pytest.approx(99.0))
    assert fill.qty == pytest.approx(0.1 * 10_000.0 / 99.0)


def test_backtest_trailing_stop_exit_is_booked_with_its_reason_and_pnl():
    rows = [(100, 100.5, 99.5, 100), (100, 104, 99.5, 103), (103, 108, 102, 107), (107, 112, 102, 103),
            (103, 104, 102, 103)]
    p = params(costs={"fee_rate": 0.001, "slippage_bps": 0.0},
               risk={"trailing_stop_pct": 0.05, "take_profit_pct": 0.5, "position_fraction": 0.1,
                     "exit_on_signal_flip": False})
    bt = run_backtest(candles_from_rows({SYM: rows}), signals_frame({SYM: ["buy", "hold", "hold", "hold"]}), p,
                      close_at_end=False)
    (trade,) = bt.trades.itertuples()
    assert (trade.exit_reason, trade.exit_ts) == ("trailing_stop", ts(3))
    qty = 1000.0 / 100.0
    assert trade.exit_price == pytest.approx(108.0 * 0.95)
    assert trade.pnl_usdt == pytest.approx(qty * 102.6 * (1 - 0.001) - 1000.0 * (1 + 0.001))


# -- configuration --------------------------------------------------------------------------
@pytest.mark.parametrize("risk, fragment", [
    ({"trailing_stop_pct": 0.0015}, "trailing_mode: managed"),  # not a 0.1 % step: Binance refuses it
    ({"trailing_stop_pct": 0.2}, "0.001..0.1"),  # above Binance's 10 % callbackRate
    ({"entry_order": "stop"}, "risk.entry_order"),
    ({"limit_ttl_bars": 0}, "risk.limit_ttl_bars"),
])
def test_a_setting_the_exchange_cannot_honour_is_refused_in_one_line_naming_it(risk, fragment):
    from qt.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        params(risk=risk)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_a_managed_trail_may_use_any_percentage():
    assert params(risk={"trailing_stop_pct": 0.0015, "trailing_mode": "managed"}).risk.trailing_stop_pct == 0.0015
