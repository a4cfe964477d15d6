"""Live entries go through the one RiskEngine: its refusals hold in testnet mode, with nothing sent.

Real ccxt against the real local exchange; two perpetuals (BTC at 30 000, ETH at 2 000) that
move together (the same small relative wiggle every bar, so their returns correlate at 1), and
each is funded every 8 h - BTC at +0.1 % per interval, ETH at 0. The trader fetches that
funding history from the exchange (``fetch_funding_rate_history``) for the funding filter and
primes the correlation history with the exchange's candles before its first bar.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from exchange import write_datadir
from tests.executor.exec_support import signals_frame
from tests.executor.live.support import SYMBOL, T0, bar_ms, client, running_exchange, trader_factory

pytestmark = pytest.mark.slow

ETH = "ETH/USDT:USDT"
PRICES = {SYMBOL: 30_000.0, ETH: 2_000.0}
FUNDING = {SYMBOL: 0.001, ETH: 0.0}
N_BARS = 80
START = 40  # the clock: bar 39 is the first stepped


def _candles() -> pd.DataFrame:
    rows = []
    for sym, p in PRICES.items():
        for i in range(N_BARS):
            c = p * (1 + 0.002 * math.sin(i))
            rows.append({"symbol": sym, "timestamp": T0 + pd.Timedelta(hours=i), "open": c, "high": c * 1.001,
                         "low": c * 0.999, "close": c, "volume": 1_000.0})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def exchange(tmp_path_factory):
    root = tmp_path_factory.mktemp("refusal-market")
    stamps = pd.date_range(T0, periods=N_BARS // 8, freq="8h", tz="UTC")
    funding = pd.concat([pd.DataFrame({"symbol": s, "timestamp": stamps, "funding_rate": r})
                         for s, r in FUNDING.items()], ignore_index=True)
    write_datadir(_candles(), root, "1h", funding=funding)
    with running_exchange(root) as ex:
        yield ex


@pytest.fixture
def venue(exchange):
    exchange.set_faults({})
    exchange.reset_account()
    exchange.move_clock_to(bar_ms(START))
    yield exchange


def _trader(venue, tmp_path, actions: list[str], symbols=(SYMBOL, ETH)):
    signals = signals_frame({s: actions for s in symbols})
    return trader_factory(lambda: client(venue), signals, symbols[0], tmp_path / "state.sqlite", "refuse",
                          symbols=list(symbols))


def _orders(venue, sym: str) -> list:
    return client(venue).fetch_orders(sym)


def _decisions(trader, sym: str) -> list[tuple[str, str]]:
    d = trader.store.read("decisions")
    return [tuple(r) for r in d[d["symbol"] == sym][["outcome", "reason"]].values.tolist()]


def test_live_margin_guard_refuses_an_entry_that_would_leave_too_little_free_margin(venue, tmp_path):
    with _trader(venue, tmp_path, ["buy"] * N_BARS, symbols=(SYMBOL,)) as make:
        trader = make(min_free_margin_fraction=0.9995)
        trader.poll()
        assert _decisions(trader, SYMBOL) == [("denied", "MARGIN_GUARD")]
    assert _orders(venue, SYMBOL) == []  # nothing sent


def test_live_correlation_cap_refuses_the_second_of_two_correlated_longs(venue, tmp_path):
    with _trader(venue, tmp_path, ["buy"] * N_BARS) as make:
        trader = make(max_cluster_exposure=0.2, correlation_lookback_bars=24)
        trader.poll()
        assert _decisions(trader, SYMBOL) == [("enter", "signal_buy")]
        assert _decisions(trader, ETH) == [("denied", "CORRELATION_CAP")]
    assert len(_orders(venue, SYMBOL)) >= 1 and _orders(venue, ETH) == []


def test_live_funding_filter_reads_the_exchanges_funding_history(venue, tmp_path):
    with _trader(venue, tmp_path, ["buy"] * N_BARS) as make:
        trader = make(max_entry_funding_rate=0.0005)
        now = pd.Timestamp(bar_ms(START), unit="ms", tz="UTC")
        assert trader.loop.risk.funding.last_rate_before(SYMBOL, now) == pytest.approx(0.001)
        assert trader.loop.risk.funding.last_rate_before(ETH, now) == 0.0
        trader.poll()
        assert _decisions(trader, SYMBOL) == [("denied", "FUNDING_FILTER")]  # longs pay 0.1 %: refused
        assert _decisions(trader, ETH) == [("enter", "signal_buy")]
    assert _orders(venue, SYMBOL) == [] and len(_orders(venue, ETH)) >= 1


def test_live_supervisor_halts_entries_on_one_sided_signals_and_resumes_when_they_vary(venue, tmp_path):
    # from bar 36: sell, sell, sell (one-sided: no short allowed, nothing opens), then a buy while the
    # window is still one-sided, then holds (healthy again), then a buy that enters
    first = 36
    actions = ["hold"] * first + ["sell", "sell", "sell", "buy", "hold", "hold", "buy"]
    actions += ["hold"] * (N_BARS - len(actions))
    venue.move_clock_to(bar_ms(first + 1))
    with _trader(venue, tmp_path, actions, symbols=(SYMBOL,)) as make:
        trader = make(supervisor_window_bars=3, supervisor_max_one_side=0.5)
        for _ in range(7):
            trader.poll()
            venue.advance(1)
        alerts = trader.store.read("alerts")["kind"].tolist()
        assert alerts.count("SIGNAL_DEGENERATE") == 1 and alerts.count("SIGNAL_HEALTHY") == 1
        assert alerts.index("SIGNAL_DEGENERATE") < alerts.index("SIGNAL_HEALTHY")
        entries = [d for d in _decisions(trader, SYMBOL) if d[0] in ("denied", "enter")]
        assert entries == [("denied", "SIGNAL_DEGENERATE"), ("enter", "signal_buy")]
    (entry,) = _orders(venue, SYMBOL)
    assert entry["timestamp"] == bar_ms(first + 7)  # sent at the close of the last buy's bar
