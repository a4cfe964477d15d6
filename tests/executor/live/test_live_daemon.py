"""The live daemon as a process and as a long-running loop: ``kill -9`` mid-order then restart (on
Binance USDT-M and, as ``qt execute --venue bybit``, on Bybit USDT perpetuals: the order is found by
its client id - no second entry, no second stop), the signal service going away, Redis restarting -
against the real local exchange over ccxt and a real redis-server. The CLI refuses unsafe or
incomplete setups, a Bybit spot universe and an unknown venue in one line; ``collect.exchange:
bybit`` (collecting Bybit's series) does not move the orders to Bybit."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest
import redis

from executor.live.trader import LiveTrader
from executor.signals import HttpSignalSource
from qt.procs import start_redis
from tests.executor.exec_support import FakeSignalService, params
from tests.executor.live import support
from tests.executor.live.support import API_KEY, API_SECRET, PRICE, SYMBOL, bar_ms
from tests.executor.live.venues import BINANCE, BYBIT, only, venue_fixtures

pytestmark = pytest.mark.slow

CALM_BAR = 100


adapter, exchange, venue, make_trader = venue_fixtures(clock_bar=CALM_BAR)
# the order request that stalls, per venue: (route, its nth create) for the entry and for the stop-loss
STALLED = {"binance": {"entry": ("/fapi/v1/order", 1), "stop-loss": ("/fapi/v1/algoOrder", 1)},
           "bybit": {"entry": ("/v5/order/create", 1), "stop-loss": ("/v5/order/create", 2)}}


def _daemon_setup(adapter, tmp_path, stalled: str) -> tuple[tuple[str, ...], dict]:
    """``qt execute``'s extra arguments and environment for the venue: Bybit by ``--venue`` for the
    entry case, by ``execute.venue`` (the default venue) for the stop-loss case, its account cross margined."""
    if adapter is BINANCE:
        return (), {}
    by_params = stalled == "stop-loss"
    params_file = support.bybit_daemon_params(tmp_path, {"venue": "bybit"} if by_params else None)
    return (() if by_params else ("--venue", "bybit")), {"QT_PARAMS": str(params_file)}


@pytest.mark.parametrize("stalled", ["entry", "stop-loss"], ids=["during-entry", "during-stop-loss"])
def test_kill_9_during_order_placement_then_restart_reconciles_without_a_duplicate(venue, adapter, tmp_path, stalled):
    """The order request stalls (the server executes it 3 s later); the daemon is killed with
    SIGKILL while it waits and restarted at once, before the stalled request lands. The restarted daemon
    must find the order by its client id, send no second entry (nor a second stop), and leave the
    position guarded by a stop-loss and a take-profit."""
    route, nth = STALLED[adapter.name][stalled]
    venue.set_faults({"rules": [{"kind": "timeout", "path_prefix": route, "method": "POST", "every_nth": nth,
                                 "first_k": nth, "timeout_s": 3.0}]})
    log, home = tmp_path / "daemon.log", tmp_path / "home"
    extra, env = _daemon_setup(adapter, tmp_path, stalled)
    first = second = None
    with FakeSignalService(support.buy_signals()) as svc:
        try:
            first = support.start_daemon(venue.url, svc.url, home, log, extra=extra, **env)
            support.wait_for(lambda: venue.fault_counts()["timeout"] == 1, 60, "the stalled order request", first, log)
            os.killpg(first.pid, signal.SIGKILL)  # kill -9 while the order is in flight
            first.wait(timeout=10)
            venue.set_faults({})  # restart at once: the stalled request is still in the server
            second = support.start_daemon(venue.url, svc.url, home, log, extra=extra, **env)
            support.wait_for(lambda: len(adapter.protectives(venue)) == 2, 60, "both protectives after the restart",
                             second, log)
            time.sleep(1.0)  # let the restarted daemon step its bar: it must not buy again
            os.killpg(second.pid, signal.SIGTERM)
            second.wait(timeout=20)
        finally:
            support.kill_9(first)
            support.kill_9(second)
    assert first.returncode == -signal.SIGKILL
    assert len(adapter.entries(venue)) == 1
    qty = adapter.position_qty(venue)
    assert qty > 0
    assert adapter.protectives(venue) == adapter.guarded(qty, PRICE * 0.97, PRICE * 1.06)
    text = log.read_text()
    assert "reconciled" in text and "Traceback" not in text
    assert API_SECRET not in text and API_KEY not in text
    db_bytes = (home / "executor" / "state.sqlite").read_bytes()
    assert API_SECRET.encode() not in db_bytes and API_KEY.encode() not in db_bytes
    with sqlite3.connect(home / "executor" / "state.sqlite") as db:
        entries = db.execute("SELECT status FROM exchange_orders WHERE purpose='entry'").fetchall()
        venues = {v for v, in db.execute("SELECT venue FROM live_runs")}
    assert entries == [("filled",)]
    assert venues == {adapter.ccxt_id}


def _trader(venue, svc_url: str, tmp_path, redis_url: str | None = None, **risk) -> LiveTrader:
    p = params(data={"symbols": [SYMBOL]}, risk=risk, labels={"horizon_bars": 1})
    trader = LiveTrader(p, BINANCE.client(venue), HttpSignalSource(svc_url, timeout_s=2), tmp_path / "state.sqlite",
                        "test", redis_url=redis_url)
    trader.start()
    return trader


@only(BINANCE)
def test_signal_service_stopped_mid_run_opens_nothing_but_still_manages_exits(venue, adapter, tmp_path):
    venue.move_clock_to(bar_ms(support.WIDE_BARS[0] - 1))
    svc = FakeSignalService(support.buy_signals()).__enter__()
    trader = _trader(venue, svc.url, tmp_path)
    try:
        trader.poll()  # enters; the next bar reaches the stop
        assert adapter.position_qty(venue) > 0
        svc.__exit__(None, None, None)  # the service goes away
        venue.advance(1)
        trader.poll()  # the stop fills on the exchange and is booked; nothing new is opened
        venue.advance(1)
        trader.poll()
        fills, decisions, alerts = (trader.store.read(t) for t in ("fills", "decisions", "alerts"))
    finally:
        trader.close()
    assert fills[["purpose", "reason"]].values.tolist() == [["entry", "signal_buy"], ["exit", "stop_loss"]]
    assert adapter.position_qty(venue) == 0 and len(adapter.entries(venue)) == 1
    late = decisions[decisions["ts"] >= pd.Timestamp(bar_ms(support.WIDE_BARS[0] - 1), unit="ms", tz="UTC").isoformat()]
    assert (late["outcome"] == "denied").all() and set(late["reason"]) == {"NO_SIGNAL"}
    no_signal = alerts[alerts["kind"] == "NO_SIGNAL"]
    assert len(no_signal) == 2 and no_signal["message"].str.contains("signal source unavailable").all()


@only(BINANCE)
def test_redis_restarted_mid_run_exits_are_still_managed_and_events_resume(venue, adapter, tmp_path):
    proc, url = start_redis(tmp_path)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    trader = None
    try:
        with FakeSignalService(support.buy_signals()) as svc:
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
            closes = [o for o in adapter.orders(venue) if o["reduceOnly"] and o["side"] == "sell"]
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


@only(BINANCE)
def test_kill_switch_in_redis_blocks_entries_while_exits_still_happen(venue, adapter, tmp_path):
    proc, url = start_redis(tmp_path)
    trader = None
    try:
        with FakeSignalService(support.buy_signals()) as svc:
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
        assert len(adapter.entries(venue)) == 1 and adapter.position_qty(venue) == 0
        assert adapter.protective_orders(venue) == []
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
    e = {**os.environ, "QT_HOME": str(home), **env}
    for k in ("QT_PARAMS", "QT_API_KEY", "QT_API_SECRET"):
        if k not in env:
            e.pop(k, None)
    return subprocess.run([sys.executable, "-m", "cli.main", "execute", *args], capture_output=True, text=True,
                          env=e, timeout=120, check=False)


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


@only(BINANCE)
def test_cli_a_wrong_secret_or_an_unreachable_exchange_is_one_line_without_the_secret(venue, adapter, tmp_path):
    base = ["--mode", "testnet", "--symbols", SYMBOL, "--service-url", "http://127.0.0.1:9"]
    wrong = _qt_execute([*base, "--exchange-url", venue.url], tmp_path, QT_API_KEY=API_KEY,
                        QT_API_SECRET="not-the-secret-789")
    down = _qt_execute([*base, "--exchange-url", "http://127.0.0.1:9"], tmp_path, QT_API_KEY=API_KEY,
                       QT_API_SECRET=API_SECRET)
    _assert_one_line_error(wrong, "refused the API key")
    _assert_one_line_error(down, "unreachable")
    assert "not-the-secret-789" not in wrong.stderr + wrong.stdout
    assert API_SECRET not in down.stderr + down.stdout


@pytest.mark.parametrize("args, fragment", [
    (["--venue", "bybit", "--symbols", "BTC/USDT"], "--venue bybit trades USDT perpetuals only"),
    (["--venue", "okx", "--symbols", "BTC/USDT:USDT"], "--venue 'okx' is not one of"),
])
def test_bybit_cli_refuses_spot_and_unknown_venues_in_one_line(tmp_path, args, fragment):
    res = _qt_execute(["--mode", "testnet", "--exchange-url", "http://127.0.0.1:9", *args], tmp_path,
                      QT_API_KEY="k-123", QT_API_SECRET="s-456")
    _assert_one_line_error(res, fragment)
    assert "s-456" not in res.stderr + res.stdout


@only(BYBIT)
def test_collecting_bybit_series_does_not_move_the_orders_to_bybit(venue, adapter, tmp_path):
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
                          "--max-bars", "1"], capture_output=True, text=True, env=e, timeout=120, check=False)
    assert res.returncode == 2, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "BTC/USDT:USDT is not listed on the exchange" in errors[0], res.stderr
    assert adapter.order_count(venue) == 0
