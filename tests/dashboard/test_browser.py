"""The dashboard in headless Chromium against a running stack on loopback.

The stack: a real redis-server, a champion registered in a real MLflow store, the paper
executor (``run_paper_replay``, the daemon's own code) replaying a synthetic market from the
lake against the signal service over HTTP - paced so it is still running while the browser
acts - and ``qt dashboard`` as its own process. The page must show the run's data in every
panel; its Kill button must really halt the running executor and Resume must let it trade.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from dashboard.state_reader import StateMissing, read_run
from executor.daemon import run_paper_replay
from executor.signals import HttpSignalSource
from qt.paths import PROJECT_ROOT, StatePaths
from qt.procs import ManagedProcess, free_port, start_redis

from tests.dashboard.support import CYCLE, HOLD, chrome, dashboard_params, overrides, points, register_champion, \
    signals_for, wait, write_market
from tests.executor.exec_support import FakeSignalService

pytestmark = pytest.mark.e2e
SCREENSHOT = PROJECT_ROOT / "reports" / "dashboard.png"
SCREENSHOT_HALTED = PROJECT_ROOT / "reports" / "dashboard-halted.png"
BARS = 1500
SECONDS_PER_BAR = 0.1  # the executor's pace: up to 150 s of replay, far more than the test needs


class PacedSource:
    """The HTTP signal source, one bar per ``SECONDS_PER_BAR`` until ``done`` is set (then at full speed)."""

    def __init__(self, inner: HttpSignalSource, done: threading.Event):
        self.inner, self.done = inner, done

    def fetch(self, symbols, as_of):
        self.done.wait(SECONDS_PER_BAR)
        return self.inner.fetch(symbols, as_of)


def _readyz(svc: FakeSignalService) -> None:
    """The stand-in service answers readiness like the BentoML service does with a champion loaded."""
    def do_GET(handler):  # noqa: N802 - http.server's naming
        handler._send(200 if handler.path == "/readyz" else 404, {"ready": True})

    svc.server.RequestHandlerClass.do_GET = do_GET


def _text(driver, element_id: str) -> str | None:
    """The element's visible text, read in one script call: the page re-renders every refresh, so
    a find-then-read in two calls can hold an element the next render has already replaced."""
    text = driver.execute_script("const e = document.getElementById(arguments[0]); return e ? e.innerText : null;",
                                 element_id)
    return None if text is None else text.strip()


def test_dashboard_shows_the_paper_run_and_its_kill_switch_halts_the_executor(tmp_path):
    started = time.monotonic()
    p = dashboard_params(BARS)
    paths = StatePaths(tmp_path / "home").ensure()
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({**overrides(BARS), "train": {"model_name": "qt-dash"}}))
    importance = pd.DataFrame({"feature": ["rsi_14", "logret_1", "atr_14", "volz_24"],
                               "xgboost": [0.2, 0.4, 0.3, 0.1], "ensemble": [0.25, 0.35, 0.3, 0.1]})
    register_champion(paths, "qt-dash", "2024-02-01T00:00:00+00:00", importance,
                      [{"name": "beats_baselines", "passed": True, "value": 0.4, "threshold": 0.0}])
    candles = write_market(p, paths)
    signals = signals_for(candles)
    done = threading.Event()
    redis_proc, redis_url = start_redis(tmp_path)
    svc = FakeSignalService(signals).__enter__()
    _readyz(svc)
    source = HttpSignalSource(svc.url, timeout_s=5)
    outcome: dict = {}

    def execute():
        try:
            outcome["report"] = run_paper_replay(candles, PacedSource(source, done), p, paths.executor_db, redis_url,
                                                 start=signals["timestamp"].min())
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            outcome["error"] = exc

    executor = threading.Thread(target=execute, daemon=True)
    port = free_port()
    env = {**os.environ, "QT_HOME": str(paths.home), "REDIS_URL": redis_url,
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    env.pop("QT_PARAMS", None)
    dash_proc = ManagedProcess("dashboard", [sys.executable, "-m", "cli.main", "dashboard", "--port", str(port),
                                             "--refresh-seconds", "1", "--params", str(params_file),
                                             "--service-url", svc.url],
                               env=env, log_path=tmp_path / "dashboard.log", cwd=PROJECT_ROOT)
    driver = None
    try:
        executor.start()
        dash_proc.start()
        url = f"http://127.0.0.1:{port}/"
        dash_proc.wait_until(lambda: httpx.get(url, timeout=1).status_code == 200, 40, "serving the page")
        driver = chrome()
        driver.get(url)

        # -- every panel shows the running paper run ------------------------------------------
        run_id = wait("the run", lambda: read_run(paths.executor_db).run_id)
        wait("the run on the page", lambda: run_id in _text(driver, "run-id"))
        wait("a fresh heartbeat", lambda: "s ago" in _text(driver, "health-heartbeat"))
        age = float(_text(driver, "health-heartbeat").split(" s ago")[0])
        assert age < 5.0, _text(driver, "health-heartbeat")
        assert _text(driver, "health-redis") == "ok" and _text(driver, "health-kill") == "off"
        assert _text(driver, "health-service").startswith("ready")
        assert _text(driver, "health-state") == "ACTIVE"
        wait("open positions", lambda: HOLD in _text(driver, "positions-table"))
        equity = wait("equity points", lambda: (points(driver, "equity-chart") or [0])[0] >= 20 and
                      points(driver, "equity-chart"))
        assert len(equity) == 2 and equity[1] == equity[0]  # executor and buy-and-hold over the same bars
        candle_pts = wait("candles and entries", lambda: (pts := points(driver, "candles-chart")) and pts[1] > 0
                          and pts)
        assert candle_pts[0] >= 20  # candlesticks, then entry and exit markers
        assert (points(driver, "drawdown-chart") or [0])[0] >= 20
        assert sum(points(driver, "confidence-chart") or []) >= 20
        assert points(driver, "importance-chart") == [4]
        assert _text(driver, "champion-version") == "v1" and _text(driver, "champion-gates") == "passed"
        assert _text(driver, "champion-trained").startswith("2024-02-01")
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENSHOT))
        print(f"\nscreenshot: {SCREENSHOT}")

        # -- Kill halts the running executor ----------------------------------------------------
        from selenium.webdriver.common.by import By

        assert "error" not in outcome and executor.is_alive(), "the executor must still be running"
        driver.find_element(By.ID, "kill-button").click()
        wait("the kill confirmation", lambda: "kill switch ON" in _text(driver, "control-result"))
        halted = wait("the executor to record HALTED", lambda: _halted_since(paths.executor_db), timeout_s=10)
        wait("10 halted bars", lambda: len(_bars_since(paths.executor_db, halted)) >= 10, timeout_s=10)
        view = read_run(paths.executor_db)
        d = view.decisions[view.decisions["ts"] >= halted]
        assert not (d["outcome"] == "enter").any(), "nothing new may open while HALTED"
        assert (d[d["symbol"] == CYCLE]["reason"] == "HALTED").any()  # its buys were refused
        wait("HALTED on the page", lambda: _text(driver, "health-state") == "HALTED")
        assert _text(driver, "health-kill").startswith("ON (Kill button on the dashboard")
        wait("the halt alert on the page", lambda: "kill switch set" in _text(driver, "alerts-table"))
        driver.save_screenshot(str(SCREENSHOT_HALTED))
        print(f"screenshot after Kill: {SCREENSHOT_HALTED}")

        # -- Resume lets it trade again ---------------------------------------------------------
        driver.find_element(By.ID, "resume-button").click()
        wait("the resume confirmation", lambda: "cleared" in _text(driver, "control-result"))
        resumed = wait("the executor to record ACTIVE", lambda: _active_after(paths.executor_db, halted),
                       timeout_s=10)
        wait("a new entry after resume", lambda: _entries_since(paths.executor_db, resumed) > 0, timeout_s=10)
        wait("ACTIVE on the page", lambda: _text(driver, "health-state") == "ACTIVE")
        assert _text(driver, "health-kill") == "off"
        assert executor.is_alive() and "error" not in outcome
    finally:
        done.set()
        if driver is not None:
            driver.quit()
        dash_proc.stop()
        # the rest of the 1500 bars at full speed, one HTTP call each: seconds when the machine is
        # quiet, minutes when it is loaded; the source must not close under a running replay
        executor.join(timeout=600)
        finished = not executor.is_alive()
        source.close()
        svc.__exit__(None, None, None)
        redis_proc.stop()
    assert finished, "the paper replay did not finish its bars within 600 s of the end of the test"
    assert "error" not in outcome, outcome.get("error")
    assert outcome["report"].final_state == "ACTIVE"
    print(f"browser test: {time.monotonic() - started:.1f} s")


def _equity(db: Path) -> pd.DataFrame:
    try:
        return read_run(db).equity
    except StateMissing:
        return pd.DataFrame(columns=["ts", "state"])


def _halted_since(db: Path) -> pd.Timestamp | None:
    e = _equity(db)
    h = e[e["state"] == "HALTED"]
    return h["ts"].iloc[0] if len(h) else None


def _bars_since(db: Path, ts: pd.Timestamp) -> pd.DataFrame:
    e = _equity(db)
    return e[e["ts"] >= ts]


def _active_after(db: Path, halted: pd.Timestamp) -> pd.Timestamp | None:
    e = _bars_since(db, halted)
    a = e[e["state"] == "ACTIVE"]
    return a["ts"].iloc[0] if len(a) else None


def _entries_since(db: Path, ts: pd.Timestamp) -> int:
    d = read_run(db).decisions
    return int(((d["ts"] >= ts) & (d["outcome"] == "enter")).sum())
