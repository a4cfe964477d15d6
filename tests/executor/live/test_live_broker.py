"""The live executor against the real local exchange through real ccxt: protective orders on the
exchange, the stop first when a bar touches both, re-placed protectives, partial fills, refusals
recorded with their reason, retries without duplicates.

Expected prices come from the hand-made candles in ``live_support`` and the risk parameters,
never from the code under test.
"""

from __future__ import annotations

import time

import pandas as pd
import pytest

from executor.signals import HttpSignalSource
from executor.live.trader import LiveTrader
from qt.errors import UserError
from tests.executor.exec_support import FakeSignalService, params
from tests.executor.live.support import (MARKET_ID, PRICE, SYMBOL, WIDE_BARS, bar_ms, buy_signals, client,
                                         write_market)
from tests.executor.live.support import running_exchange

pytestmark = pytest.mark.slow

CALM_BAR = 100  # the clock starts at this bar's open (bar 99 just closed); bars 99..150 are calm
WIDE_NEXT = WIDE_BARS[0] - 1  # start here when the bar after the entry must touch both levels
SL, TP = 0.03, 0.06  # the default risk.stop_loss_pct / take_profit_pct


@pytest.fixture(scope="module")
def exchange(tmp_path_factory):
    with running_exchange(write_market(tmp_path_factory.mktemp("live-market"))) as ex:
        yield ex


@pytest.fixture
def venue(exchange):
    """A fresh default account (10 000 USDT futures wallet), no faults, clock at CALM_BAR."""
    exchange.set_faults({})
    exchange.reset_account()
    exchange.move_clock_to(bar_ms(CALM_BAR))
    yield exchange
    exchange.set_faults({})


@pytest.fixture
def signals():
    with FakeSignalService(buy_signals()) as svc:
        yield svc


@pytest.fixture
def make_trader(venue, signals, tmp_path):
    made = []

    def make(timeout_ms: int = 10_000, **risk) -> LiveTrader:
        p = params(data={"symbols": [SYMBOL]}, risk=risk)
        trader = LiveTrader(p, client(venue, timeout_ms), HttpSignalSource(signals.url, timeout_s=5),
                            tmp_path / "state.sqlite", "test", sleep=time.sleep)
        made.append(trader)
        trader.start()
        return trader

    yield make
    for t in made:
        t.close()


def _protectives(venue):
    c = client(venue)
    return sorted(((o["info"]["orderType"], o["amount"], o["triggerPrice"], o["reduceOnly"])
                   for o in c.fetch_open_orders(SYMBOL, params={"trigger": True})), key=lambda r: r[2])


def _position_qty(venue) -> float:
    return sum(p["contracts"] for p in client(venue).fetch_positions([SYMBOL]))


def _entry_orders(venue) -> list[dict]:
    return [o for o in client(venue).fetch_orders(SYMBOL) if not o["reduceOnly"]]


def _expected_qty(notional: float = 2_000.0) -> float:
    """0.2 x 10 000 USDT at 30 000, floored to the 0.00001 step the exchange derives for 30 000."""
    return int(notional / PRICE * 100_000) / 100_000


def _journal(trader, purpose: str) -> list[tuple]:
    return trader.store.conn.execute("SELECT client_id, exchange_id, status, qty FROM exchange_orders "
                                     "WHERE purpose=? ORDER BY rowid", (purpose,)).fetchall()


def test_buy_signal_opens_a_position_guarded_by_stop_and_take_profit_on_the_exchange(make_trader, venue):
    trader = make_trader()
    assert trader.poll() == pd.Timestamp(bar_ms(CALM_BAR - 1), unit="ms", tz="UTC")
    qty = _expected_qty()
    assert _position_qty(venue) == pytest.approx(qty)
    assert _protectives(venue) == [("STOP_MARKET", pytest.approx(qty), pytest.approx(PRICE * (1 - SL)), True),
                                   ("TAKE_PROFIT_MARKET", pytest.approx(qty), pytest.approx(PRICE * (1 + TP)), True)]
    (entry,) = _journal(trader, "entry")
    (on_exchange,) = _entry_orders(venue)
    assert (entry[0], entry[1], entry[2]) == (on_exchange["clientOrderId"], on_exchange["id"], "filled")
    assert trader.poll() is None  # the same bar is never stepped twice
    assert len(_entry_orders(venue)) == 1


def test_a_bar_touching_both_levels_fills_the_stop_and_the_state_records_the_exit(make_trader, venue):
    venue.move_clock_to(bar_ms(WIDE_NEXT))
    trader = make_trader()
    trader.poll()  # enters at bar WIDE_NEXT; the bar after it trades -10 % and +10 %
    (stop, take) = (_journal(trader, "stop_loss")[0], _journal(trader, "take_profit")[0])
    venue.advance(1)
    trader.poll()
    fills = trader.store.read("fills")
    exit_ = fills[fills["purpose"] == "exit"]
    assert len(exit_) == 1
    exit_ = exit_.iloc[0]
    qty = _expected_qty()
    assert (exit_["reason"], exit_["side"], exit_["order_id"]) == ("stop_loss", "sell", -1)
    assert exit_["qty"] == pytest.approx(qty)
    assert exit_["price"] == pytest.approx(PRICE * (1 - SL))
    fee_rate = 0.0005  # the exchange's USDT-M taker rate
    expected_pnl = qty * PRICE * (1 - SL) * (1 - fee_rate) - qty * PRICE * (1 + fee_rate)
    assert exit_["pnl_usdt"] == pytest.approx(expected_pnl, rel=1e-9)
    c = client(venue)
    assert c.fetch_order(stop[1], SYMBOL, {"trigger": True})["status"] == "closed"
    assert c.fetch_order(take[1], SYMBOL, {"trigger": True})["status"] in ("canceled", "expired")
    assert _journal(trader, "stop_loss")[0][2] == "triggered"


def test_a_cancelled_protective_order_is_re_placed_at_the_next_bar(make_trader, venue):
    trader = make_trader()
    trader.poll()
    c = client(venue)
    stop = next(o for o in c.fetch_open_orders(SYMBOL, params={"trigger": True})
                if o["info"]["orderType"] == "STOP_MARKET")
    c.cancel_order(stop["id"], SYMBOL, {"trigger": True})  # removed behind the executor's back
    assert [r[0] for r in _protectives(venue)] == ["TAKE_PROFIT_MARKET"]
    venue.advance(1)
    trader.poll()
    qty = _expected_qty()
    assert _protectives(venue) == [("STOP_MARKET", pytest.approx(qty), pytest.approx(PRICE * (1 - SL)), True),
                                   ("TAKE_PROFIT_MARKET", pytest.approx(qty), pytest.approx(PRICE * (1 + TP)), True)]
    alerts = trader.store.read("alerts")
    assert "PROTECTIVE_REPLACED" in alerts["kind"].tolist()
    assert len(_entry_orders(venue)) == 1  # still one position, not a second entry


def test_a_partial_fill_is_protected_for_the_filled_quantity(make_trader, venue):
    venue.reset_account(max_fill_qty_per_bar={MARKET_ID: "0.02"})  # liquidity: 0.02 BTC per bar
    trader = make_trader()
    trader.poll()
    assert _position_qty(venue) == pytest.approx(0.02)
    assert _protectives(venue) == [("STOP_MARKET", pytest.approx(0.02), pytest.approx(PRICE * (1 - SL)), True),
                                   ("TAKE_PROFIT_MARKET", pytest.approx(0.02), pytest.approx(PRICE * (1 + TP)), True)]
    venue.advance(1)
    trader.poll()  # the ledger books what filled, not what was asked
    fills = trader.store.read("fills")
    assert fills["qty"].tolist() == [pytest.approx(0.02)]
    assert trader.loop.portfolio.positions[SYMBOL].qty == pytest.approx(0.02)


def test_below_the_exchange_min_notional_nothing_is_sent_and_the_reason_is_recorded(make_trader, venue):
    # 0.0004 x 10 000 = 4 USDT: above our own floor (0) but below the exchange's 5 USDT (from ccxt markets)
    trader = make_trader(position_fraction=0.0004, min_notional_usdt=0.0)
    trader.poll()
    decisions = trader.store.read("decisions")
    (row,) = decisions[decisions["outcome"] == "denied"][["reason", "details"]].values.tolist()
    assert row[0] == "MIN_NOTIONAL" and '"limit": 5.0' in row[1]
    assert venue.account_state()["orders"] == 0


def test_insufficient_margin_is_recorded_as_a_rejection_with_the_exchanges_reason(make_trader, venue):
    trader = make_trader()
    venue.reset_account(futures_usdt=20)  # the wallet shrinks after start-up; the ledger still says 10 000
    trader.poll()
    decisions = trader.store.read("decisions")
    rejected = decisions[decisions["outcome"] == "rejected"]
    assert rejected["reason"].tolist() == ["INSUFFICIENT_FUNDS"]
    message = rejected["details"].iloc[0]
    assert "Margin is insufficient" in message and "Traceback" not in message and "\\n" not in message
    assert venue.account_state()["orders"] == 0
    assert trader.loop.portfolio.reserved_usdt == {}  # the reservation is released
    assert trader.store.read("orders")["status"].tolist() == ["cancelled"]


@pytest.mark.parametrize("kind", ["429", "503", "500"])
def test_throttled_or_failing_order_route_is_retried_and_places_exactly_one_order(make_trader, venue, kind):
    venue.set_faults({"rules": [{"kind": kind, "path_prefix": "/fapi/v1/order", "method": "POST", "first_k": 2,
                                 "retry_after_s": 0}]})
    trader = make_trader()
    trader.poll()
    assert venue.fault_counts()[kind] == 2
    assert trader.broker.retries >= 2
    assert len(_entry_orders(venue)) == 1
    assert _position_qty(venue) == pytest.approx(_expected_qty())


def test_a_timed_out_order_is_looked_up_after_its_recv_window_instead_of_sent_again(make_trader, venue):
    # the server answers after 1.5 s, the client gives up after 0.5 s; the request is still executed
    venue.set_faults({"rules": [{"kind": "timeout", "path_prefix": "/fapi/v1/order", "method": "POST",
                                 "first_k": 1, "timeout_s": 1.5}]})
    trader = make_trader(timeout_ms=500)
    trader.ex.options["recvWindow"] = 2_000
    trader.poll()
    assert venue.fault_counts()["timeout"] == 1
    assert len(_entry_orders(venue)) == 1
    assert _position_qty(venue) == pytest.approx(_expected_qty())
    assert len(_protectives(venue)) == 2


def test_a_connection_dropped_after_acceptance_leaves_exactly_one_order(make_trader, venue):
    venue.set_faults({"rules": [{"kind": "drop_after", "path_prefix": "/fapi/v1/order", "method": "POST",
                                 "first_k": 1}]})
    trader = make_trader()
    trader.poll()
    assert venue.fault_counts()["drop_after"] == 1
    (entry,) = _entry_orders(venue)
    assert entry["clientOrderId"] == _journal(trader, "entry")[0][0]
    assert _position_qty(venue) == pytest.approx(_expected_qty())
    assert len(_protectives(venue)) == 2


def test_a_bar_stepped_again_after_a_crash_never_sends_its_entry_twice(make_trader, venue):
    first = make_trader()
    first.poll()  # bar 99: entry filled and guarded
    c = client(venue)  # while the executor is down the position is closed by hand...
    for o in c.fetch_open_orders(SYMBOL, params={"trigger": True}):
        c.cancel_order(o["id"], SYMBOL, {"trigger": True})
    c.create_order(SYMBOL, "market", "sell", _position_qty(venue), None, {"reduceOnly": True})
    first.store.conn.execute("DELETE FROM live_progress")  # ...and bar 99 never got committed as done
    first.store.conn.commit()
    second = make_trader()  # restart: flat, bar 99 is decided again with the same client order id
    assert second.poll() == pd.Timestamp(bar_ms(CALM_BAR - 1), unit="ms", tz="UTC")
    assert len(_entry_orders(venue)) == 1
    decisions = second.store.read("decisions")
    assert decisions["reason"].tolist() == ["signal_buy", "ALREADY_SENT"]


def test_a_stop_that_fired_while_the_executor_was_down_is_recorded_at_restart(make_trader, venue):
    venue.move_clock_to(bar_ms(WIDE_NEXT))
    make_trader().poll()  # entered; then the executor goes away
    venue.advance(1)  # the wide bar fires the stop on the exchange
    restarted = make_trader()
    fills = restarted.store.read("fills")
    # the first run died before its loop recorded the entry fill: the restart records it, then the exit
    assert fills[["purpose", "reason"]].values.tolist() == [["entry", "signal_buy"], ["exit", "stop_loss"]]
    entry, fills = fills.iloc[0], fills.iloc[1:]
    assert entry["price"] == pytest.approx(PRICE)
    assert fills["price"].iloc[0] == pytest.approx(PRICE * (1 - SL))
    assert fills["qty"].iloc[0] == pytest.approx(_expected_qty())
    assert restarted.loop.portfolio.positions == {}
    assert _protectives(venue) == []  # the orphaned take-profit is cancelled, it guards nothing


def test_start_up_cancels_resting_entry_orders_and_guards_an_unguarded_position(venue, make_trader):
    c = client(venue)
    resting = c.create_order(SYMBOL, "limit", "buy", 0.01, PRICE * 0.9)  # not ours to keep
    c.create_order(SYMBOL, "market", "buy", 0.02)  # a position nobody guards
    trader = make_trader()
    assert c.fetch_order(resting["id"], SYMBOL)["status"] == "canceled"
    assert resting["id"] in trader.reconciled.cancelled_orphans
    assert _protectives(venue) == [("STOP_MARKET", pytest.approx(0.02), pytest.approx(PRICE * (1 - SL)), True),
                                   ("TAKE_PROFIT_MARKET", pytest.approx(0.02), pytest.approx(PRICE * (1 + TP)), True)]
    assert trader.loop.portfolio.positions[SYMBOL].qty == pytest.approx(0.02)


def test_a_stale_signal_opens_nothing_and_raises_an_alert(venue, tmp_path):
    with FakeSignalService(buy_signals(n_bars=CALM_BAR - 10)) as svc:  # the service stopped updating 10 bars ago
        trader = LiveTrader(params(data={"symbols": [SYMBOL]}), client(venue), HttpSignalSource(svc.url),
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


def test_spot_symbols_are_refused_for_live_trading_in_one_line(venue, signals, tmp_path):
    p = params(data={"symbols": ["BTC/USDT"]})
    with pytest.raises(UserError, match="USDT-M perpetuals") as err:
        LiveTrader(p, client(venue), HttpSignalSource(signals.url), tmp_path / "s.sqlite", "test")
    assert "\n" not in str(err.value)
