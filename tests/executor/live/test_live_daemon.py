"""The live daemon as a process and as a long-running loop: ``kill -9`` mid-order then restart,
the signal service going away, Redis restarting - against the real local exchange over ccxt and
a real redis-server."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time

import pandas as pd
import pytest
import redis

from executor.signals import HttpSignalSource
from executor.live.trader import LiveTrader
from qt.procs import start_redis
from tests.executor.exec_support import FakeSignalService, params
from tests.executor.live.support import (API_KEY, API_SECRET, PRICE, SYMBOL, WIDE_BARS, bar_ms, buy_signals, client,
                                         start_daemon, write_market)
from tests.executor.live.support import running_exchange

pytestmark = pytest.mark.slow

CALM_BAR = 100


@pytest.fixture(scope="module")
def exchange(tmp_path_factory):
    with running_exchange(write_market(tmp_path_factory.mktemp("live-daemon-market"))) as ex:
        yield ex


@pytest.fixture
def venue(exchange):
    exchange.set_faults({})
    exchange.reset_account()
    exchange.move_clock_to(bar_ms(CALM_BAR))
    yield exchange
    exchange.set_faults({})


def _wait(predicate, timeout_s: float, what: str, proc: subprocess.Popen | None = None, log=None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"daemon exited ({proc.returncode}) while waiting for {what}:\n"
                                 f"{log.read_text() if log else ''}")
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}:\n{log.read_text() if log else ''}")


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _open_protectives(venue) -> list[dict]:
    return client(venue).fetch_open_orders(SYMBOL, params={"trigger": True})


def _entry_orders(venue) -> list[dict]:
    return [o for o in client(venue).fetch_orders(SYMBOL) if not o["reduceOnly"]]


def _position_qty(venue) -> float:
    return sum(p["contracts"] for p in client(venue).fetch_positions([SYMBOL]))


@pytest.mark.parametrize("stalled_path", ["/fapi/v1/order", "/fapi/v1/algoOrder"],
                         ids=["during-entry", "during-stop-loss"])
def test_kill_9_during_order_placement_then_restart_reconciles_without_a_duplicate(venue, tmp_path, stalled_path):
    """The order request stalls (the server executes it 3 s later); the daemon is killed with
    SIGKILL while it waits and restarted at once, before the stalled request lands. The restarted daemon must find the order by its client id, send no
    second entry, and leave the position guarded by a stop-loss and a take-profit."""
    venue.set_faults({"rules": [{"kind": "timeout", "path_prefix": stalled_path, "method": "POST", "first_k": 1,
                                 "timeout_s": 3.0}]})
    log = tmp_path / "daemon.log"
    first = second = None
    with FakeSignalService(buy_signals()) as svc:
        try:
            first = start_daemon(venue.url, svc.url, tmp_path / "home", log)
            _wait(lambda: venue.fault_counts()["timeout"] == 1, 60, "the stalled order request", first, log)
            os.killpg(first.pid, signal.SIGKILL)  # kill -9 while the order is in flight
            first.wait(timeout=10)
            venue.set_faults({})  # restart at once: the stalled request is still in the server
            second = start_daemon(venue.url, svc.url, tmp_path / "home", log)
            _wait(lambda: len(_open_protectives(venue)) == 2, 60, "both protectives after the restart", second, log)
            time.sleep(1.0)  # let the restarted daemon step its bar: it must not buy again
            os.killpg(second.pid, signal.SIGTERM)
            second.wait(timeout=20)
        finally:
            _stop(first)
            _stop(second)
    assert first.returncode == -signal.SIGKILL
    assert len(_entry_orders(venue)) == 1
    qty = _position_qty(venue)
    guards = sorted((o["info"]["orderType"], o["amount"], o["triggerPrice"]) for o in _open_protectives(venue))
    assert guards == [("STOP_MARKET", pytest.approx(qty), pytest.approx(PRICE * 0.97)),
                      ("TAKE_PROFIT_MARKET", pytest.approx(qty), pytest.approx(PRICE * 1.06))]
    text = log.read_text()
    assert "reconciled" in text and "Traceback" not in text
    assert API_SECRET not in text and API_KEY not in text
    db_bytes = (tmp_path / "home" / "executor" / "state.sqlite").read_bytes()
    assert API_SECRET.encode() not in db_bytes and API_KEY.encode() not in db_bytes
    with sqlite3.connect(tmp_path / "home" / "executor" / "state.sqlite") as db:
        entries = db.execute("SELECT status FROM exchange_orders WHERE purpose='entry'").fetchall()
    assert entries == [("filled",)]


def _trader(venue, svc_url: str, tmp_path, redis_url: str | None = None, **risk) -> LiveTrader:
    p = params(data={"symbols": [SYMBOL]}, risk=risk, labels={"horizon_bars": 1})
    trader = LiveTrader(p, client(venue), HttpSignalSource(svc_url, timeout_s=2), tmp_path / "state.sqlite", "test",
                        redis_url=redis_url)
    trader.start()
    return trader


def test_signal_service_stopped_mid_run_opens_nothing_but_still_manages_exits(venue, tmp_path):
    venue.move_clock_to(bar_ms(WIDE_BARS[0] - 1))
    svc = FakeSignalService(buy_signals()).__enter__()
    trader = _trader(venue, svc.url, tmp_path)
    try:
        trader.poll()  # enters; the next bar reaches the stop
        assert _position_qty(venue) > 0
        svc.__exit__(None, None, None)  # the service goes away
        venue.advance(1)
        trader.poll()  # the stop fills on the exchange and is booked; nothing new is opened
        venue.advance(1)
        trader.poll()
        fills, decisions, alerts = (trader.store.read(t) for t in ("fills", "decisions", "alerts"))
    finally:
        trader.close()
    assert fills[["purpose", "reason"]].values.tolist() == [["entry", "signal_buy"], ["exit", "stop_loss"]]
    assert _position_qty(venue) == 0 and len(_entry_orders(venue)) == 1
    late = decisions[decisions["ts"] >= pd.Timestamp(bar_ms(WIDE_BARS[0] - 1), unit="ms", tz="UTC").isoformat()]
    assert (late["outcome"] == "denied").all() and set(late["reason"]) == {"NO_SIGNAL"}
    no_signal = alerts[alerts["kind"] == "NO_SIGNAL"]
    assert len(no_signal) == 2 and no_signal["message"].str.contains("signal source unavailable").all()


def test_redis_restarted_mid_run_exits_are_still_managed_and_events_resume(venue, tmp_path):
    proc, url = start_redis(tmp_path)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    trader = None
    try:
        with FakeSignalService(buy_signals()) as svc:
            trader = _trader(venue, svc.url, tmp_path, redis_url=url, max_holding_bars=2)
            trader.poll()  # bar 99: entry sent
            assert redis.Redis.from_url(url).xlen("trade.intent") >= 1
            proc.stop()  # Redis goes away
            for _ in range(3):  # bars 100..102: the entry is booked, held 2 bars, closed (max holding)
                venue.advance(1)
                trader.poll()
            assert trader.publisher.lost_events > 0
            fills = trader.store.read("fills")
            assert fills[["purpose", "reason"]].values.tolist() == [["entry", "signal_buy"], ["exit", "max_holding"]]
            closes = [o for o in client(venue).fetch_orders(SYMBOL) if o["reduceOnly"] and o["side"] == "sell"]
            assert [(o["status"], o["filled"]) for o in closes] == [("closed", pytest.approx(fills["qty"].iloc[0]))]
            proc, url2 = start_redis(tmp_path, port=port)  # back, empty (no persistence)
            time.sleep(1.2)  # the publisher retries after retry_after_s = 1 s
            venue.advance(1)
            trader.poll()  # bar 103: the re-entry of bar 102 is booked; its events reach the new Redis
        r = redis.Redis.from_url(url2)
        assert r.xlen("execution.result") >= 1 and r.get("qt:executor:heartbeat") is not None
        assert trader.publisher.connected
    finally:
        if trader is not None:
            trader.close()
        proc.stop()


def test_kill_switch_in_redis_blocks_entries_while_exits_still_happen(venue, tmp_path):
    proc, url = start_redis(tmp_path)
    trader = None
    try:
        with FakeSignalService(buy_signals()) as svc:
            trader = _trader(venue, svc.url, tmp_path, redis_url=url, max_holding_bars=1)
            trader.poll()  # bar 99: entry
            redis.Redis.from_url(url).set("qt:kill", "1")  # what `qt kill` sets
            for _ in range(2):  # bar 100: held its one bar -> exit; bar 101: flat, a buy signal
                venue.advance(1)
                trader.poll()
            decisions = trader.store.read("decisions")
        assert trader.loop.risk.state.value == "HALTED"
        assert decisions[["outcome", "reason"]].values.tolist() == [["enter", "signal_buy"], ["exit", "max_holding"],
                                                                    ["denied", "HALTED"]]
        assert len(_entry_orders(venue)) == 1 and _position_qty(venue) == 0
        assert _open_protectives(venue) == []
    finally:
        if trader is not None:
            trader.close()
        proc.stop()


def _assert_one_line_error(res, fragment: str) -> None:
    """Exit 2, exactly one ``error:`` line and it is the last (retry warnings may precede it), no traceback."""
    assert res.returncode == 2, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], res.stderr
    assert res.stderr.strip().splitlines()[-1] == errors[0] and "Traceback" not in res.stderr


def _qt_execute(args, home, **env) -> subprocess.CompletedProcess:
    import sys

    e = {**os.environ, "QT_HOME": str(home), **env}
    for k in ("QT_PARAMS", "QT_API_KEY", "QT_API_SECRET"):
        if k not in env:
            e.pop(k, None)
    return subprocess.run([sys.executable, "-m", "cli.main", "execute", *args], capture_output=True, text=True,
                          env=e, timeout=120)


@pytest.mark.parametrize("args, env, fragment", [
    (["--mode", "testnet", "--exchange-url", "http://127.0.0.1:9"], {}, "QT_API_KEY and QT_API_SECRET"),
    (["--mode", "live"], {"QT_API_KEY": "k-123", "QT_API_SECRET": "s-456"}, "--i-understand-live"),
    (["--mode", "live", "--i-understand-live", "--exchange-url", "http://127.0.0.1:9"],
     {"QT_API_KEY": "k-123", "QT_API_SECRET": "s-456"}, "--exchange-url is for --mode testnet"),
    (["--mode", "testnet", "--exchange-url", "http://127.0.0.1:9", "--symbols", "BTC/USDT,BTC/USDT:USDT"],
     {"QT_API_KEY": "k-123", "QT_API_SECRET": "s-456"}, "not both"),  # spot alone trades (test_live_spot.py)
])
def test_cli_refuses_unsafe_or_incomplete_live_setups_in_one_line(tmp_path, args, env, fragment):
    res = _qt_execute(args, tmp_path, **env)
    _assert_one_line_error(res, fragment)
    assert "s-456" not in res.stderr + res.stdout


def test_cli_a_wrong_secret_or_an_unreachable_exchange_is_one_line_without_the_secret(venue, tmp_path):
    base = ["--mode", "testnet", "--symbols", SYMBOL, "--service-url", "http://127.0.0.1:9"]
    wrong = _qt_execute([*base, "--exchange-url", venue.url], tmp_path, QT_API_KEY=API_KEY,
                        QT_API_SECRET="not-the-secret-789")
    down = _qt_execute([*base, "--exchange-url", "http://127.0.0.1:9"], tmp_path, QT_API_KEY=API_KEY,
                       QT_API_SECRET=API_SECRET)
    _assert_one_line_error(wrong, "refused the API key")
    _assert_one_line_error(down, "unreachable")
    assert "not-the-secret-789" not in wrong.stderr + wrong.stdout
    assert API_SECRET not in down.stderr + down.stdout
