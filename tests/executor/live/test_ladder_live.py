"""The take-profit ladder live: real ccxt against the real local exchange.

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
from tests.executor.live.support import MARKET_ID, SYMBOL, bar_ms, calm_bars, client, serving_market, trader_factory

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
SIMPLE, PARTIAL, RESTART = 11, 21, 31  # each case's first bar after its entry
SPECIAL = {SIMPLE: UP, SIMPLE + 1: BACK, PARTIAL: UP, PARTIAL + 1: HOLD_UP, PARTIAL + 2: TOP,
           RESTART: UP, RESTART + 1: TOP}


def _candles() -> pd.DataFrame:
    return calm_bars(N_BARS, SPECIAL, FLAT)


@pytest.fixture(scope="module")
def exchange(tmp_path_factory):
    with serving_market(tmp_path_factory.mktemp("ladder-market"), _candles()) as ex:
        yield ex


@pytest.fixture
def venue(exchange):
    exchange.set_faults({})
    exchange.reset_account()
    yield exchange
    exchange.set_liquidity({})


@pytest.fixture
def make_trader(venue, tmp_path):
    buys = {SIMPLE - 2, PARTIAL - 2, RESTART - 2}
    signals = signals_frame({SYMBOL: ["buy" if i in buys else "hold" for i in range(N_BARS)]})
    with trader_factory(lambda: client(venue), signals, SYMBOL, tmp_path / "state.sqlite", "ladder") as make:
        yield make


def _guards(venue) -> list[tuple]:
    return sorted((o["info"]["orderType"], o["side"], o["reduceOnly"], o["triggerPrice"], o["amount"])
                  for o in client(venue).fetch_open_orders(SYMBOL, params={"trigger": True}))


def _exits(trader) -> list[tuple]:
    f = trader.store.read("fills")
    return [(r.reason, pytest.approx(r.qty), pytest.approx(r.price)) for r in f.itertuples() if r.purpose == "exit"]


def _position_qty(venue) -> float:
    return sum(p["contracts"] for p in client(venue).fetch_positions([SYMBOL]))


def _enter(make_trader, venue, first_bar: int):
    venue.move_clock_to(bar_ms(first_bar - 1))
    trader = make_trader(**LADDER)
    trader.poll()
    assert _position_qty(venue) == pytest.approx(QTY)
    assert _guards(venue) == [("STOP_MARKET", "sell", True, STOP, QTY),
                              ("TAKE_PROFIT_MARKET", "sell", True, RUNG1, HALF),
                              ("TAKE_PROFIT_MARKET", "sell", True, RUNG2, HALF)]
    return trader


def test_ladder_rungs_rest_on_the_exchange_a_rung_closes_part_and_the_stop_moves_to_break_even(make_trader, venue):
    trader = _enter(make_trader, venue, SIMPLE)
    venue.advance(1)  # rung 1 fills at 30 600
    trader.poll()
    assert _position_qty(venue) == pytest.approx(HALF)
    assert _guards(venue) == [("STOP_MARKET", "sell", True, FLAT, HALF),  # the rest, at break-even
                              ("TAKE_PROFIT_MARKET", "sell", True, RUNG2, HALF)]
    assert _exits(trader) == [("take_profit_1", HALF, RUNG1)]
    pos = trader.loop.portfolio.positions[SYMBOL]
    assert pos.qty == pytest.approx(HALF)
    venue.advance(1)  # falls back through 30 000
    trader.poll()
    assert _position_qty(venue) == 0 and _guards(venue) == []
    assert _exits(trader) == [("take_profit_1", HALF, RUNG1), ("breakeven_stop", HALF, FLAT)]
    assert [t.exit_reason for t in trader.loop.portfolio.closed_trades] == ["take_profit_1", "breakeven_stop"]
    assert trader.loop.portfolio.positions == {}


def test_ladder_rung_filled_in_part_keeps_its_rest_working_and_the_stop_covers_what_is_open(make_trader, venue):
    trader = _enter(make_trader, venue, PARTIAL)
    venue.set_liquidity({MARKET_ID: "0.02"})  # rung 1's market order fills 0.02, its rest expires
    venue.advance(1)
    trader.poll()
    venue.set_liquidity({})
    assert _position_qty(venue) == pytest.approx(QTY - 0.02)
    assert _guards(venue) == [("STOP_MARKET", "sell", True, FLAT, pytest.approx(QTY - 0.02)),
                              ("TAKE_PROFIT_MARKET", "sell", True, RUNG1, pytest.approx(HALF - 0.02)),
                              ("TAKE_PROFIT_MARKET", "sell", True, RUNG2, HALF)]
    venue.advance(1)  # rung 1's rest fills
    trader.poll()
    assert _guards(venue) == [("STOP_MARKET", "sell", True, FLAT, HALF), ("TAKE_PROFIT_MARKET", "sell", True, RUNG2, HALF)]
    venue.advance(1)  # rung 2 takes the rest
    trader.poll()
    assert _position_qty(venue) == 0 and _guards(venue) == []
    assert _exits(trader) == [("take_profit_1", 0.02, RUNG1), ("take_profit_1", HALF - 0.02, RUNG1),
                              ("take_profit_2", HALF, RUNG2)]
    assert trader.loop.portfolio.positions == {}


def test_ladder_restart_books_a_rung_that_filled_while_down_and_adopts_the_resting_rung(make_trader, venue):
    _enter(make_trader, venue, RESTART)  # then the executor dies
    rung2 = [o["id"] for o in client(venue).fetch_open_orders(SYMBOL, params={"trigger": True})
             if o["triggerPrice"] == RUNG2]
    venue.advance(1)  # rung 1 fills while nobody watches
    restarted = make_trader(**LADDER)
    assert _exits(restarted) == [("take_profit_1", HALF, RUNG1)]
    assert _guards(venue) == [("STOP_MARKET", "sell", True, FLAT, HALF), ("TAKE_PROFIT_MARKET", "sell", True, RUNG2, HALF)]
    assert [o["id"] for o in client(venue).fetch_open_orders(SYMBOL, params={"trigger": True})
            if o["triggerPrice"] == RUNG2] == rung2  # adopted, not re-sent
    assert restarted.loop.portfolio.positions[SYMBOL].qty == pytest.approx(HALF)
    venue.advance(1)  # rung 2 takes the rest
    restarted.poll()
    assert _position_qty(venue) == 0 and _guards(venue) == []
    assert _exits(restarted) == [("take_profit_1", HALF, RUNG1), ("take_profit_2", HALF, RUNG2)]
    assert restarted.loop.portfolio.positions == {}
