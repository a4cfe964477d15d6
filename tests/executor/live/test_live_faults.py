"""Faults on the way to the exchange, on Binance USDT-M and on Bybit USDT perpetuals (429, 5xx, a
timed-out request, a connection dropped after the order was accepted, a bar stepped again after a
crash): retried or looked up by the client order id, never a second order - a lost answer to an entry
does not open a second position, one to a stop does not leave two stops. Real ccxt against the local
exchange and its FaultInjector; ``venues`` says how each venue reads back its orders.
"""

from __future__ import annotations

import pandas as pd
import pytest

from tests.executor.live.support import PRICE, SYMBOL, bar_ms
from tests.executor.live.venues import expected_qty, journal_rows, venue_fixtures

pytestmark = pytest.mark.slow

CALM_BAR = 100  # the clock starts at this bar's open (bar 99 just closed); bars 99..150 are calm
SL, TP = 0.03, 0.06  # the default risk.stop_loss_pct / take_profit_pct
STOP, TAKE = PRICE * (1 - SL), PRICE * (1 + TP)

# where the stop-loss is created: Binance's conditional orders have their own route, Bybit's are its second create
STOP_CREATE = {"binance": ("/fapi/v1/algoOrder", 1), "bybit": ("/v5/order/create", 2)}

adapter, exchange, venue, make_trader = venue_fixtures(clock_bar=CALM_BAR)


@pytest.mark.parametrize("kind", ["429", "503", "500"])
def test_throttled_or_failing_order_route_is_retried_and_places_exactly_one_order(make_trader, venue, adapter, kind):
    venue.set_faults({"rules": [{"kind": kind, "path_prefix": adapter.order_route, "method": "POST", "first_k": 2,
                                 "retry_after_s": 0}]})
    trader = make_trader()
    trader.poll()
    assert venue.fault_counts()[kind] == 2
    assert trader.broker.retries >= 2
    assert len(adapter.entries(venue)) == 1
    assert adapter.position_qty(venue) == pytest.approx(expected_qty())
    assert adapter.protectives(venue) == adapter.guarded(expected_qty(), STOP, TAKE)


def test_a_timed_out_order_is_looked_up_after_its_recv_window_instead_of_sent_again(make_trader, venue, adapter):
    # the server answers after 1.5 s, the client gives up after 0.5 s; the request is still executed
    venue.set_faults({"rules": [{"kind": "timeout", "path_prefix": adapter.order_route, "method": "POST",
                                 "first_k": 1, "timeout_s": 1.5}]})
    trader = make_trader(timeout_ms=500)
    trader.ex.options["recvWindow"] = 2_000
    trader.poll()
    assert venue.fault_counts()["timeout"] == 1
    assert len(adapter.entries(venue)) == 1
    assert adapter.position_qty(venue) == pytest.approx(expected_qty())
    assert len(adapter.protectives(venue)) == 2


@pytest.mark.parametrize("stalled", ["entry", "stop"])
def test_a_connection_dropped_after_acceptance_leaves_exactly_one_order(make_trader, venue, adapter, stalled):
    # the answer to the entry (the first create) or to the stop-loss (the first conditional order) is lost
    route, nth = (adapter.order_route, 1) if stalled == "entry" else STOP_CREATE[adapter.name]
    venue.set_faults({"rules": [{"kind": "drop_after", "path_prefix": route, "method": "POST", "every_nth": nth,
                                 "first_k": nth}]})
    trader = make_trader()
    trader.poll()
    assert venue.fault_counts()["drop_after"] == 1
    (entry,) = adapter.entries(venue)
    assert entry["clientOrderId"] == journal_rows(trader, "entry")[0][0]
    assert adapter.position_qty(venue) == pytest.approx(expected_qty())
    assert adapter.protectives(venue) == adapter.guarded(expected_qty(), STOP, TAKE)


def test_a_bar_stepped_again_after_a_crash_never_sends_its_entry_twice(make_trader, venue, adapter):
    first = make_trader()
    first.poll()  # bar 99: entry filled and guarded
    for o in adapter.protective_orders(venue):  # while the executor is down the position is closed by hand...
        adapter.cancel_protective(venue, o["id"])
    adapter.client(venue).create_order(SYMBOL, "market", "sell", adapter.position_qty(venue), None,
                                       {"reduceOnly": True})
    first.store.conn.execute("DELETE FROM live_progress")  # ...and bar 99 never got committed as done
    first.store.conn.commit()
    second = make_trader()  # restart: flat, bar 99 is decided again with the same client order id
    assert second.poll() == pd.Timestamp(bar_ms(CALM_BAR - 1), unit="ms", tz="UTC")
    assert len(adapter.entries(venue)) == 1
    decisions = second.store.read("decisions")
    assert decisions["reason"].tolist() == ["signal_buy", "ALREADY_SENT"]
