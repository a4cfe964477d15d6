"""The kill switch a person sets (``qt kill``, the dashboard's Kill) halts a running executor
at its next bar and clearing it (``qt resume``, Resume) lets it trade again; a drawdown halt
is not lifted that way."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import redis

from executor.daemon import run_paper_replay
from executor.events import KILL_KEY, clear_kill_switch, set_kill_switch
from executor.risk import RiskEngine, TradingState
from executor.signals import FrameSignalSource
from qt.paths import StatePaths
from qt.procs import start_redis

from tests.dashboard.support import CYCLE, dashboard_params, signals_for, write_market
from tests.executor.exec_support import params, ts
from dashboard.state_reader import read_run

KILL_AT, RESUME_AT = 40, 80  # bars after the first signal


@pytest.fixture
def redis_url(tmp_path):
    proc, url = start_redis(tmp_path)
    yield url
    proc.stop()


def test_kill_halts_new_entries_from_the_next_bar_and_resume_trades_again(tmp_path, redis_url):
    p = dashboard_params(300)
    paths = StatePaths(tmp_path / "home").ensure()
    candles = write_market(p, paths)
    signals = signals_for(candles)
    first = signals["timestamp"].min()
    client = redis.Redis.from_url(redis_url)
    inner = FrameSignalSource(signals)

    class Operator:
        """The signal source, with a person pressing Kill at bar 40 and Resume at bar 80."""

        def fetch(self, symbols, as_of):
            k = int((as_of - first) / pd.Timedelta(hours=1))
            if k == KILL_AT:
                set_kill_switch(client, reason="test", by="operator")
            if k == RESUME_AT:
                clear_kill_switch(client)
            return inner.fetch(symbols, as_of)

    report = run_paper_replay(candles, Operator(), p, paths.executor_db, redis_url, start=first)
    view = read_run(paths.executor_db)
    kill_ts, resume_ts = first + pd.Timedelta(hours=KILL_AT), first + pd.Timedelta(hours=RESUME_AT)
    state = view.equity.set_index("ts")["state"]
    halted = (state.index > kill_ts) & (state.index <= resume_ts)
    assert (state[halted] == "HALTED").all() and (state[~halted] == "ACTIVE").all()
    d = view.decisions
    window = d[(d["ts"] > kill_ts) & (d["ts"] <= resume_ts)]
    assert not (window["outcome"] == "enter").any()
    assert (window[window["symbol"] == CYCLE]["reason"] == "HALTED").sum() >= 10  # its buys were refused
    after = d[d["ts"] > resume_ts]
    assert (after["outcome"] == "enter").sum() >= 3  # trading again
    messages = " | ".join(view.alerts["message"])
    assert "kill switch set" in messages and "kill switch cleared" in messages
    assert report.final_state == "ACTIVE"


def test_a_drawdown_halt_stays_when_the_kill_switch_is_cleared():
    p = params()
    eng = RiskEngine.from_params(p)
    eng.observe_equity(p.risk.starting_equity_usdt * 0.7, ts(1))  # 30 % down: past the 25 % limit
    assert eng.state is TradingState.HALTED
    assert eng.resume(ts(2), "cleared") is None and eng.state is TradingState.HALTED
    fresh = RiskEngine.from_params(p)
    fresh.halt(ts(1), "kill switch")
    alert = fresh.resume(ts(2), "cleared")
    assert fresh.state is TradingState.ACTIVE and "HALTED -> ACTIVE" in alert.message


def _qt(*args, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"} | (env_extra or {})
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_qt_kill_and_resume_write_and_clear_the_key_the_executor_reads(redis_url):
    client = redis.Redis.from_url(redis_url)
    out = _qt("kill", "--reason", "exchange outage", "--by", "bob", env_extra={"REDIS_URL": redis_url})
    assert out.returncode == 0, out.stderr
    value = json.loads(client.get(KILL_KEY))
    assert value["reason"] == "exchange outage" and value["by"] == "bob" and pd.Timestamp(value["at"]).tzinfo
    out = _qt("resume", env_extra={"REDIS_URL": redis_url})
    assert out.returncode == 0 and "cleared" in out.stdout and client.get(KILL_KEY) is None


def test_qt_kill_without_redis_is_one_line_and_exit_2():
    out = _qt("kill")
    assert out.returncode == 2 and "REDIS_URL is not set" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = _qt("resume", env_extra={"REDIS_URL": "redis://127.0.0.1:1/0"})
    assert out.returncode == 2 and "unreachable" in out.stderr and "Traceback" not in out.stderr
