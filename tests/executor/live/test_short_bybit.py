"""Shorts and leverage on Bybit USDT perpetuals: the same broker code as on Binance
(``test_short_live.py``) through the real ccxt ``bybit`` client against the local v5 API. A sell
opens a short with a plain market sell; its guards are reduce-only BUY conditional orders (ccxt turns
``stopLossPrice`` on a buy into a rising trigger, ``takeProfitPrice`` into a falling one); the stop
fires as the exit, a restart adopts the short with its guards, a stop cancelled during a rise is an
emergency buy-back, and the leverage is set and read back from the position.
"""

from __future__ import annotations

import pandas as pd
import pytest

from tests.executor.exec_support import signals_frame
from tests.executor.live.support import (SYMBOL, bar_ms, bybit_client, calm_bars, reset_bybit, running_exchange,
                                         trader_factory, write_bybit_market)

pytestmark = pytest.mark.slow

N_BARS = 80
FLAT = 30_000.0
SL, TP = 0.03, 0.06
STOP, TAKE = FLAT * (1 + SL), FLAT * (1 - TP)  # a short's guards: 30 900 above, 28 200 below
STOP_BAR, RESTART_BAR, EMERGENCY_BAR, LEVERAGE_BAR = 11, 31, 41, 51
SPECIAL = {STOP_BAR: (FLAT, 31_000.0, FLAT * 0.999, 30_950.0),  # rises through the stop
           RESTART_BAR: (FLAT, 31_000.0, FLAT * 0.999, 30_950.0),  # the stop fires while the executor is down
           EMERGENCY_BAR: (FLAT, 31_200.0, FLAT * 0.999, 31_100.0)}  # closes above the (cancelled) stop
SELLS = {STOP_BAR - 2, RESTART_BAR - 2, EMERGENCY_BAR - 2}
BUYS = {LEVERAGE_BAR - 2}
SHORTS = {"allow_short": True, "margin_mode": "cross"}


def _signals() -> pd.DataFrame:
    return signals_frame({SYMBOL: ["sell" if i in SELLS else "buy" if i in BUYS else "hold" for i in range(N_BARS)]})


@pytest.fixture(scope="module")
def exchange(tmp_path_factory):
    root = write_bybit_market(tmp_path_factory.mktemp("bybit-short-market"), calm_bars(N_BARS, SPECIAL, FLAT))
    with running_exchange(root) as ex:
        yield ex


@pytest.fixture
def venue(exchange):
    exchange.set_faults({})
    reset_bybit(exchange)
    yield exchange


@pytest.fixture
def make_trader(venue, tmp_path):
    with trader_factory(lambda: bybit_client(venue), _signals(), SYMBOL, tmp_path / "state.sqlite", "short") as make:
        yield make


def _position(venue) -> tuple[str | None, float]:
    held = [p for p in bybit_client(venue).fetch_positions([SYMBOL]) if p["contracts"]]
    return (held[0]["side"], held[0]["contracts"]) if held else (None, 0.0)


def _guards(venue) -> list[tuple]:
    return sorted((o["info"]["stopOrderType"], o["side"], o["reduceOnly"], o["triggerPrice"], o["amount"])
                  for o in bybit_client(venue).fetch_open_orders(SYMBOL, params={"orderFilter": "StopOrder"}))


def _enter_short(make_trader, venue, bar: int):
    venue.move_clock_to(bar_ms(bar - 1))
    trader = make_trader(**SHORTS)
    trader.poll()  # the sell signal of bar - 2: a market sell at 30 000
    side, qty = _position(venue)
    assert side == "short" and qty > 0
    assert _guards(venue) == [("StopLoss", "buy", True, pytest.approx(STOP), qty),
                              ("TakeProfit", "buy", True, pytest.approx(TAKE), qty)]
    return trader, qty


def _fills(trader) -> list[tuple]:
    f = trader.store.read("fills")
    return [(r.purpose, r.side, r.reason, pytest.approx(r.qty), pytest.approx(r.price)) for r in f.itertuples()]


def _stop_id(venue) -> str:
    (stop,) = [o for o in bybit_client(venue).fetch_open_orders(SYMBOL, params={"orderFilter": "StopOrder"})
               if o["info"]["stopOrderType"] == "StopLoss"]
    return stop["id"]


def test_bybit_short_is_a_plain_market_sell_guarded_by_reduce_only_buys_and_its_stop_fires(make_trader, venue):
    trader, qty = _enter_short(make_trader, venue, STOP_BAR)
    venue.advance(1)  # rises to 31 000: the buy stop at 30 900 fires
    trader.poll()
    assert _position(venue) == (None, 0.0) and _guards(venue) == []
    assert _fills(trader) == [("entry", "sell", "signal_sell", qty, FLAT), ("exit", "buy", "stop_loss", qty, STOP)]
    (trade,) = trader.loop.portfolio.closed_trades
    assert trade.side == "short" and trade.pnl_usdt < -qty * (STOP - FLAT)


def test_bybit_short_restart_adopts_the_short_with_its_guards_and_books_a_stop_that_fired_while_down(
        make_trader, venue):
    _, qty = _enter_short(make_trader, venue, RESTART_BAR)
    guards = _guards(venue)
    restarted = make_trader(**SHORTS)
    assert _guards(venue) == guards and restarted.reconciled.protectives_placed == {}
    pos = restarted.loop.portfolio.positions[SYMBOL]
    assert (pos.side, pos.qty) == ("short", qty)
    wallet = bybit_client(venue).fetch_balance()["info"]["result"]["list"][0]["totalWalletBalance"]
    assert restarted.loop.portfolio.equity_usdt() == pytest.approx(float(wallet), rel=1e-9)
    venue.advance(1)  # rises through the stop while nobody watches
    last = make_trader(**SHORTS)
    assert _position(venue) == (None, 0.0) and _guards(venue) == []
    assert [f for f in _fills(last) if f[0] == "exit"] == [("exit", "buy", "stop_loss", qty, STOP)]


def test_bybit_short_emergency_exit_buys_back_when_the_stop_was_cancelled_and_the_price_rose(make_trader, venue):
    trader, qty = _enter_short(make_trader, venue, EMERGENCY_BAR)
    bybit_client(venue).cancel_order(_stop_id(venue), SYMBOL)
    venue.advance(1)  # closes at 31 100: a buy stop at 30 900 would fire at once (110092)
    trader.poll()
    assert _position(venue) == (None, 0.0) and _guards(venue) == []
    assert _fills(trader)[1:] == [("exit", "buy", "emergency_exit", qty, 31_100.0)]
    assert "EMERGENCY_EXIT" in trader.store.read("alerts")["kind"].tolist()


def test_bybit_leverage_is_set_and_read_back_and_the_notional_is_margin_times_leverage(make_trader, venue):
    venue.move_clock_to(bar_ms(LEVERAGE_BAR - 1))
    trader = make_trader(leverage=5, max_position_notional_usdt=50_000.0, max_gross_exposure=5.0,
                         margin_mode="cross")
    trader.poll()
    (pos,) = bybit_client(venue).fetch_positions([SYMBOL])
    assert pos["contracts"] * pos["entryPrice"] == pytest.approx(0.2 * 10_000 * 5, rel=1e-3)
    assert bybit_client(venue).fetch_leverage(SYMBOL)["longLeverage"] == 5
    assert "LEVERAGE_UNVERIFIED" not in trader.store.read("alerts")["kind"].tolist()
