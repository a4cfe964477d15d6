"""A short's take-profit ladder live, through a restart: real ccxt against the real local exchange.

``risk.take_profit_ladder = [[0.5, 0.02], [0.5, 0.04]]`` with ``breakeven_after_first_tp`` and
``allow_short``: a short sold at 30 000 for q is guarded by one reduce-only BUY STOP_MARKET for q at
30 900 (+3 %) and two reduce-only BUY TAKE_PROFIT_MARKET rungs below, q/2 at 29 400 (-2 %) and the
rest at 28 800 (-4 %). The executor is killed with the short open and its rungs resting; the
restart must adopt all three orders (nothing re-sent), then the ladder works on: rung 1 fills, the
stop is re-placed for the rest at the entry price (break-even), the price comes back through it.
Expected prices and quantities come from the bars and the parameters (q = 2 000 / 30 000 on the
exchange's 0.00001 lot step).
"""

from __future__ import annotations

import pandas as pd
import pytest

from tests.executor.exec_support import signals_frame
from tests.executor.live.support import SYMBOL, bar_ms, calm_bars, client, serving_market, trader_factory

pytestmark = pytest.mark.slow

N_BARS = 40
FLAT = 30_000.0
RISK = {"allow_short": True, "take_profit_ladder": [[0.5, 0.02], [0.5, 0.04]], "breakeven_after_first_tp": True}
QTY, HALF = 0.06666, 0.03333
STOP, RUNG1, RUNG2 = 30_900.0, 29_400.0, 28_800.0
ENTRY_BAR = 11  # the first bar after the entry
DOWN = (FLAT, 30_010.0, 29_300.0, 29_500.0)  # reaches rung 1 (29 400), not rung 2
BACK_UP = (29_500.0, 30_100.0, 29_450.0, 30_050.0)  # rises through the break-even stop (30 000)
SPECIAL = {ENTRY_BAR + 1: DOWN, ENTRY_BAR + 2: BACK_UP}


def _candles() -> pd.DataFrame:
    return calm_bars(N_BARS, SPECIAL, FLAT)


@pytest.fixture(scope="module")
def venue(tmp_path_factory):
    with serving_market(tmp_path_factory.mktemp("short-ladder-market"), _candles()) as ex:
        ex.reset_account()
        yield ex


@pytest.fixture
def make_trader(venue, tmp_path):
    signals = signals_frame({SYMBOL: ["sell" if i == ENTRY_BAR - 2 else "hold" for i in range(N_BARS)]})
    with trader_factory(lambda: client(venue), signals, SYMBOL, tmp_path / "state.sqlite", "short-ladder") as make:
        yield make


def _guards(venue) -> list[tuple]:
    return sorted((o["info"]["orderType"], o["side"], o["reduceOnly"], o["triggerPrice"], o["amount"], o["id"])
                  for o in client(venue).fetch_open_orders(SYMBOL, params={"trigger": True}))


def _short_qty(venue) -> float:
    return sum(p["contracts"] for p in client(venue).fetch_positions([SYMBOL]) if p["side"] == "short")


def test_short_ladder_restart_with_an_open_short_and_resting_rungs_adopts_them_and_the_ladder_works_on(
        make_trader, venue):
    venue.move_clock_to(bar_ms(ENTRY_BAR - 1))
    make_trader(**RISK).poll()  # the sell of bar ENTRY_BAR - 2 at 30 000; then the executor dies
    assert _short_qty(venue) == pytest.approx(QTY)
    placed = _guards(venue)
    assert [g[:5] for g in placed] == [("STOP_MARKET", "buy", True, STOP, QTY),
                                       ("TAKE_PROFIT_MARKET", "buy", True, RUNG2, HALF),
                                       ("TAKE_PROFIT_MARKET", "buy", True, RUNG1, HALF)]
    venue.advance(1)  # a quiet bar while nobody watches
    restarted = make_trader(**RISK)
    assert _guards(venue) == placed  # the same three orders, same ids: adopted, nothing re-sent
    assert restarted.reconciled.protectives_placed == {}
    pos = restarted.loop.portfolio.positions[SYMBOL]
    assert (pos.side, pos.qty) == ("short", pytest.approx(QTY))
    venue.advance(1)  # falls to 29 300: rung 1 buys back half at 29 400
    restarted.poll()
    assert _short_qty(venue) == pytest.approx(HALF)
    assert [g[:5] for g in _guards(venue)] == [("STOP_MARKET", "buy", True, FLAT, HALF),  # break-even, for the rest
                                               ("TAKE_PROFIT_MARKET", "buy", True, RUNG2, HALF)]
    venue.advance(1)  # back up through 30 000: the break-even stop buys the rest
    restarted.poll()
    assert _short_qty(venue) == 0 and _guards(venue) == []
    fills = restarted.store.read("fills")
    exits = [(r.side, r.reason, pytest.approx(r.qty), pytest.approx(r.price)) for r in fills.itertuples()
             if r.purpose == "exit"]
    assert exits == [("buy", "take_profit_1", HALF, RUNG1), ("buy", "breakeven_stop", HALF, FLAT)]
    trades = restarted.loop.portfolio.closed_trades
    assert [t.side for t in trades] == ["short", "short"]
    assert trades[0].pnl_usdt > 0 and trades[1].pnl_usdt < 0  # the rung gains; break-even loses the fees
