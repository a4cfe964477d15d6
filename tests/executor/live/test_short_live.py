"""Shorts, leverage and liquidation on perpetuals live: real ccxt against the real local exchange, the
shorts on Binance USDT-M and on Bybit USDT perpetuals (the same broker code; ``venues`` says how each
venue reads back its orders; ccxt turns a Bybit ``stopLossPrice`` on a buy into a rising trigger,
``takeProfitPrice`` into a falling one). The leverage is each venue's own test (Binance: isolated, its
bracket table; Bybit: the cross account, read back); the liquidations are Binance's.

A ``sell`` signal while flat opens a short (``risk.allow_short``): a market sell, not
reduce-only; its guards are reduce-only BUYs - a STOP_MARKET above the fill, a
TAKE_PROFIT_MARKET below - and its exits buy. The hand-made market (``BTC/USDT:USDT``, 1h
bars) sits at 30 000 (+-0.1 %) except the bars in ``SPECIAL``. With the default levels a
short filled at 30 000 has its stop at 30 900 (+3 %) and its take-profit at 28 200 (-6 %);
expected prices are computed here from the bars and the risk parameters.

The local exchange fills a market order at the close of the bar its clock is in and works
resting orders on the bars it moves into; ``poll`` steps the newest closed bar.
"""

from __future__ import annotations

import pandas as pd
import pytest

from qt.margin import BINANCE_BTCUSDT_BRACKETS, liquidation_price
from tests.executor.exec_support import signals_frame
from tests.executor.live.support import SYMBOL, bar_ms, calm_bars
from tests.executor.live.venues import BINANCE, BYBIT, only, venue_fixtures

pytestmark = pytest.mark.slow

N_BARS = 120
FLAT = 30_000.0
SL, TP = 0.03, 0.06
STOP, TAKE = FLAT * (1 + SL), FLAT * (1 - TP)  # a short's guards: 30 900 above, 28 200 below
STOP_BAR, TP_BAR, RESTART_BAR, EMERGENCY_BAR, LEVERAGE_BAR, LIQ_BAR, LIQ_DOWN_BAR = 11, 21, 31, 41, 51, 61, 71
SPECIAL = {STOP_BAR: (FLAT, 31_000.0, FLAT * 0.999, 30_950.0),  # rises through the stop
           TP_BAR: (FLAT, FLAT * 1.001, 28_000.0, 28_100.0),  # falls through the take-profit
           RESTART_BAR: (FLAT, 31_000.0, FLAT * 0.999, 30_950.0),  # the stop fires while the executor is down
           EMERGENCY_BAR: (FLAT, 31_200.0, FLAT * 0.999, 31_100.0),  # closes above the (cancelled) stop
           LIQ_BAR: (FLAT, FLAT * 1.001, 28_000.0, 28_300.0),  # through a 20x long's liquidation price
           LIQ_DOWN_BAR: (FLAT, FLAT * 1.001, 28_000.0, 28_300.0)}
SELLS = {STOP_BAR - 2, TP_BAR - 2, RESTART_BAR - 2, EMERGENCY_BAR - 2}
BUYS = {LEVERAGE_BAR - 2, LIQ_BAR - 2, LIQ_DOWN_BAR - 2}
SHORTS = {"allow_short": True}
LEVERED = {"max_position_notional_usdt": 50_000.0, "max_gross_exposure": 5.0, "margin_mode": "isolated"}


def _candles() -> pd.DataFrame:
    return calm_bars(N_BARS, SPECIAL, FLAT)


def _signals() -> pd.DataFrame:
    return signals_frame({SYMBOL: ["sell" if i in SELLS else "buy" if i in BUYS else "hold" for i in range(N_BARS)]})


adapter, exchange, venue, make_trader = venue_fixtures(_candles, _signals, namespace="short")


def _guards(adapter, venue) -> list[tuple]:
    return sorted((adapter.kind(o), o["side"], o["reduceOnly"], o["triggerPrice"], o["amount"])
                  for o in adapter.protective_orders(venue))


def _enter_short(make_trader, venue, adapter, bar: int):
    venue.move_clock_to(bar_ms(bar - 1))
    trader = make_trader(**SHORTS)
    trader.poll()  # the sell signal of bar - 2: a market sell at 30 000
    side, qty = adapter.position(venue)
    assert side == "short" and qty > 0
    assert _guards(adapter, venue) == [(adapter.stop, "buy", True, pytest.approx(STOP), qty),
                                       (adapter.take, "buy", True, pytest.approx(TAKE), qty)]
    return trader, qty


def _fills(trader) -> list[tuple]:
    f = trader.store.read("fills")
    return [(r.purpose, r.side, r.reason, pytest.approx(r.qty), pytest.approx(r.price)) for r in f.itertuples()]


def test_short_entry_is_a_plain_market_sell_guarded_by_reduce_only_buys_and_its_stop_fires(make_trader, venue,
                                                                                           adapter):
    trader, qty = _enter_short(make_trader, venue, adapter, STOP_BAR)
    (entry,) = [o for o in adapter.orders(venue) if o["type"] == "market"]
    assert (entry["side"], entry["reduceOnly"], entry["average"]) == ("sell", False, pytest.approx(FLAT))
    venue.advance(1)  # rises to 31 000: the buy stop at 30 900 fires
    trader.poll()
    assert adapter.position(venue) == (None, 0.0) and _guards(adapter, venue) == []
    assert _fills(trader) == [("entry", "sell", "signal_sell", qty, FLAT), ("exit", "buy", "stop_loss", qty, STOP)]
    (trade,) = trader.loop.portfolio.closed_trades
    assert trade.side == "short" and trade.pnl_usdt < -qty * (STOP - FLAT)  # the loss plus fees
    assert trader.loop.portfolio.positions == {}


@only(BINANCE)
def test_short_take_profit_below_the_entry_fills_and_the_stop_is_cancelled(make_trader, venue, adapter):
    trader, qty = _enter_short(make_trader, venue, adapter, TP_BAR)
    venue.advance(1)  # falls to 28 000: the buy take-profit at 28 200 fires
    trader.poll()
    assert adapter.position(venue) == (None, 0.0) and _guards(adapter, venue) == []
    assert _fills(trader)[1:] == [("exit", "buy", "take_profit", qty, TAKE)]
    (trade,) = trader.loop.portfolio.closed_trades
    assert trade.pnl_usdt > 0


def test_short_restart_adopts_the_open_short_with_its_guards_and_books_a_stop_that_fired_while_down(
        make_trader, venue, adapter):
    _, qty = _enter_short(make_trader, venue, adapter, RESTART_BAR)  # then the executor dies (never closed)
    guards = _guards(adapter, venue)
    restarted = make_trader(**SHORTS)  # adopts the short: same two guards, nothing re-sent
    assert _guards(adapter, venue) == guards and restarted.reconciled.protectives_placed == {}
    pos = restarted.loop.portfolio.positions[SYMBOL]
    assert (pos.side, pos.qty) == ("short", qty)
    assert restarted.loop.portfolio.equity_usdt() == pytest.approx(adapter.wallet_usdt(venue), rel=1e-9)
    # the take-profit is cancelled behind the executor's back, while it is down
    adapter.cancel_protective(venue, adapter.protective_id(venue, adapter.take))
    again = make_trader(**SHORTS)
    assert _guards(adapter, venue) == guards  # the missing buy take-profit is placed again
    assert again.reconciled.protectives_placed == {SYMBOL: ["take_profit"]}
    venue.advance(1)  # rises through the stop while nobody watches
    last = make_trader(**SHORTS)
    assert adapter.position(venue) == (None, 0.0) and _guards(adapter, venue) == []
    assert [f for f in _fills(last) if f[0] == "exit"] == [("exit", "buy", "stop_loss", qty, STOP)]
    assert last.loop.portfolio.positions == {}


def test_short_emergency_exit_buys_back_when_the_stop_was_cancelled_and_the_price_rose_through_it(
        make_trader, venue, adapter):
    trader, qty = _enter_short(make_trader, venue, adapter, EMERGENCY_BAR)
    adapter.cancel_protective(venue, adapter.protective_id(venue, adapter.stop))
    venue.advance(1)  # closes at 31 100, above where the stop was: a buy stop there would fire at once
    trader.poll()
    assert adapter.position(venue) == (None, 0.0) and _guards(adapter, venue) == []
    exits = [o for o in adapter.orders(venue) if o["side"] == "buy" and o["type"] == "market"]
    assert [(o["reduceOnly"], o["status"]) for o in exits] == [(True, "closed")]
    assert _fills(trader)[1:] == [("exit", "buy", "emergency_exit", qty, 31_100.0)]
    assert "EMERGENCY_EXIT" in trader.store.read("alerts")["kind"].tolist()


@only(BINANCE)
def test_leverage_notional_is_margin_times_leverage_on_the_exchanges_isolated_position(make_trader, venue, adapter):
    venue.move_clock_to(bar_ms(LEVERAGE_BAR - 1))
    trader = make_trader(leverage=5, **LEVERED)
    trader.poll()
    c = adapter.client(venue)
    (pos,) = c.fetch_positions([SYMBOL])
    margin = 0.2 * 10_000  # risk.position_fraction of the equity
    assert pos["contracts"] * pos["entryPrice"] == pytest.approx(margin * 5, rel=1e-3)  # lot-step rounding
    assert (pos["marginMode"], c.fetch_leverage(SYMBOL)["longLeverage"]) == ("isolated", 5)
    assert pos["collateral"] == pytest.approx(pos["contracts"] * pos["entryPrice"] / 5, rel=1e-9)
    venue.advance(1)
    trader.poll()  # the fill reaches the ledger at the next bar
    assert trader.loop.portfolio.positions[SYMBOL].leverage == 5
    tiers = trader.loop.risk.brackets[SYMBOL]  # the venue's table, read at start-up
    assert [(b.cap, b.mmr, b.cum) for b in tiers] == [(b.cap, b.mmr, pytest.approx(b.cum))
                                                       for b in BINANCE_BTCUSDT_BRACKETS]


@only(BYBIT)
def test_leverage_is_set_and_read_back_on_the_cross_account_and_the_notional_is_margin_times_leverage(
        make_trader, venue, adapter):
    venue.move_clock_to(bar_ms(LEVERAGE_BAR - 1))
    trader = make_trader(leverage=5, max_position_notional_usdt=50_000.0, max_gross_exposure=5.0)  # cross margin
    trader.poll()
    c = adapter.client(venue)
    (pos,) = c.fetch_positions([SYMBOL])
    assert pos["contracts"] * pos["entryPrice"] == pytest.approx(0.2 * 10_000 * 5, rel=1e-3)
    assert c.fetch_leverage(SYMBOL)["longLeverage"] == 5
    assert "LEVERAGE_UNVERIFIED" not in trader.store.read("alerts")["kind"].tolist()


def _enter_20x_long_and_cancel_its_stop(make_trader, venue, adapter, bar: int):
    venue.move_clock_to(bar_ms(bar - 1))
    trader = make_trader(leverage=20, **LEVERED)
    trader.poll()
    (pos,) = adapter.client(venue).fetch_positions([SYMBOL])
    qty, entry = pos["contracts"], pos["entryPrice"]
    lp = liquidation_price("long", entry, qty, float(pos["info"]["isolatedWallet"]), BINANCE_BTCUSDT_BRACKETS)
    assert entry * (1 - SL) > lp > 28_000.0  # the stop lies before the liquidation price; the bar reaches both
    assert pos["liquidationPrice"] == pytest.approx(lp, rel=1e-9)
    adapter.cancel_protective(venue, adapter.protective_id(venue, "STOP_MARKET"))  # behind the executor's back
    return trader, qty, lp


def _assert_liquidation_booked(trader, venue, adapter, qty: float, lp: float) -> None:
    assert adapter.position(venue) == (None, 0.0) and _guards(adapter, venue) == []
    assert [f for f in _fills(trader) if f[0] == "exit"] == [("exit", "sell", "liquidation", qty, lp)]
    alerts = trader.store.read("alerts")["kind"].tolist()
    assert alerts.count("LIQUIDATION") == 1 and "POSITION_GONE" not in alerts
    assert trader.loop.portfolio.positions == {}


@only(BINANCE)
def test_liquidation_of_an_isolated_20x_long_is_booked_at_the_liquidation_price_and_alerted(make_trader, venue,
                                                                                         adapter, caplog):
    trader, qty, lp = _enter_20x_long_and_cancel_its_stop(make_trader, venue, adapter, LIQ_BAR)
    venue.advance(1)  # falls to 28 000 within one bar: the exchange liquidates before a stop is re-placed
    (liq,) = adapter.client(venue).fetch_my_liquidations(SYMBOL)
    assert liq["price"] == pytest.approx(lp, rel=1e-9)
    with caplog.at_level("CRITICAL"):
        trader.poll()
    _assert_liquidation_booked(trader, venue, adapter, qty, lp)
    assert any("LIQUIDATED" in r.getMessage() for r in caplog.records if r.levelname == "CRITICAL")
    (trade,) = trader.loop.portfolio.closed_trades
    assert trade.exit_reason == "liquidation"
    venue.advance(1)
    trader.poll()  # booked once
    assert len([f for f in _fills(trader) if f[0] == "exit"]) == 1


@only(BINANCE)
def test_liquidation_while_the_executor_was_down_is_recorded_at_restart(make_trader, venue, adapter):
    _, qty, lp = _enter_20x_long_and_cancel_its_stop(make_trader, venue, adapter, LIQ_DOWN_BAR)
    venue.advance(1)  # liquidated while nobody watches
    restarted = make_trader(leverage=20, **LEVERED)
    restarted.poll()
    _assert_liquidation_booked(restarted, venue, adapter, qty, lp)
    again = make_trader(leverage=20, **LEVERED)  # and a second restart books nothing more
    assert [f for f in again.reconciled.fills if f.reason == "liquidation"] == []
