"""A short's limit entry and trailing stops live (issue 16): the real local exchange, real ccxt.

The hand-made market (``BTC/USDT:USDT``, 1h bars) mirrors the long case of test_orders_live: flat
at 30 000 (+-0.1 %) up to bar 100, then bar 101 falls to 28 500, bar 102 holds 28 500..28 700,
bar 103 rallies to 29 500. The signals sell at bars 19 and 99 (``risk.allow_short``), hold otherwise. A short's trail is
trough x (1 + pct) from the lowest completed low. Expected prices come from the bars and the risk
parameters, never from the code under test.
"""

from __future__ import annotations

import pandas as pd
import pytest

from tests.executor.exec_support import signals_frame
from tests.executor.live.support import SYMBOL, bar_ms, bars_frame, client
from tests.executor.live.venues import BINANCE, venue_fixtures

pytestmark = pytest.mark.slow

FLAT = 30_000.0
N_BARS = 200
SPECIAL = {101: (30_000.0, 30_010.0, 28_500.0, 28_600.0), 102: (28_600.0, 28_700.0, 28_500.0, 28_600.0),
           103: (28_600.0, 29_500.0, 28_550.0, 29_400.0)}
SL, TP = 0.03, 0.06  # the default risk.stop_loss_pct / take_profit_pct
MAKER, TAKER = 0.0002, 0.0005  # the exchange's USDT-M fee rates
SHORT = {"allow_short": True}


def _candles() -> pd.DataFrame:
    rows = []
    for i in range(N_BARS):
        p = FLAT if i <= 100 else 28_600.0
        rows.append(SPECIAL.get(i, (p, p * 1.001, p * 0.999, p)))
    return bars_frame(rows)


def _sells() -> pd.DataFrame:
    return signals_frame({SYMBOL: ["sell" if i in (19, 99) else "hold" for i in range(N_BARS)]})


adapter, exchange, venue, make_trader = venue_fixtures(_candles, _sells, namespace="short-orders", venues=(BINANCE,))


def _qty(price: float, notional: float = 2_000.0) -> float:
    """0.2 x 10 000 USDT at ``price``, floored to the 0.00001 step the exchange derives near 30 000."""
    return int(notional / price * 100_000) / 100_000


def _guards(venue) -> list[tuple]:
    out = []
    for o in client(venue).fetch_open_orders(SYMBOL, params={"trigger": True}):
        info = o["info"]
        level = float(info["callbackRate"]) if info["orderType"] == "TRAILING_STOP_MARKET" else o["triggerPrice"]
        out.append((info["orderType"], o["side"], o["amount"], level, o["reduceOnly"]))
    return sorted(out)


def _short_qty(venue) -> float:
    return sum(p["contracts"] for p in client(venue).fetch_positions([SYMBOL]) if p["side"] == "short")


def _exit(trader) -> tuple:
    fills = trader.store.read("fills")
    e = fills[fills["purpose"] == "exit"].iloc[0]
    return e["side"], e["reason"], e["price"]


def test_short_limit_entry_rests_above_the_close_fills_at_its_price_and_is_guarded_by_buys(make_trader, venue):
    venue.move_clock_to(bar_ms(20))
    trader = make_trader(entry_order="limit", limit_offset_bps=5.0, limit_ttl_bars=2, **SHORT)
    trader.poll()  # decides at the close of bar 19 (30 000): a limit SELL at 30 000 x (1 + 0.0005)
    limit = FLAT * (1 + 0.0005)
    (resting,) = client(venue).fetch_open_orders(SYMBOL)
    assert (resting["type"], resting["side"], resting["price"], resting["reduceOnly"]) == (
        "limit", "sell", pytest.approx(limit), False)
    assert trader.loop.portfolio.reserved_short == {SYMBOL}
    venue.advance(1)  # bar 21 trades up to 30 030, strictly above the limit: it fills
    trader.poll()
    qty = _qty(limit)
    assert _short_qty(venue) == pytest.approx(qty)
    (fill,) = trader.store.read("fills").itertuples()
    assert (fill.purpose, fill.side, fill.price, fill.qty) == ("entry", "sell", pytest.approx(limit), pytest.approx(qty))
    assert fill.fee_usdt == pytest.approx(qty * limit * MAKER)  # a resting order fills as maker
    assert _guards(venue) == [
        ("STOP_MARKET", "buy", pytest.approx(qty), pytest.approx(round(limit * (1 + SL), 2)), True),
        ("TAKE_PROFIT_MARKET", "buy", pytest.approx(qty), pytest.approx(round(limit * (1 - TP), 2)), True)]
    assert trader.loop.portfolio.positions[SYMBOL].side == "short"


def test_short_native_trailing_stop_trails_the_lowest_low_on_the_exchange_and_buys_back(make_trader, venue):
    venue.move_clock_to(bar_ms(100))
    trader = make_trader(trailing_stop_pct=0.02, trailing_mode="native", **SHORT)
    trader.poll()  # market sell at 30 000; a buy stop, a buy take-profit and a 2 % buy trailing stop
    qty = _qty(FLAT)
    assert _guards(venue) == [
        ("STOP_MARKET", "buy", pytest.approx(qty), pytest.approx(FLAT * (1 + SL)), True),
        ("TAKE_PROFIT_MARKET", "buy", pytest.approx(qty), pytest.approx(FLAT * (1 - TP)), True),
        ("TRAILING_STOP_MARKET", "buy", pytest.approx(qty), 2.0, True)]
    for _ in range(4):  # 101 (trough 28 500), 102 (level 29 070, high 28 700), 103 (high 29 500: fires)
        venue.advance(1)
        trader.poll()
    assert _short_qty(venue) == 0 and _guards(venue) == []
    side, reason, price = _exit(trader)
    assert (side, reason, price) == ("buy", "trailing_stop", pytest.approx(28_500.0 * 1.02))
    (trade,) = trader.loop.portfolio.closed_trades
    assert trade.pnl_usdt == pytest.approx(qty * FLAT * (1 - TAKER) - qty * 29_070.0 * (1 + TAKER))


def test_short_managed_trailing_stop_moves_the_exchange_buy_stop_down_at_each_bar_close(make_trader, venue):
    venue.move_clock_to(bar_ms(100))
    trader = make_trader(trailing_stop_pct=0.02, trailing_mode="managed", **SHORT)
    trader.poll()
    qty = _qty(FLAT)
    assert [g[:2] for g in _guards(venue)] == [("STOP_MARKET", "buy"), ("TAKE_PROFIT_MARKET", "buy")]
    venue.advance(1)
    trader.poll()  # bar 100 closed with low 29 970: the stop comes down to 29 970 x 1.02 = 30 569.40
    assert _guards(venue)[0][3] == pytest.approx(30_569.40)
    venue.advance(1)
    trader.poll()  # bar 101 closed with low 28 500: 29 070
    assert _guards(venue)[0] == ("STOP_MARKET", "buy", pytest.approx(qty), pytest.approx(29_070.0), True)
    for _ in range(2):  # bar 103 rallies to 29 500: the moved stop fires on the exchange
        venue.advance(1)
        trader.poll()
    assert _short_qty(venue) == 0 and _guards(venue) == []
    assert _exit(trader) == ("buy", "trailing_stop", pytest.approx(29_070.0))
