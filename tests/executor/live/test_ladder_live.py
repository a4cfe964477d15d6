"""The take-profit ladder live: real ccxt against the real local exchange, on Binance USDT-M and on
Bybit USDT perpetuals (the same broker code; ``venues`` says how each venue reads back its orders;
Bybit's are StopLoss / TakeProfit conditional orders, moved by cancel + place). A rung filled in part
(the exchange's liquidity per bar) is Binance's.

``risk.take_profit_ladder = [[0.5, 0.02], [0.5, 0.04]]`` with ``breakeven_after_first_tp``:
a long filled at 30 000 for q is guarded by two reduce-only TAKE_PROFIT_MARKET sells (q/2 at
30 600, the rest at 31 200) and one STOP_MARKET for all of q at 29 100. When rung 1 fills, the
stop is re-placed for what is left, at the entry price (30 000, break-even). Expected prices and
quantities are computed here from the bars and the parameters (q = 2 000 USDT / 30 000 on the
exchange's 0.00001 lot step).
"""

from __future__ import annotations

import pandas as pd
import pytest

from tests.executor.exec_support import signals_frame
from tests.executor.live.support import MARKET_ID, SYMBOL, bar_ms, calm_bars
from tests.executor.live.venues import BINANCE, only, venue_fixtures

pytestmark = pytest.mark.slow

N_BARS = 60
FLAT = 30_000.0
LADDER = {"take_profit_ladder": [[0.5, 0.02], [0.5, 0.04]], "breakeven_after_first_tp": True}
QTY = 0.06666
HALF = 0.03333
RUNG1, RUNG2, STOP = 30_600.0, 31_200.0, 29_100.0
UP = (FLAT, 30_700.0, 29_990.0, 30_500.0)  # reaches rung 1 (30 600), closes below it
BACK = (30_500.0, 30_600.0, 29_900.0, 29_950.0)  # falls through the break-even stop (30 000)
HOLD_UP = (30_500.0, 30_700.0, 30_400.0, 30_500.0)  # rung 1 again, stays above break-even
TOP = (30_500.0, 31_300.0, 30_400.0, 31_150.0)  # reaches rung 2 (31 200)
SIMPLE, PARTIAL, RESTART, ADOPT = 11, 21, 31, 41  # each case's first bar after its entry
SPECIAL = {SIMPLE: UP, SIMPLE + 1: BACK, PARTIAL: UP, PARTIAL + 1: HOLD_UP, PARTIAL + 2: TOP,
           RESTART: UP, RESTART + 1: TOP, ADOPT: UP, ADOPT + 1: TOP}


def _candles() -> pd.DataFrame:
    return calm_bars(N_BARS, SPECIAL, FLAT)


def _signals() -> pd.DataFrame:
    buys = {SIMPLE - 2, PARTIAL - 2, RESTART - 2, ADOPT - 2}
    return signals_frame({SYMBOL: ["buy" if i in buys else "hold" for i in range(N_BARS)]})


adapter, exchange, venue, make_trader = venue_fixtures(_candles, _signals, namespace="ladder")


def _guards(adapter, venue) -> list[tuple]:
    return sorted((adapter.kind(o), o["side"], o["reduceOnly"], o["triggerPrice"], o["amount"])
                  for o in adapter.protective_orders(venue))


def _exits(trader) -> list[tuple]:
    f = trader.store.read("fills")
    return [(r.reason, pytest.approx(r.qty), pytest.approx(r.price)) for r in f.itertuples() if r.purpose == "exit"]


def _enter(make_trader, venue, adapter, first_bar: int):
    venue.move_clock_to(bar_ms(first_bar - 1))
    trader = make_trader(**LADDER)
    trader.poll()
    assert adapter.position_qty(venue) == pytest.approx(QTY)
    assert _guards(adapter, venue) == [(adapter.stop, "sell", True, STOP, QTY),
                                       (adapter.take, "sell", True, RUNG1, HALF),
                                       (adapter.take, "sell", True, RUNG2, HALF)]
    return trader


def _rest_at_break_even(adapter) -> list[tuple]:
    """The guards once rung 1 has filled: the stop for the rest at the entry price, and rung 2."""
    return [(adapter.stop, "sell", True, FLAT, HALF), (adapter.take, "sell", True, RUNG2, HALF)]


def test_ladder_rungs_rest_on_the_exchange_a_rung_closes_part_and_the_stop_moves_to_break_even(make_trader, venue,
                                                                                                adapter):
    trader = _enter(make_trader, venue, adapter, SIMPLE)
    venue.advance(1)  # rung 1 fills at 30 600
    trader.poll()
    assert adapter.position_qty(venue) == pytest.approx(HALF)
    assert _guards(adapter, venue) == _rest_at_break_even(adapter)
    assert _exits(trader) == [("take_profit_1", HALF, RUNG1)]
    pos = trader.loop.portfolio.positions[SYMBOL]
    assert pos.qty == pytest.approx(HALF)
    venue.advance(1)  # falls back through 30 000
    trader.poll()
    assert adapter.position_qty(venue) == 0 and _guards(adapter, venue) == []
    assert _exits(trader) == [("take_profit_1", HALF, RUNG1), ("breakeven_stop", HALF, FLAT)]
    assert [t.exit_reason for t in trader.loop.portfolio.closed_trades] == ["take_profit_1", "breakeven_stop"]
    assert trader.loop.portfolio.positions == {}


@only(BINANCE)
def test_ladder_rung_filled_in_part_keeps_its_rest_working_and_the_stop_covers_what_is_open(make_trader, venue,
                                                                                             adapter):
    trader = _enter(make_trader, venue, adapter, PARTIAL)
    venue.set_liquidity({MARKET_ID: "0.02"})  # rung 1's market order fills 0.02, its rest expires
    try:
        venue.advance(1)
        trader.poll()
    finally:
        venue.set_liquidity({})
    assert adapter.position_qty(venue) == pytest.approx(QTY - 0.02)
    assert _guards(adapter, venue) == [("STOP_MARKET", "sell", True, FLAT, pytest.approx(QTY - 0.02)),
                                       ("TAKE_PROFIT_MARKET", "sell", True, RUNG1, pytest.approx(HALF - 0.02)),
                                       ("TAKE_PROFIT_MARKET", "sell", True, RUNG2, HALF)]
    venue.advance(1)  # rung 1's rest fills
    trader.poll()
    assert _guards(adapter, venue) == [("STOP_MARKET", "sell", True, FLAT, HALF),
                                       ("TAKE_PROFIT_MARKET", "sell", True, RUNG2, HALF)]
    venue.advance(1)  # rung 2 takes the rest
    trader.poll()
    assert adapter.position_qty(venue) == 0 and _guards(adapter, venue) == []
    assert _exits(trader) == [("take_profit_1", 0.02, RUNG1), ("take_profit_1", HALF - 0.02, RUNG1),
                              ("take_profit_2", HALF, RUNG2)]
    assert trader.loop.portfolio.positions == {}


def _rung2_ids(adapter, venue) -> list[str]:
    return [o["id"] for o in adapter.protective_orders(venue) if o["triggerPrice"] == RUNG2]


def test_ladder_restart_books_a_rung_that_filled_while_down_and_adopts_the_resting_rung(make_trader, venue, adapter):
    _enter(make_trader, venue, adapter, RESTART)  # then the executor dies
    rung2 = _rung2_ids(adapter, venue)
    venue.advance(1)  # rung 1 fills while nobody watches
    restarted = make_trader(**LADDER)
    assert _exits(restarted) == [("take_profit_1", HALF, RUNG1)]
    assert _guards(adapter, venue) == _rest_at_break_even(adapter)
    assert _rung2_ids(adapter, venue) == rung2  # adopted, not re-sent
    assert restarted.loop.portfolio.positions[SYMBOL].qty == pytest.approx(HALF)
    venue.advance(1)  # rung 2 takes the rest
    restarted.poll()
    assert adapter.position_qty(venue) == 0 and _guards(adapter, venue) == []
    assert _exits(restarted) == [("take_profit_1", HALF, RUNG1), ("take_profit_2", HALF, RUNG2)]
    assert restarted.loop.portfolio.positions == {}


def test_ladder_restart_adopts_the_resting_rungs_and_the_ladder_works_on(make_trader, venue, adapter):
    _enter(make_trader, venue, adapter, ADOPT)  # then the executor dies
    guards = _guards(adapter, venue)
    restarted = make_trader(**LADDER)
    assert _guards(adapter, venue) == guards and restarted.reconciled.protectives_placed == {}
    venue.advance(1)  # rung 1
    restarted.poll()
    venue.advance(1)  # rung 2
    restarted.poll()
    assert adapter.position_qty(venue) == 0 and _guards(adapter, venue) == []
    assert _exits(restarted) == [("take_profit_1", HALF, RUNG1), ("take_profit_2", HALF, RUNG2)]
