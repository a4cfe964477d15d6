"""End to end through the real stack: Prefect (test harness), MLflow on sqlite, a real
`bentoml serve` on loopback and a real redis-server, on a tiny synthetic market.

The market has a strong planted drift, so this is also the pipeline's positive control:
the run must learn it, promote it, serve it, and the paper executor - polling the served
signals - must reproduce the evaluation backtest of the same bars exactly (the code that
decides live is the code that decided in the backtest).
"""

from __future__ import annotations

import json
import os

import pytest

from qt.config import load_params
from qt.paths import StatePaths

pytestmark = pytest.mark.e2e

TINY = {
    "data": {"source": "synthetic:21", "symbols": ["BTC/USDT", "ETH/USDT", "SOL/USDT"]},
    "synthetic": {"bars": 2400, "signal_strength": 0.35},
    # all four members, the sequence networks tiny: the served champion needs its return window
    "train": {"folds": 3, "xgboost": {"n_estimators": 80, "max_depth": 3, "learning_rate": 0.1},
              "lightgbm": {"n_estimators": 80, "num_leaves": 7, "learning_rate": 0.1},
              "members": ["xgboost", "lightgbm", "nhits", "patchtst"], "sequence_length": 16,
              "nhits": {"max_steps": 20, "mlp_units": [[16, 16]] * 3, "windows_batch_size": 128, "batch_size": 2},
              "patchtst": {"max_steps": 20, "hidden_size": 16, "n_heads": 2, "linear_hidden_size": 32,
                           "encoder_layers": 1, "patch_len": 8, "stride": 4, "windows_batch_size": 128,
                           "batch_size": 2}},
    "gates": {"bootstrap_samples": 200},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("qt_home")
    paths = StatePaths(home).ensure()
    saved = dict(os.environ)
    os.environ.update(paths.tool_env())
    os.environ.pop("REDIS_URL", None)
    from qt import procs

    first_group = len(procs.STARTED_GROUPS)
    try:
        params = load_params(None, TINY)
        with prefect_test_harness(server_startup_timeout=120):
            from flows.pipeline import run_all

            summary = run_all(params, paths)
        yield summary, paths, params, procs.STARTED_GROUPS[first_group:]
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_summary_file_has_every_section(run):
    summary, paths, _, _ = run
    on_disk = json.loads((paths.reports / "summary.json").read_text())
    for key in ("data", "validation", "features", "models", "evaluation", "registry", "serving",
                "executor", "seconds"):
        assert key in on_disk, key
    assert set(on_disk["data"]) >= {"source", "symbols", "timeframe", "rows", "start", "end", "sha256"}
    for name in ("strategy", "buy_and_hold", "rule_rsi_macd"):
        assert set(on_disk["evaluation"][name]) >= {"net_return", "sharpe", "max_drawdown", "trades", "fees"}
    assert set(on_disk["executor"]) >= {"mode", "signals", "orders", "fills", "rejections", "net_pnl",
                                        "open_positions"}


def test_data_and_validation_describe_what_was_used(run):
    summary, _, _, _ = run
    assert summary["data"]["rows"] == 3 * 2400 and summary["data"]["source"] == "synthetic:21"
    assert summary["validation"]["success"] is True
    assert summary["features"]["rows"] > 0 and "rsi_14" in summary["features"]["columns"]


def test_learns_the_planted_signal_and_promotes_it(run):
    summary, _, _, _ = run
    models = {m["name"]: m for m in summary["models"]}
    assert {"xgboost", "lightgbm", "nhits", "patchtst", "ensemble"} <= set(models)
    assert models["ensemble"]["oos"]["auc"] > 0.55
    reg = summary["registry"]
    assert reg["version"] == "1" and reg["promoted"] is True and reg["alias"] == "champion"
    assert all(g["passed"] for g in reg["gates"])
    ev = summary["evaluation"]
    assert ev["strategy"]["sharpe"] > max(ev["buy_and_hold"]["sharpe"], ev["rule_rsi_macd"]["sharpe"])


def test_registered_version_carries_its_lineage(run):
    import mlflow

    summary, paths, params, _ = run
    client = mlflow.MlflowClient(tracking_uri=paths.tracking_uri, registry_uri=paths.tracking_uri)
    mv = client.get_model_version_by_alias(params.train.model_name, "champion")
    assert str(mv.version) == summary["registry"]["version"]
    run_params = client.get_run(mv.run_id).data.params
    assert run_params.get("data_sha256") == summary["data"]["sha256"]
    assert "git_sha" in run_params and "feature_set_hash" in run_params


def test_served_champion_drives_the_paper_executor(run):
    summary, _, _, _ = run
    serving, execu = summary["serving"], summary["executor"]
    assert serving["model_version"] == summary["registry"]["version"]
    assert serving["requests"] > 100 and serving["p50_ms"] is not None
    assert execu["mode"].startswith("paper") and execu["signals"] > 0 and execu["fills"] > 0


def test_paper_executor_reproduces_the_backtest_exactly(run):
    """Signals over HTTP from `bentoml serve` vs the same champion in process: same trades, same PnL."""
    summary, _, _, _ = run
    parity = summary["executor"]["parity_with_backtest"]
    assert parity["replay_trades"] > 0
    assert parity["replay_trades"] == parity["backtest_trades"]
    assert parity["replay_net_pnl"] == pytest.approx(parity["backtest_net_pnl"], abs=1e-6)
    assert parity["match"] is True


def test_nothing_is_left_running(run):
    from qt import procs

    *_, groups = run
    assert len(groups) >= 2  # redis-server and bentoml serve, at least
    assert procs.live_group_members(groups) == []
