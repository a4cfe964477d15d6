"""The candle panel on the state of a finished multi-symbol run, opened as a new user would.

A run collected a 4-symbol synthetic market into its lake (the real collect stage, through the local
exchange) and a paper replay traded it; ``qt dashboard`` is then started with the project's default
params (not the run's), in headless Chromium. The panel must show the selected symbol's candles -
here S002/USDT, not the first symbol of the universe - with that run's entries and exits. Without a
lake, the panel holds a short message that stays inside it.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys

import httpx
import pandas as pd
import pytest

from executor.daemon import run_paper_replay
from executor.signals import FrameSignalSource
from qt.paths import PROJECT_ROOT, StatePaths
from qt.procs import ManagedProcess, free_port

from tests.dashboard.support import chrome, points, wait
from tests.executor.exec_support import params

pytestmark = pytest.mark.e2e
UNIVERSE = ["S000/USDT", "S001/USDT", "S002/USDT", "S003/USDT"]
TRADED = "S002/USDT"  # the most traded symbol, so the page selects it; not the universe's first
BARS = 300
SCREENSHOT = PROJECT_ROOT / "reports" / "dashboard-candles.png"
SCREENSHOT_NO_LAKE = PROJECT_ROOT / "reports" / "dashboard-candles-no-lake.png"


def _run_params():
    return params(data={"source": "synthetic:5", "symbols": UNIVERSE},
                  synthetic={"bars": BARS, "start": "2024-01-01", "base_volatility": 0.003},
                  risk={"starting_equity_usdt": 10_000.0, "position_fraction": 0.2, "stop_loss_pct": 0.5,
                        "take_profit_pct": 5.0, "max_holding_bars": 100_000, "max_drawdown_pct": 0.9,
                        "daily_loss_limit_pct": 0.5})


def _signals(candles: pd.DataFrame) -> pd.DataFrame:
    """TRADED: buy 4 bars, sell 4 bars; S000: buy every bar (one entry, held); the rest: sell (no trade)."""
    rows = []
    for sym, g in candles.groupby("symbol"):
        for i, t in enumerate(g["timestamp"]):
            buy = sym == "S000/USDT" or (sym == TRADED and (i // 4) % 2 == 0)
            rows.append((sym, t, "buy" if buy else "sell", 0.8 if buy else 0.2, 0.001 if buy else -0.001, "1"))
    return pd.DataFrame(rows, columns=["symbol", "timestamp", "action", "confidence", "expected_return",
                                       "model_version"])


def _fills(db, symbol: str) -> pd.DataFrame:
    with sqlite3.connect(db) as conn:
        return pd.read_sql_query("SELECT purpose FROM fills WHERE symbol=?", conn, params=(symbol,))


def _candle_trace(driver) -> dict | None:
    return driver.execute_script(
        "const g = document.querySelector('#candles-chart .js-plotly-plot');"
        "if (!g || !g.data || !g.data.length) return null;"
        "return {name: g.data[0].name, type: g.data[0].type, n: (g.data[0].x || []).length};")


def _panel_message(driver) -> dict | None:
    """The panel's annotation text and whether every rendered line of it lies inside the panel."""
    return driver.execute_script(
        "const g = document.querySelector('#candles-chart .js-plotly-plot');"
        "const a = document.querySelector('#candles-chart .annotation');"
        "if (!g || !a || !g.layout.annotations || !g.layout.annotations.length) return null;"
        "const box = g.getBoundingClientRect(), t = a.getBoundingClientRect();"
        "return {text: a.textContent, inside: t.left >= box.left && t.right <= box.right && t.width > 0};")


def test_dashboard_candles_show_the_selected_symbol_of_a_finished_run(tmp_path):
    from flows import stages as pipeline
    from data.sources import read_lake

    p = _run_params()
    paths = StatePaths(tmp_path / "home").ensure()
    pipeline.collect(p, paths)  # the run's collect stage: lake + reports/collect.json
    candles = read_lake(p, paths)
    signals = _signals(candles)
    run_paper_replay(candles, FrameSignalSource(signals), p, paths.executor_db, None,
                     start=signals["timestamp"].min())
    fills = _fills(paths.executor_db, TRADED)
    entries, exits = int((fills["purpose"] == "entry").sum()), int((fills["purpose"] == "exit").sum())
    assert entries >= 10 and exits >= 10  # the setup trades TRADED most
    expected_bars = int((candles["symbol"] == TRADED).sum())  # the replay spans every bar of the market

    port = free_port()
    env = {**os.environ, "QT_HOME": str(paths.home)}
    for var in ("QT_PARAMS", "REDIS_URL"):
        env.pop(var, None)
    dash = ManagedProcess("dashboard", [sys.executable, "-m", "cli.main", "dashboard", "--port", str(port),
                                        "--refresh-seconds", "1"],  # the default params, as a new user would
                          env=env, log_path=tmp_path / "dashboard.log", cwd=PROJECT_ROOT)
    driver = None
    try:
        dash.start()
        url = f"http://127.0.0.1:{port}/"
        dash.wait_until(lambda: httpx.get(url, timeout=1).status_code == 200, 40, "serving the page")
        driver = chrome()
        driver.get(url)
        trace = wait("the candle panel", lambda: _candle_trace(driver) or _panel_message(driver))
        assert trace.get("type") == "candlestick", f"the candle panel shows no candles: {trace}"
        assert trace["name"] == TRADED and trace["n"] == expected_bars
        assert points(driver, "candles-chart")[1:] == [entries, exits]
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENSHOT))

        # -- the lake is gone: a short message inside the panel ------------------------------------
        shutil.rmtree(paths.raw)
        message = wait("the missing-lake message", lambda: _panel_message(driver), timeout_s=20)
        assert TRADED in message["text"] and "lake" in message["text"]
        assert len(message["text"]) <= 160, message["text"]
        assert message["inside"], message
        driver.save_screenshot(str(SCREENSHOT_NO_LAKE))
    finally:
        if driver is not None:
            driver.quit()
        dash.stop()


def test_dashboard_candles_missing_lake_names_the_lake_the_run_collected(tmp_path):
    """The run's collect record names its lake; with that lake gone, the panel's message names that folder
    (the one to restore or re-collect), not a folder the dashboard's own params would have used."""
    import json

    from dashboard.lake_reader import LakeMissing, find_run_lake
    from qt.config import load_params

    paths = StatePaths(tmp_path / "home").ensure()
    run_lake = paths.raw / "synthetic-7-0123456789"  # recorded by the run's collect stage, since deleted
    (paths.reports / "collect.json").write_text(json.dumps({"data": {"lake": str(run_lake), "timeframe": "1h"}}))
    with pytest.raises(LakeMissing) as missing:
        find_run_lake(load_params(None), paths, TRADED)
    assert TRADED in str(missing.value) and run_lake.name in str(missing.value)
