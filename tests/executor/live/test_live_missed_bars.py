"""Missed bars in the live daemon (issue #7): when it polls after several bars have closed - a slow
poll or a restart - every missed bar is accounted for (positions aged, equity recorded, a
max-holding exit decided at the bar it falls due), but entries are decided only on the newest bar.

Real local exchange, real ccxt, a signal service that says ``buy`` on every bar; the expected bars
follow from ``risk.max_holding_bars`` and the clock, never from the code under test.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from executor.live.trader import LiveTrader
from executor.signals import HttpSignalSource
from tests.executor.exec_support import FakeSignalService, params
from tests.executor.live.support import SYMBOL, bar_ms, buy_signals, start_exchange
from tests.executor.live.venues import BINANCE, venue_fixtures

pytestmark = pytest.mark.slow

START = 100  # the clock starts at this bar's open: bar 99 has just closed, the entry is decided there
MAX_HOLD = 4  # entry decided at 99, filled at the open of 100: held through 100..103, exit decided at 103
AWAY = 8  # then the clock jumps 8 bars: bars 100..107 have closed when the daemon looks again


def _ts(i: int) -> pd.Timestamp:
    return pd.Timestamp(bar_ms(i), unit="ms", tz="UTC")


adapter, exchange, venue, make_trader = venue_fixtures(clock_bar=START, namespace="missed",
                                                      risk={"max_holding_bars": MAX_HOLD}, venues=(BINANCE,))


def _assert_every_missed_bar_accounted_for(trader, venue) -> None:
    decisions = trader.store.read("decisions")
    decisions["ts"] = pd.to_datetime(decisions["ts"], utc=True)
    exits = decisions[decisions["outcome"] == "exit"]
    assert exits[["ts", "reason"]].values.tolist() == [[_ts(START + MAX_HOLD - 1), "max_holding"]]  # not late
    entries = decisions[decisions["outcome"] == "enter"]
    assert entries["ts"].max() == _ts(START + AWAY - 1)  # the newest bar: a fresh signal, a new entry
    assert not ((entries["ts"] > _ts(START - 1)) & (entries["ts"] < _ts(START + AWAY - 1))).any()
    skipped = decisions[decisions["reason"] == "MISSED_BAR"]["ts"].tolist()
    assert skipped and all(_ts(START) <= t < _ts(START + AWAY - 1) for t in skipped)
    equity = pd.to_datetime(trader.store.read("equity")["ts"], utc=True)
    assert set(_ts(i) for i in range(START, START + AWAY)) <= set(equity)  # one point per missed bar
    fills = trader.store.read("fills")
    assert fills[fills["purpose"] == "exit"]["reason"].tolist() == ["max_holding"]
    c = BINANCE.client(venue)
    entry_orders = [o for o in c.fetch_orders(SYMBOL) if not o["reduceOnly"]]
    assert len(entry_orders) == 2  # the first entry and the one at the newest bar, nothing in between


def test_a_slow_poll_steps_every_missed_bar_and_enters_only_on_the_newest(make_trader, venue):
    trader = make_trader()
    assert trader.poll() == _ts(START - 1)  # entered
    venue.advance(AWAY)
    assert trader.poll() == _ts(START + AWAY - 1)
    _assert_every_missed_bar_accounted_for(trader, venue)
    assert trader.poll() is None  # nothing stepped twice


def test_a_restart_after_missed_bars_ages_the_position_once_and_exits_on_time(make_trader, venue):
    make_trader().poll()  # entered at bar 99, then the daemon stops
    venue.advance(AWAY)
    restarted = make_trader()
    assert restarted.poll() == _ts(START + AWAY - 1)
    _assert_every_missed_bar_accounted_for(restarted, venue)


def test_a_volatility_sized_daemon_is_primed_from_the_exchange_candles_and_sizes_its_first_entry(tmp_path):
    """No week of warm-up after a (re)start: the candles before its first bar come from the exchange."""
    from exchange.datadir import write_datadir
    from tests.executor.live.support import candles

    lookback = 24
    c = candles()
    c["close"] = c["close"] * (1 + 0.01 * np.sin(np.arange(len(c))))  # a market that moves
    c["high"], c["low"] = c[["open", "close"]].max(axis=1) * 1.001, c[["open", "close"]].min(axis=1) * 0.999
    funding = pd.DataFrame({"symbol": SYMBOL, "timestamp": c["timestamp"].iloc[::8].to_numpy(), "funding_rate": 0.0})
    root = tmp_path / "moving-market"
    write_datadir(c, root, "1h", funding=funding)
    venue = start_exchange(root)
    p = params(data={"symbols": [SYMBOL]}, risk={"sizing": "volatility_target", "vol_target_annual": 0.1,
                                                 "vol_lookback_bars": lookback, "position_fraction": 0.9})
    try:
        venue.move_clock_to(bar_ms(START))
        with FakeSignalService(buy_signals()) as svc:
            trader = LiveTrader(p, BINANCE.client(venue), HttpSignalSource(svc.url, timeout_s=5),
                                tmp_path / "state.sqlite", "vol", sleep=time.sleep)
            try:
                trader.start()
                decided_at = trader.poll()
                closes = c[c["timestamp"] <= decided_at]["close"].to_numpy()[-(lookback + 1):]
                sigma = float(pd.Series(np.diff(np.log(closes))).std(ddof=1)) * np.sqrt(365.25 * 24)
                assert trader.loop.volatility.annual(SYMBOL) == pytest.approx(sigma, rel=1e-9)
                decisions = trader.store.read("decisions")
                entries = decisions[decisions["outcome"] == "enter"]
                assert len(entries) == 1, decisions[["ts", "outcome", "reason"]]
                assert entries["notional_usdt"].iloc[0] == pytest.approx(10_000 * min(0.9, 0.1 / sigma), rel=1e-6)
            finally:
                trader.close()
    finally:
        venue.stop()
