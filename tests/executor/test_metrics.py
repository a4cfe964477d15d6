"""Executor metrics and notifications, seen from outside: a real paper replay scraped over HTTP
(Prometheus text format) and a real webhook sink. Expected values come from the replay's own
state DB and report, bar by bar."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pandas as pd
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from executor.daemon import run_paper_replay
from executor.signals import FrameSignalSource, SignalUnavailable
from qt.errors import UserError
from qt.procs import free_port, start_redis

from tests.executor.exec_support import FakeSignalService, momentum_signals, paper_market, paper_params, params
from tests.executor.live.support import (API_KEY, API_SECRET, PROJECT_ROOT, bar_ms, buy_signals, daemon_argv,
                                         start_exchange, write_market)

pytestmark = pytest.mark.slow


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """GET /metrics -> {(sample name, sorted labels): value}."""
    resp = httpx.get(url, timeout=5)
    assert resp.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(resp.text) for s in fam.samples}


class ScrapingSource:
    """Answers from a signals frame and scrapes the metrics endpoint at every bar first
    (the loop asks for signals after marking bar ``as_of``, before deciding on it)."""

    def __init__(self, signals: pd.DataFrame, url: str, before=None):
        self.inner = FrameSignalSource(signals)
        self.url = url
        self.before = before
        self.snapshots: dict[pd.Timestamp, dict] = {}

    def fetch(self, symbols, as_of):
        self.snapshots[as_of] = scrape(self.url)
        if self.before is not None:
            self.before(as_of)
        return self.inner.fetch(symbols, as_of)


def _tables(db_path):
    with sqlite3.connect(db_path) as db:
        equity = pd.read_sql_query("SELECT ts, equity_usdt, cash_usdt, state, open_positions FROM equity", db)
        orders = pd.read_sql_query("SELECT order_id, decided_ts, status FROM orders", db)
        decisions = pd.read_sql_query("SELECT ts, outcome, reason FROM decisions", db)
    equity["ts"] = pd.to_datetime(equity["ts"])
    orders["decided_ts"] = pd.to_datetime(orders["decided_ts"])
    decisions["ts"] = pd.to_datetime(decisions["ts"])
    return equity.set_index("ts").sort_index(), orders, decisions


def _port_is_closed(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
    except httpx.ConnectError:
        return True
    return False


def test_scraped_metrics_match_the_state_db_at_every_bar_and_the_report_at_the_end(tmp_path):
    candles = paper_market()
    signals = momentum_signals(candles)
    first = signals["timestamp"].min()
    p = params(risk={"max_open_positions": 1, "max_holding_bars": 6, "position_fraction": 0.3})
    port = free_port()

    def outage(as_of):  # the service is down for 5 bars: NO_SIGNAL denials
        if first + pd.Timedelta(hours=20) <= as_of < first + pd.Timedelta(hours=25):
            raise SignalUnavailable("test outage")

    source = ScrapingSource(signals, f"http://127.0.0.1:{port}/metrics", before=outage)
    report = run_paper_replay(candles, source, p, tmp_path / "s.sqlite", None, start=first, metrics_port=port)
    assert _port_is_closed(port), "the endpoint must be stopped when the replay returns"
    equity, orders, decisions = _tables(tmp_path / "s.sqlite")
    assert report.orders > 10 and {"NO_SIGNAL", "MAX_OPEN_POSITIONS"} <= set(report.rejections), \
        "the scenario must trade and be refused for several reasons to prove anything"
    assert len(source.snapshots) == len(equity)
    start_equity = p.risk.starting_equity_usdt
    for i, (ts, m) in enumerate(source.snapshots.items()):
        row = equity.loc[ts]
        peak = max(start_equity, equity.loc[:ts, "equity_usdt"].max())
        assert m[("qt_executor_equity_usdt", ())] == pytest.approx(row["equity_usdt"], rel=1e-12)
        assert m[("qt_executor_cash_usdt", ())] == pytest.approx(row["cash_usdt"], rel=1e-12)
        assert m[("qt_executor_drawdown_ratio", ())] == pytest.approx(1 - row["equity_usdt"] / peak, abs=1e-12)
        assert m[("qt_executor_open_positions", ())] == row["open_positions"]
        assert m[("qt_executor_trading_state", (("state", row["state"]),))] == 1.0
        assert m[("qt_executor_kill_switch", ())] == float(row["state"] == "HALTED")
        decided = orders[orders["decided_ts"] < ts]  # all of these were filled or cancelled at the open of ts
        for status in ("submitted", "filled", "cancelled"):
            expected = len(decided) if status == "submitted" else int((decided["status"] == status).sum())
            assert m[("qt_executor_orders_total", (("status", status),))] == expected, (ts, status)
        denied = decisions[(decisions["ts"] < ts) & (decisions["outcome"] == "denied")]
        scraped = {dict(lbl)["reason"]: v for (name, lbl), v in m.items() if name == "qt_executor_rejections_total"}
        assert scraped == denied["reason"].value_counts().to_dict(), ts
        assert m[("qt_executor_bars_total", ())] == i  # bars completed before this one
        assert 0.0 <= m[("qt_executor_heartbeat_age_seconds", ())] < 30.0
    # the last scrape (before the last bar's decisions) against the report
    last_ts, last = list(source.snapshots.items())[-1]
    assert last[("qt_executor_equity_usdt", ())] == pytest.approx(start_equity + report.net_pnl, rel=1e-9)
    assert last[("qt_executor_open_positions", ())] == report.open_positions
    late_orders = int((orders["decided_ts"] == last_ts).sum())
    assert last[("qt_executor_orders_total", (("status", "submitted"),))] + late_orders == report.orders
    late_denials = decisions[(decisions["ts"] == last_ts) & (decisions["outcome"] == "denied")]["reason"]
    for reason, n in report.rejections.items():
        before = last.get(("qt_executor_rejections_total", (("reason", reason),)), 0.0)
        assert before + int((late_denials == reason).sum()) == n, reason


def test_kill_switch_shows_as_one_from_the_bar_it_halts(tmp_path):
    candles = paper_market()
    signals = momentum_signals(candles)
    first = signals["timestamp"].min()
    kill_at = first + pd.Timedelta(hours=59)
    port = free_port()
    proc, url = start_redis(tmp_path)
    try:
        client = redis.Redis.from_url(url)

        def kill(as_of):
            if as_of == kill_at:
                client.set("qt:kill", "1")  # read by the loop at the next bar's mark

        source = ScrapingSource(signals, f"http://127.0.0.1:{port}/metrics", before=kill)
        report = run_paper_replay(candles, source, paper_params(), tmp_path / "s.sqlite", url, start=first,
                                  metrics_port=port)
        client.close()
    finally:
        proc.stop()
    assert report.final_state == "HALTED"
    for ts, m in source.snapshots.items():
        halted = ts > kill_at
        assert m[("qt_executor_kill_switch", ())] == float(halted), ts
        assert m[("qt_executor_trading_state", (("state", "HALTED"),))] == float(halted), ts
        assert m[("qt_executor_trading_state", (("state", "ACTIVE"),))] == float(not halted), ts
    last = list(source.snapshots.values())[-1]
    assert last[("qt_executor_rejections_total", (("reason", "HALTED"),))] > 0
    assert _port_is_closed(port)


def test_a_busy_metrics_port_is_a_one_line_error_and_leaves_nothing_open(tmp_path):
    candles = paper_market(bars=60)
    signals = momentum_signals(candles)
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as busy:
        port = busy.server_address[1]
        with pytest.raises(UserError, match=f"cannot serve executor metrics on 127.0.0.1:{port}"):
            run_paper_replay(candles, FrameSignalSource(signals), paper_params(), tmp_path / "s.sqlite", None,
                             metrics_port=port)


class Sink:
    """A local webhook receiver recording every JSON body."""

    def __init__(self):
        self.received: list[dict] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                sink.received.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0)))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink():
    s = Sink()
    yield s
    s.close()


def test_paper_replay_sends_every_fill_to_the_configured_webhook(tmp_path, sink, monkeypatch):
    candles = paper_market()
    signals = momentum_signals(candles)
    p = paper_params().model_copy(update={"notify": params(notify={"burst": 10_000}).notify})
    monkeypatch.setenv(p.notify.webhook_url_env, sink.url)
    report = run_paper_replay(candles, FrameSignalSource(signals), p, tmp_path / "s.sqlite", None,
                              start=signals["timestamp"].min())
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        fills = db.execute("SELECT symbol, side, purpose, reason, ts, price FROM fills ORDER BY rowid").fetchall()
    got = [(e["data"]["symbol"], e["data"]["side"], e["data"]["purpose"], e["data"]["reason"],
            pd.Timestamp(e["data"]["ts"]).isoformat(), e["data"]["price"]) for e in sink.received
           if e["kind"] == "fill"]
    assert report.fills > 10 and len(fills) == report.fills
    assert got == [tuple(f) for f in fills]



# ---- the live daemon: `qt execute --mode testnet --metrics-port` as a real process ---------------
@pytest.fixture
def exchange(tmp_path):
    ex = start_exchange(write_market(tmp_path / "market"))
    try:
        ex.move_clock_to(bar_ms(100))
        yield ex
    finally:
        ex.stop()


def _wait_for(predicate, timeout_s: float, what: str, proc: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (httpx.HTTPError, KeyError):
            value = None
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited ({proc.returncode}) waiting for {what}:\n{log.read_text()}")
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}:\n{log.read_text()}")


def test_testnet_daemon_serves_metrics_and_notifies_fills_then_closes_the_port(exchange, tmp_path, sink):
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    home, log = tmp_path / "home", tmp_path / "daemon.log"
    env = {**os.environ, "QT_HOME": str(home), "QT_API_KEY": API_KEY, "QT_API_SECRET": API_SECRET,
           "QT_LOG_LEVEL": "WARNING", "QT_NOTIFY_WEBHOOK_URL": sink.url}
    env.pop("QT_PARAMS", None)
    env.pop("REDIS_URL", None)
    proc = None
    with FakeSignalService(buy_signals()) as svc, open(log, "ab") as log_file:
        try:
            proc = subprocess.Popen(daemon_argv(exchange.url, svc.url) + ["--metrics-port", str(port)],
                                    stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=PROJECT_ROOT,
                                    start_new_session=True)
            first = _wait_for(lambda: scrape(url)[("qt_executor_bars_total", ())] == 1 and scrape(url), 60,
                              "the first bar", proc, log)
            exchange.advance(1)  # the entry sent at bar 99 is booked at the next bar
            second = _wait_for(lambda: scrape(url)[("qt_executor_bars_total", ())] == 2 and scrape(url), 60,
                               "the second bar", proc, log)
            _wait_for(lambda: any(e["kind"] == "fill" for e in sink.received), 10, "a fill notification", proc, log)
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        finally:
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
    assert _port_is_closed(port), "the endpoint must close when the daemon stops"
    with sqlite3.connect(home / "executor" / "state.sqlite") as db:
        equity = db.execute("SELECT equity_usdt, state, open_positions FROM equity ORDER BY ts").fetchall()
        orders = db.execute("SELECT status FROM orders").fetchall()
        fills = db.execute("SELECT symbol, side, purpose, price FROM fills ORDER BY rowid").fetchall()
    assert len(equity) == 2 and [s for _, s, _ in equity] == ["ACTIVE", "ACTIVE"]
    for snap, (eq, _state, n_pos) in zip((first, second), equity):
        assert snap[("qt_executor_equity_usdt", ())] == pytest.approx(eq, rel=1e-12)
        assert snap[("qt_executor_open_positions", ())] == n_pos
        assert snap[("qt_executor_kill_switch", ())] == 0.0
    assert first[("qt_executor_orders_total", (("status", "submitted"),))] >= 1  # the entry at bar 99
    assert first[("qt_executor_orders_total", (("status", "filled"),))] == 0
    assert second[("qt_executor_orders_total", (("status", "filled"),))] == sum(s == "filled" for (s,) in orders) > 0
    assert second[("qt_executor_open_positions", ())] == 1
    got = [(e["data"]["symbol"], e["data"]["side"], e["data"]["purpose"], e["data"]["price"])
           for e in sink.received if e["kind"] == "fill"]
    assert got == [tuple(f) for f in fills]
    assert "Traceback" not in log.read_text()
