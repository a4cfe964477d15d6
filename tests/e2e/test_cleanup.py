"""`qt run` stopped from outside (SIGTERM, as a scheduler or `kill` does) leaves nothing running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from qt.procs import live_group_members

pytestmark = pytest.mark.e2e

QT = str(Path(sys.executable).with_name("qt"))


def _children(pid: int) -> list[tuple[int, str]]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,ppid=,args="], capture_output=True, text=True).stdout
    kids = []
    for line in out.splitlines():
        p, pp, args = line.split(None, 2)
        if int(pp) == pid:
            kids.append((int(p), args))
    return kids


def test_sigterm_during_serving_stops_redis_and_bentoml(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "data": {"symbols": ["BTC/USDT", "ETH/USDT"]},
        "synthetic": {"bars": 1500, "signal_strength": 0.35},
        "train": {"folds": 2, "members": ["xgboost", "lightgbm"], "xgboost": {"n_estimators": 30},
                  "lightgbm": {"n_estimators": 30}},  # deep members: tests/e2e/test_pipeline.py
        "gates": {"bootstrap_samples": 100},
    }))
    env = {**os.environ, "QT_HOME": str(tmp_path / "home")}
    env.pop("REDIS_URL", None)
    log = open(tmp_path / "qt-run.log", "wb")
    proc = subprocess.Popen([QT, "run", "--params", str(params)], env=env, stdout=log, stderr=subprocess.STDOUT)
    groups: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            groups.update(dict(_children(proc.pid)))
            if any("bentoml" in a for a in groups.values()) and any("redis-server" in a for a in groups.values()):
                break
            time.sleep(0.5)
        assert proc.poll() is None, ("qt run ended before bentoml serve was started; seen: "
                                     f"{groups}; log tail:\n" + (tmp_path / "qt-run.log").read_text()[-3000:])
        assert any("bentoml" in a for a in groups.values()), groups
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    deadline = time.monotonic() + 10
    while live_group_members(list(groups)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert live_group_members(list(groups)) == []
