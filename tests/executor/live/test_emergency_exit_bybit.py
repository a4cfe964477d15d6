"""A stop Bybit refuses because the price is already through it (retCode 110092/110093): the live
executor exits at market at once (reduce-only), records ``EMERGENCY_EXIT`` and alerts - the same
broker code as on Binance (``test_emergency_exit_live.py``), through the real ccxt ``bybit`` client
against the local exchange's v5 API. The market sits at 30 000; the hand-made bars fall through the
3 % stop (29 100 for an entry at 30 000).
"""

from __future__ import annotations

import pandas as pd
import pytest

from tests.executor.exec_support import signals_frame
from tests.executor.live.support import (SYMBOL, bar_ms, bybit_client, bybit_position_qty, calm_bars, reset_bybit,
                                         running_exchange, trader_factory, write_bybit_market)

pytestmark = pytest.mark.slow

N_BARS = 120
FLAT = 30_000.0
SL = 0.03
LIMIT_ENTRY_BAR, LIMIT_CRASH = 21, 28_000.0  # the limit buy fills in this bar, which closes far below its stop
CANCEL_ENTRY_BAR, CANCEL_FALL = 41, 28_500.0  # entered at this bar's close; the next bar falls below the stop
DOWN_ENTRY_BAR, DOWN_GAP = 61, 28_200.0  # entered; the next bar gaps below the stop while the executor is down
SPECIAL = {LIMIT_ENTRY_BAR: (FLAT, FLAT * 1.001, LIMIT_CRASH, LIMIT_CRASH),
           CANCEL_ENTRY_BAR + 1: (FLAT, FLAT * 1.001, CANCEL_FALL, CANCEL_FALL),
           DOWN_ENTRY_BAR + 1: (DOWN_GAP, DOWN_GAP * 1.001, DOWN_GAP * 0.999, DOWN_GAP)}
CROSS = {"margin_mode": "cross"}  # the local Bybit unified account (read back, never switched)


def _signals() -> pd.DataFrame:
    buys = {LIMIT_ENTRY_BAR - 2, CANCEL_ENTRY_BAR - 1, DOWN_ENTRY_BAR - 1}
    return signals_frame({SYMBOL: ["buy" if i in buys else "hold" for i in range(N_BARS)]})


@pytest.fixture(scope="module")
def exchange(tmp_path_factory):
    root = write_bybit_market(tmp_path_factory.mktemp("bybit-emergency-market"), calm_bars(N_BARS, SPECIAL, FLAT))
    with running_exchange(root) as ex:
        yield ex


@pytest.fixture
def venue(exchange):
    exchange.set_faults({})
    reset_bybit(exchange)
    yield exchange


@pytest.fixture
def make_trader(venue, tmp_path):
    with trader_factory(lambda: bybit_client(venue), _signals(), SYMBOL, tmp_path / "state.sqlite", "test") as make:
        yield make


def _open_protectives(venue) -> list[str]:
    return sorted(o["info"]["stopOrderType"]
                  for o in bybit_client(venue).fetch_open_orders(SYMBOL, params={"orderFilter": "StopOrder"}))


def _cancel_stop_behind_our_back(venue) -> None:
    c = bybit_client(venue)
    (stop,) = [o for o in c.fetch_open_orders(SYMBOL, params={"orderFilter": "StopOrder"})
               if o["info"]["stopOrderType"] == "StopLoss"]
    c.cancel_order(stop["id"], SYMBOL)


def _sells(venue) -> list[dict]:
    c = bybit_client(venue)
    return [o for o in c.fetch_open_orders(SYMBOL) + c.fetch_canceled_and_closed_orders(SYMBOL)
            if o["side"] == "sell" and not o.get("triggerPrice")]


def _assert_exited_in_an_emergency(trader, venue, exit_price: float) -> None:
    assert bybit_position_qty(venue) == 0
    assert _open_protectives(venue) == []
    assert [(o["type"], o["reduceOnly"], o["status"]) for o in _sells(venue)] == [("market", True, "closed")]
    fills = trader.store.read("fills")
    exit_ = fills[fills["purpose"] == "exit"]
    assert exit_["reason"].tolist() == ["emergency_exit"]
    assert exit_["price"].iloc[0] == pytest.approx(exit_price)
    assert trader.loop.portfolio.positions == {}
    assert "EMERGENCY_EXIT" in trader.store.read("decisions")["reason"].tolist()
    assert "EMERGENCY_EXIT" in trader.store.read("alerts")["kind"].tolist()


def test_bybit_emergency_exit_when_a_limit_entry_fills_in_a_bar_that_closes_below_its_stop(make_trader, venue):
    venue.move_clock_to(bar_ms(LIMIT_ENTRY_BAR - 1))
    trader = make_trader(entry_order="limit", limit_offset_bps=5.0, limit_ttl_bars=2, **CROSS)
    trader.poll()  # a limit buy at 30 000 x (1 - 0.0005) rests
    limit = FLAT * (1 - 0.0005)
    venue.advance(1)  # it fills in the crash bar; a stop at limit x 0.97 would trigger at once (110093)
    trader.poll()
    fills = trader.store.read("fills")
    assert fills[fills["purpose"] == "entry"]["price"].tolist() == [pytest.approx(limit)]
    _assert_exited_in_an_emergency(trader, venue, LIMIT_CRASH)


def test_bybit_emergency_exit_when_the_stop_is_cancelled_behind_our_back_during_a_fall(make_trader, venue):
    venue.move_clock_to(bar_ms(CANCEL_ENTRY_BAR))
    trader = make_trader(**CROSS)
    trader.poll()  # enters at 30 000, guarded at 29 100 / 31 800
    assert _open_protectives(venue) == ["StopLoss", "TakeProfit"]
    _cancel_stop_behind_our_back(venue)
    venue.advance(1)  # falls to 28 500, below where the stop was: nothing fires on the exchange
    trader.poll()  # re-placing the stop at 29 100 is refused: exit at market instead
    _assert_exited_in_an_emergency(trader, venue, CANCEL_FALL)
    venue.advance(1)
    trader.poll()  # nothing is retried at the next bar
    assert len(_sells(venue)) == 1


def test_bybit_emergency_exit_at_restart_when_the_price_gapped_below_the_stop_while_down(make_trader, venue):
    venue.move_clock_to(bar_ms(DOWN_ENTRY_BAR))
    make_trader(**CROSS).poll()  # entered at 30 000; then the executor dies
    _cancel_stop_behind_our_back(venue)
    venue.advance(1)  # gaps to 28 200 while nobody watches
    restarted = make_trader(**CROSS)  # start-up alone closes the position
    assert bybit_position_qty(venue) == 0
    restarted.poll()
    _assert_exited_in_an_emergency(restarted, venue, DOWN_GAP)
