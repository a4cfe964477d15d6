"""Paper daemon: parity with the backtest, signals over HTTP, SQLite state, Redis events."""

from __future__ import annotations

import json
import sqlite3

import pandas as pd
import pytest
import redis

from executor.backtest import run_backtest
from executor.daemon import run_paper_replay
from executor.events import STREAMS
from executor.signals import FrameSignalSource, HttpSignalSource, SignalUnavailable
from qt.procs import free_port, start_redis

from tests.executor.exec_support import FakeSignalService, momentum_signals, paper_market, paper_params, params


def test_backtest_and_http_paper_replay_give_identical_fills_and_pnl(tmp_path):
    candles = paper_market()
    signals = momentum_signals(candles)
    p = paper_params()
    bt = run_backtest(candles, signals, p, close_at_end=False)
    start = signals["timestamp"].min()
    with FakeSignalService(signals) as svc:
        source = HttpSignalSource(svc.url, timeout_s=5)
        try:
            report = run_paper_replay(candles, source, p, tmp_path / "state.sqlite", None, start=start)
        finally:
            source.close()
    assert len(bt.fills) > 10, "the scenario must trade to prove anything"
    with sqlite3.connect(tmp_path / "state.sqlite") as db:
        fills = pd.read_sql_query("SELECT symbol, ts, side, reason, qty, price, fee_usdt FROM fills "
                                  "ORDER BY rowid", db)
        equity = pd.read_sql_query("SELECT ts, equity_usdt FROM equity ORDER BY ts", db)
    expected = bt.fills[["symbol", "timestamp", "side", "reason", "qty", "price", "fee_usdt"]]
    assert fills.drop(columns="ts").values.tolist() == expected.drop(columns="timestamp").values.tolist()
    assert fills["ts"].tolist() == [t.isoformat() for t in expected["timestamp"]]
    assert equity["equity_usdt"].tolist() == bt.equity.tolist()
    assert report.net_pnl == bt.metrics["net_pnl"]
    assert report.metrics == bt.metrics
    assert report.fills == len(bt.fills) and report.orders == len(bt.fills[bt.fills["order_id"] > 0])


def test_service_503_opens_nothing_but_exits_still_happen(tmp_path):
    candles = paper_market()
    signals = momentum_signals(candles)
    p = paper_params()
    outage = signals["timestamp"].min() + pd.Timedelta(hours=100)
    with FakeSignalService(signals, unavailable_from=outage) as svc:
        source = HttpSignalSource(svc.url, timeout_s=5)
        try:
            report = run_paper_replay(candles, source, p, tmp_path / "s.sqlite", None, start=signals["timestamp"].min())
        finally:
            source.close()
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        fills = pd.read_sql_query("SELECT ts, purpose, reason FROM fills", db)
        decisions = pd.read_sql_query("SELECT ts, symbol, outcome, reason FROM decisions", db)
        alerts = pd.read_sql_query("SELECT kind FROM alerts", db)
    after = pd.to_datetime(fills["ts"]) > outage + pd.Timedelta(hours=1)  # orders decided after the outage
    assert after.any() and (fills.loc[after, "purpose"] == "exit").all()
    assert set(fills.loc[after, "reason"]) <= {"stop_loss", "take_profit", "max_holding"}
    late = decisions[pd.to_datetime(decisions["ts"]) >= outage]
    assert (late["outcome"] != "enter").all()
    assert (late.loc[late["outcome"] == "denied", "reason"] == "NO_SIGNAL").all()
    assert report.rejections["NO_SIGNAL"] >= 100  # flat symbols x outage bars
    assert report.open_positions == 0
    assert (alerts["kind"] == "NO_SIGNAL").sum() > 0


def test_http_source_raises_signal_unavailable_when_nothing_listens():
    source = HttpSignalSource(f"http://127.0.0.1:{free_port()}", timeout_s=1)
    with pytest.raises(SignalUnavailable, match="unreachable"):
        source.fetch(["BTC/USDT"], pd.Timestamp("2024-01-01", tz="UTC"))
    source.close()


def test_state_db_records_decisions_with_reasons_and_numbers(tmp_path):
    candles = paper_market(bars=120)
    signals = momentum_signals(candles)
    p = params(risk={"max_open_positions": 1, "max_holding_bars": 6})
    report = run_paper_replay(candles, FrameSignalSource(signals), p, tmp_path / "s.sqlite", None,
                              start=signals["timestamp"].min())
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        d = pd.read_sql_query("SELECT * FROM decisions", db)
        orders = pd.read_sql_query("SELECT * FROM orders", db)
    assert len(d) == len(candles[candles["timestamp"] >= signals["timestamp"].min()])  # one per symbol per bar
    capped = d[d["reason"] == "MAX_OPEN_POSITIONS"]
    assert len(capped) == report.rejections["MAX_OPEN_POSITIONS"] > 0
    assert json.loads(capped["details"].iloc[0]) == {"open_positions": 1, "limit": 1}
    entered = d[d["outcome"] == "enter"]
    assert len(entered) == (orders["purpose"] == "entry").sum()
    assert set(orders["status"]) <= {"filled", "submitted"}


def test_redis_gets_all_four_streams_and_replay_survives_redis_dying(tmp_path):
    candles = paper_market()
    signals = momentum_signals(candles)
    first = signals["timestamp"].min()
    proc, url = start_redis(tmp_path)
    try:
        inner = FrameSignalSource(signals)
        seen = {}

        class FlakySource:
            """Service down for bars 20-24 (-> risk.alert); redis stopped at bar 150."""

            def fetch(self, symbols, as_of):
                k = int((as_of - first) / pd.Timedelta(hours=1))
                if k == 149:
                    client = redis.Redis.from_url(url)
                    seen["before_stop"] = {s: client.xlen(s) for s in STREAMS}
                    client.close()
                    proc.stop()
                if 20 <= k < 25:
                    raise SignalUnavailable("test outage")
                return inner.fetch(symbols, as_of)

        report = run_paper_replay(candles, FlakySource(), paper_params(), tmp_path / "s.sqlite", url, start=first)
    finally:
        proc.stop()
    assert all(n > 0 for n in seen["before_stop"].values()), seen
    assert report.lost_events > 0
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        last_ts = db.execute("SELECT max(ts) FROM equity").fetchone()[0]
        late_fills = db.execute("SELECT count(*) FROM fills WHERE ts > ?",
                                ((first + pd.Timedelta(hours=150)).isoformat(),)).fetchone()[0]
    assert pd.Timestamp(last_ts) == candles["timestamp"].max()  # replay ran to the end
    assert late_fills > 0  # and kept trading (incl. exits) without redis


def test_kill_switch_halts_entries_and_exits_continue(tmp_path):
    candles = paper_market()
    signals = momentum_signals(candles)
    first = signals["timestamp"].min()
    proc, url = start_redis(tmp_path)
    try:
        inner = FrameSignalSource(signals)
        client = redis.Redis.from_url(url)

        class KillAt60:
            def fetch(self, symbols, as_of):
                if as_of == first + pd.Timedelta(hours=59):
                    client.set("qt:kill", "1")  # read by the loop at the next bar's mark
                return inner.fetch(symbols, as_of)

        report = run_paper_replay(candles, KillAt60(), paper_params(), tmp_path / "s.sqlite", url, start=first)
        alerts = [json.loads(f[b"numbers"]) for _, f in client.xrange("risk.alert")]
        client.close()
    finally:
        proc.stop()
    assert report.final_state == "HALTED"
    assert any(a.get("to") == "HALTED" for a in alerts)
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        late = pd.read_sql_query("SELECT ts, outcome, reason FROM decisions WHERE ts >= ?", db,
                                 params=((first + pd.Timedelta(hours=60)).isoformat(),))
    assert (late["outcome"] != "enter").all()
    assert (late["reason"] == "HALTED").any()
