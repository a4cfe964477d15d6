"""Spot (one OCO list guards the coins): a list whose stop leg the price is already through is
refused by the exchange (-2010), so the live executor sells the coins at market at once,
records ``EMERGENCY_EXIT`` and alerts, instead of leaving the holding unguarded.

Real ccxt ``binance`` against the real local exchange. The market sits at 30 000; the hand-made
bars below fall through the 3 % stop. The local exchange fills a market order at the close of
the bar open at its clock and refuses a sell OCO unless limit > that close > stop, as Binance
refuses one whose prices are not on both sides of the last price. Spot fees are 0.1 %, a buy's
in BTC; the lot step is 0.00001 BTC. (The list cancelled during a fall is in test_live_spot.py.)
"""

from __future__ import annotations

import pandas as pd
import pytest

from tests.executor.exec_support import signals_frame
from tests.executor.live.support import (MARKET_ID, SPOT_SYMBOL, bar_ms, bars_frame, serving_spot_market,
                                         spot_client, trader_factory)

pytestmark = pytest.mark.slow

N_BARS = 120
FLAT = 30_000.0
SL, FEE, STEP = 0.03, 0.001, 100_000  # the default risk.stop_loss_pct, the spot fee, 1 / lot step
NOTIONAL = 0.2 * 10_000  # the default position size: 20 % of 10 000 USDT
LIMIT_ENTRY_BAR, LIMIT_CRASH = 21, 28_000.0  # the limit buy fills in this bar, which closes far below its stop
DOWN_ENTRY_BAR, DOWN_GAP = 61, 28_200.0  # entered; the next bar gaps below the stop while the executor is down
SPECIAL = {LIMIT_ENTRY_BAR: (FLAT, FLAT * 1.001, LIMIT_CRASH, LIMIT_CRASH),
           DOWN_ENTRY_BAR + 1: (DOWN_GAP, DOWN_GAP * 1.001, DOWN_GAP * 0.999, DOWN_GAP)}


def _floor(qty: float) -> float:
    return int(qty * STEP + 1e-9) / STEP


def _signals() -> pd.DataFrame:
    """``buy`` only at the close of the bar before each case's entry: an exit is never re-entered."""
    buys = {LIMIT_ENTRY_BAR - 2, DOWN_ENTRY_BAR - 1}
    return signals_frame({SPOT_SYMBOL: ["buy" if i in buys else "hold" for i in range(N_BARS)]})


def _candles() -> pd.DataFrame:
    return bars_frame([SPECIAL.get(i, (FLAT, FLAT * 1.001, FLAT * 0.999, FLAT)) for i in range(N_BARS)], SPOT_SYMBOL)


@pytest.fixture(scope="module")
def exchange(tmp_path_factory):
    with serving_spot_market(tmp_path_factory.mktemp("emergency-spot-market"), _candles()) as ex:
        yield ex


@pytest.fixture
def venue(exchange):
    """10 000 USDT spot, no BTC, no faults."""
    exchange.set_faults({})
    exchange.reset_account(spot={"USDT": 10_000})
    yield exchange


@pytest.fixture
def make_trader(venue, tmp_path):
    with trader_factory(lambda: spot_client(venue), _signals(), SPOT_SYMBOL, tmp_path / "state.sqlite",
                        "spot") as make:
        yield make


def _lists(venue) -> list[dict]:
    return spot_client(venue).private_get_openorderlist()


def _btc(venue) -> float:
    return spot_client(venue).fetch_balance()["BTC"]["total"]


def _orders(venue, side: str) -> list[dict]:
    return [o for o in spot_client(venue).fetch_orders(SPOT_SYMBOL) if o["side"] == side]


def _market_sells(venue) -> list[dict]:
    """Sells that are not a leg of an OCO list."""
    return [o for o in _orders(venue, "sell") if int(o["info"].get("orderListId", -1)) == -1]


def _assert_coins_sold_in_an_emergency(trader, venue, held: float, exit_price: float) -> None:
    assert _lists(venue) == []  # nothing left locking or guarding coins that are gone
    assert [(o["type"], o["status"], o["amount"], o["average"]) for o in _market_sells(venue)] == [
        ("market", "closed", pytest.approx(held), pytest.approx(exit_price))]
    assert _btc(venue) < 1 / STEP  # what is left is below one lot step
    fills = trader.store.read("fills")
    exit_ = fills[fills["purpose"] == "exit"]
    assert exit_[["reason", "qty", "price"]].values.tolist() == [["emergency_exit", pytest.approx(held),
                                                                  pytest.approx(exit_price)]]
    assert trader.loop.portfolio.positions == {}
    decisions = trader.store.read("decisions")
    assert decisions[decisions["reason"] == "EMERGENCY_EXIT"]["outcome"].tolist() == ["exit"]
    assert trader.store.read("alerts")["kind"].tolist().count("EMERGENCY_EXIT") == 1
    wallet = spot_client(venue).fetch_balance()["USDT"]["total"]
    assert trader.loop.portfolio.cash_usdt == pytest.approx(wallet, abs=1e-6)  # the ledger matches the wallet


def test_emergency_exit_sells_the_coins_when_a_limit_entry_fills_in_a_bar_that_closes_below_its_stop(make_trader,
                                                                                                     venue):
    venue.move_clock_to(bar_ms(LIMIT_ENTRY_BAR - 1))
    trader = make_trader(entry_order="limit", limit_offset_bps=5.0, limit_ttl_bars=2)
    trader.poll()  # a limit buy at 30 000 x (1 - 0.0005) rests
    limit = FLAT * (1 - 0.0005)
    bought = _floor(NOTIONAL / limit)
    held = _floor(bought * (1 - FEE))  # the fee is paid in BTC
    assert limit * (1 - SL) > LIMIT_CRASH  # the list's stop leg would be above the price once the buy has filled
    assert _lists(venue) == [] and [o["status"] for o in _orders(venue, "buy")] == ["open"]
    venue.advance(1)  # the limit fills in the crash bar, which closes at 28 000
    trader.poll()  # an OCO with its stop at 29 085 is refused: the coins are sold at market instead
    (buy,) = _orders(venue, "buy")
    assert (buy["status"], buy["filled"], buy["average"]) == ("closed", pytest.approx(bought), pytest.approx(limit))
    fills = trader.store.read("fills")
    assert fills[fills["purpose"] == "entry"]["price"].tolist() == [pytest.approx(limit)]
    _assert_coins_sold_in_an_emergency(trader, venue, held, LIMIT_CRASH)
    exit_ = fills[fills["purpose"] == "exit"].iloc[0]
    paid = bought * limit
    assert exit_["pnl_usdt"] == pytest.approx(held * LIMIT_CRASH * (1 - FEE) - paid, rel=1e-9)
    venue.advance(1)
    trader.poll()  # nothing is retried, nothing re-opened
    assert len(_orders(venue, "sell")) == len(_market_sells(venue)) == 1
    assert len(_orders(venue, "buy")) == 1 and _lists(venue) == []


def test_emergency_exit_at_restart_sells_the_coins_when_the_price_gapped_below_the_cancelled_lists_stop(make_trader,
                                                                                                      venue):
    venue.move_clock_to(bar_ms(DOWN_ENTRY_BAR))
    make_trader().poll()  # buys at 30 000, guarded by a list with its stop at 29 100; then the executor dies
    held = _floor(_floor(NOTIONAL / FLAT) * (1 - FEE))
    (lst,) = _lists(venue)
    spot_client(venue).private_delete_orderlist({"symbol": MARKET_ID, "listClientOrderId": lst["listClientOrderId"]})
    assert FLAT * (1 - SL) > DOWN_GAP
    venue.advance(1)  # gaps to 28 200 while nobody watches; nothing fires on the exchange
    assert _btc(venue) == pytest.approx(held, abs=1 / STEP)
    restarted = make_trader()  # start-up alone: the coins are sold before any bar is stepped
    assert _market_sells(venue) != [] and _btc(venue) < 1 / STEP
    assert restarted.reconciled.protectives_placed == {}  # no list was placed for coins already through the stop
    sent = restarted.journal.rows("run_id=?", (restarted.run_id,))
    assert [(r["purpose"], r["status"]) for r in sent if r["purpose"] != "oco"] == [("exit", "filled")]
    restarted.poll()
    _assert_coins_sold_in_an_emergency(restarted, venue, held, DOWN_GAP)
    assert len(_orders(venue, "buy")) == 1  # nothing re-opened
