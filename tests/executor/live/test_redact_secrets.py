"""A key and a secret planted in an exchange error never reach the logs, the SQLite state,
Redis or a report: every path that turns an exchange error into text goes through
``qt.redact`` (and the log handlers the executor configures redact whatever slips through).

The errors are raised by the real broker paths (start-up protectives on a perpetual, the OCO on
spot) against the real local exchange; only the one call that fails is replaced, so the message
is one we chose - an exchange echoing the credentials back is what we must survive.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import time

import ccxt
import pandas as pd
import pytest
import redis

from executor.live.broker import CcxtBroker
from executor.live.spot import SpotBroker
from executor.signals import HttpSignalSource
from executor.live.trader import LiveTrader
from qt.procs import start_redis
from tests.executor.exec_support import FakeSignalService, params
from tests.executor.live.support import (API_KEY, API_SECRET, SPOT_SYMBOL, SYMBOL, bar_ms, buy_signals,
                                         client, running_exchange, spot_candles, spot_client)
from tests.executor.live.support import candles as perp_candles
from exchange import write_datadir

pytestmark = pytest.mark.slow

CALM_BAR = 100
ECHO = f'binance {{"code":-1022,"msg":"rejected request from {API_KEY} signed with {API_SECRET}"}}'


@pytest.fixture(scope="module")
def exchange(tmp_path_factory):
    root = tmp_path_factory.mktemp("redact-market")
    funding = pd.DataFrame({"symbol": SYMBOL, "timestamp": pd.date_range(perp_candles()["timestamp"].iloc[0],
                                                                         periods=50, freq="8h", tz="UTC"),
                            "funding_rate": 0.0})
    write_datadir(pd.concat([perp_candles(), spot_candles()], ignore_index=True), root, "1h", funding=funding)
    with running_exchange(root) as ex:
        yield ex


@pytest.fixture
def venue(exchange):
    exchange.set_faults({})
    exchange.reset_account(spot={"USDT": 10_000})
    exchange.move_clock_to(bar_ms(CALM_BAR))
    yield exchange


@pytest.fixture
def redis_url(tmp_path):
    proc, url = start_redis(tmp_path)
    yield url
    proc.stop()


def _leaks(text: str) -> list[str]:
    return [s for s in (API_KEY, API_SECRET) if s in text]


def _sqlite_text(path) -> str:
    con = sqlite3.connect(path)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return "\n".join(repr(row) for t in tables for row in con.execute(f'SELECT * FROM "{t}"'))
    finally:
        con.close()


def _redis_text(url: str) -> str:
    r = redis.Redis.from_url(url)
    out = []
    for key in r.keys("*"):
        kind = r.type(key)
        if kind == b"stream":
            out.extend(repr(e) for e in r.xrange(key))
        elif kind == b"string":
            out.append(repr(r.get(key)))
    return "\n".join(out)


def test_redact_one_function_hides_planted_credentials_signatures_and_key_headers():
    from qt.redact import one_line, redact

    text = (f"{ECHO} GET http://x/fapi/v1/order?symbol=BTCUSDT&timestamp=1&signature=abc123def "
            f"headers {{'X-MBX-APIKEY': 'hdr-key-9'}} apiKey=qk-77")
    out = redact(text, (API_KEY, API_SECRET))
    assert _leaks(out) == []
    for fragment in ("abc123def", "hdr-key-9", "qk-77"):
        assert fragment not in out
    assert "BTCUSDT" in out and "-1022" in out  # what the operator needs stays
    bybit = redact("headers {'X-BAPI-API-KEY': 'bk-31', 'X-BAPI-SIGN': 'f00dcafe', 'X-BAPI-SIGN-TYPE': '2', "
                   "'X-BAPI-RECV-WINDOW': '5000'}")  # Bybit v5's signed request headers
    assert "bk-31" not in bybit and "f00dcafe" not in bybit and "'X-BAPI-SIGN-TYPE': '2'" in bybit
    line = one_line(ccxt.ExchangeError(ECHO + "\nsecond line"), (API_KEY, API_SECRET))
    assert line.startswith("ExchangeError: ") and "\n" not in line and _leaks(line) == []


def test_redact_filter_hides_credentials_in_messages_arguments_and_tracebacks():
    from qt.redact import RedactingFilter

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    handler = Keep()
    handler.addFilter(RedactingFilter((API_KEY, API_SECRET)))
    logger = logging.getLogger("test.redact.filter")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("call failed: %s", ccxt.ExchangeError(ECHO))
        try:
            raise ccxt.AuthenticationError(ECHO)
        except ccxt.AuthenticationError:
            logger.exception("listener failed")
    finally:
        logger.removeHandler(handler)
    assert len(records) == 2 and "Traceback" in records[1]
    assert [_leaks(r) for r in records] == [[], []]


@pytest.mark.parametrize("market", ["perp", "spot"])
def test_redact_start_up_protective_failure_keeps_credentials_out_of_logs_state_and_redis(
        market, venue, tmp_path, redis_url, monkeypatch, caplog):
    symbol = SYMBOL if market == "perp" else SPOT_SYMBOL
    make_client = client if market == "perp" else spot_client
    c = make_client(venue)
    c.create_order(symbol, "market", "buy", 0.02)  # an unguarded position: start-up must protect it

    def echo_credentials(self, *args, **kwargs):
        raise ccxt.ExchangeError(ECHO)

    monkeypatch.setattr(CcxtBroker, "ensure_guard", echo_credentials)
    monkeypatch.setattr(SpotBroker, "ensure_guard", echo_credentials)
    db = tmp_path / "state.sqlite"
    caplog.set_level(logging.INFO)
    with FakeSignalService(buy_signals().assign(symbol=symbol)) as svc:
        trader = LiveTrader(params(data={"symbols": [symbol]}), make_client(venue),
                            HttpSignalSource(svc.url, timeout_s=5), db, "redact", sleep=time.sleep,
                            redis_url=redis_url, secrets=(API_KEY, API_SECRET))
        try:
            report = trader.start()
        finally:
            trader.close()
    assert any("could not be placed at start-up" in r.getMessage() for r in caplog.records)  # the path ran
    assert symbol in trader.loop.portfolio.positions  # adopted though unprotected
    logged = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    assert _leaks(logged) == []
    assert _leaks(_sqlite_text(db)) == []
    assert _leaks(_redis_text(redis_url)) == []
    assert _leaks(repr(report.summary())) == []


def test_redact_collector_error_keeps_environment_credentials_out_of_its_report_and_logs(
        exchange, tmp_path, monkeypatch, caplog):
    """The collector holds no keys, yet an exchange error can echo them: the ones the executor reads
    from QT_API_KEY / QT_API_SECRET are hidden there too (and everywhere ``qt.redact`` is used)."""
    from data.collector import collect_one

    monkeypatch.setenv("QT_API_KEY", API_KEY)
    monkeypatch.setenv("QT_API_SECRET", API_SECRET)

    def echo_credentials(self, *args, **kwargs):
        raise ccxt.ExchangeError(ECHO)

    monkeypatch.setattr(ccxt.binance, "fetch_ohlcv", echo_credentials)
    caplog.set_level(logging.INFO)
    p = params(data={"symbols": [SPOT_SYMBOL]})
    report = collect_one(p, tmp_path / "lake", exchange.url, SPOT_SYMBOL, progress=False)
    assert report.error and "-1022" in report.error  # the path ran and kept the exchange's reason
    assert _leaks(repr(dataclasses.asdict(report))) == []
    assert _leaks("\n".join(r.getMessage() for r in caplog.records) + caplog.text) == []
