"""Builders for the dashboard tests: a two-symbol synthetic market in a real lake, signals
that keep one position open and trade the other symbol every 8 bars, a paper run, and the
headless-Chromium helpers of the browser tests (no logic under test lives here)."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from executor.daemon import run_paper_replay
from executor.signals import FrameSignalSource
from data import lake
from data.sources import lake_root
from qt.config import Params
from qt.paths import StatePaths
from data.synthetic import generate_market

from tests.executor.exec_support import params

SYMBOLS = ["BTC/USDT", "ETH/USDT"]
HOLD, CYCLE = SYMBOLS  # HOLD: "buy" every bar, held to the end; CYCLE: buy 4 bars, sell 4 bars
START_EQUITY = 10_000.0


def overrides(bars: int = 300) -> dict:
    """The params sections of the test market (also written as a params file for `qt dashboard`)."""
    return {"data": {"source": "synthetic:3", "symbols": SYMBOLS},
            "synthetic": {"bars": bars, "start": "2024-01-01", "base_volatility": 0.003},
            "risk": {"starting_equity_usdt": START_EQUITY, "position_fraction": 0.3, "stop_loss_pct": 0.5,
                     "take_profit_pct": 5.0, "max_holding_bars": 100_000,
                     "max_drawdown_pct": 0.9, "daily_loss_limit_pct": 0.5}}  # only the kill switch halts


def dashboard_params(bars: int = 300) -> Params:
    return params(**overrides(bars))


def write_market(p: Params, paths: StatePaths) -> pd.DataFrame:
    """The synthetic market of ``p`` written into the real lake where the stages read it."""
    candles = generate_market(SYMBOLS, p.data.timeframe, p.synthetic, seed=3)
    root = lake_root(p, paths)
    for sym, g in candles.groupby("symbol"):
        lake.write_candles(root, sym, p.data.timeframe, g[lake.OHLCV_COLUMNS].reset_index(drop=True))
    return candles


def signals_for(candles: pd.DataFrame) -> pd.DataFrame:
    """HOLD: always buy; CYCLE: buy for 4 bars then sell for 4 (exit on the flip). Confidences
    spread over [0.6, 0.9] for buys and [0.1, 0.4] for sells, one signal per bar."""
    rows = []
    for sym, g in candles.groupby("symbol"):
        for i, t in enumerate(g["timestamp"]):
            buy = sym == HOLD or (i // 4) % 2 == 0
            frac = (i * 0.37) % 1.0
            rows.append((sym, t, "buy" if buy else "sell", 0.6 + 0.3 * frac if buy else 0.1 + 0.3 * frac,
                         0.001 if buy else -0.001, "3"))
    return pd.DataFrame(rows, columns=["symbol", "timestamp", "action", "confidence", "expected_return",
                                       "model_version"])


def paper_run(home: Path, redis_url: str | None = None, bars: int = 300):
    """A finished paper replay into ``home``'s state DB: (params, paths, candles, report)."""
    p = dashboard_params(bars)
    paths = StatePaths(home).ensure()
    candles = write_market(p, paths)
    signals = signals_for(candles)
    report = run_paper_replay(candles, FrameSignalSource(signals), p, paths.executor_db, redis_url,
                              start=signals["timestamp"].min())
    return p, paths, candles, report


def register_champion(paths: StatePaths, model_name: str, trained_at: str, importance: pd.DataFrame,
                      gates: list[dict]) -> str:
    """A real MLflow registry under ``paths`` holding one champion: a run with the importance
    CSV and a trivial pyfunc (metadata ``trained_at``), registered, gate-tagged and promoted
    through ``training.registry`` - the writers ``qt train`` / ``qt promote`` use."""
    import tempfile
    from types import SimpleNamespace

    import mlflow

    from training.registry import ModelRegistry

    class Constant(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return [0.5] * len(model_input)

    reg = ModelRegistry(paths.tracking_uri, model_name, artifact_location=paths.mlflow_artifacts)
    experiment_id = reg._activate()
    with mlflow.start_run(experiment_id=experiment_id) as run:
        with tempfile.TemporaryDirectory() as tmp:
            csv = Path(tmp) / "feature_importance.csv"
            importance.to_csv(csv, index=False)
            mlflow.log_artifact(str(csv))
        info = mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=["mlflow"],
                                       metadata={"trained_at": trained_at})
    version = reg.register_version(run.info.run_id, model_uri=info.model_uri)
    reg.set_gate_tags(version, SimpleNamespace(passed=all(g["passed"] for g in gates), gates=gates))
    reg.promote(version)
    return version


def chrome():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,2300"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def wait(what: str, check, timeout_s: float = 20.0, every_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # noqa: BLE001 - e.g. the element is not rendered yet
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every_s)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def points(driver, graph_id: str) -> list[int]:
    """Points per trace of the plotly graph ``graph_id`` as the browser holds it."""
    return driver.execute_script(
        "const g = document.querySelector(arguments[0] + ' .js-plotly-plot');"
        "return g && g.data ? g.data.map(t => (t.x || t.open || []).length) : null;", f"#{graph_id}")
