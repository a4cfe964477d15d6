"""``qt execute --mode testnet --venue bybit`` as a real process against the local exchange's v5 API:
killed with SIGKILL while an order request is in flight and restarted at once, it finds the order by
its ``orderLinkId`` - no second entry, no second stop - and leaves the position guarded by a
reduce-only stop and take-profit. A Bybit spot universe and an unknown venue are refused in one line;
``collect.exchange: bybit`` (collecting Bybit's series) does not move the orders to Bybit.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.executor.exec_support import FakeSignalService
from tests.executor.live.support import (API_KEY, API_SECRET, PRICE, bar_ms, buy_signals, bybit_daemon_params,
                                         bybit_entry_orders, bybit_position_qty, bybit_protectives, reset_bybit,
                                         running_exchange, start_daemon, write_bybit_market)

pytestmark = pytest.mark.slow

CALM_BAR = 100
BYBIT = ("--venue", "bybit")


@pytest.fixture(scope="module")
def exchange(tmp_path_factory):
    with running_exchange(write_bybit_market(tmp_path_factory.mktemp("bybit-daemon-market"))) as ex:
        yield ex


@pytest.fixture
def venue(exchange):
    exchange.set_faults({})
    reset_bybit(exchange)
    exchange.move_clock_to(bar_ms(CALM_BAR))
    yield exchange
    exchange.set_faults({})


def _wait(predicate, timeout_s: float, what: str, proc: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited ({proc.returncode}) while waiting for {what}:\n{log.read_text()}")
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}:\n{log.read_text()}")


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.mark.parametrize("nth", [1, 2], ids=["during-entry", "during-stop-loss"])
def test_bybit_kill_9_during_order_placement_then_restart_reconciles_without_a_duplicate(venue, tmp_path, nth):
    """The nth order request (1: the entry, 2: its stop-loss) stalls - the server executes it 3 s
    later; the daemon is killed with SIGKILL while it waits and restarted at once. The second case
    picks Bybit by ``execute.venue`` (the default venue) instead of ``--venue``."""
    venue.set_faults({"rules": [{"kind": "timeout", "path_prefix": "/v5/order/create", "method": "POST",
                                 "every_nth": nth, "first_k": nth, "timeout_s": 3.0}]})
    log, home = tmp_path / "daemon.log", tmp_path / "home"
    by_params = nth == 2
    env = {"QT_PARAMS": str(bybit_daemon_params(tmp_path, {"venue": "bybit"} if by_params else None))}
    extra = () if by_params else BYBIT
    first = second = None
    with FakeSignalService(buy_signals()) as svc:
        try:
            first = start_daemon(venue.url, svc.url, home, log, extra=extra, **env)
            _wait(lambda: venue.fault_counts()["timeout"] == 1, 60, "the stalled order request", first, log)
            os.killpg(first.pid, signal.SIGKILL)  # kill -9 while the order is in flight
            first.wait(timeout=10)
            venue.set_faults({})  # restart at once: the stalled request is still in the server
            second = start_daemon(venue.url, svc.url, home, log, extra=extra, **env)
            _wait(lambda: len(bybit_protectives(venue)) == 2, 60, "both protectives after the restart", second, log)
            time.sleep(1.0)  # let the restarted daemon step its bar: it must not buy again
            os.killpg(second.pid, signal.SIGTERM)
            second.wait(timeout=20)
        finally:
            _stop(first)
            _stop(second)
    assert first.returncode == -signal.SIGKILL
    assert len(bybit_entry_orders(venue)) == 1
    qty = bybit_position_qty(venue)
    assert qty > 0
    assert bybit_protectives(venue) == [("StopLoss", pytest.approx(qty), pytest.approx(PRICE * 0.97), True),
                                        ("TakeProfit", pytest.approx(qty), pytest.approx(PRICE * 1.06), True)]
    text = log.read_text()
    assert "reconciled" in text and "Traceback" not in text
    assert API_SECRET not in text and API_KEY not in text
    db = home / "executor" / "state.sqlite"
    with sqlite3.connect(db) as conn:
        entries = conn.execute("SELECT status FROM exchange_orders WHERE purpose='entry'").fetchall()
        venues = {v for v, in conn.execute("SELECT venue FROM live_runs")}
    assert entries == [("filled",)]
    assert venues == {"bybit"}


def _qt_execute(args, home, **env) -> subprocess.CompletedProcess:
    e = {**os.environ, "QT_HOME": str(home), "QT_API_KEY": "k-123", "QT_API_SECRET": "s-456", **env}
    e.pop("QT_PARAMS", None)
    return subprocess.run([sys.executable, "-m", "cli.main", "execute", *args], capture_output=True, text=True,
                          env=e, timeout=120)


@pytest.mark.parametrize("args, fragment", [
    (["--venue", "bybit", "--symbols", "BTC/USDT"], "--venue bybit trades USDT perpetuals only"),
    (["--venue", "okx", "--symbols", "BTC/USDT:USDT"], "--venue 'okx' is not one of"),
])
def test_bybit_cli_refuses_spot_and_unknown_venues_in_one_line(tmp_path, args, fragment):
    res = _qt_execute(["--mode", "testnet", "--exchange-url", "http://127.0.0.1:9", *args], tmp_path)
    assert res.returncode == 2, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], res.stderr
    assert "Traceback" not in res.stderr and "s-456" not in res.stderr + res.stdout


def test_collecting_bybit_series_does_not_move_the_orders_to_bybit(venue, tmp_path):
    """``collect.exchange: bybit`` without ``execute.venue`` / ``--venue``: the executor still builds
    Binance's client (``binanceusdm``), and this exchange serves no Binance market - refused in one
    line by name, nothing sent to the Bybit account."""
    import yaml

    params_file = tmp_path / "collect-bybit.yaml"
    params_file.write_text(yaml.safe_dump({"collect": {"exchange": "bybit", "market": "perp"},
                                           "risk": {"margin_mode": "cross"}}))
    e = {**os.environ, "QT_HOME": str(tmp_path / "home"), "QT_API_KEY": API_KEY, "QT_API_SECRET": API_SECRET,
         "QT_PARAMS": str(params_file)}
    res = subprocess.run([sys.executable, "-m", "cli.main", "execute", "--mode", "testnet", "--exchange-url",
                          venue.url, "--service-url", "http://127.0.0.1:9", "--symbols", "BTC/USDT:USDT",
                          "--max-bars", "1"], capture_output=True, text=True, env=e, timeout=120)
    assert res.returncode == 2, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "BTC/USDT:USDT is not listed on the exchange" in errors[0], res.stderr
    assert venue._control("GET", "/_qt/bybit/account")["orders"] == 0
