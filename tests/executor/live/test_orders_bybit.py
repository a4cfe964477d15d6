"""Limit entries and the managed trailing stop on Bybit USDT perpetuals: the same broker code as on
Binance (``test_orders_live.py``) through the real ccxt ``bybit`` client against the local v5 API.
A limit entry rests (GTC) and fills at its price as maker, then is guarded; a resting one is adopted
at restart, not sent again; the managed trail moves the exchange stop (cancel + place, a new
``orderLinkId`` each time) and the moved stop fires as ``trailing_stop`` - Bybit's native trailing stop
is not used (refused at start-up, ``test_live_broker_bybit.py``)."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.executor.live.support import (SYMBOL, bar_ms, bars_frame, buy_signals, bybit_client, bybit_entry_orders,
                                         bybit_position_qty, reset_bybit, running_exchange, trader_factory,
                                         write_bybit_market)

pytestmark = pytest.mark.slow

FLAT = 30_000.0
N_BARS = 200
SPECIAL = {101: (30_000.0, 31_500.0, 29_990.0, 31_400.0), 102: (31_400.0, 31_500.0, 31_300.0, 31_400.0),
           103: (31_400.0, 31_450.0, 30_500.0, 30_600.0)}
SL, TP = 0.03, 0.06
MAKER = 0.0002
CROSS = {"margin_mode": "cross"}


def _candles() -> pd.DataFrame:
    rows = []
    for i in range(N_BARS):
        p = FLAT if i <= 100 else 30_600.0
        rows.append(SPECIAL.get(i, (p, p * 1.001, p * 0.999, p)))
    return bars_frame(rows)


@pytest.fixture(scope="module")
def exchange(tmp_path_factory):
    with running_exchange(write_bybit_market(tmp_path_factory.mktemp("bybit-orders-market"), _candles())) as ex:
        yield ex


@pytest.fixture
def venue(exchange):
    exchange.set_faults({})
    reset_bybit(exchange)
    yield exchange


@pytest.fixture
def make_trader(venue, tmp_path):
    with trader_factory(lambda: bybit_client(venue), buy_signals(), SYMBOL, tmp_path / "state.sqlite",
                        "test") as make:
        yield make


def _qty(price: float, notional: float = 2_000.0) -> float:
    return int(notional / price * 100_000) / 100_000


def _protectives(venue) -> list[tuple]:
    return sorted((o["info"]["stopOrderType"], o["amount"], o["triggerPrice"], o["reduceOnly"], str(o["id"]))
                  for o in bybit_client(venue).fetch_open_orders(SYMBOL, params={"orderFilter": "StopOrder"}))


def _resting(venue) -> list[dict]:
    return [o for o in bybit_client(venue).fetch_open_orders(SYMBOL) if not o.get("triggerPrice")]


def test_bybit_a_limit_entry_rests_then_fills_at_its_price_and_is_guarded(make_trader, venue):
    venue.move_clock_to(bar_ms(20))
    trader = make_trader(entry_order="limit", limit_offset_bps=5.0, limit_ttl_bars=2, **CROSS)
    trader.poll()  # a limit buy at 30 000 x (1 - 0.0005)
    limit = FLAT * (1 - 0.0005)
    (resting,) = _resting(venue)
    assert (resting["type"], resting["side"], resting["price"]) == ("limit", "buy", pytest.approx(limit))
    assert bybit_position_qty(venue) == 0 and trader.loop.portfolio.reserved_usdt == {SYMBOL: pytest.approx(2_000.0)}
    venue.advance(1)  # bar 21 trades down to 29 970: the limit fills
    trader.poll()
    qty = _qty(limit)
    assert bybit_position_qty(venue) == pytest.approx(qty)
    (fill,) = trader.store.read("fills").itertuples()
    assert (fill.purpose, fill.price, fill.qty) == ("entry", pytest.approx(limit), pytest.approx(qty))
    assert fill.fee_usdt == pytest.approx(qty * limit * MAKER)
    assert [p[:4] for p in _protectives(venue)] == [
        ("StopLoss", pytest.approx(qty), pytest.approx(round(limit * (1 - SL), 2)), True),
        ("TakeProfit", pytest.approx(qty), pytest.approx(round(limit * (1 + TP), 2)), True)]
    assert len(bybit_entry_orders(venue)) == 1


def test_bybit_a_resting_limit_entry_is_adopted_at_restart_not_cancelled_nor_sent_again(make_trader, venue):
    venue.move_clock_to(bar_ms(40))
    make_trader(entry_order="limit", limit_offset_bps=5.0, limit_ttl_bars=3, **CROSS).poll()
    (before,) = _resting(venue)
    restarted = make_trader(entry_order="limit", limit_offset_bps=5.0, limit_ttl_bars=3, **CROSS)
    (after,) = _resting(venue)
    assert after["id"] == before["id"] and restarted.reconciled.cancelled_orphans == []
    assert restarted.loop.portfolio.reserved_usdt == {SYMBOL: pytest.approx(2_000.0)}
    venue.advance(1)  # calm bar 41 trades down to 29 970: the limit fills
    restarted.poll()
    assert len(bybit_entry_orders(venue)) == 1 and bybit_position_qty(venue) == pytest.approx(_qty(after["price"]))
    assert [p[0] for p in _protectives(venue)] == ["StopLoss", "TakeProfit"]


def test_bybit_a_managed_trailing_stop_moves_the_exchange_stop_up_and_fires_there(make_trader, venue):
    venue.move_clock_to(bar_ms(100))
    trader = make_trader(trailing_stop_pct=0.02, trailing_mode="managed", **CROSS)
    trader.poll()
    qty = _qty(FLAT)
    assert [p[0] for p in _protectives(venue)] == ["StopLoss", "TakeProfit"]
    venue.advance(1)
    trader.poll()  # bar 100 closed with high 30 030: the stop goes to 30 030 x 0.98 = 29 429.40
    assert _protectives(venue)[0][2] == pytest.approx(29_429.40)
    venue.advance(1)
    trader.poll()  # bar 101 closed with high 31 500: 30 870
    (stop, take) = _protectives(venue)
    assert stop[:4] == ("StopLoss", pytest.approx(qty), pytest.approx(30_870.0), True)
    assert take[2] == pytest.approx(FLAT * (1 + TP))
    rows = trader.store.conn.execute("SELECT status, reason, price FROM exchange_orders WHERE purpose='stop_loss' "
                                     "ORDER BY rowid").fetchall()
    assert rows == [("cancelled", "TRAIL_MOVED", pytest.approx(29_100.0)),
                    ("cancelled", "TRAIL_MOVED", pytest.approx(29_429.40)), ("open", None, pytest.approx(30_870.0))]
    venue.advance(1)  # bar 103 falls to 30 500: the moved stop fires on the exchange
    trader.poll()
    venue.advance(1)
    trader.poll()
    fills = trader.store.read("fills")
    exit_ = fills[fills["purpose"] == "exit"].iloc[0]
    assert (exit_["reason"], exit_["price"]) == ("trailing_stop", pytest.approx(30_870.0))
    assert take[4] not in {p[4] for p in _protectives(venue)}  # the take-profit went with it
