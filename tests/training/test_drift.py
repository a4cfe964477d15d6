"""Drift monitoring: PSI and KS by hand, the decision table, and the monitor acting on a trip."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest

from qt.config import DriftParams, NotifyParams, Params
from qt.paths import StatePaths
from training import drift

pytestmark = pytest.mark.slow

FEATURES = ["rsi_14", "logret_1", "volz_24", "ema_12"]  # ema_12 is excluded by default (price level)


# -- the arithmetic, by hand ------------------------------------------------------------------------
def test_psi_matches_a_hand_computation():
    ref = np.arange(1, 11, dtype=float)  # median 5.5: two bins of 50 %
    cur = np.array([1.0, 6.0, 7.0, 8.0, 9.0])  # 20 % / 80 %
    hand = (0.2 - 0.5) * math.log(0.2 / 0.5) + (0.8 - 0.5) * math.log(0.8 / 0.5)
    assert drift.psi(ref, cur, bins=2) == pytest.approx(hand) == pytest.approx(0.3 * math.log(4))


def test_psi_of_an_empty_bin_is_large_but_finite_through_the_floor():
    ref = np.arange(1, 11, dtype=float)
    hand = (1e-4 - 0.5) * math.log(1e-4 / 0.5) + (1.0 - 0.5) * math.log(1.0 / 0.5)
    assert drift.psi(ref, np.array([6.0, 7.0, 8.0, 9.0]), bins=2) == pytest.approx(hand)


def test_psi_of_a_sample_against_itself_is_zero_and_nan_is_ignored():
    x = np.random.default_rng(0).normal(size=500)
    assert drift.psi(x, x) == pytest.approx(0.0, abs=1e-12)
    assert drift.psi(x, np.append(x, np.nan)) == pytest.approx(0.0, abs=1e-12)


def test_ks_is_the_largest_gap_between_the_empirical_cdfs():
    # F_a(2) = 0.5, F_b(2) = 0: the largest gap
    assert drift.ks_statistic(np.array([1.0, 2, 3, 4]), np.array([3.0, 4, 5, 6])) == pytest.approx(0.5)
    assert drift.ks_statistic(np.array([1.0, 2]), np.array([5.0, 6])) == pytest.approx(1.0)


def test_price_level_columns_are_left_out_by_default():
    cols = ["rsi_14", "ema_12", "sma_20", "macd_12_26_9", "macd_signal_12_26_9", "bb_width_20_2", "bb_upper_20_2",
            "atr_14", "logret_1"]
    assert drift.monitored_columns(cols, DriftParams().exclude_features) == ["rsi_14", "bb_width_20_2", "logret_1"]


# -- the decision ---------------------------------------------------------------------------------
T = DriftParams(min_live_trades=20, hit_rate_drop=0.15, pnl_shortfall_fraction=1.0)
EXPECTED = {"trades": 80, "hit_rate": 0.55, "pnl_per_trade_usdt": 4.0}


@pytest.mark.parametrize("live, breaches, note", [
    (None, [], "no live state"),
    ({"trades": 5, "hit_rate": 0.0, "pnl_per_trade_usdt": -9.0}, [], "5 closed live trade(s) < drift.min_live_trades"),
    ({"trades": 40, "hit_rate": 0.50, "pnl_per_trade_usdt": 1.0}, [], None),
    ({"trades": 40, "hit_rate": 0.35, "pnl_per_trade_usdt": 1.0}, ["live_hit_rate"], None),
    ({"trades": 40, "hit_rate": 0.50, "pnl_per_trade_usdt": -0.5}, ["live_pnl"], None),
])
def test_live_trading_is_judged_against_the_backtest_only_with_enough_trades(live, breaches, note):
    verdict = drift.assess({"rsi_14": 0.01}, 0.02, live, EXPECTED, T)
    assert [b.check for b in verdict.breaches] == breaches
    assert verdict.drifted is bool(breaches)
    if note:
        assert any(note in n for n in verdict.notes)


def test_feature_and_prediction_thresholds_trip_and_name_what_drifted():
    verdict = drift.assess({"rsi_14": 0.6, "logret_1": 0.05, "volz_24": 0.3}, 0.4, None, None, DriftParams())
    assert [b.check for b in verdict.breaches] == ["feature_psi", "prediction_psi"]
    assert list(verdict.drifted_features) == ["rsi_14", "volz_24"]  # worst first
    tolerant = drift.assess({"rsi_14": 0.6, "volz_24": 0.3}, 0.1, None, None, DriftParams(max_drifted_features=2))
    assert not tolerant.drifted


# -- the monitor: record, alert, retrain ------------------------------------------------------------
class Sink:
    def __init__(self):
        self.received: list[dict] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                sink.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink():
    s = Sink()
    yield s
    s.close()


def _frame(rng, n: int, shift: dict[str, float] | None = None) -> pd.DataFrame:
    shift = shift or {}
    ts = pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC")
    data = {"rsi_14": rng.normal(50, 10, n), "logret_1": rng.normal(0, 0.01, n), "volz_24": rng.normal(0, 1, n),
            "ema_12": rng.normal(40_000, 500, n)}
    scale = {"rsi_14": 10, "logret_1": 0.01, "volz_24": 1, "ema_12": 500}
    for col, sigmas in shift.items():
        data[col] = data[col] + sigmas * scale[col]
    return pd.DataFrame({"symbol": "BTC/USDT", "timestamp": ts, **data})


def _inputs(shift: dict[str, float] | None = None, live=None):
    from training.drift_monitor import DriftInputs

    rng = np.random.default_rng(11)
    train = _frame(rng, 3000)
    recent = _frame(rng, 400, shift)
    return DriftInputs(
        champion={"model_name": "qt-test", "version": "3", "run_id": "r" * 32, "train_start": "2024-01-01",
                  "train_end": "2024-05-05", "holdout_start": "2024-05-06", "holdout_end": "2024-06-01"},
        feature_columns=list(FEATURES), train_features=train, recent_features=recent,
        holdout_predictions=rng.beta(5, 5, 1000), recent_predictions=rng.beta(5, 5, 400),
        live_trade_pnls=live, backtest_metrics={"trades": 60, "hit_rate": 0.55, "net_pnl": 240.0})


def _notifier(sink_url: str):
    from qt.notify import Notifier

    return Notifier.from_params(NotifyParams(), {"QT_NOTIFY_WEBHOOK_URL": sink_url})


def _run(tmp_path, inputs, sink):
    from training.drift_monitor import monitor

    calls: list[str] = []

    def retrain(reason: str) -> dict:
        calls.append(reason)
        return {"mode": "recorded", "reason": reason}

    paths = StatePaths(tmp_path / "home")
    result = monitor(Params(), paths, inputs=inputs, notifier=_notifier(sink.url), trigger_retrain=retrain)
    return result, calls, paths


def _mlflow_run(paths: StatePaths, run_id: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=paths.tracking_uri).get_run(run_id)


def test_shifted_features_trip_the_monitor_alert_and_trigger_a_retrain(tmp_path, sink):
    result, calls, paths = _run(tmp_path, _inputs(shift={"rsi_14": 1.0}), sink)
    assert result["status"] == "drifted"
    assert list(result["drifted_features"]) == ["rsi_14"]
    assert len(calls) == 1 and "rsi_14" in calls[0]  # the retrain was asked for, once, saying why
    assert result["retrain"] == {"mode": "recorded", "reason": calls[0]}
    (alert,) = sink.received
    assert alert["kind"] == "drift" and "rsi_14" in alert["text"] and "v3" in alert["title"]
    on_disk = json.loads((paths.reports / "drift.json").read_text())
    assert on_disk["status"] == "drifted" and on_disk["features"]["psi"]["rsi_14"] > 0.25
    run = _mlflow_run(paths, result["mlflow_run_id"])
    assert run.data.metrics["psi.rsi_14"] == pytest.approx(result["features"]["psi"]["rsi_14"])
    assert run.data.metrics["drifted"] == 1.0 and run.data.tags["champion_version"] == "3"


def test_unshifted_features_do_not_trip_it_and_a_price_level_move_alone_does_not_either(tmp_path, sink):
    result, calls, paths = _run(tmp_path, _inputs(shift={"ema_12": 5.0}), sink)  # the price moved: not drift
    assert result["status"] == "ok", result["breaches"]
    assert calls == [] and sink.received == [] and result["retrain"] is None
    assert set(result["features"]["psi"]) == {"rsi_14", "logret_1", "volz_24"}
    assert max(result["features"]["psi"].values()) < 0.25
    assert "no live state" in json.dumps(result["notes"])  # said, not invented
    run = _mlflow_run(paths, result["mlflow_run_id"])
    assert run.data.metrics["drifted"] == 0.0 and "psi.logret_1" in run.data.metrics
    assert json.loads((paths.reports / "drift.json").read_text())["status"] == "ok"


def test_live_trades_losing_against_the_backtest_trip_it_from_the_executor_state(tmp_path, sink):
    from executor.portfolio import ClosedTrade, Fill, Portfolio
    from executor.state import StateStore
    from executor.risk import TradingState
    from training.drift_monitor import read_live_trade_pnls

    db = tmp_path / "state.sqlite"
    assert read_live_trade_pnls(db) is None
    ts0 = pd.Timestamp("2024-07-01", tz="UTC")
    with StateStore(db, "run-1") as store:
        for i in range(30):  # 30 closed trades, 6 winners: hit rate 20 % vs the backtest's 55 %
            ts = ts0 + pd.Timedelta(hours=i)
            pnl = 5.0 if i % 5 == 0 else -4.0
            fill = Fill(i + 1, "BTC/USDT", ts, "sell", "exit", "stop_loss", 0.01, 40_000.0, 400.0, 0.4)
            store.on_fill(fill, None, ClosedTrade("BTC/USDT", ts, ts, 0.01, 40_000, 40_000, 0.8, pnl, "stop_loss", 1))
            store.on_equity(ts, 10_000.0, 10_000.0, TradingState.ACTIVE, Portfolio(10_000.0))
            store.on_bar_done(ts)
    pnls = read_live_trade_pnls(db)
    assert len(pnls) == 30 and (pnls > 0).sum() == 6
    result, calls, _ = _run(tmp_path, _inputs(live=pnls), sink)
    assert [b["check"] for b in result["breaches"]] == ["live_hit_rate", "live_pnl"]
    assert result["live"]["trades"] == 30 and result["live"]["hit_rate"] == pytest.approx(0.2)
    assert len(calls) == 1 and "live hit rate 20.00%" in calls[0]


def test_without_a_champion_there_is_nothing_to_monitor_and_it_says_so(tmp_path, monkeypatch):
    from flows.drift import run_drift

    for key in ("QT_HOME", "QT_PARAMS", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):  # run_drift sets them
        monkeypatch.setenv(key, "")
    params = tmp_path / "p.yaml"
    params.write_text("drift: {retrain: 'off'}\n")
    result = run_drift(str(params), str(tmp_path / "home"))
    assert result["status"] == "no_champion" and not result["drifted"]
    assert json.loads((tmp_path / "home" / "reports" / "drift.json").read_text())["status"] == "no_champion"


@pytest.mark.parametrize("configured, under_deployment, mode", [
    ("auto", True, "deployment"), ("auto", False, "direct"), ("direct", True, "direct"), ("off", True, "off")])
def test_auto_retrains_through_the_deployment_only_when_running_under_one(configured, under_deployment, mode,
                                                                          tmp_path):
    from flows.drift import make_retrain_trigger, retrain_mode

    assert retrain_mode(configured, under_deployment) == mode
    trigger = make_retrain_trigger(mode, "quantum-trader-retrain/retrain", None, tmp_path)
    assert (trigger is None) is (mode == "off")


# -- the monitor on a real state: a trained champion in MLflow, materialised features, executor state
TINY = {
    "data": {"source": "synthetic:13", "symbols": ["BTC/USDT", "ETH/USDT"]},
    "synthetic": {"bars": 1200, "signal_strength": 0.4},
    "train": {"folds": 3, "members": ["xgboost", "lightgbm"],
              "xgboost": {"n_estimators": 40, "max_depth": 3, "learning_rate": 0.1},
              "lightgbm": {"n_estimators": 40, "num_leaves": 7, "learning_rate": 0.1}},
    "gates": {"bootstrap_samples": 100},
    "drift": {"recent_bars": 100, "min_live_trades": 20},
}


@pytest.fixture(scope="module")
def trained_state(tmp_path_factory):
    """collect -> validate -> features -> train -> evaluate -> promote on a tiny market; the version
    is made champion whatever its gates said (the monitor watches whichever model is champion)."""
    from flows import stages as pipeline
    from qt.config import load_params
    from training.registry import ModelRegistry

    params = load_params(None, TINY)
    paths = StatePaths(tmp_path_factory.mktemp("drift_home")).ensure()
    for stage in (pipeline.collect, pipeline.validate, pipeline.features, pipeline.train, pipeline.evaluate,
                  pipeline.promote):
        stage(params, paths)
    registry = ModelRegistry(paths.tracking_uri, params.train.model_name)
    version = registry.list_versions()[-1]["version"]
    if registry.champion_version() != version:
        registry.set_champion(version, {"approval": "test"})
    return params, paths, version


def test_monitor_reads_the_champion_its_training_window_and_recent_bars_from_the_stores(trained_state, sink):
    from training.drift_monitor import gather_inputs, monitor

    params, paths, version = trained_state
    train_info = json.loads((paths.models / "train.json").read_text())
    inputs = gather_inputs(params, paths)
    assert inputs.champion["version"] == version and inputs.champion["run_id"] == train_info["run_id"]
    ts = inputs.train_features["timestamp"]
    assert ts.min() >= pd.Timestamp(train_info["train_start"]) and ts.max() <= pd.Timestamp(train_info["train_end"])
    assert inputs.recent_features.groupby("symbol").size().to_dict() == {"BTC/USDT": 100, "ETH/USDT": 100}
    assert len(inputs.recent_predictions) == 200  # the champion applied to every recent bar
    assert len(inputs.holdout_predictions) > 0 and inputs.live_trade_pnls is None
    assert inputs.backtest_metrics["trades"] == pytest.approx(
        json.loads((paths.evaluation / "evaluation.json").read_text())["strategy"]["trades"])

    calls = []
    result = monitor(params, paths, notifier=_notifier(sink.url),
                     trigger_retrain=lambda reason: calls.append(reason) or {"mode": "recorded"})
    assert set(result["features"]["psi"]) == set(drift.monitored_columns(inputs.feature_columns,
                                                                          params.drift.exclude_features))
    assert "ema_12" in result["features"]["excluded"]
    assert "no live state" in json.dumps(result["notes"])
    assert (len(calls) == 1) is result["drifted"] is (len(sink.received) == 1)
    assert json.loads((paths.reports / "drift.json").read_text())["champion"]["version"] == version


def test_a_trip_from_losing_live_trades_retrains_for_real_in_process(trained_state, tmp_path, monkeypatch):
    """``drift.retrain: direct`` (what ``qt drift`` does): the retrain flow runs on the same state and
    registers a new version. Runs last in this module: it adds that version to the shared state."""
    import yaml
    from prefect.testing.utilities import prefect_test_harness

    from executor.portfolio import ClosedTrade, Fill, Portfolio
    from executor.risk import TradingState
    from executor.state import StateStore
    from flows.drift import run_drift
    from training.registry import ModelRegistry

    params, paths, version = trained_state
    with StateStore(paths.executor_db, "paper-1") as store:  # 25 losing live trades
        for i in range(25):
            ts = pd.Timestamp("2023-02-20", tz="UTC") + pd.Timedelta(hours=i)
            fill = Fill(i + 1, "BTC/USDT", ts, "sell", "exit", "stop_loss", 0.01, 20_000.0, 200.0, 0.2)
            store.on_fill(fill, None, ClosedTrade("BTC/USDT", ts, ts, 0.01, 20_600, 20_000, 0.4, -6.4, "stop_loss", 3))
            store.on_equity(ts, 9_900.0, 9_900.0, TradingState.ACTIVE, Portfolio(9_900.0))
            store.on_bar_done(ts)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({**TINY, "drift": {**TINY["drift"], "retrain": "direct"}}))
    for key in ("QT_HOME", "QT_PARAMS", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):  # run_drift sets them
        monkeypatch.setenv(key, "")
    with prefect_test_harness(server_startup_timeout=120):
        result = run_drift(str(params_file), str(paths.home))
    assert "live_hit_rate" in [b["check"] for b in result["breaches"]]
    assert result["live"]["trades"] == 25 and result["live"]["hit_rate"] == 0.0
    assert result["retrain_mode"] == "direct" and result["retrain"]["mode"] == "direct"
    registry = ModelRegistry(paths.tracking_uri, params.train.model_name)
    assert [v["version"] for v in registry.list_versions()] == [version, result["retrain"]["version"]]
    assert json.loads((paths.reports / "retrain.json").read_text())["registry"]["version"] == \
        result["retrain"]["version"]
