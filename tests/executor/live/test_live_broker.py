"""The live perps broker against the real local exchange through real ccxt, on Binance USDT-M and on
Bybit USDT perpetuals (the same broker code; ``venues`` says how each venue reads back its orders):
reduce-only protective orders on the exchange, the stop first when a bar touches both, re-placed
protectives, a stop that fired while the executor was down, refusals recorded with their reason. What
one venue alone has (Binance's partial fills, min notional and resting orphans; Bybit's refused native
trailing stop and its account-wide cross margin) is tested on that venue. Faults: ``test_live_faults.py``.

Expected prices come from the hand-made candles in ``support`` and the risk parameters, never from the
code under test.
"""

from __future__ import annotations

import pandas as pd
import pytest

from dashboard.state_reader import read_run
from executor.live.trader import LiveTrader
from executor.signals import HttpSignalSource
from qt.errors import UserError
from tests.executor.exec_support import FakeSignalService, params
from tests.executor.live import support, venues
from tests.executor.live.support import MARKET_ID, PRICE, SYMBOL, WIDE_BARS, bar_ms
from tests.executor.live.venues import BINANCE, BYBIT, expected_qty, journal_rows, only

pytestmark = pytest.mark.slow

CALM_BAR = 100  # the clock starts at this bar's open (bar 99 just closed); bars 99..150 are calm
WIDE_NEXT = WIDE_BARS[0] - 1  # start here when the bar after the entry must touch both levels
SL, TP = 0.03, 0.06  # the default risk.stop_loss_pct / take_profit_pct
STOP, TAKE = PRICE * (1 - SL), PRICE * (1 + TP)  # a long's guards entered at 30 000

adapter, exchange, venue, make_trader = venues.venue_fixtures(clock_bar=CALM_BAR)


def test_buy_signal_opens_a_position_guarded_by_stop_and_take_profit_on_the_exchange(make_trader, venue, adapter):
    trader = make_trader()
    assert trader.poll() == pd.Timestamp(bar_ms(CALM_BAR - 1), unit="ms", tz="UTC")
    qty = expected_qty()
    assert adapter.position_qty(venue) == pytest.approx(qty)
    assert adapter.protectives(venue) == adapter.guarded(qty, STOP, TAKE)
    (entry,) = journal_rows(trader, "entry")
    (on_exchange,) = adapter.entries(venue)
    assert (entry[0], entry[1], entry[2]) == (on_exchange["clientOrderId"], on_exchange["id"], "filled")
    assert trader.poll() is None  # the same bar is never stepped twice
    assert len(adapter.entries(venue)) == 1
    venue_row = trader.store.conn.execute("SELECT venue, market FROM live_runs WHERE run_id=?",
                                          (trader.run_id,)).fetchall()
    assert venue_row == [(adapter.ccxt_id, "perp")]
    assert read_run(trader.store.path, trader.run_id).venue == adapter.ccxt_id  # what the dashboard shows


def test_a_bar_touching_both_levels_fills_the_stop_and_the_state_records_the_exit(make_trader, venue, adapter):
    venue.move_clock_to(bar_ms(WIDE_NEXT))
    trader = make_trader()
    trader.poll()  # enters at bar WIDE_NEXT; the bar after it trades -10 % and +10 %
    (stop, take) = (journal_rows(trader, "stop_loss")[0], journal_rows(trader, "take_profit")[0])
    venue.advance(1)
    trader.poll()
    fills = trader.store.read("fills")
    (exit_,) = fills[fills["purpose"] == "exit"].to_dict("records")
    qty = expected_qty()
    assert (exit_["reason"], exit_["side"], exit_["order_id"]) == ("stop_loss", "sell", -1)
    assert exit_["qty"] == pytest.approx(qty)
    assert exit_["price"] == pytest.approx(STOP)
    fee_rate = 0.0005  # the exchange's USDT-M taker rate
    expected_pnl = qty * PRICE * (1 - SL) * (1 - fee_rate) - qty * PRICE * (1 + fee_rate)
    assert exit_["pnl_usdt"] == pytest.approx(expected_pnl, rel=1e-9)
    assert adapter.fetch_protective(venue, stop[1])["status"] == "closed"
    take_status = adapter.fetch_protective(venue, take[1])["status"]
    assert (take_status == "canceled") if adapter is BYBIT else (take_status in ("canceled", "expired"))
    assert journal_rows(trader, "stop_loss")[0][2] == "triggered"
    # the bar's buy signal re-enters: the new position is the only one, guarded for its own quantity
    held = adapter.position_qty(venue)
    assert [r[2] for r in journal_rows(trader, "entry")] == ["filled", "filled"]
    assert [r[1] for r in adapter.protectives(venue)] == [pytest.approx(held)] * 2


def test_a_cancelled_protective_order_is_re_placed_at_the_next_bar(make_trader, venue, adapter):
    trader = make_trader()
    trader.poll()
    adapter.cancel_protective(venue, adapter.protective_id(venue, adapter.stop))  # behind the executor's back
    assert [r[0] for r in adapter.protectives(venue)] == [adapter.take]
    venue.advance(1)
    trader.poll()
    assert adapter.protectives(venue) == adapter.guarded(expected_qty(), STOP, TAKE)
    alerts = trader.store.read("alerts")
    assert "PROTECTIVE_REPLACED" in alerts["kind"].tolist()
    assert len(adapter.entries(venue)) == 1  # still one position, not a second entry


@only(BINANCE)
def test_a_partial_fill_is_protected_for_the_filled_quantity(make_trader, venue, adapter):
    venue.reset_account(max_fill_qty_per_bar={MARKET_ID: "0.02"})  # liquidity: 0.02 BTC per bar
    trader = make_trader()
    trader.poll()
    assert adapter.position_qty(venue) == pytest.approx(0.02)
    assert adapter.protectives(venue) == [
        ("STOP_MARKET", pytest.approx(0.02), pytest.approx(PRICE * (1 - SL)), True),
        ("TAKE_PROFIT_MARKET", pytest.approx(0.02), pytest.approx(PRICE * (1 + TP)), True)]
    venue.advance(1)
    trader.poll()  # the ledger books what filled, not what was asked
    fills = trader.store.read("fills")
    assert fills["qty"].tolist() == [pytest.approx(0.02)]
    assert trader.loop.portfolio.positions[SYMBOL].qty == pytest.approx(0.02)


@only(BINANCE)
def test_below_the_exchange_min_notional_nothing_is_sent_and_the_reason_is_recorded(make_trader, venue, adapter):
    # 0.0004 x 10 000 = 4 USDT: above our own floor (0) but below the exchange's 5 USDT (from ccxt markets)
    trader = make_trader(position_fraction=0.0004, min_notional_usdt=0.0)
    trader.poll()
    decisions = trader.store.read("decisions")
    (row,) = decisions[decisions["outcome"] == "denied"][["reason", "details"]].values.tolist()
    assert row[0] == "MIN_NOTIONAL" and '"limit": 5.0' in row[1]
    assert venue.account_state()["orders"] == 0


def test_insufficient_margin_is_recorded_as_a_rejection_with_the_exchanges_reason(make_trader, venue, adapter):
    trader = make_trader()
    adapter.reset(venue, futures_usdt=20)  # the wallet shrinks after start-up; the ledger still says 10 000
    trader.poll()
    decisions = trader.store.read("decisions")
    rejected = decisions[decisions["outcome"] == "rejected"]
    assert rejected["reason"].tolist() == ["INSUFFICIENT_FUNDS"]
    message = rejected["details"].iloc[0]
    assert adapter.funds_error in message and "Traceback" not in message and "\\n" not in message
    assert adapter.order_count(venue) == 0 and adapter.entries(venue) == []
    assert trader.loop.portfolio.reserved_usdt == {}  # the reservation is released
    assert trader.store.read("orders")["status"].tolist() == ["cancelled"]


def test_a_stop_that_fired_while_the_executor_was_down_is_recorded_at_restart(make_trader, venue, adapter):
    venue.move_clock_to(bar_ms(WIDE_NEXT))
    make_trader().poll()  # entered; then the executor goes away
    venue.advance(1)  # the wide bar fires the stop on the exchange
    restarted = make_trader()
    fills = restarted.store.read("fills")
    # the first run died before its loop recorded the entry fill: the restart records it, then the exit
    assert fills[["purpose", "reason"]].values.tolist() == [["entry", "signal_buy"], ["exit", "stop_loss"]]
    entry, fills = fills.iloc[0], fills.iloc[1:]
    assert entry["price"] == pytest.approx(PRICE)
    assert fills["price"].iloc[0] == pytest.approx(STOP)
    assert fills["qty"].iloc[0] == pytest.approx(expected_qty())
    assert restarted.loop.portfolio.positions == {}
    assert adapter.protectives(venue) == []  # the orphaned take-profit is cancelled, it guards nothing


def test_restart_keeps_the_guards_on_the_exchange_and_sends_nothing_twice(make_trader, venue, adapter):
    first = make_trader()
    first.poll()
    before = sorted(o["id"] for o in adapter.protective_orders(venue))
    second = make_trader()
    assert second.reconciled.positions == {SYMBOL: pytest.approx(expected_qty())}
    assert second.reconciled.protectives_placed == {}
    assert sorted(o["id"] for o in adapter.protective_orders(venue)) == before
    venue.advance(1)
    second.poll()
    assert len(adapter.entries(venue)) == 1
    assert adapter.protectives(venue) == adapter.guarded(expected_qty(), STOP, TAKE)


@only(BINANCE)
def test_start_up_cancels_resting_entry_orders_and_guards_an_unguarded_position(venue, make_trader, adapter):
    c = adapter.client(venue)
    resting = c.create_order(SYMBOL, "limit", "buy", 0.01, PRICE * 0.9)  # not ours to keep
    c.create_order(SYMBOL, "market", "buy", 0.02)  # a position nobody guards
    trader = make_trader()
    assert c.fetch_order(resting["id"], SYMBOL)["status"] == "canceled"
    assert resting["id"] in trader.reconciled.cancelled_orphans
    assert adapter.protectives(venue) == [
        ("STOP_MARKET", pytest.approx(0.02), pytest.approx(PRICE * (1 - SL)), True),
        ("TAKE_PROFIT_MARKET", pytest.approx(0.02), pytest.approx(PRICE * (1 + TP)), True)]
    assert trader.loop.portfolio.positions[SYMBOL].qty == pytest.approx(0.02)


@only(BINANCE)
def test_a_stale_signal_opens_nothing_and_raises_an_alert(venue, adapter, tmp_path):
    stale = support.buy_signals(n_bars=CALM_BAR - 10)  # the service stopped updating 10 bars ago
    with FakeSignalService(stale) as svc:
        trader = LiveTrader(params(data={"symbols": [SYMBOL]}), adapter.client(venue), HttpSignalSource(svc.url),
                            tmp_path / "state.sqlite", "test")
        try:
            trader.start()
            trader.poll()
            decisions, alerts = trader.store.read("decisions"), trader.store.read("alerts")
        finally:
            trader.close()
    assert decisions[["outcome", "reason"]].values.tolist() == [["denied", "STALE_SIGNAL"]]
    assert "STALE_SIGNAL" in alerts["kind"].tolist()
    assert venue.account_state()["orders"] == 0


@only(BINANCE)
def test_spot_symbols_are_refused_for_live_trading_in_one_line(venue, adapter, tmp_path):
    p = params(data={"symbols": ["BTC/USDT"]})
    with FakeSignalService(support.buy_signals()) as svc, pytest.raises(UserError, match="USDT-M perpetuals") as err:
        LiveTrader(p, adapter.client(venue), HttpSignalSource(svc.url), tmp_path / "s.sqlite", "test")
    assert "\n" not in str(err.value)


@only(BYBIT)
def test_native_trailing_stop_is_refused_at_start_up_in_one_line(venue, adapter, tmp_path):
    p = params(data={"symbols": [SYMBOL]}, risk={**adapter.risk, "trailing_stop_pct": 0.02})
    with (FakeSignalService(support.buy_signals()) as svc,
          pytest.raises(UserError, match="trailing_mode: managed") as err):
        LiveTrader(p, adapter.client(venue), HttpSignalSource(svc.url), tmp_path / "s.sqlite", "x")
    assert "\n" not in str(err.value)


@only(BYBIT)
def test_an_isolated_margin_mode_wanted_on_a_cross_account_refuses_entries(make_trader, venue, adapter):
    trader = make_trader(margin_mode="isolated")
    trader.poll()
    assert adapter.position_qty(venue) == 0 and adapter.entries(venue) == []
    alerts = trader.store.read("alerts")
    (message,) = alerts[alerts["kind"] == "LEVERAGE_UNVERIFIED"]["message"].unique().tolist()
    assert "margin mode wanted isolated, exchange reports cross" in message and "account-wide" in message
