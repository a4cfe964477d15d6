"""Paper fills, hand-computed on tiny bars: next open + slippage + fee; stop before TP; gaps."""

from __future__ import annotations

import pytest

from executor.paper import MarketOrder, PaperBroker
from executor.portfolio import Bar
from qt.config import CostParams

from tests.executor.exec_support import ts

SYM = "AAA/USDT"
COSTS = CostParams(fee_rate=0.001, slippage_bps=10.0)  # 0.1 % fee, 0.1 % slippage


def _bar(i, o, h, lo, c, sym=SYM):
    return Bar(sym, ts(i), o, h, lo, c)


def _broker_with_entry():
    """Entry of 1000 USDT decided at bar 0, filled at the open of bar 1 (100)."""
    broker = PaperBroker(COSTS)
    broker.submit(MarketOrder(1, SYM, "buy", "entry", "signal_buy", notional_usdt=1000.0,
                              stop_loss_pct=0.03, take_profit_pct=0.06, decided_ts=ts(0)))
    exe = broker.process_bar({SYM: _bar(1, 100.0, 101.0, 99.0, 100.5)})
    return broker, exe


def test_entry_fills_at_next_open_with_adverse_slippage_and_fee():
    _, exe = _broker_with_entry()
    (fill,) = exe.fills
    assert fill.timestamp == ts(1) and fill.purpose == "entry" and fill.side == "buy"
    assert fill.price == pytest.approx(100.0 * 1.001)
    assert fill.qty == pytest.approx(1000.0 / 100.1)
    assert fill.notional_usdt == pytest.approx(1000.0)
    assert fill.fee_usdt == pytest.approx(1.0)


def test_protective_levels_are_placed_from_the_entry_fill_price():
    broker, exe = _broker_with_entry()
    prot = exe.protective_placed[SYM]
    assert prot.stop_price == pytest.approx(100.1 * 0.97)
    assert prot.take_profit_price == pytest.approx(100.1 * 1.06)
    assert broker.protective(SYM) == prot


def test_stop_fills_first_when_one_bar_touches_stop_and_take_profit():
    broker, _ = _broker_with_entry()
    (fill,) = broker.process_bar({SYM: _bar(2, 100.0, 110.0, 95.0, 101.0)}).fills
    assert fill.reason == "stop_loss"
    assert fill.price == pytest.approx(100.1 * 0.97 * 0.999)
    assert fill.fee_usdt == pytest.approx(fill.qty * fill.price * 0.001)
    assert broker.protective(SYM) is None


def test_gap_through_stop_fills_at_the_open():
    broker, _ = _broker_with_entry()
    (fill,) = broker.process_bar({SYM: _bar(2, 90.0, 92.0, 89.0, 91.0)}).fills
    assert fill.reason == "stop_loss" and fill.price == pytest.approx(90.0 * 0.999)


def test_take_profit_fills_at_its_price_when_only_it_is_touched():
    broker, _ = _broker_with_entry()
    (fill,) = broker.process_bar({SYM: _bar(2, 101.0, 107.0, 99.0, 106.5)}).fills
    assert fill.reason == "take_profit" and fill.price == pytest.approx(100.1 * 1.06 * 0.999)


def test_gap_through_take_profit_fills_at_the_open():
    broker, _ = _broker_with_entry()
    (fill,) = broker.process_bar({SYM: _bar(2, 110.0, 112.0, 109.0, 111.0)}).fills
    assert fill.reason == "take_profit" and fill.price == pytest.approx(110.0 * 0.999)


def test_stop_can_trigger_in_the_entry_bar():
    broker = PaperBroker(COSTS)
    broker.submit(MarketOrder(1, SYM, "buy", "entry", "signal_buy", notional_usdt=1000.0,
                              stop_loss_pct=0.03, take_profit_pct=0.06))
    entry, stop = broker.process_bar({SYM: _bar(1, 100.0, 100.5, 96.0, 97.0)}).fills
    assert (entry.purpose, stop.reason) == ("entry", "stop_loss")
    assert stop.price == pytest.approx(100.1 * 0.97 * 0.999)


def test_market_exit_fills_at_next_open_and_cancels_protective_orders():
    broker, exe = _broker_with_entry()
    qty = exe.fills[0].qty
    broker.submit(MarketOrder(2, SYM, "sell", "exit", "signal_flip", qty=qty))
    # this bar also touches the stop: the market exit at the open came first
    (fill,) = broker.process_bar({SYM: _bar(2, 99.0, 99.5, 90.0, 91.0)}).fills
    assert fill.reason == "signal_flip" and fill.price == pytest.approx(99.0 * 0.999)
    assert fill.qty == qty and broker.protective(SYM) is None
    assert broker.process_bar({SYM: _bar(3, 80.0, 81.0, 79.0, 80.0)}).fills == []


def test_entry_without_a_next_bar_is_cancelled_but_exit_waits_for_the_next_bar():
    broker = PaperBroker(COSTS)
    broker.submit(MarketOrder(1, SYM, "buy", "entry", "signal_buy", notional_usdt=1000.0,
                              stop_loss_pct=0.03, take_profit_pct=0.06))
    broker.submit(MarketOrder(2, "BBB/USDT", "sell", "exit", "max_holding", qty=3.0))
    exe = broker.process_bar({})  # exchange gap: no bar for either symbol
    assert [o.order_id for o in exe.cancelled] == [1] and exe.fills == []
    (fill,) = broker.process_bar({"BBB/USDT": _bar(2, 50.0, 51.0, 49.0, 50.0, "BBB/USDT")}).fills
    assert fill.order_id == 2 and fill.price == pytest.approx(50.0 * 0.999)
