"""Isolated margin, liquidation and shorts on the local exchange through the real ccxt client,
as the executor's broker will see them: the margin mode and leverage read back, the margin a
position holds, its liquidation price (``qt.margin``), the bar that liquidates it, the
``autoclose-`` order ``fetch_my_liquidations`` returns, and a short's protective orders.

A hand-made market: two perpetuals flat at 30 000 (BTC) and 2 000 (ETH) with a 0.1 % range,
except the bars in ``MOVES`` (same relative path for both). Expected numbers are computed here
from those candles, the fee rate and ``qt.margin``, never read from the server.
"""

from __future__ import annotations

import ccxt
import pandas as pd
import pytest

from qt.margin import BINANCE_BTCUSDT_BRACKETS, liquidation_price
from exchange import LocalExchange, make_ccxt, write_datadir

pytestmark = pytest.mark.slow

BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"
PRICES = {BTC: 30_000.0, ETH: 2_000.0}
T0 = pd.Timestamp("2024-01-01", tz="UTC")
HOUR_MS = 3_600_000
KEY, SECRET = "iso-key", "iso-secret"
TAKER = 0.0005
START = 5  # each test starts in the middle of this bar
# bar index -> (open, high, low, close) as multiples of the flat price
MOVES = {
    10: (1.0, 1.001, 0.90, 0.95),  # -10 %: reaches a 10x long's liquidation price (-9.64 %)
    20: (1.0, 1.10, 0.999, 1.05),  # +10 %: reaches a 10x short's (+9.56 %)
    30: (0.86, 0.87, 0.85, 0.86),  # opens 14 % lower: a gap through a 10x long's liquidation price
    41: (1.0, 1.001, 29_000 / 30_000, 29_100 / 30_000),  # falling: a short's take-profit at 29 400
    42: (29_100 / 30_000, 29_400 / 30_000, 29_050 / 30_000, 29_300 / 30_000),  # pull-back: the 1 % trail
    43: (29_300 / 30_000, 30_700 / 30_000, 29_250 / 30_000, 1.0),  # rising: a short's stop at 30 600
}


def bar_ms(i: int) -> int:
    return int(T0.value // 1_000_000) + i * HOUR_MS


def bar(symbol: str, i: int) -> tuple[float, float, float, float]:
    o, h, low, c = MOVES.get(i, (1.0, 1.001, 0.999, 1.0))
    p = PRICES[symbol]
    return o * p, h * p, low * p, c * p


def _candles() -> pd.DataFrame:
    rows = []
    for symbol in PRICES:
        for i in range(60):
            o, h, low, c = bar(symbol, i)
            rows.append({"symbol": symbol, "timestamp": T0 + pd.Timedelta(hours=i), "open": o, "high": h, "low": low,
                         "close": c, "volume": 1_000.0})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("isolated-market")
    funding = pd.DataFrame({"symbol": BTC, "timestamp": pd.date_range(T0, periods=8, freq="8h", tz="UTC"),
                            "funding_rate": 0.0})
    write_datadir(_candles(), root, "1h", funding=funding)
    with LocalExchange(root, now=T0.isoformat(), api_keys={KEY: SECRET}) as ex:
        yield ex


@pytest.fixture
def venue(server) -> LocalExchange:
    server.set_faults({})
    server.reset_account()
    server.move_clock_to(bar_ms(START) + HOUR_MS // 2)
    return server


@pytest.fixture
def perp(venue):
    client = make_ccxt("perp", venue.url, api_key=KEY, secret=SECRET)
    client.load_markets()
    return client


def isolated(perp, symbol: str, leverage: int = 10) -> None:
    perp.set_margin_mode("isolated", symbol)
    perp.set_leverage(leverage, symbol)


def expected_lp(side: str, symbol: str, qty: float, leverage: int = 10) -> float:
    entry = PRICES[symbol]
    return liquidation_price(side, entry, qty, qty * entry / leverage, BINANCE_BTCUSDT_BRACKETS)


def wallet(perp) -> dict:
    info = perp.fetch_balance()["info"]["assets"][0]
    return {k: float(info[k]) for k in ("walletBalance", "crossWalletBalance", "availableBalance")}


def test_isolated_10x_long_and_short_show_mode_leverage_liquidation_price_and_the_margin_held(perp):
    isolated(perp, BTC)
    isolated(perp, ETH)
    assert perp.fetch_margin_mode(BTC)["marginMode"] == "isolated"
    modes = perp.fetch_margin_modes([BTC, ETH])
    assert (modes[BTC]["marginMode"], modes[ETH]["marginMode"]) == ("isolated", "isolated")
    lev = perp.fetch_leverage(BTC)
    assert (lev["marginMode"], lev["longLeverage"], lev["shortLeverage"]) == ("isolated", 10, 10)

    perp.create_order(BTC, "market", "buy", 0.1)
    perp.create_order(ETH, "market", "sell", 1.5)
    margins = {BTC: 0.1 * 30_000 / 10, ETH: 1.5 * 2_000 / 10}
    fees = (0.1 * 30_000 + 1.5 * 2_000) * TAKER
    by_symbol = {p["symbol"]: p for p in perp.fetch_positions([BTC, ETH])}
    for symbol, side, qty in ((BTC, "long", 0.1), (ETH, "short", 1.5)):
        pos = by_symbol[symbol]
        assert (pos["marginMode"], pos["side"], pos["contracts"]) == ("isolated", side, qty)
        assert pos["liquidationPrice"] == pytest.approx(expected_lp(side, symbol, qty), rel=1e-12)
        assert pos["collateral"] == pytest.approx(margins[symbol], rel=1e-12)  # isolatedMargin: wallet + uPnL (0)
        assert float(pos["info"]["isolatedWallet"]) == pytest.approx(margins[symbol], rel=1e-12)
    v2 = {p["symbol"]: p for p in perp.fetch_positions([BTC, ETH], {"useV2": True})}  # v2 also says leverage
    assert [(v2[s]["marginMode"], v2[s]["leverage"]) for s in (BTC, ETH)] == [("isolated", 10)] * 2
    assert by_symbol[BTC]["liquidationPrice"] == pytest.approx(27_108.43373493976, rel=1e-12)  # (300-3000)/(0.0004-0.1)
    via_account = {p["symbol"]: p for p in perp.fetch_positions([BTC, ETH], {"method": "account"})}
    assert via_account[ETH]["marginMode"] == "isolated" and via_account[ETH]["side"] == "short"
    w = wallet(perp)
    assert w["walletBalance"] == pytest.approx(10_000 - fees, rel=1e-12)  # Binance's walletBalance holds both
    assert w["crossWalletBalance"] == pytest.approx(10_000 - fees - sum(margins.values()), rel=1e-12)
    assert w["availableBalance"] == pytest.approx(w["crossWalletBalance"], rel=1e-12)
    assert perp.fetch_balance()["USDT"]["free"] == pytest.approx(w["availableBalance"], rel=1e-12)


def test_margin_type_change_is_refused_with_a_position_or_open_orders_and_brackets_cap_leverage(perp):
    perp.set_margin_mode("cross", BTC)  # unchanged: ccxt swallows Binance's -4046
    perp.create_order(ETH, "limit", "buy", 1, 1_800)
    with pytest.raises(ccxt.ExchangeError, match="-4047"):  # ccxt's class depends on the host: code it is
        perp.set_margin_mode("isolated", ETH)
    perp.create_order(BTC, "market", "buy", 2)  # 60 000 USDT at 20x
    with pytest.raises(ccxt.ExchangeError, match="-4048"):
        perp.set_margin_mode("isolated", BTC)
    with pytest.raises(ccxt.OperationRejected, match="-2027"):
        perp.set_leverage(125, BTC)  # 125x allows 50 000 at most
    assert perp.fetch_margin_mode(BTC)["marginMode"] == "cross"
    tiers = perp.fetch_leverage_tiers([BTC])[BTC]
    assert [t["maxLeverage"] for t in tiers] == [b.max_leverage for b in BINANCE_BTCUSDT_BRACKETS]
    assert [t["maintenanceMarginRate"] for t in tiers] == [b.mmr for b in BINANCE_BTCUSDT_BRACKETS]
    assert [t["maxNotional"] for t in tiers] == [b.cap for b in BINANCE_BTCUSDT_BRACKETS]


@pytest.mark.parametrize("symbol, side, qty, open_bar, liq_bar, gap", [
    (BTC, "long", 0.1, START, 10, False),
    (ETH, "short", 1.5, START, 20, False),
    (BTC, "long", 0.1, 25, 30, True),
])
def test_isolated_liquidation_cancels_the_orders_closes_at_the_liquidation_price_and_takes_the_margin(
        venue, perp, symbol, side, qty, open_bar, liq_bar, gap):
    venue.move_clock_to(bar_ms(open_bar) + HOUR_MS // 2)
    isolated(perp, symbol)
    entry = PRICES[symbol]
    buy = side == "long"
    perp.create_order(symbol, "market", "buy" if buy else "sell", qty)
    lp = expected_lp(side, symbol, qty)
    closing = "sell" if buy else "buy"
    beyond = perp.price_to_precision(symbol, lp * (0.98 if buy else 1.02))  # a stop past the liquidation price
    sl = perp.create_order(symbol, "market", closing, qty, None, {"stopLossPrice": beyond, "reduceOnly": True})
    far_tp = perp.create_order(symbol, "market", closing, qty, None,
                               {"takeProfitPrice": entry * (1.2 if buy else 0.8), "reduceOnly": True})
    margin = qty * entry / 10
    before = wallet(perp)["walletBalance"]
    assert before == pytest.approx(10_000 - qty * entry * TAKER, rel=1e-12)

    venue.move_clock_to(bar_ms(liq_bar - 1) + HOUR_MS // 2)
    assert perp.fetch_positions([symbol])[0]["contracts"] == qty  # not yet
    venue.advance(1)
    assert perp.fetch_positions([symbol]) == []
    assert perp.fetch_open_orders(symbol, params={"trigger": True}) == []
    for order in (sl, far_tp):
        assert perp.fetch_order(order["id"], symbol, {"trigger": True})["status"] == "canceled"
    fill = bar(symbol, liq_bar)[0] if gap else lp
    (liq,) = perp.fetch_my_liquidations(symbol)
    assert liq["price"] == pytest.approx(fill, rel=1e-12) and liq["contracts"] == qty and liq["side"] == closing
    assert liq["timestamp"] == bar_ms(liq_bar)
    auto = [o for o in perp.fetch_orders(symbol) if o["clientOrderId"].startswith("autoclose-")]
    assert len(auto) == 1 and auto[0]["clientOrderId"][len("autoclose-"):].isdigit()
    assert (auto[0]["status"], auto[0]["type"], auto[0]["timeInForce"]) == ("closed", "limit", "IOC")
    last = perp.fetch_my_trades(symbol)[-1]
    assert last["order"] == auto[0]["id"] and last["price"] == pytest.approx(fill, rel=1e-12)
    # the wallet lost exactly the isolated margin (and paid the opening fee before)
    assert wallet(perp)["walletBalance"] == pytest.approx(10_000 - qty * entry * TAKER - margin, rel=1e-12)
    assert wallet(perp)["crossWalletBalance"] == wallet(perp)["walletBalance"]


def test_a_shorts_buy_stop_before_the_liquidation_price_fills_first_and_nothing_is_liquidated(venue, perp):
    isolated(perp, BTC)
    perp.create_order(BTC, "market", "sell", 0.1)
    assert expected_lp("short", BTC, 0.1) > 31_500
    stop = perp.create_order(BTC, "market", "buy", 0.1, None, {"stopLossPrice": 31_500, "reduceOnly": True})
    venue.move_clock_to(bar_ms(20) + HOUR_MS // 2)  # the +10 % bar reaches both the stop and the LP
    assert perp.fetch_order(stop["id"], BTC, {"trigger": True})["status"] == "closed"
    assert perp.fetch_positions([BTC]) == [] and perp.fetch_my_liquidations(BTC) == []
    assert perp.fetch_my_trades(BTC)[-1]["price"] == 31_500
    fees = (0.1 * 30_000 + 0.1 * 31_500) * TAKER
    assert wallet(perp)["walletBalance"] == pytest.approx(10_000 - 0.1 * 1_500 - fees, rel=1e-12)


def test_cross_short_round_trip_take_profit_trailing_stop_and_stop_trigger_at_their_levels(venue, perp):
    """Short 0.3 (cross, 20x) guarded by three reduce-only BUYs of 0.1: a take-profit at 29 400
    (bar 41 falls to 29 000), a 1 % trailing stop (the trail follows the lowest low: 29 000 after
    bar 41, so 29 290 on bar 42) and a stop at 30 600 (bar 43 rises to 30 700)."""
    venue.move_clock_to(bar_ms(40) + HOUR_MS // 2)
    perp.create_order(BTC, "market", "sell", 0.3)
    tp = perp.create_order(BTC, "market", "buy", 0.1, None, {"takeProfitPrice": 29_400, "reduceOnly": True})
    trail = perp.create_order(BTC, "market", "buy", 0.1, None, {"trailingPercent": 1, "reduceOnly": True})
    sl = perp.create_order(BTC, "market", "buy", 0.1, None, {"stopLossPrice": 30_600, "reduceOnly": True})
    assert perp.fetch_positions([BTC])[0]["marginMode"] == "cross"
    expected = {41: (tp, 29_400.0), 42: (trail, 29_000 * 1.01), 43: (sl, 30_600.0)}
    for i, (order, price) in expected.items():
        venue.advance(1)
        assert perp.fetch_order(order["id"], BTC, {"trigger": True})["status"] == "closed", f"bar {i}"
        trade = perp.fetch_my_trades(BTC)[-1]
        assert (trade["side"], trade["amount"]) == ("buy", 0.1)
        assert trade["price"] == pytest.approx(price, rel=1e-12), f"bar {i}"
        assert float(trade["info"]["realizedPnl"]) == pytest.approx(0.1 * (30_000 - price), rel=1e-9)
    assert perp.fetch_positions([BTC]) == []
