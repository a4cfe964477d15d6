"""The server as a process: bad arguments stop it with one line; LocalExchange stops it by PID."""

from __future__ import annotations

import subprocess
import sys

from exchange import LocalExchange
from qt.procs import free_port, live_group_members
from tests.support import PROJECT_ROOT


def test_missing_data_dir_is_one_line_and_exit_2(tmp_path):
    run = subprocess.run([sys.executable, "-m", "exchange", "--data", str(tmp_path / "nope"),
                          "--port", str(free_port())], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "ohlcv" in run.stderr


def test_bad_now_is_refused_before_serving(datadir):
    run = subprocess.run([sys.executable, "-m", "exchange", "--data", str(datadir), "--port", str(free_port()),
                          "--now", "yesterday-ish"], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60)
    assert run.returncode == 2 and "--now" in run.stderr


def test_local_exchange_stops_its_process_group_also_when_the_body_fails(datadir):
    exchange = LocalExchange(datadir)
    try:
        with exchange:
            pid = exchange.pid
            assert live_group_members([pid])
            raise RuntimeError("body failed")
    except RuntimeError:
        pass
    assert live_group_members([pid]) == []
