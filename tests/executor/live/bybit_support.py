"""Fixtures and helpers of the Bybit live-broker tests (``test_*_bybit.py``): a local exchange serving
``support.candles()`` as Bybit's v5 market, a fresh Bybit account per test and a trader factory over
the real ccxt ``bybit`` client. Import the fixtures into a test module to use them."""

from __future__ import annotations

import time

import pytest

from executor.live.trader import LiveTrader
from executor.signals import HttpSignalSource
from tests.executor.exec_support import FakeSignalService, params
from tests.executor.live.support import (PRICE, SYMBOL, bar_ms, buy_signals, bybit_client, reset_bybit,
                                         running_exchange, write_bybit_market)

CALM_BAR = 100  # the clock starts at this bar's open (bar 99 just closed); bars 99..150 are calm
SL, TP = 0.03, 0.06  # the default risk.stop_loss_pct / take_profit_pct
BYBIT_RISK = {"margin_mode": "cross"}  # the local Bybit unified account is cross margined (read back only)


@pytest.fixture(scope="module")
def exchange(tmp_path_factory):
    with running_exchange(write_bybit_market(tmp_path_factory.mktemp("bybit-live-market"))) as ex:
        yield ex


@pytest.fixture
def venue(exchange):
    """A fresh Bybit account (10 000 USDT), no faults, clock at CALM_BAR."""
    exchange.set_faults({})
    reset_bybit(exchange)
    exchange.move_clock_to(bar_ms(CALM_BAR))
    yield exchange
    exchange.set_faults({})


@pytest.fixture
def signals():
    with FakeSignalService(buy_signals()) as svc:
        yield svc


@pytest.fixture
def make_trader(venue, signals, tmp_path):
    made = []

    def make(timeout_ms: int = 10_000, **risk) -> LiveTrader:
        p = params(data={"symbols": [SYMBOL]}, risk={**BYBIT_RISK, **risk})
        trader = LiveTrader(p, bybit_client(venue, timeout_ms), HttpSignalSource(signals.url, timeout_s=5),
                            tmp_path / "state.sqlite", "test", sleep=time.sleep)
        made.append(trader)
        trader.start()
        return trader

    yield make
    for t in made:
        t.close()


def expected_qty(notional: float = 2_000.0) -> float:
    return int(notional / PRICE * 100_000) / 100_000


def journal_rows(trader, purpose: str) -> list[tuple]:
    return trader.store.conn.execute("SELECT client_id, exchange_id, status, qty FROM exchange_orders "
                                     "WHERE purpose=? ORDER BY rowid", (purpose,)).fetchall()


def guarded(qty: float) -> list[tuple]:
    return [("StopLoss", pytest.approx(qty), pytest.approx(PRICE * (1 - SL)), True),
            ("TakeProfit", pytest.approx(qty), pytest.approx(PRICE * (1 + TP)), True)]


