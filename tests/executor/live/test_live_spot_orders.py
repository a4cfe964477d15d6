"""Limit entries and the managed trailing stop for LIVE SPOT (issue #7): the real local exchange,
the real ccxt ``binance`` client, the LiveTrader.

The hand-made market (``BTC/USDT``, 1h bars) is the one of ``test_orders_live``: flat at 30 000
(+-0.1 %) up to bar 100, then bar 101 rallies to 31 500 (close 31 400), bar 102 holds
31 300..31 500, bar 103 falls to 30 500. Spot specifics the figures follow from: the fee is
charged in the asset received (BTC on a buy, USDT on a sell), the OCO list sells what is held
floored to the 0.00001 BTC lot step, and a resting limit buy locks its USDT. Expected numbers are
computed here, never by the code under test.
"""

from __future__ import annotations


import pandas as pd
import pytest

from executor.signals import HttpSignalSource
from executor.live.trader import LiveTrader
from executor.paper import LIMIT_EXPIRED
from qt.errors import UserError
from tests.executor.exec_support import params
from tests.executor.live.support import (MARKET_ID, SPOT_SYMBOL, bar_ms, bars_frame, buy_signals, oco_lists,
                                         serving_spot_market, spot_client, trader_factory)

pytestmark = pytest.mark.slow

FLAT = 30_000.0
N_BARS = 200
SPECIAL = {101: (30_000.0, 31_500.0, 29_990.0, 31_400.0), 102: (31_400.0, 31_500.0, 31_300.0, 31_400.0),
           103: (31_400.0, 31_450.0, 30_500.0, 30_600.0)}
SL, TP = 0.03, 0.06  # the default risk.stop_loss_pct / take_profit_pct
TAKER = 0.001  # Binance spot
MAKER = 0.0005  # set below the taker rate on the venue, so a maker fill is told apart
STEP = 100_000  # the BTC lot step 0.00001


def _floor(qty: float) -> float:
    return int(qty * STEP + 1e-9) / STEP


def _candles() -> pd.DataFrame:
    rows = []
    for i in range(N_BARS):
        p = FLAT if i <= 100 else 30_600.0
        rows.append(SPECIAL.get(i, (p, p * 1.001, p * 0.999, p)))
    return bars_frame(rows, SPOT_SYMBOL)


@pytest.fixture(scope="module")
def exchange(tmp_path_factory):
    with serving_spot_market(tmp_path_factory.mktemp("spot-orders-market"), _candles()) as ex:
        yield ex


@pytest.fixture
def venue(exchange):
    exchange.set_faults({})
    exchange.reset_account(spot={"USDT": 10_000}, fees={"spot_maker": str(MAKER), "spot_taker": str(TAKER)})
    yield exchange


@pytest.fixture
def make_trader(venue, tmp_path):
    with trader_factory(lambda: spot_client(venue), buy_signals().assign(symbol=SPOT_SYMBOL), SPOT_SYMBOL,
                        tmp_path / "state.sqlite", "spot") as make:
        yield make


def _buys(venue) -> list[dict]:
    return [o for o in spot_client(venue).fetch_orders(SPOT_SYMBOL) if o["side"] == "buy"]


def _balance(venue, asset: str) -> dict:
    return spot_client(venue).fetch_balance()[asset]


LIMIT = FLAT * (1 - 0.0005)  # 5 bps under the close of bar 19: 29 985
ASKED = _floor(2_000.0 / LIMIT)  # 0.2 x 10 000 USDT at the limit: 0.06670 BTC


# -- limit entries ------------------------------------------------------------------------
def test_a_spot_limit_buy_rests_locking_usdt_then_fills_at_its_price_and_one_oco_guards_it(make_trader, venue):
    venue.move_clock_to(bar_ms(20))
    trader = make_trader(entry_order="limit", limit_offset_bps=5.0, limit_ttl_bars=2)
    trader.poll()  # decided at the close of bar 19 (30 000)
    (resting,) = spot_client(venue).fetch_open_orders(SPOT_SYMBOL)
    assert (resting["type"], resting["side"], resting["price"], resting["amount"]) == (
        "limit", "buy", pytest.approx(LIMIT), pytest.approx(ASKED))
    assert _balance(venue, "USDT")["used"] == pytest.approx(ASKED * LIMIT)  # spot locks the quote
    assert oco_lists(venue) == [] and trader.loop.portfolio.reserved_usdt == {SPOT_SYMBOL: pytest.approx(2_000.0)}
    venue.advance(1)  # bar 21 trades down to 29 970: the limit fills, as maker
    trader.poll()
    received = ASKED * (1 - MAKER)  # the maker fee is paid in BTC
    (fill,) = trader.store.read("fills").itertuples()
    assert (fill.purpose, fill.price, fill.qty) == ("entry", pytest.approx(LIMIT), pytest.approx(received))
    assert fill.fee_usdt == pytest.approx(ASKED * MAKER * LIMIT)
    ((_, qty, stop, take),) = oco_lists(venue)
    assert (qty, stop, take) == (pytest.approx(_floor(received)), pytest.approx(round(LIMIT * (1 - SL), 2)),
                                 pytest.approx(round(LIMIT * (1 + TP), 2)))
    assert _balance(venue, "BTC")["used"] == pytest.approx(_floor(received))  # the list locks the coins
    assert _balance(venue, "USDT")["used"] == pytest.approx(0.0)
    assert len(_buys(venue)) == 1 and trader.loop.portfolio.reserved_usdt == {}


def test_a_partly_filled_spot_limit_has_its_rest_cancelled_and_the_filled_part_guarded(make_trader, venue):
    venue.reset_account(spot={"USDT": 10_000}, max_fill_qty_per_bar={MARKET_ID: "0.02"})  # 0.1 % both ways
    venue.move_clock_to(bar_ms(20))
    trader = make_trader(entry_order="limit", limit_offset_bps=5.0, limit_ttl_bars=3)
    trader.poll()
    venue.advance(1)  # bar 21 fills 0.02 of 0.06670
    trader.poll()
    (entry,) = _buys(venue)
    assert (entry["status"], entry["filled"]) == ("canceled", pytest.approx(0.02))
    held = _floor(0.02 * (1 - TAKER))
    ((_, qty, stop, _),) = oco_lists(venue)
    assert (qty, stop) == (pytest.approx(held), pytest.approx(round(LIMIT * (1 - SL), 2)))
    assert trader.loop.portfolio.positions[SPOT_SYMBOL].qty == pytest.approx(0.02 * (1 - TAKER))
    usdt = _balance(venue, "USDT")
    assert (usdt["used"], usdt["total"]) == (pytest.approx(0.0), pytest.approx(10_000 - 0.02 * LIMIT))


def test_an_unfilled_spot_limit_is_cancelled_after_its_ttl_and_its_usdt_released(make_trader, venue):
    venue.move_clock_to(bar_ms(20))
    trader = make_trader(entry_order="limit", limit_offset_bps=50.0, limit_ttl_bars=1)
    trader.poll()  # limit at 29 850: the flat bars never trade below 29 970
    (first,) = _buys(venue)
    venue.advance(1)
    trader.poll()  # its one bar is over: cancelled; the buy signal of bar 20 places the next one
    assert spot_client(venue).fetch_order(first["id"], SPOT_SYMBOL)["status"] == "canceled"
    decisions = trader.store.read("decisions")
    assert decisions[decisions["reason"] == LIMIT_EXPIRED]["outcome"].tolist() == ["cancelled"]
    row = trader.store.conn.execute("SELECT status, reason FROM exchange_orders WHERE client_id=?",
                                    (first["clientOrderId"],)).fetchone()
    assert row == ("expired", LIMIT_EXPIRED)
    assert [o["status"] for o in _buys(venue)] == ["canceled", "open"]
    second = _floor(2_000.0 / (FLAT * 0.995))
    assert _balance(venue, "USDT")["used"] == pytest.approx(second * FLAT * 0.995)  # only the new order's lock
    assert trader.store.read("fills").empty and oco_lists(venue) == []


def test_a_resting_spot_limit_is_adopted_at_restart_not_cancelled_nor_sent_again(make_trader, venue):
    venue.move_clock_to(bar_ms(20))
    make_trader(entry_order="limit", limit_offset_bps=5.0, limit_ttl_bars=2).poll()
    (resting,) = _buys(venue)
    restarted = make_trader(entry_order="limit", limit_offset_bps=5.0, limit_ttl_bars=2)
    assert resting["clientOrderId"] in restarted.reconciled.adopted_orders
    assert resting["id"] not in restarted.reconciled.cancelled_orphans
    assert restarted.loop.portfolio.reserved_usdt == {SPOT_SYMBOL: pytest.approx(ASKED * LIMIT)}
    venue.advance(1)
    restarted.poll()  # the adopted order fills on bar 21; the restarted executor books and guards it
    assert len(_buys(venue)) == 1
    assert restarted.store.read("fills")["purpose"].tolist() == ["entry"]
    ((_, qty, _, _),) = oco_lists(venue)
    assert qty == pytest.approx(_floor(ASKED * (1 - MAKER)))


# -- the managed trailing stop ------------------------------------------------------------
BOUGHT = _floor(2_000.0 / FLAT)  # market entry at 30 000: 0.06666 BTC
HELD = _floor(BOUGHT * (1 - TAKER))  # what the list can sell: 0.06659


def test_a_managed_trail_replaces_the_oco_with_a_higher_stop_and_exits_there(make_trader, venue):
    venue.move_clock_to(bar_ms(100))
    trader = make_trader(trailing_stop_pct=0.02, trailing_mode="managed")
    trader.poll()  # market entry at 30 000
    ((first, qty, stop, take),) = oco_lists(venue)
    assert (qty, stop, take) == (pytest.approx(HELD), pytest.approx(FLAT * (1 - SL)), pytest.approx(FLAT * (1 + TP)))
    venue.advance(1)
    trader.poll()  # bar 100 closed with high 30 030: the stop goes to 30 030 x 0.98 = 29 429.40
    ((second, qty, stop, take),) = oco_lists(venue)
    assert second != first and (qty, stop, take) == (pytest.approx(HELD), pytest.approx(29_429.40),
                                                     pytest.approx(FLAT * (1 + TP)))
    venue.advance(1)
    trader.poll()  # bar 101 closed with high 31 500: 30 870
    ((third, qty, stop, take),) = oco_lists(venue)
    assert third not in (first, second) and (qty, stop, take) == (pytest.approx(HELD), pytest.approx(30_870.0),
                                                                  pytest.approx(FLAT * (1 + TP)))
    assert _balance(venue, "BTC")["used"] == pytest.approx(HELD)  # one list locks the coins, once
    rows = trader.store.conn.execute("SELECT client_id, status, reason, price FROM exchange_orders "
                                     "WHERE purpose='oco' ORDER BY rowid").fetchall()
    assert rows == [(first, "cancelled", "TRAIL_MOVED", pytest.approx(29_100.0)),
                    (second, "cancelled", "TRAIL_MOVED", pytest.approx(29_429.40)),
                    (third, "open", None, pytest.approx(30_870.0))]
    venue.advance(1)  # bar 103 falls to 30 500: the moved stop leg fires on the exchange
    trader.poll()
    fills = trader.store.read("fills")
    exit_ = fills[fills["purpose"] == "exit"].iloc[0]
    assert (exit_["reason"], exit_["qty"], exit_["price"]) == ("trailing_stop", pytest.approx(HELD),
                                                               pytest.approx(30_870.0))
    assert exit_["pnl_usdt"] == pytest.approx(HELD * 30_870.0 * (1 - TAKER) - BOUGHT * FLAT, rel=1e-9)


def test_a_spot_stop_moved_by_the_trail_is_adopted_at_restart_with_its_peak(make_trader, venue):
    venue.move_clock_to(bar_ms(100))
    first = make_trader(trailing_stop_pct=0.02, trailing_mode="managed")
    first.poll()
    for _ in range(2):
        venue.advance(1)
        first.poll()
    moved = oco_lists(venue)
    assert moved[0][2] == pytest.approx(30_870.0)
    restarted = make_trader(trailing_stop_pct=0.02, trailing_mode="managed")
    assert restarted.reconciled.protectives_placed == {}
    assert oco_lists(venue) == moved
    assert restarted.broker.guards[SPOT_SYMBOL].peak == pytest.approx(31_500.0)


def test_a_native_trailing_stop_on_spot_is_refused_in_one_line(venue, tmp_path):
    p = params(data={"symbols": [SPOT_SYMBOL]}, risk={"trailing_stop_pct": 0.02, "trailing_mode": "native"})
    with pytest.raises(UserError, match="trailingDelta") as err:
        LiveTrader(p, spot_client(venue), HttpSignalSource("http://127.0.0.1:9"), tmp_path / "s.sqlite", "x")
    assert "\n" not in str(err.value)


def test_a_trailed_spot_stop_that_fired_while_the_executor_was_away_is_recorded_as_trailing_stop(make_trader,
                                                                                                venue):
    venue.move_clock_to(bar_ms(100))
    first = make_trader(trailing_stop_pct=0.02, trailing_mode="managed")
    first.poll()
    for _ in range(2):
        venue.advance(1)
        first.poll()  # the list's stop is at 30 870
    venue.advance(1)  # bar 103 falls to 30 500 while the executor is down: the stop leg fires
    restarted = make_trader(trailing_stop_pct=0.02, trailing_mode="managed")
    fills = restarted.store.read("fills")
    exits = fills[fills["purpose"] == "exit"]
    assert exits[["reason", "qty", "price"]].values.tolist() == [["trailing_stop", pytest.approx(HELD),
                                                                  pytest.approx(30_870.0)]]
    assert oco_lists(venue) == [] and restarted.loop.portfolio.positions == {}
