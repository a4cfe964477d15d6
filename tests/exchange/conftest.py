"""A tiny synthetic data dir in the shared-data layout and real local-exchange subprocesses over it.

The servers run at a fixed replay instant (``NOW``, from ``tests.exchange.support``) so what is
visible is known exactly: BTC/ETH spot and the BTC perpetual (1h) are half history, half future;
SOL spot is stored at 5m only (interval roll-ups); ADA spot starts after NOW (not listed yet).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qt.config import SyntheticParams
from exchange import LocalExchange, write_datadir
from data.synthetic import generate_market
from tests.exchange.support import API_KEY, API_SECRET, NOW, NOW_MS


@pytest.fixture(scope="session")
def datadir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("exchange-data")
    hourly = SyntheticParams(bars=3000, start="2023-01-01")
    write_datadir(generate_market(["BTC/USDT", "ETH/USDT"], "1h", hourly, seed=3), root, "1h")
    write_datadir(generate_market(["SOL/USDT"], "5m", SyntheticParams(bars=2000, start="2023-02-27"), seed=4),
                  root, "5m")
    write_datadir(generate_market(["ADA/USDT"], "1h", SyntheticParams(bars=500, start="2023-04-01"), seed=5),
                  root, "1h")
    rng = np.random.default_rng(6)
    times = pd.date_range("2023-01-01", periods=375, freq="8h", tz="UTC")
    funding = pd.DataFrame({"symbol": "BTC/USDT:USDT", "timestamp": times,
                            "funding_rate": np.round(rng.normal(1e-4, 2e-4, len(times)), 8)})
    write_datadir(generate_market(["BTC/USDT:USDT"], "1h", hourly, seed=7), root, "1h", funding=funding)
    return root


@pytest.fixture(scope="session")
def exchange(datadir) -> LocalExchange:
    """One server for the session; tests that set faults clear them (see ``faulty``)."""
    with LocalExchange(datadir, now=NOW) as ex:
        yield ex


@pytest.fixture
def faulty(exchange) -> LocalExchange:
    """The session server with faults allowed; they are cleared after the test."""
    exchange.set_faults({})
    yield exchange
    exchange.set_faults({})


@pytest.fixture(scope="session")
def trading_exchange(datadir) -> LocalExchange:
    """A second server for the order tests (they move its clock), with one API key."""
    with LocalExchange(datadir, now=NOW, api_keys={API_KEY: API_SECRET}) as ex:
        yield ex


@pytest.fixture
def venue(trading_exchange) -> LocalExchange:
    """The trading server with a fresh default account (10 000 USDT spot and futures, base
    fees, no liquidity cap), its clock back at NOW and no faults."""
    trading_exchange.set_faults({})
    trading_exchange.reset_account()
    trading_exchange.move_clock_to(NOW_MS)
    yield trading_exchange
    trading_exchange.set_faults({})


@pytest.fixture(scope="session")
def bybit_datadir(tmp_path_factory) -> Path:
    from tests.exchange.bybit_support import write_bybit_datadir

    return write_bybit_datadir(tmp_path_factory.mktemp("bybit-data"))


@pytest.fixture(scope="session")
def bybit_exchange(bybit_datadir) -> LocalExchange:
    """One server over the Bybit data dir at NOW, with the test API key; tests that set faults
    clear them, tests that trade reset the Bybit account (``bybit_venue``)."""
    with LocalExchange(bybit_datadir, now=NOW, api_keys={API_KEY: API_SECRET}) as ex:
        yield ex


@pytest.fixture
def bybit_venue(bybit_exchange) -> LocalExchange:
    """The Bybit server with a fresh Bybit account (10 000 USDT), its clock back at NOW, no faults."""
    bybit_exchange.set_faults({})
    bybit_exchange.reset_account(futures_usdt=10_000, prefix="/_qt/bybit")
    bybit_exchange.move_clock_to(NOW_MS)  # back from where a test left it: allowed with nothing open
    yield bybit_exchange
    bybit_exchange.set_faults({})
    bybit_exchange.reset_account(futures_usdt=10_000, prefix="/_qt/bybit")
    bybit_exchange.move_clock_to(NOW_MS)
