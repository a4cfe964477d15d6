"""The live perps broker on Bybit USDT perpetuals: the same broker code as on Binance, through the real
ccxt ``bybit`` client (``qt.venues.make_client``) against the local exchange's v5 API over HTTP.
Reduce-only stop and take-profit conditional orders rest on the exchange, a triggered stop is booked
as the exit (live, or adopted at restart), a cancelled one is re-placed, a restart keeps the guards,
and what Bybit does not offer here is refused at start-up in one line.

Expected prices come from the hand-made candles in ``support`` and the risk parameters.
"""

from __future__ import annotations

import pandas as pd
import pytest

from dashboard.state_reader import read_run
from executor.live.trader import LiveTrader
from executor.signals import HttpSignalSource
from qt.errors import UserError
from tests.executor.exec_support import params
from tests.executor.live.bybit_support import (BYBIT_RISK, CALM_BAR, PRICE, SL, expected_qty, guarded,  # noqa: F401
                                               journal_rows, exchange, make_trader, signals, venue)
from tests.executor.live.support import (SYMBOL, WIDE_BARS, bar_ms, bybit_client, bybit_entry_orders,
                                         bybit_position_qty, bybit_protectives, reset_bybit)

pytestmark = pytest.mark.slow

WIDE_NEXT = WIDE_BARS[0] - 1  # start here when the bar after the entry must touch both levels


def test_bybit_entry_is_guarded_by_reduce_only_stop_and_take_profit_resting_on_the_exchange(make_trader, venue):
    trader = make_trader()
    assert trader.poll() == pd.Timestamp(bar_ms(CALM_BAR - 1), unit="ms", tz="UTC")
    qty = expected_qty()
    assert bybit_position_qty(venue) == pytest.approx(qty)
    assert bybit_protectives(venue) == guarded(qty)
    (entry,) = journal_rows(trader, "entry")
    (on_exchange,) = bybit_entry_orders(venue)
    assert (entry[0], entry[1], entry[2]) == (on_exchange["clientOrderId"], on_exchange["id"], "filled")
    assert trader.poll() is None
    assert len(bybit_entry_orders(venue)) == 1
    venue_row = trader.store.conn.execute("SELECT venue, market FROM live_runs WHERE run_id=?",
                                          (trader.run_id,)).fetchall()
    assert venue_row == [("bybit", "perp")]
    assert read_run(trader.store.path, trader.run_id).venue == "bybit"  # what the dashboard shows


def test_bybit_a_bar_touching_both_levels_fills_the_stop_booked_as_the_exit(make_trader, venue):
    venue.move_clock_to(bar_ms(WIDE_NEXT))
    trader = make_trader()
    trader.poll()
    (stop, take) = (journal_rows(trader, "stop_loss")[0], journal_rows(trader, "take_profit")[0])
    venue.advance(1)
    trader.poll()
    fills = trader.store.read("fills")
    (exit_,) = fills[fills["purpose"] == "exit"].to_dict("records")
    qty = expected_qty()
    assert (exit_["reason"], exit_["side"], exit_["order_id"]) == ("stop_loss", "sell", -1)
    assert exit_["qty"] == pytest.approx(qty) and exit_["price"] == pytest.approx(PRICE * (1 - SL))
    fee_rate = 0.0005
    assert exit_["pnl_usdt"] == pytest.approx(qty * PRICE * (1 - SL) * (1 - fee_rate) - qty * PRICE * (1 + fee_rate))
    c = bybit_client(venue)
    assert c.fetch_order(stop[1], SYMBOL, {"orderFilter": "StopOrder", "acknowledged": True})["status"] == "closed"
    assert c.fetch_order(take[1], SYMBOL, {"orderFilter": "StopOrder", "acknowledged": True})["status"] == "canceled"
    assert journal_rows(trader, "stop_loss")[0][2] == "triggered"
    # the bar's buy signal re-enters: the new position is the only one, guarded for its own quantity
    held = bybit_position_qty(venue)
    assert [r[2] for r in journal_rows(trader, "entry")] == ["filled", "filled"]
    assert [r[1] for r in bybit_protectives(venue)] == [pytest.approx(held)] * 2


def test_bybit_a_cancelled_protective_is_re_placed_at_the_next_bar(make_trader, venue):
    trader = make_trader()
    trader.poll()
    c = bybit_client(venue)
    stop = next(o for o in c.fetch_open_orders(SYMBOL, params={"orderFilter": "StopOrder"})
                if o["info"]["stopOrderType"] == "StopLoss")
    c.cancel_order(stop["id"], SYMBOL)  # behind the executor's back
    assert [r[0] for r in bybit_protectives(venue)] == ["TakeProfit"]
    venue.advance(1)
    trader.poll()
    assert bybit_protectives(venue) == guarded(expected_qty())
    assert "PROTECTIVE_REPLACED" in trader.store.read("alerts")["kind"].tolist()
    assert len(bybit_entry_orders(venue)) == 1


def test_bybit_a_stop_that_fired_while_the_executor_was_down_is_recorded_at_restart(make_trader, venue):
    venue.move_clock_to(bar_ms(WIDE_NEXT))
    make_trader().poll()
    venue.advance(1)  # the wide bar fires the stop on the exchange
    restarted = make_trader()
    fills = restarted.store.read("fills")
    assert fills[["purpose", "reason"]].values.tolist() == [["entry", "signal_buy"], ["exit", "stop_loss"]]
    assert fills["price"].iloc[1] == pytest.approx(PRICE * (1 - SL))
    assert fills["qty"].iloc[1] == pytest.approx(expected_qty())
    assert restarted.loop.portfolio.positions == {}
    assert bybit_protectives(venue) == []  # the orphaned take-profit is cancelled


def test_bybit_restart_keeps_the_guards_on_the_exchange_and_sends_nothing_twice(make_trader, venue):
    first = make_trader()
    first.poll()
    before = sorted(o["id"] for o in bybit_client(venue).fetch_open_orders(SYMBOL, params={"orderFilter": "StopOrder"}))
    second = make_trader()
    assert second.reconciled.positions == {SYMBOL: pytest.approx(expected_qty())}
    assert second.reconciled.protectives_placed == {}
    after = sorted(o["id"] for o in bybit_client(venue).fetch_open_orders(SYMBOL, params={"orderFilter": "StopOrder"}))
    assert after == before
    venue.advance(1)
    second.poll()
    assert len(bybit_entry_orders(venue)) == 1 and bybit_protectives(venue) == guarded(expected_qty())


def test_bybit_native_trailing_stop_is_refused_at_start_up_in_one_line(venue, signals, tmp_path):
    p = params(data={"symbols": [SYMBOL]}, risk={**BYBIT_RISK, "trailing_stop_pct": 0.02})
    with pytest.raises(UserError, match="trailing_mode: managed") as err:
        LiveTrader(p, bybit_client(venue), HttpSignalSource(signals.url), tmp_path / "s.sqlite", "x")
    assert "\n" not in str(err.value)


def test_bybit_an_isolated_margin_mode_wanted_on_a_cross_account_refuses_entries(make_trader, venue):
    trader = make_trader(margin_mode="isolated")
    trader.poll()
    assert bybit_position_qty(venue) == 0 and bybit_entry_orders(venue) == []
    alerts = trader.store.read("alerts")
    (message,) = alerts[alerts["kind"] == "LEVERAGE_UNVERIFIED"]["message"].unique().tolist()
    assert "margin mode wanted isolated, exchange reports cross" in message and "account-wide" in message


def test_bybit_insufficient_balance_is_recorded_as_a_rejection_with_the_exchanges_reason(make_trader, venue):
    trader = make_trader()
    reset_bybit(venue, futures_usdt=20)  # the wallet shrinks after start-up; the ledger still says 10 000
    trader.poll()
    decisions = trader.store.read("decisions")
    rejected = decisions[decisions["outcome"] == "rejected"]
    assert rejected["reason"].tolist() == ["INSUFFICIENT_FUNDS"]
    message = rejected["details"].iloc[0]
    assert "retCode" in message and "Traceback" not in message and "\\n" not in message
    assert bybit_entry_orders(venue) == [] and trader.loop.portfolio.reserved_usdt == {}
