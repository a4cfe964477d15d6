"""The take-profit ladder on Bybit USDT perpetuals (same broker code as ``test_ladder_live.py``):
``[[0.5, 0.02], [0.5, 0.04]]`` with ``breakeven_after_first_tp`` - two reduce-only take-profit
conditional sells (q/2 at 30 600, the rest at 31 200) and one stop for q at 29 100; when rung 1
fills, the stop is re-placed for the rest at the entry price (cancel + place on Bybit), and a
restart adopts the resting rungs instead of sending them again.
"""

from __future__ import annotations

import pytest

from tests.executor.exec_support import signals_frame
from tests.executor.live.support import (SYMBOL, bar_ms, bybit_client, bybit_position_qty, calm_bars, reset_bybit,
                                         running_exchange, trader_factory, write_bybit_market)

pytestmark = pytest.mark.slow

N_BARS = 40
FLAT = 30_000.0
LADDER = {"take_profit_ladder": [[0.5, 0.02], [0.5, 0.04]], "breakeven_after_first_tp": True,
          "margin_mode": "cross"}
QTY, HALF = 0.06666, 0.03333
RUNG1, RUNG2, STOP = 30_600.0, 31_200.0, 29_100.0
UP = (FLAT, 30_700.0, 29_990.0, 30_500.0)  # reaches rung 1 (30 600), closes below it
BACK = (30_500.0, 30_600.0, 29_900.0, 29_950.0)  # falls through the break-even stop (30 000)
TOP = (30_500.0, 31_300.0, 30_400.0, 31_150.0)  # reaches rung 2 (31 200)
SIMPLE, RESTART = 11, 21
SPECIAL = {SIMPLE: UP, SIMPLE + 1: BACK, RESTART: UP, RESTART + 1: TOP}


@pytest.fixture(scope="module")
def exchange(tmp_path_factory):
    root = write_bybit_market(tmp_path_factory.mktemp("bybit-ladder-market"), calm_bars(N_BARS, SPECIAL, FLAT))
    with running_exchange(root) as ex:
        yield ex


@pytest.fixture
def venue(exchange):
    exchange.set_faults({})
    reset_bybit(exchange)
    yield exchange


@pytest.fixture
def make_trader(venue, tmp_path):
    buys = {SIMPLE - 2, RESTART - 2}
    signals = signals_frame({SYMBOL: ["buy" if i in buys else "hold" for i in range(N_BARS)]})
    with trader_factory(lambda: bybit_client(venue), signals, SYMBOL, tmp_path / "state.sqlite", "ladder") as make:
        yield make


def _guards(venue) -> list[tuple]:
    return sorted((o["info"]["stopOrderType"], o["side"], o["reduceOnly"], o["triggerPrice"], o["amount"])
                  for o in bybit_client(venue).fetch_open_orders(SYMBOL, params={"orderFilter": "StopOrder"}))


def _exits(trader) -> list[tuple]:
    f = trader.store.read("fills")
    return [(r.reason, pytest.approx(r.qty), pytest.approx(r.price)) for r in f.itertuples() if r.purpose == "exit"]


def _enter(make_trader, venue, first_bar: int):
    venue.move_clock_to(bar_ms(first_bar - 1))
    trader = make_trader(**LADDER)
    trader.poll()
    assert bybit_position_qty(venue) == pytest.approx(QTY)
    assert _guards(venue) == [("StopLoss", "sell", True, STOP, QTY), ("TakeProfit", "sell", True, RUNG1, HALF),
                              ("TakeProfit", "sell", True, RUNG2, HALF)]
    return trader


def test_bybit_ladder_rung_closes_part_and_the_stop_moves_to_break_even(make_trader, venue):
    trader = _enter(make_trader, venue, SIMPLE)
    venue.advance(1)  # rung 1 fills at 30 600
    trader.poll()
    assert bybit_position_qty(venue) == pytest.approx(HALF)
    assert _guards(venue) == [("StopLoss", "sell", True, FLAT, HALF), ("TakeProfit", "sell", True, RUNG2, HALF)]
    assert _exits(trader) == [("take_profit_1", HALF, RUNG1)]
    venue.advance(1)  # falls back through 30 000
    trader.poll()
    assert bybit_position_qty(venue) == 0 and _guards(venue) == []
    assert _exits(trader) == [("take_profit_1", HALF, RUNG1), ("breakeven_stop", HALF, FLAT)]


def test_bybit_ladder_restart_adopts_the_resting_rungs_and_the_ladder_works_on(make_trader, venue):
    _enter(make_trader, venue, RESTART)
    guards = _guards(venue)
    restarted = make_trader(**LADDER)
    assert _guards(venue) == guards and restarted.reconciled.protectives_placed == {}
    venue.advance(1)  # rung 1
    restarted.poll()
    venue.advance(1)  # rung 2
    restarted.poll()
    assert bybit_position_qty(venue) == 0 and _guards(venue) == []
    assert _exits(restarted) == [("take_profit_1", HALF, RUNG1), ("take_profit_2", HALF, RUNG2)]
