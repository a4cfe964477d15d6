"""Spot live trading (issue #7) against the real local exchange through the real ccxt ``binance``
client: an entry guarded by one OCO list on the exchange (spot has no reduce-only orders), the
stop first when a bar touches both legs, a cancelled list re-placed, exits that cancel the list
and sell the coins, partial exit fills (market sell and protective trigger) under the exchange's
liquidity cap, and a restart that adopts the list it finds.

Expected quantities, prices and PnL follow from the hand-made candles (``live_support``: 30 000,
bar 51 trading -10 %/+10 %), the risk parameters and Binance's 0.1 % spot fee (charged in BTC on
a buy, in USDT on a sell) - never from the code under test.
"""

from __future__ import annotations

import os
import signal
import time

import pandas as pd
import pytest

from executor.signals import HttpSignalSource
from executor.live.trader import LiveTrader
from qt.errors import UserError
from tests.executor.exec_support import FakeSignalService, params
from tests.executor.live.support import (API_SECRET, GAP_BAR, MARKET_ID, PRICE, SPOT_SYMBOL, SYMBOL, WIDE_BARS, bar_ms,
                                         buy_signals, spot_client, start_daemon, write_spot_market)
from tests.executor.live.support import oco_lists, running_exchange

pytestmark = pytest.mark.slow

CALM_BAR = 100  # the clock starts at this bar's open: bar 99 has closed, the entry is decided there
WIDE_NEXT = WIDE_BARS[0] - 1  # start here when the bar after the entry touches both legs
SL, TP, FEE = 0.03, 0.06, 0.001
STEP = 100_000  # BTC lot step 0.00001 at 30 000


def _floor(qty: float) -> float:
    return int(qty * STEP + 1e-9) / STEP


BOUGHT = _floor(2_000.0 / PRICE)  # 0.2 x 10 000 USDT at 30 000 -> 0.06666 BTC
HELD = _floor(BOUGHT * (1 - FEE))  # the fee is paid in BTC: what can be sold is 0.06659
PAID = BOUGHT * PRICE  # USDT that left the wallet for the entry


@pytest.fixture(scope="module")
def exchange(tmp_path_factory):
    with running_exchange(write_spot_market(tmp_path_factory.mktemp("spot-market"))) as ex:
        yield ex


@pytest.fixture
def venue(exchange):
    """10 000 USDT spot, no BTC, no faults, no liquidity cap, clock at CALM_BAR."""
    exchange.set_faults({})
    exchange.reset_account(spot={"USDT": 10_000})
    exchange.move_clock_to(bar_ms(CALM_BAR))
    yield exchange
    exchange.set_faults({})


@pytest.fixture
def make_trader(venue, tmp_path):
    made = []
    services = []

    def make(signal_bars: int = 400, **risk) -> LiveTrader:
        svc = FakeSignalService(buy_signals(signal_bars).assign(symbol=SPOT_SYMBOL)).__enter__()
        services.append(svc)
        labels = {"horizon_bars": 1} if "max_holding_bars" in risk else {}  # horizon <= max holding
        p = params(data={"symbols": [SPOT_SYMBOL]}, risk=risk, labels=labels)
        trader = LiveTrader(p, spot_client(venue), HttpSignalSource(svc.url, timeout_s=5),
                            tmp_path / "state.sqlite", "spot", sleep=time.sleep)
        made.append(trader)
        trader.start()
        return trader

    yield make
    for t in made:
        t.close()
    for svc in services:
        svc.__exit__(None, None, None)


def _btc(venue) -> float:
    return spot_client(venue).fetch_balance()["BTC"]["total"]


def _buys(venue) -> list[dict]:
    return [o for o in spot_client(venue).fetch_orders(SPOT_SYMBOL) if o["side"] == "buy"]


def _exit_fill(trader) -> pd.Series:
    fills = trader.store.read("fills")
    exits = fills[fills["purpose"] == "exit"]
    assert len(exits) == 1
    return exits.iloc[0]


def test_a_buy_opens_a_spot_position_guarded_by_one_oco_list(make_trader, venue):
    trader = make_trader()
    assert trader.poll() == pd.Timestamp(bar_ms(CALM_BAR - 1), unit="ms", tz="UTC")
    assert _btc(venue) == pytest.approx(BOUGHT * (1 - FEE))
    ((cid, qty, stop, limit),) = oco_lists(venue)
    assert (qty, stop, limit) == (pytest.approx(HELD), pytest.approx(PRICE * (1 - SL)), pytest.approx(PRICE * (1 + TP)))
    assert spot_client(venue).fetch_balance()["BTC"]["used"] == pytest.approx(HELD)  # the coins guard the sell
    (row,) = trader.store.conn.execute("SELECT status FROM exchange_orders WHERE client_id=?", (cid,)).fetchall()
    assert row[0] == "open"  # journalled under the list's client id
    assert trader.poll() is None
    assert len(_buys(venue)) == 1


def test_a_bar_touching_both_legs_fills_the_stop_and_the_ledger_matches_the_wallet(make_trader, venue):
    venue.move_clock_to(bar_ms(WIDE_NEXT))
    trader = make_trader(signal_bars=WIDE_NEXT)  # no fresh signal after the entry: nothing re-opens
    trader.poll()  # entered; the next bar trades -10 % and +10 %
    venue.advance(1)
    trader.poll()
    exit_ = _exit_fill(trader)
    assert (exit_["reason"], exit_["qty"], exit_["price"]) == ("stop_loss", pytest.approx(HELD),
                                                               pytest.approx(PRICE * (1 - SL)))
    assert exit_["pnl_usdt"] == pytest.approx(HELD * PRICE * (1 - SL) * (1 - FEE) - PAID, rel=1e-9)
    assert oco_lists(venue) == []
    assert trader.loop.portfolio.positions == {}
    wallet = spot_client(venue).fetch_balance()["USDT"]["total"]
    assert trader.loop.portfolio.cash_usdt == pytest.approx(wallet, abs=1e-6)


def test_a_cancelled_oco_is_re_placed_at_the_next_bar(make_trader, venue):
    trader = make_trader()
    trader.poll()
    spot_client(venue).private_delete_orderlist({"symbol": MARKET_ID, "listClientOrderId": oco_lists(venue)[0][0]})
    assert oco_lists(venue) == []
    venue.advance(1)
    trader.poll()
    ((_, qty, stop, limit),) = oco_lists(venue)
    assert (qty, stop, limit) == (pytest.approx(HELD), pytest.approx(PRICE * (1 - SL)), pytest.approx(PRICE * (1 + TP)))
    assert "PROTECTIVE_REPLACED" in trader.store.read("alerts")["kind"].tolist()
    assert len(_buys(venue)) == 1


def test_a_partial_entry_is_guarded_for_what_filled_and_a_grown_holding_gets_a_new_list(make_trader, venue):
    venue.reset_account(spot={"USDT": 10_000}, max_fill_qty_per_bar={MARKET_ID: "0.03"})
    trader = make_trader()
    trader.poll()  # 0.06666 asked, 0.03 filled (the rest of a market order expires)
    first = _floor(0.03 * (1 - FEE))
    ((cid, qty, _, _),) = oco_lists(venue)
    assert qty == pytest.approx(first)
    venue.set_liquidity({})
    spot_client(venue).create_order(SPOT_SYMBOL, "market", "buy", 0.01)  # the holding grows
    venue.advance(1)
    trader.poll()
    ((new_cid, qty, _, _),) = oco_lists(venue)
    assert new_cid != cid and qty == pytest.approx(_floor(0.03 * (1 - FEE) + 0.01 * (1 - FEE)))
    assert "PROTECTIVE_REPLACED" in trader.store.read("alerts")["kind"].tolist()


def test_an_exit_cancels_the_oco_first_then_sells_the_coins(make_trader, venue):
    trader = make_trader(signal_bars=CALM_BAR + 1, max_holding_bars=1)
    trader.poll()  # entered at 99
    venue.advance(1)
    trader.poll()  # held one bar: exit decided at 100, the list cancelled, the coins sold
    assert oco_lists(venue) == []
    sells = [o for o in spot_client(venue).fetch_orders(SPOT_SYMBOL) if o["side"] == "sell"]
    legs = [o for o in sells if o["info"]["orderListId"] != -1]
    assert sorted(leg["status"] for leg in legs) == ["canceled", "canceled"]  # the list, not a leg, sold nothing
    assert [o["filled"] for o in sells if o["info"]["orderListId"] == -1] == [pytest.approx(HELD)]
    venue.advance(1)
    trader.poll()
    exit_ = _exit_fill(trader)
    assert (exit_["reason"], exit_["qty"]) == ("max_holding", pytest.approx(HELD))
    assert exit_["pnl_usdt"] == pytest.approx(HELD * PRICE * (1 - FEE) - PAID, rel=1e-9)
    assert trader.loop.portfolio.positions == {}


def test_an_exit_that_fills_in_part_keeps_the_rest_guarded_and_sells_it_bar_by_bar(make_trader, venue):
    trader = make_trader(signal_bars=CALM_BAR + 1, max_holding_bars=1)
    trader.poll()  # entered in full
    venue.set_liquidity({MARKET_ID: "0.03"})  # from now on 0.03 BTC trade per bar
    venue.advance(1)
    trader.poll()  # exit: 0.03 sold, the rest guarded again
    left = round(HELD - 0.03, 5)
    assert [(q, s) for _, q, s, _ in oco_lists(venue)] == [(pytest.approx(left), pytest.approx(PRICE * (1 - SL)))]
    assert SPOT_SYMBOL in trader.loop.portfolio.positions  # still open: the exit is not done
    venue.advance(1)
    trader.poll()  # 0.03 more
    left = round(left - 0.03, 5)
    assert [q for _, q, _, _ in oco_lists(venue)] == [pytest.approx(left)]
    venue.advance(1)
    trader.poll()  # the rest
    assert oco_lists(venue) == []
    exit_ = _exit_fill(trader)  # one exit in the ledger, for everything sold
    assert (exit_["reason"], exit_["qty"], exit_["price"]) == ("max_holding", pytest.approx(HELD), pytest.approx(PRICE))
    assert exit_["pnl_usdt"] == pytest.approx(HELD * PRICE * (1 - FEE) - PAID, rel=1e-9)
    assert trader.loop.portfolio.positions == {}
    assert _btc(venue) * PRICE < 5  # dust only (below the exchange's minimum notional)
    wallet = spot_client(venue).fetch_balance()["USDT"]["total"]
    assert trader.loop.portfolio.cash_usdt == pytest.approx(wallet, abs=1e-6)


def test_a_stop_that_fills_in_part_is_finished_at_market_and_the_rest_stays_guarded(make_trader, venue):
    venue.move_clock_to(bar_ms(WIDE_NEXT))
    trader = make_trader(signal_bars=WIDE_NEXT)  # no fresh signal after the entry: nothing re-opens
    trader.poll()
    venue.set_liquidity({MARKET_ID: "0.03"})
    venue.advance(1)  # the wide bar: the stop leg sells 0.03 at 29 100, its remainder expires
    trader.poll()  # the bar's liquidity is used up: the market sell gets nothing, the rest is guarded again
    left = round(HELD - 0.03, 5)
    assert [q for _, q, _, _ in oco_lists(venue)] == [pytest.approx(left)]
    for _ in range(2):
        venue.advance(1)
        trader.poll()
    assert oco_lists(venue) == []
    exit_ = _exit_fill(trader)
    sold = 0.03 * PRICE * (1 - SL) + (HELD - 0.03) * PRICE
    assert (exit_["reason"], exit_["qty"]) == ("stop_loss", pytest.approx(HELD))
    assert exit_["pnl_usdt"] == pytest.approx(sold * (1 - FEE) - PAID, rel=1e-9)
    assert trader.loop.portfolio.positions == {}


def test_a_restart_adopts_the_open_oco_by_its_list_client_id_and_replaces_a_missing_one(make_trader, venue):
    make_trader().poll()
    ((cid, _, _, _),) = oco_lists(venue)
    second = make_trader()  # restart: the list is found and kept
    assert cid in second.reconciled.adopted_orders
    assert [x[0] for x in oco_lists(venue)] == [cid]
    assert second.loop.portfolio.positions[SPOT_SYMBOL].qty == pytest.approx(HELD)
    spot_client(venue).private_delete_orderlist({"symbol": MARKET_ID, "listClientOrderId": cid})
    third = make_trader()  # restart with the list gone: a new one for the holding
    assert third.reconciled.protectives_placed == {SPOT_SYMBOL: ["stop_loss", "take_profit"]}
    ((new_cid, qty, _, _),) = oco_lists(venue)
    assert new_cid != cid and qty == pytest.approx(HELD)
    assert len(_buys(venue)) == 1


@pytest.mark.parametrize("kind", ["drop_after", "503"])
def test_a_lost_answer_to_the_oco_request_leaves_exactly_one_list(make_trader, venue, kind):
    venue.set_faults({"rules": [{"kind": kind, "path_prefix": "/api/v3/orderList/oco", "method": "POST",
                                 "first_k": 1, "retry_after_s": 0}]})
    trader = make_trader()
    trader.poll()
    assert venue.fault_counts()[kind] == 1
    ((cid, qty, _, _),) = oco_lists(venue)
    assert qty == pytest.approx(HELD)
    (row,) = trader.store.conn.execute("SELECT status FROM exchange_orders WHERE purpose='oco'").fetchall()
    assert row[0] == "open"


def test_an_oco_that_fired_while_the_executor_was_down_is_recorded_at_restart(make_trader, venue):
    venue.move_clock_to(bar_ms(WIDE_NEXT))
    make_trader(signal_bars=WIDE_NEXT).poll()  # entered; then the executor goes away
    venue.advance(1)  # the wide bar fires the stop leg on the exchange
    restarted = make_trader(signal_bars=WIDE_NEXT)
    fills = restarted.store.read("fills")
    # the first run died before its loop recorded the entry fill: the restart records it, then the exit
    assert fills[["purpose", "reason"]].values.tolist() == [["entry", "signal_buy"], ["exit", "stop_loss"]]
    entry, fills = fills.iloc[0], fills.iloc[1:]
    assert entry["price"] == pytest.approx(PRICE)
    assert (fills["qty"].iloc[0], fills["price"].iloc[0]) == (pytest.approx(HELD), pytest.approx(PRICE * (1 - SL)))
    assert restarted.loop.portfolio.positions == {}
    assert oco_lists(venue) == []


def test_a_universe_mixing_spot_and_perpetuals_is_refused_in_one_line(venue, tmp_path):
    p = params(data={"symbols": [SPOT_SYMBOL, SYMBOL]})
    with pytest.raises(UserError, match="not both") as err:
        LiveTrader(p, spot_client(venue), HttpSignalSource("http://127.0.0.1:9"), tmp_path / "s.sqlite", "x")
    assert "\n" not in str(err.value)


def test_qt_execute_testnet_trades_a_spot_symbol_as_a_real_process(venue, tmp_path):
    log = tmp_path / "daemon.log"
    proc = None
    with FakeSignalService(buy_signals().assign(symbol=SPOT_SYMBOL)) as svc:
        try:
            proc = start_daemon(venue.url, svc.url, tmp_path / "home", log, symbols=SPOT_SYMBOL)
            deadline = time.monotonic() + 60
            while not oco_lists(venue) and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.2)
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        finally:
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
    text = log.read_text()
    ((_, qty, stop, limit),) = oco_lists(venue)
    assert (qty, stop, limit) == (pytest.approx(HELD), pytest.approx(PRICE * (1 - SL)),
                                  pytest.approx(PRICE * (1 + TP))), text
    assert len(_buys(venue)) == 1
    assert "Traceback" not in text and API_SECRET not in text


def test_emergency_exit_sells_the_coins_when_the_oco_is_cancelled_during_a_fall_through_its_stop(make_trader,
                                                                                                  venue):
    venue.move_clock_to(bar_ms(GAP_BAR - 1))
    trader = make_trader(signal_bars=GAP_BAR - 1)  # no buy after the entry: an exit is not re-entered
    trader.poll()  # buys at 30 000, guarded by a list with its stop at 29 100
    spot_client(venue).private_delete_orderlist({"symbol": MARKET_ID, "listClientOrderId": oco_lists(venue)[0][0]})
    venue.advance(1)  # GAP_BAR: 28 500, below where the stop was; nothing fires on the exchange
    trader.poll()  # a new list is impossible (its stop would trigger at once): the coins are sold at market
    assert oco_lists(venue) == []
    sells = [o for o in spot_client(venue).fetch_orders(SPOT_SYMBOL)
             if o["side"] == "sell" and int(o["info"].get("orderListId", -1)) == -1]  # not a list's leg
    assert [(o["type"], o["status"], o["amount"]) for o in sells] == [("market", "closed", pytest.approx(HELD))]
    exit_ = _exit_fill(trader)
    assert (exit_["reason"], exit_["price"]) == ("emergency_exit", pytest.approx(PRICE * 0.95))
    assert "EMERGENCY_EXIT" in trader.store.read("decisions")["reason"].tolist()
    assert "EMERGENCY_EXIT" in trader.store.read("alerts")["kind"].tolist()
    assert _btc(venue) == pytest.approx(0.0, abs=1e-5)  # the coins left are below one lot step
