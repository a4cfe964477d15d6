"""A collector killed with SIGKILL mid-backfill resumes on restart with no duplicate and no hole."""

from __future__ import annotations

import pytest
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd

from data import lake
from qt.procs import ManagedProcess
from tests.data.support import MINUTE, MINUTE_BARS, MINUTE_START, read_source
from tests.support import PROJECT_ROOT

pytestmark = pytest.mark.slow


def _argv(root, url):
    return [sys.executable, "-m", "data.collector", "--root", str(root), "--exchange-url", url,
            "--symbols", MINUTE, "--timeframe", "1m",
            "--set", "collect.page_limit=500", "--set", "collect.funding=false",
            "--set", "collect.open_interest=false", "--set", "collect.backoff_base_s=0.01",
            "--set", "collect.backoff_cap_s=0.05"]


def _stored_rows(root) -> int:
    last = lake.last_timestamp(root, MINUTE, "1m")
    if last is None:
        return 0
    return int((last - pd.Timestamp(MINUTE_START, tz="UTC")) / pd.Timedelta(minutes=1)) + 1


def test_resumes_after_kill_without_duplicates_or_holes(clean_exchange, source_dir, tmp_path):
    root = tmp_path / "raw"
    clean_exchange.set_faults({"latency_ms": 60})  # ~40 pages x 60 ms: slow enough to kill mid-run
    proc = ManagedProcess("collector", _argv(root, clean_exchange.url), log_path=tmp_path / "first.log",
                          cwd=PROJECT_ROOT)
    with proc:
        deadline = time.monotonic() + 60
        while _stored_rows(root) < 6 * 500 and time.monotonic() < deadline:
            assert proc.alive(), f"collector ended before it could be killed:\n{proc.log_tail()}"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.proc.wait(timeout=10)
    assert proc.proc.returncode == -signal.SIGKILL
    stored_before = len(lake.read_symbol(root, MINUTE, "1m"))
    assert 0 < stored_before < MINUTE_BARS, "the kill did not land mid-run"

    clean_exchange.set_faults({})
    done = subprocess.run(_argv(root, clean_exchange.url), cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)["symbols"][0]
    assert report["rows_added"] == MINUTE_BARS - stored_before  # nothing stored was fetched again
    stored = lake.read_symbol(root, MINUTE, "1m")
    assert not stored.timestamp.duplicated().any()
    pd.testing.assert_frame_equal(stored, read_source(source_dir, MINUTE, "1m"))
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]
    manifests = [json.loads(p.read_text()) for p in lake.candle_path(root, MINUTE, "1m").glob("*.manifest.json")]
    assert sum(m["rows"] for m in manifests) == MINUTE_BARS
