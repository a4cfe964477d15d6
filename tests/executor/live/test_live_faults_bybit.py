"""Faults on the way to Bybit (429, 5xx, a timed-out request, a connection dropped after the order was
accepted, a bar stepped again after a crash): retried or looked up by ``orderLinkId``, never a second
order - a lost answer to an entry does not open a second position, one to a stop does not leave two
stops. The real ccxt ``bybit`` client against the local exchange's v5 API and its FaultInjector.
"""

from __future__ import annotations

import pandas as pd
import pytest

from tests.executor.live.bybit_support import (CALM_BAR, expected_qty, guarded, journal_rows, exchange,  # noqa: F401
                                               make_trader, signals, venue)
from tests.executor.live.support import (SYMBOL, bar_ms, bybit_client, bybit_entry_orders, bybit_position_qty,
                                         bybit_protectives)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind", ["429", "503", "500"])
def test_bybit_throttled_or_failing_order_route_is_retried_and_places_exactly_one_order(make_trader, venue, kind):
    venue.set_faults({"rules": [{"kind": kind, "path_prefix": "/v5/order/create", "method": "POST", "first_k": 2,
                                 "retry_after_s": 0}]})
    trader = make_trader()
    trader.poll()
    assert venue.fault_counts()[kind] == 2
    assert trader.broker.retries >= 2
    assert len(bybit_entry_orders(venue)) == 1
    assert bybit_position_qty(venue) == pytest.approx(expected_qty())
    assert bybit_protectives(venue) == guarded(expected_qty())


def test_bybit_a_timed_out_entry_is_looked_up_by_order_link_id_after_its_recv_window(make_trader, venue):
    venue.set_faults({"rules": [{"kind": "timeout", "path_prefix": "/v5/order/create", "method": "POST",
                                 "first_k": 1, "timeout_s": 1.5}]})
    trader = make_trader(timeout_ms=500)
    trader.ex.options["recvWindow"] = 2_000
    trader.poll()
    assert venue.fault_counts()["timeout"] == 1
    assert len(bybit_entry_orders(venue)) == 1
    assert bybit_position_qty(venue) == pytest.approx(expected_qty())
    assert len(bybit_protectives(venue)) == 2


@pytest.mark.parametrize("stalled", ["entry", "stop"])
def test_bybit_a_connection_dropped_after_acceptance_leaves_exactly_one_order(make_trader, venue, stalled):
    # the first create is the entry, the second the stop-loss: the answer to that one is lost
    nth = {"every_nth": 1, "first_k": 1} if stalled == "entry" else {"every_nth": 2, "first_k": 2}
    venue.set_faults({"rules": [{"kind": "drop_after", "path_prefix": "/v5/order/create", "method": "POST", **nth}]})
    trader = make_trader()
    trader.poll()
    assert venue.fault_counts()["drop_after"] == 1
    (entry,) = bybit_entry_orders(venue)
    assert entry["clientOrderId"] == journal_rows(trader, "entry")[0][0]
    assert bybit_position_qty(venue) == pytest.approx(expected_qty())
    assert bybit_protectives(venue) == guarded(expected_qty())


def test_bybit_a_bar_stepped_again_after_a_crash_never_sends_its_entry_twice(make_trader, venue):
    first = make_trader()
    first.poll()
    c = bybit_client(venue)  # while the executor is down the position is closed by hand...
    for o in c.fetch_open_orders(SYMBOL, params={"orderFilter": "StopOrder"}):
        c.cancel_order(o["id"], SYMBOL)
    c.create_order(SYMBOL, "market", "sell", bybit_position_qty(venue), None, {"reduceOnly": True})
    first.store.conn.execute("DELETE FROM live_progress")  # ...and bar 99 never got committed as done
    first.store.conn.commit()
    second = make_trader()
    assert second.poll() == pd.Timestamp(bar_ms(CALM_BAR - 1), unit="ms", tz="UTC")
    assert len(bybit_entry_orders(venue)) == 1
    assert second.store.read("decisions")["reason"].tolist() == ["signal_buy", "ALREADY_SENT"]
