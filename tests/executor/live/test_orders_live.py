"""Limit entries and trailing stops live: the real local exchange, real ccxt, the LiveTrader, on
Binance USDT-M and on Bybit USDT perpetuals (the same broker code; ``venues`` says how each venue
reads back its orders). Bybit's native trailing stop is not used (refused at start-up,
``test_live_broker.py``), so the native trail, and the partial fill and expiry of a limit entry, are
Binance's.

The hand-made market (``BTC/USDT:USDT``, 1h bars): flat at 30 000 (+-0.1 %) up to bar 100, then
bar 101 rallies to 31 500, bar 102 holds 31 300..31 500, bar 103 falls to 30 500. Expected prices
are computed here from those bars and the risk parameters, never by the code under test.

The local exchange matches a resting order on the bars that open after it was placed; the
daemon, polling at the open of bar k, steps bar k-1 (the newest closed one).
"""

from __future__ import annotations

import pandas as pd
import pytest

from executor.paper import LIMIT_EXPIRED
from tests.executor.live.support import SYMBOL, bar_ms, bars_frame
from tests.executor.live.venues import BINANCE, only, venue_fixtures

pytestmark = pytest.mark.slow

FLAT = 30_000.0
N_BARS = 200
SPECIAL = {101: (30_000.0, 31_500.0, 29_990.0, 31_400.0), 102: (31_400.0, 31_500.0, 31_300.0, 31_400.0),
           103: (31_400.0, 31_450.0, 30_500.0, 30_600.0)}
SL, TP = 0.03, 0.06  # the default risk.stop_loss_pct / take_profit_pct
MAKER, TAKER = 0.0002, 0.0005  # the exchange's USDT-M fee rates


def _candles() -> pd.DataFrame:
    rows = []
    for i in range(N_BARS):
        p = FLAT if i <= 100 else 30_600.0
        rows.append(SPECIAL.get(i, (p, p * 1.001, p * 0.999, p)))
    return bars_frame(rows)


adapter, exchange, venue, make_trader = venue_fixtures(_candles)


def _qty(price: float, notional: float = 2_000.0) -> float:
    """0.2 x 10 000 USDT at ``price``, floored to the 0.00001 step the exchange derives near 30 000."""
    return int(notional / price * 100_000) / 100_000


def _protectives(adapter, venue) -> list[tuple]:
    out = []
    for o in adapter.protective_orders(venue):
        kind = adapter.kind(o)
        level = float(o["info"]["callbackRate"]) if kind == "TRAILING_STOP_MARKET" else o["triggerPrice"]
        out.append((kind, o["amount"], level, o["reduceOnly"], str(o["id"])))
    return sorted(out)


def _resting(adapter, venue) -> list[dict]:
    return [o for o in adapter.client(venue).fetch_open_orders(SYMBOL) if not o.get("triggerPrice")]


# -- limit entries ------------------------------------------------------------------------
def test_a_limit_entry_rests_on_the_exchange_then_fills_at_its_price_and_is_guarded(make_trader, venue, adapter):
    venue.move_clock_to(bar_ms(20))
    trader = make_trader(entry_order="limit", limit_offset_bps=5.0, limit_ttl_bars=2)
    trader.poll()  # decides at the close of bar 19 (30 000): a limit buy at 30 000 x (1 - 0.0005)
    limit = FLAT * (1 - 0.0005)
    (resting,) = _resting(adapter, venue)
    assert (resting["type"], resting["side"], resting["price"]) == ("limit", "buy", pytest.approx(limit))
    assert adapter.position_qty(venue) == 0
    assert trader.loop.portfolio.reserved_usdt == {SYMBOL: pytest.approx(2_000.0)}
    venue.advance(1)  # bar 21 trades down to 29 970: the limit fills
    trader.poll()
    qty = _qty(limit)
    assert adapter.position_qty(venue) == pytest.approx(qty)
    (fill,) = trader.store.read("fills").itertuples()
    assert (fill.purpose, fill.price, fill.qty) == ("entry", pytest.approx(limit), pytest.approx(qty))
    assert fill.fee_usdt == pytest.approx(qty * limit * MAKER)  # a resting order fills as maker
    assert [p[:4] for p in _protectives(adapter, venue)] == [
        (adapter.stop, pytest.approx(qty), pytest.approx(round(limit * (1 - SL), 2)), True),
        (adapter.take, pytest.approx(qty), pytest.approx(round(limit * (1 + TP), 2)), True)]
    assert len(adapter.entries(venue)) == 1


@only(BINANCE)
def test_a_partly_filled_limit_entry_has_its_rest_cancelled_and_the_filled_part_guarded(make_trader, venue, adapter):
    venue.reset_account(max_fill_qty_per_bar={"BTCUSDT": "0.02"})  # liquidity: 0.02 BTC per bar
    venue.move_clock_to(bar_ms(20))
    trader = make_trader(entry_order="limit", limit_offset_bps=5.0, limit_ttl_bars=3)
    trader.poll()
    venue.advance(1)  # bar 21 fills 0.02 of the order
    trader.poll()
    (entry,) = adapter.entries(venue)
    assert (entry["status"], entry["filled"]) == ("canceled", pytest.approx(0.02))
    assert adapter.position_qty(venue) == pytest.approx(0.02)
    assert trader.loop.portfolio.positions[SYMBOL].qty == pytest.approx(0.02)
    limit = FLAT * (1 - 0.0005)
    assert [p[:3] for p in _protectives(adapter, venue)] == [
        ("STOP_MARKET", pytest.approx(0.02), pytest.approx(round(limit * (1 - SL), 2))),
        ("TAKE_PROFIT_MARKET", pytest.approx(0.02), pytest.approx(round(limit * (1 + TP), 2)))]


@only(BINANCE)
def test_an_unfilled_limit_entry_is_cancelled_after_its_ttl_and_its_reservation_released(make_trader, venue, adapter):
    venue.move_clock_to(bar_ms(20))
    trader = make_trader(entry_order="limit", limit_offset_bps=50.0, limit_ttl_bars=1)
    trader.poll()  # limit at 29 850: the flat bars never trade below 29 970
    (first,) = adapter.entries(venue)
    venue.advance(1)
    trader.poll()  # its one bar is over: cancelled; the buy signal of bar 20 places the next one
    assert adapter.client(venue).fetch_order(first["id"], SYMBOL)["status"] == "canceled"
    decisions = trader.store.read("decisions")
    expired = decisions[decisions["reason"] == LIMIT_EXPIRED]
    assert expired["outcome"].tolist() == ["cancelled"]
    orders = trader.store.read("orders")
    assert orders["status"].tolist()[0] == "cancelled"
    assert [o["status"] for o in adapter.entries(venue)] == ["canceled", "open"]
    assert trader.store.read("fills").empty and adapter.position_qty(venue) == 0
    row = trader.store.conn.execute("SELECT status, reason FROM exchange_orders WHERE client_id=?",
                                    (first["clientOrderId"],)).fetchone()
    assert row == ("expired", LIMIT_EXPIRED)


def test_a_resting_limit_entry_is_adopted_at_restart_not_cancelled_nor_sent_again(make_trader, venue, adapter):
    venue.move_clock_to(bar_ms(20))
    make_trader(entry_order="limit", limit_offset_bps=5.0, limit_ttl_bars=2).poll()
    (resting,) = adapter.entries(venue)
    restarted = make_trader(entry_order="limit", limit_offset_bps=5.0, limit_ttl_bars=2)
    (after,) = _resting(adapter, venue)
    assert after["id"] == resting["id"] and resting["clientOrderId"] in restarted.reconciled.adopted_orders
    assert restarted.reconciled.cancelled_orphans == []
    reserved = restarted.loop.portfolio.reserved_usdt
    assert reserved == {SYMBOL: pytest.approx(_qty(FLAT * 0.9995) * FLAT * 0.9995)}
    assert reserved == {SYMBOL: pytest.approx(2_000.0)}
    venue.advance(1)
    restarted.poll()  # the adopted order fills on bar 21 and the restarted executor books and guards it
    assert len(adapter.entries(venue)) == 1
    held = adapter.position_qty(venue)
    assert held == pytest.approx(_qty(FLAT * 0.9995)) and held == pytest.approx(_qty(after["price"]))
    assert restarted.store.read("fills")["purpose"].tolist() == ["entry"]
    assert [p[0] for p in _protectives(adapter, venue)] == [adapter.stop, adapter.take]


# -- trailing stops -----------------------------------------------------------------------
@only(BINANCE)
def test_a_native_trailing_stop_lives_on_the_exchange_and_triggers_there(make_trader, venue, adapter):
    venue.move_clock_to(bar_ms(100))
    trader = make_trader(trailing_stop_pct=0.02, trailing_mode="native")
    trader.poll()  # market entry at 30 000; stop, take-profit and a 2 % trailing stop on the exchange
    qty = _qty(FLAT)
    assert [p[:4] for p in _protectives(adapter, venue)] == [
        ("STOP_MARKET", pytest.approx(qty), pytest.approx(FLAT * (1 - SL)), True),
        ("TAKE_PROFIT_MARKET", pytest.approx(qty), pytest.approx(FLAT * (1 + TP)), True),
        ("TRAILING_STOP_MARKET", pytest.approx(qty), 2.0, True)]
    first_guard = {p[4] for p in _protectives(adapter, venue)}
    for _ in range(3):  # bars 101 (peak 31 500), 102 (level 30 870, low 31 300), 103 (low 30 500)
        venue.advance(1)
        trader.poll()
    venue.advance(1)
    trader.poll()  # the executor sees the trigger of bar 103
    fills = trader.store.read("fills")
    exit_ = fills[fills["purpose"] == "exit"].iloc[0]
    assert (exit_["reason"], exit_["order_id"]) == ("trailing_stop", -1)
    assert exit_["price"] == pytest.approx(31_500.0 * 0.98)
    assert exit_["pnl_usdt"] == pytest.approx(qty * 30_870.0 * (1 - TAKER) - qty * FLAT * (1 + TAKER))
    assert first_guard.isdisjoint(p[4] for p in _protectives(adapter, venue))  # its stop and take-profit went with it


def test_a_managed_trailing_stop_moves_the_exchange_stop_up_at_each_bar_close(make_trader, venue, adapter):
    venue.move_clock_to(bar_ms(100))
    trader = make_trader(trailing_stop_pct=0.02, trailing_mode="managed")
    trader.poll()
    qty = _qty(FLAT)
    assert [p[0] for p in _protectives(adapter, venue)] == [adapter.stop, adapter.take]
    venue.advance(1)
    trader.poll()  # bar 100 closed with high 30 030: the stop goes to 30 030 x 0.98 = 29 429.40
    assert _protectives(adapter, venue)[0][2] == pytest.approx(29_429.40)
    venue.advance(1)
    trader.poll()  # bar 101 closed with high 31 500: 30 870
    (stop, take) = _protectives(adapter, venue)
    assert stop[:4] == (adapter.stop, pytest.approx(qty), pytest.approx(30_870.0), True)
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
    assert take[4] not in {p[4] for p in _protectives(adapter, venue)}  # the take-profit went with it


@only(BINANCE)
def test_trailing_orders_are_adopted_at_restart_not_duplicated(make_trader, venue, adapter):
    venue.move_clock_to(bar_ms(100))
    make_trader(trailing_stop_pct=0.02, trailing_mode="native").poll()
    before = _protectives(adapter, venue)
    restarted = make_trader(trailing_stop_pct=0.02, trailing_mode="native")
    assert restarted.reconciled.protectives_placed == {}
    assert _protectives(adapter, venue) == before and len(before) == 3
    assert restarted.broker.guards[SYMBOL].trail_id == next(p[4] for p in before if p[0] == "TRAILING_STOP_MARKET")


def _trail_up_to_30_870(make_trader, venue, adapter) -> list[tuple]:
    """A managed 2 % trail entered at bar 100, stepped through bar 101 (peak 31 500): the stop now at 30 870."""
    venue.move_clock_to(bar_ms(100))
    first = make_trader(trailing_stop_pct=0.02, trailing_mode="managed")
    first.poll()
    for _ in range(2):
        venue.advance(1)
        first.poll()
    moved = _protectives(adapter, venue)
    assert moved[0][2] == pytest.approx(30_870.0)  # moved up from 29 100 by the trail
    return moved


def test_a_managed_stop_moved_by_the_trail_is_kept_at_its_level_after_restart(make_trader, venue, adapter):
    moved = _trail_up_to_30_870(make_trader, venue, adapter)
    restarted = make_trader(trailing_stop_pct=0.02, trailing_mode="managed")
    assert restarted.reconciled.protectives_placed == {}
    assert _protectives(adapter, venue) == moved
    assert restarted.broker.guards[SYMBOL].peak == pytest.approx(31_500.0)


def test_a_moved_managed_stop_that_fires_while_the_executor_is_down_is_recorded_as_a_trailing_stop(make_trader, venue,
                                                                                                       adapter):
    _trail_up_to_30_870(make_trader, venue, adapter)
    venue.advance(2)  # bar 103 falls to 30 500 while nobody polls: the moved stop fires on the exchange
    restarted = make_trader(trailing_stop_pct=0.02, trailing_mode="managed")
    adopted = [f for f in restarted.reconciled.fills if f.purpose == "exit"]
    assert [(f.reason, f.price) for f in adopted] == [("trailing_stop", pytest.approx(30_870.0))]


@only(BINANCE)
def test_a_native_trailing_stop_cancelled_behind_the_executors_back_is_re_placed(make_trader, venue, adapter):
    venue.move_clock_to(bar_ms(20))
    trader = make_trader(trailing_stop_pct=0.02, trailing_mode="native")
    trader.poll()
    c = adapter.client(venue)
    (trail,) = [p for p in _protectives(adapter, venue) if p[0] == "TRAILING_STOP_MARKET"]
    c.cancel_order(trail[4], SYMBOL, {"trigger": True})
    venue.advance(1)
    trader.poll()
    kinds = [p[0] for p in _protectives(adapter, venue)]
    assert kinds == ["STOP_MARKET", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"]
    assert "PROTECTIVE_REPLACED" in trader.store.read("alerts")["kind"].tolist()
    assert len(adapter.entries(venue)) == 1
