"""Leverage is verified at start-up, not assumed: the executor sets the configured leverage,
reads it back from the exchange, and refuses entries on a symbol where the two differ (one
line naming symbol, wanted and actual), while the other symbols trade.

Real ccxt against the real local exchange; its ``refuse`` fault rule declines the leverage
change for one symbol, which then stays at the exchange's default (20x).
"""

from __future__ import annotations

import time

import pandas as pd
import pytest

from executor.signals import HttpSignalSource
from executor.live.trader import LiveTrader
from exchange import write_datadir
from tests.executor.exec_support import FakeSignalService, params
from tests.executor.live.support import MARKET_ID, SYMBOL, bar_ms, buy_signals, candles, client, running_exchange

pytestmark = pytest.mark.slow

OTHER, OTHER_ID = "ETH/USDT:USDT", "ETHUSDT"
EXCHANGE_DEFAULT_LEVERAGE = 20  # Binance's default, kept by the local exchange


@pytest.fixture(scope="module")
def venue(tmp_path_factory):
    root = tmp_path_factory.mktemp("two-perps")
    both = pd.concat([candles(), candles().assign(symbol=OTHER)], ignore_index=True)
    write_datadir(both, root, "1h")
    with running_exchange(root) as ex:
        ex.move_clock_to(bar_ms(100))
        yield ex


def test_leverage_refused_by_the_exchange_means_no_entry_on_that_symbol_while_others_trade(venue, tmp_path, caplog):
    venue.set_faults({"rules": [{"kind": "refuse", "path_prefix": "/fapi/v1/leverage", "symbol": OTHER_ID}]})
    signals = pd.concat([buy_signals(), buy_signals().assign(symbol=OTHER)], ignore_index=True)
    with FakeSignalService(signals) as svc:
        trader = LiveTrader(params(data={"symbols": [SYMBOL, OTHER]}, risk={"leverage": 2}), client(venue),
                            HttpSignalSource(svc.url, timeout_s=5), tmp_path / "state.sqlite", "lev",
                            sleep=time.sleep)
        try:
            trader.start()
            trader.poll()
            decisions, alerts = trader.store.read("decisions"), trader.store.read("alerts")
        finally:
            trader.close()
    positions = {p["symbol"]: p["contracts"] for p in client(venue).fetch_positions([SYMBOL, OTHER])}
    assert positions.get(SYMBOL, 0) > 0 and positions.get(OTHER, 0) == 0
    assert client(venue).fetch_leverage(SYMBOL)["longLeverage"] == 2
    other = decisions[decisions["symbol"] == OTHER]
    assert other["reason"].tolist() == ["LEVERAGE_UNVERIFIED"]
    (line,) = alerts[alerts["kind"] == "LEVERAGE_UNVERIFIED"]["message"].tolist()
    assert OTHER in line and "2x" in line and f"{EXCHANGE_DEFAULT_LEVERAGE}x" in line
    assert "\n" not in line


def _trade_one_bar(venue, tmp_path, symbols, risk=None, before_poll=None):
    """Start a trader at 2x on ``symbols`` (buy signals everywhere), optionally meddle, poll one bar."""
    signals = pd.concat([buy_signals().assign(symbol=s) for s in symbols], ignore_index=True)
    with FakeSignalService(signals) as svc:
        trader = LiveTrader(params(data={"symbols": symbols}, risk={"leverage": 2, **(risk or {})}), client(venue),
                            HttpSignalSource(svc.url, timeout_s=5), tmp_path / "state.sqlite", "lev",
                            sleep=time.sleep)
        try:
            trader.start()
            if before_poll is not None:
                before_poll()
            trader.poll()
            return trader.store.read("decisions"), trader.store.read("alerts")
        finally:
            trader.close()


def test_leverage_changed_after_start_up_is_caught_before_the_first_entry_on_that_symbol(venue, tmp_path):
    venue.set_faults({})
    venue.reset_account()

    def change_eth_behind_our_back():  # someone sets 5x in the exchange's UI, then changes are refused
        client(venue).set_leverage(5, OTHER)
        venue.set_faults({"rules": [{"kind": "refuse", "path_prefix": "/fapi/v1/leverage", "symbol": OTHER_ID}]})

    try:
        decisions, alerts = _trade_one_bar(venue, tmp_path, [SYMBOL, OTHER], before_poll=change_eth_behind_our_back)
    finally:
        venue.set_faults({})
    positions = {p["symbol"]: p["contracts"] for p in client(venue).fetch_positions([SYMBOL, OTHER])}
    assert positions.get(SYMBOL, 0) > 0 and positions.get(OTHER, 0) == 0
    assert not [o for o in client(venue).fetch_orders(OTHER)]  # nothing was sent for ETH
    other = decisions[decisions["symbol"] == OTHER]
    # the loop decided to enter; the check in front of the order refused it before anything was sent
    assert other[["outcome", "reason"]].values.tolist() == [["enter", "signal_buy"],
                                                            ["rejected", "LEVERAGE_UNVERIFIED"]]
    (line,) = alerts[alerts["kind"] == "LEVERAGE_UNVERIFIED"]["message"].tolist()
    assert OTHER in line and "wanted 2x" in line and "reports 5x" in line and "\n" not in line


def test_leverage_check_refuses_a_margin_mode_the_exchange_will_not_set(venue, tmp_path):
    """``risk.margin_mode: isolated`` against an exchange that keeps the symbol in cross margin
    (its ``refuse`` fault rule declines the marginType change, as Binance refuses it with open
    orders or a position): no entry, one line naming symbol, wanted and actual mode."""
    venue.set_faults({"rules": [{"kind": "refuse", "path_prefix": "/fapi/v1/marginType", "symbol": MARKET_ID}]})
    venue.reset_account()
    try:
        decisions, alerts = _trade_one_bar(venue, tmp_path, [SYMBOL], risk={"margin_mode": "isolated"})
    finally:
        venue.set_faults({})
    assert sum(p["contracts"] for p in client(venue).fetch_positions([SYMBOL])) == 0
    assert client(venue).fetch_margin_mode(SYMBOL)["marginMode"] == "cross"
    assert decisions["reason"].tolist() == ["LEVERAGE_UNVERIFIED"]
    (line,) = alerts[alerts["kind"] == "LEVERAGE_UNVERIFIED"]["message"].tolist()
    assert SYMBOL in line and "margin mode wanted isolated" in line and "reports cross" in line and "\n" not in line


def test_leverage_and_cross_margin_as_configured_trade_normally(venue, tmp_path):
    venue.set_faults({})
    venue.reset_account()
    decisions, alerts = _trade_one_bar(venue, tmp_path, [SYMBOL], risk={"margin_mode": "cross"})
    assert sum(p["contracts"] for p in client(venue).fetch_positions([SYMBOL])) > 0
    assert client(venue).fetch_leverage(SYMBOL)["longLeverage"] == 2
    assert "LEVERAGE_UNVERIFIED" not in alerts["kind"].tolist()
